"""Step 2, retrieve: hybrid search in the collections the caller may read, then context
assembly: the best hits and their neighbouring chunks, merged per document (overlaps cut),
de-duplicated, and trimmed to a token budget. Each document becomes one numbered passage, so
a citation names a document."""

import asyncio
import dataclasses
import hashlib
from collections import defaultdict
from collections.abc import Sequence

from app.chain.types import Passage
from app.settings import ChainSettings
from app.tracing import Tracer
from kb.schema import Chunk, ScoredChunk
from kb.search import HybridSearcher
from kb.store import VectorStore

CHARS_PER_TOKEN = 4
# Neighbours of this many of the best hits join the context.
_EXPAND_HITS = 3
# A neighbour ranks a little below the hit it belongs to.
_NEIGHBOUR_FACTOR = 0.95
_GAP = "\n…\n"


def _overlap(a: str, b: str, longest: int = 2000) -> int:
    """Length of the longest suffix of a that starts b (chunks repeat their predecessor's
    last sentences)."""
    for k in range(min(len(a), len(b), longest), 0, -1):
        if a.endswith(b[:k]):
            return k
    return 0


def _merge(chunks: Sequence[Chunk]) -> str:
    """One document's chunks in order: adjacent ones joined without their overlap."""
    text = ""
    previous: Chunk | None = None
    for chunk in chunks:
        body = chunk.text
        extra = [h for h in chunk.heading_path if h != chunk.title]
        if previous is None or previous.chunk_index != chunk.chunk_index - 1:
            heading = f"## {' > '.join(extra)}\n" if extra else ""
            text += (_GAP if text else "") + heading + body
        else:
            if chunk.heading_path != previous.heading_path and extra:
                body = f"## {' > '.join(extra)}\n{body}"
            cut = _overlap(text, body)
            text += ("\n" if not cut else "") + body[cut:]
        previous = chunk
    return text


def select(scored: Sequence[ScoredChunk], budget_chars: int) -> list[ScoredChunk]:
    """The best chunks that fit the budget, duplicates (same text) dropped; the first always
    goes in, cut to the budget if it must."""
    chosen: list[ScoredChunk] = []
    seen: set[str] = set()
    used = 0
    for hit in sorted(scored, key=lambda h: -h.score):
        key = hashlib.sha1(hit.chunk.text.strip().encode()).hexdigest()
        if key in seen:
            continue
        size = len(hit.chunk.text)
        if not chosen and size > budget_chars:
            chunk = dataclasses.replace(hit.chunk, text=hit.chunk.text[:budget_chars])
            return [ScoredChunk(chunk, hit.score)]
        if used + size > budget_chars:
            continue
        seen.add(key)
        chosen.append(hit)
        used += size
    return chosen


def assemble(chosen: Sequence[ScoredChunk]) -> tuple[Passage, ...]:
    """Group chosen chunks by document (best document first) into numbered passages."""
    groups: dict[tuple[str, str], list[ScoredChunk]] = defaultdict(list)
    for hit in chosen:
        groups[(hit.chunk.collection, hit.chunk.doc_id)].append(hit)
    ordered = sorted(groups.values(), key=lambda hits: -max(h.score for h in hits))
    passages = []
    for n, hits in enumerate(ordered, 1):
        chunks = sorted((h.chunk for h in hits), key=lambda c: c.chunk_index)
        first = chunks[0]
        # The best hit is what a citation points at: its page, and the chunk a button opens.
        best = max(hits, key=lambda h: h.score).chunk
        passages.append(
            Passage(
                n=n,
                collection=first.collection,
                doc_id=first.doc_id,
                title=first.title or first.doc_id,
                text=_merge(chunks),
                source=first.source,
                score=max(h.score for h in hits),
                sections=tuple(
                    dict.fromkeys(h for c in chunks for h in c.heading_path if h != c.title)
                ),
                point_id=best.point_id,
                pages=() if best.page is None else (best.page,),
            )
        )
    return tuple(passages)


def _summary(passage: Passage) -> dict[str, object]:
    return {
        "n": passage.n,
        "doc_id": passage.doc_id,
        "title": passage.title,
        "score": round(passage.score, 4),
        "chars": len(passage.text),
    }


class Retriever:
    """Search, neighbours, assembly; the collections given are the only ones searched."""

    def __init__(
        self,
        searcher: HybridSearcher,
        store: VectorStore,
        tracer: Tracer,
        settings: ChainSettings,
    ) -> None:
        self.searcher = searcher
        self.store = store
        self.tracer = tracer
        self.settings = settings

    async def __call__(self, query: str, collections: Sequence[str]) -> tuple[Passage, ...]:
        """The numbered passages for a query (each scored by its document's best hit)."""
        step_input = {"query": query, "collections": list(collections)}
        with self.tracer.step("retrieve", step_input) as span:
            hits = await self.searcher.search(query, collections, limit=self.settings.top_k)
            if self.settings.neighbours and hits:
                hits = hits + await self._neighbours(hits[:_EXPAND_HITS])
            budget = self.settings.context_tokens * CHARS_PER_TOKEN
            passages = assemble(select(hits, budget))
            span.update(output=[_summary(p) for p in passages])
            return passages

    async def _neighbours(self, hits: Sequence[ScoredChunk]) -> list[ScoredChunk]:
        """The chunks right before and after some hits (their point ids are deterministic)."""
        wanted: dict[str, dict[str, float]] = defaultdict(dict)
        for hit in hits:
            chunk = hit.chunk
            for index in (chunk.chunk_index - 1, chunk.chunk_index + 1):
                if 0 <= index < chunk.chunk_count:
                    point_id = dataclasses.replace(chunk, chunk_index=index).point_id
                    score = hit.score * _NEIGHBOUR_FACTOR
                    wanted[chunk.collection][point_id] = max(
                        score, wanted[chunk.collection].get(point_id, 0.0)
                    )
        found = await asyncio.gather(
            *(self.store.fetch(name, list(ids)) for name, ids in wanted.items())
        )
        return [
            ScoredChunk(chunk, wanted[chunk.collection][chunk.point_id])
            for chunks in found
            for chunk in chunks
        ]
