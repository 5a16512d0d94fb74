"""Questions to answers: LLM clients, prompts, the answer chain, tracing, the bot and the CLI."""
