"""The answer chain: paraphrase → retrieve → relevance → clarify → answer, one module a step."""
