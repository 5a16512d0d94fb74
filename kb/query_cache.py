"""The question cache both dense backends share: people ask the same things."""

from functools import lru_cache


class CachedQueries:
    """embed_query and clear_query_cache over a backend's _embed_query_uncached."""

    def __init__(self) -> None:
        self._query_cache = lru_cache(maxsize=1024)(self._embed_query_uncached)

    def _embed_query_uncached(self, text: str) -> tuple[float, ...]:
        raise NotImplementedError

    def embed_query(self, text: str) -> list[float]:
        """One query vector (cached)."""
        return list(self._query_cache(text))

    def clear_query_cache(self) -> None:
        """Forget cached query vectors (benchmarks measure cold queries)."""
        self._query_cache.cache_clear()
