"""LLM clients behind one small async interface: an OpenAI-compatible server, or llama.cpp."""
