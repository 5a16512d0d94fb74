"""Prompt A/B: variants of a prompt with weights, each user assigned one deterministically,
and the report that compares the variants by feedback and eval runs."""
