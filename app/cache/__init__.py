"""The answer cache (exact and semantic tiers) in front of the chain's LLM steps."""

from app.cache.cache import AnswerCache, Lookup
from app.cache.entry import CACHE_COLLECTION, CacheEntry
from app.cache.keys import chain_setup

__all__ = ["CACHE_COLLECTION", "AnswerCache", "CacheEntry", "Lookup", "chain_setup"]
