"""Hybrid search: dense (chunk and document) and BM25 candidates, fused on their scores.

Plain rank fusion (RRF) throws the scores away and is worse than dense alone on our
benchmark. Here every candidate gets all its scores, and the fusion is a weighted sum:
- the chunk's cosine and its document's cosine (the mean of the document's chunk vectors), so
  a passage that merely mentions the words of a question in a long, off-topic page ranks
  below a document that is about the question;
- BM25 divided by the best BM25 score of the query, so exact terms (names, error codes,
  commands) lift a candidate without swamping the meaning.
Cosines are kept raw, not min-max stretched per query: when the embedding model knows the
language poorly its scores stay flat and BM25 decides, instead of noise being amplified into
ranks. Models differ in how far apart they put any two texts (all-MiniLM-L6-v2: cosines between
a collection's passages spread by 0.16; multilingual-e5: by 0.03), so BM25's share is scaled by
the spread measured on each collection at its first ingestion: one pair of weights then fits
every model, with no labelled questions needed (measured in bench/retrieval.py).
"""

import asyncio
from collections.abc import Sequence

import numpy as np

from kb.embedder import DenseEmbedders, SparseEmbedder
from kb.errors import CollectionNotFoundError
from kb.schema import Candidate, CollectionSpec, ScoredChunk
from kb.settings import SearchSettings
from kb.store import VectorStore

# The spread (kb.schema.CollectionSpec.dense_spread) the weights are stated for: all-MiniLM-L6-v2's
# on the Debian FAQ, so its collections rank as they did before spreads were measured.
REFERENCE_SPREAD = 0.16
# A model that cuts this collection's words into more tokens than this reads letters, not
# words: it has not learned the language (MiniLM on Russian: 4.6; models that know it: 1.3-2.1).
BLIND_TOKENS_PER_WORD = 3.0
# The dense share left to such a model: a tie-break among BM25's equals, no more (measured:
# with MiniLM on Russian the usual 0.9 takes R@5 from BM25's 0.806 down to 0.39-0.47).
BLIND_DENSE_WEIGHT = 0.1


def fuse(
    candidates: Sequence[Candidate],
    settings: SearchSettings,
    spec: CollectionSpec | None = None,
) -> list[tuple[str, float]]:
    """(point id, fused score) for each candidate, best first. The collection's measurements
    (spec) set the balance: BM25's share is scaled by the dense spread, so a model whose
    cosines differ by hundredths is not outvoted by a BM25 that always spans 0 to 1; a model
    that does not know the collection's language only breaks BM25's ties."""
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
    dense_weight, spread = settings.dense_weight, REFERENCE_SPREAD
    if spec is not None:
        spread = spec.dense_spread or REFERENCE_SPREAD
        if (spec.tokens_per_word or 0.0) > BLIND_TOKENS_PER_WORD:
            dense_weight = min(dense_weight, BLIND_DENSE_WEIGHT)
    bm25_weight = (1.0 - dense_weight) * spread / REFERENCE_SPREAD
    fused = dense_weight * semantic + bm25_weight * sparse
    order = np.argsort(-fused, kind="stable")
    return [(candidates[i].point_id, float(fused[i])) for i in order]


class HybridSearcher:
    """The search function the answer chain and the retrieval benchmark both use."""

    def __init__(
        self,
        store: VectorStore,
        dense: DenseEmbedders,
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
        # The query is embedded once per model: collections may be built with different ones.
        models = {spec.embedding_model: spec.name for spec in specs}
        vectors = {}
        for model, name in models.items():
            # One hop off the loop: the model (loaded once, or refused) and the vector.
            vectors[model] = await asyncio.to_thread(self._embed_query, model, name, query)
        per_collection = await asyncio.gather(
            *(
                self._search_one(spec, query, vectors[spec.embedding_model], limit, doc_ids)
                for spec in specs
            )
        )
        hits = [hit for found in per_collection for hit in found]
        hits.sort(key=lambda hit: -hit.score)
        return hits[:limit]

    def _embed_query(self, model: str, collection: str, query: str) -> list[float]:
        return self.dense.for_model(model, collection).embed_query(query)

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
        best = fuse(candidates, self.settings, spec)[:limit]
        chunks = await self.store.fetch(spec.name, [point_id for point_id, _ in best])
        scores = dict(best)
        return [ScoredChunk(chunk, scores[chunk.point_id]) for chunk in chunks]
