"""Hybrid search: dense (chunk and document) and BM25 candidates, fused on their scores.

Plain rank fusion (RRF) throws the scores away and is worse than dense alone on our
benchmark. Here every candidate gets all its scores, and the fusion is a weighted sum:
- the chunk's cosine and its document's cosine (the mean of the document's chunk vectors), so
  a passage that merely mentions the words of a question in a long, off-topic page ranks
  below a document that is about the question;
- BM25 divided by the best BM25 score of the query, so exact terms (names, error codes,
  commands) lift a candidate without swamping the meaning.
Cosines are kept raw, not min-max stretched: when the embedding model knows the language
poorly its scores stay flat and BM25 decides, instead of noise being amplified into ranks.
"""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kb.embedder import DenseEmbedder, SparseEmbedder
from kb.errors import CollectionNotFoundError
from kb.schema import CollectionSpec, ScoredChunk
from kb.settings import SearchSettings
from kb.store import VectorStore


@dataclass(frozen=True, slots=True)
class _Candidate:
    hit: ScoredChunk
    dense: float | None
    sparse: float


def fuse(
    query_vector: Sequence[float],
    dense_hits: Sequence[ScoredChunk],
    sparse_hits: Sequence[ScoredChunk],
    settings: SearchSettings,
) -> list[ScoredChunk]:
    """Fuse both candidate lists into one, best first, each chunk once, fused scores."""
    candidates: dict[tuple[str, str, int], _Candidate] = {}
    for hit in dense_hits:
        candidates[_key(hit)] = _Candidate(hit, hit.score, 0.0)
    best_sparse = max((h.score for h in sparse_hits), default=0.0)
    for hit in sparse_hits:
        weight = hit.score / best_sparse if best_sparse > 0 else 0.0
        known = candidates.get(_key(hit))
        if known is not None:
            candidates[_key(hit)] = _Candidate(known.hit, known.dense, weight)
        else:
            candidates[_key(hit)] = _Candidate(hit, None, weight)
    if not candidates:
        return []
    items = list(candidates.values())
    query = np.asarray(query_vector, dtype=np.float32)
    # The dense list brings its cosines; a BM25-only candidate's is computed from its vector.
    dense = np.asarray(
        [c.dense if c.dense is not None else _cosine(query, c.hit.dense) for c in items],
        dtype=np.float32,
    )
    doc = np.asarray([_cosine(query, c.hit.doc) for c in items], dtype=np.float32)
    sparse = np.asarray([c.sparse for c in items], dtype=np.float32)
    w_doc = settings.document_weight
    semantic = (dense + w_doc * doc) / (1.0 + w_doc)
    fused = settings.dense_weight * semantic + (1.0 - settings.dense_weight) * sparse
    order = np.argsort(-fused, kind="stable")
    return [ScoredChunk(items[i].hit.chunk, float(fused[i])) for i in order]


def _key(hit: ScoredChunk) -> tuple[str, str, int]:
    chunk = hit.chunk
    return (chunk.doc_id, chunk.content_hash, chunk.chunk_index)


def _cosine(query: np.ndarray, vector: list[float] | None) -> float:
    """Dot product with a normalized vector; a missing vector scores 0."""
    return 0.0 if vector is None else float(np.dot(query, np.asarray(vector, np.float32)))


class HybridSearcher:
    """The search function the answer chain and the retrieval benchmark both use."""

    def __init__(
        self,
        store: VectorStore,
        dense: DenseEmbedder,
        sparse: SparseEmbedder,
        settings: SearchSettings,
    ) -> None:
        self.store = store
        self.dense = dense
        self.sparse = sparse
        self.settings = settings
        self._specs: dict[str, CollectionSpec] = {}

    async def _spec(self, name: str) -> CollectionSpec:
        spec = self._specs.get(name)
        if spec is None:
            spec = await self.store.get_collection(name)
            if spec is None:
                raise CollectionNotFoundError(f"collection {name!r} does not exist")
            self._specs[name] = spec
        return spec

    async def search(
        self,
        query: str,
        collections: Sequence[str],
        limit: int = 10,
        doc_ids: Sequence[str] | None = None,
    ) -> list[ScoredChunk]:
        """The best chunks for a query across collections, optionally within some documents."""
        if not collections or not query.strip():
            return []
        specs = [await self._spec(name) for name in collections]
        vector = await asyncio.to_thread(self.dense.embed_query, query)
        n = max(limit, self.settings.candidates)
        results = await asyncio.gather(
            *(
                self.store.search(
                    spec.name, vector, self.sparse.embed_query(query, spec.language), n, doc_ids
                )
                for spec in specs
            )
        )
        # Each collection's BM25 is normalised on its own: IDF differs between collections.
        fused = [hit for d, s in results for hit in fuse(vector, d, s, self.settings)]
        fused.sort(key=lambda hit: -hit.score)
        return fused[:limit]
