"""The knowledge base: chunk schema, embedders, vector stores and hybrid search."""
