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

import numpy as np

from kb.embedder import DenseEmbedder, SparseEmbedder
from kb.errors import CollectionNotFoundError
from kb.schema import Candidate, CollectionSpec, ScoredChunk
from kb.settings import SearchSettings
from kb.store import VectorStore


def fuse(candidates: Sequence[Candidate], settings: SearchSettings) -> list[tuple[str, float]]:
    """(point id, fused score) for each candidate, best first."""
    if not candidates:
        return []
    dense = np.fromiter((c.dense for c in candidates), np.float32, len(candidates))
    doc = np.fromiter((c.doc for c in candidates), np.float32, len(candidates))
    sparse = np.fromiter((c.sparse for c in candidates), np.float32, len(candidates))
    best_sparse = float(sparse.max())
    if best_sparse > 0:
        sparse /= best_sparse
    w_doc = settings.document_weight
    semantic = (dense + w_doc * doc) / (1.0 + w_doc)
    fused = settings.dense_weight * semantic + (1.0 - settings.dense_weight) * sparse
    order = np.argsort(-fused, kind="stable")
    return [(candidates[i].point_id, float(fused[i])) for i in order]


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
        per_collection = await asyncio.gather(
            *(self._search_one(spec, query, vector, limit, doc_ids) for spec in specs)
        )
        hits = [hit for found in per_collection for hit in found]
        hits.sort(key=lambda hit: -hit.score)
        return hits[:limit]

    async def _search_one(
        self,
        spec: CollectionSpec,
        query: str,
        vector: Sequence[float],
        limit: int,
        doc_ids: Sequence[str] | None,
    ) -> list[ScoredChunk]:
        # Fused per collection: BM25 is normalised within one collection's IDF statistics.
        candidates = await self.store.candidates(
            spec.name,
            vector,
            self.sparse.embed_query(query, spec.language),
            max(limit, self.settings.candidates),
            doc_ids,
        )
        best = fuse(candidates, self.settings)[:limit]
        chunks = await self.store.fetch(spec.name, [point_id for point_id, _ in best])
        scores = dict(best)
        return [ScoredChunk(chunk, scores[chunk.point_id]) for chunk in chunks]
