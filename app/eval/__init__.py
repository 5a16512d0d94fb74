"""Measured answer quality: golden sets run through the chain, per-item metrics, a summary,
a baseline gate, and the same metrics as Langfuse experiment scores (`python -m app eval`)."""
