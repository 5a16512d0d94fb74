"""Documents into the knowledge base: readers, chunking, idempotent upserts, the CLI."""
