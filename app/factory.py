"""The composition root's builder: every client is made once here and handed to the chain."""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.cache import AnswerCache
from app.chain.chain import Chain
from app.errors import PromptError
from app.llm.base import LLMClient
from app.llm.llamacpp import LlamaCppClient
from app.llm.router import aclose_all, build_llm_clients
from app.loop.records import LoopRecords
from app.prompts import PromptStore, load_prompt_files
from app.settings import STEPS, Settings
from app.smoke import UnavailableLLM, probe_embedded_llm
from app.tracing import Tracer
from ingestion.pipeline import finish_interrupted
from kb.edge import EdgeStore
from kb.embedder import DenseEmbedders, SparseEmbedder
from kb.factory import open_store
from kb.search import HybridSearcher
from kb.store import VectorStore

if TYPE_CHECKING:
    from app.pii import Masker

log = logging.getLogger(__name__)


@dataclass
class Services:
    """What a running process uses; closed together on shutdown."""

    settings: Settings
    store: VectorStore
    searcher: HybridSearcher
    llm: dict[str, LLMClient]
    prompts: PromptStore
    tracer: Tracer
    chain: Chain
    # Unanswered questions, for the owners' gap reports (app/loop).
    loop: LoopRecords
    # Personal data masking (None with PII_MASK=off).
    masker: "Masker | None" = None

    async def aclose(self) -> None:
        """Stop background work, flush traces, release models and the store."""
        await self.prompts.aclose()
        await aclose_all(self.llm)
        await asyncio.to_thread(self.tracer.shutdown)
        await self.store.close()


async def build_services(settings: Settings) -> Services:
    """Open the store, load the embedders, connect the LLM(s), Langfuse and the prompts."""
    store = open_store(settings.qdrant)
    try:
        if isinstance(store, EdgeStore):
            # Locked to this process: what a crash interrupted is finished before serving.
            for name in await store.list_collections():
                await finish_interrupted(store, name)
        dense = DenseEmbedders(settings.embedding)
        # Load the models the existing collections need now, not on a user's first question.
        await asyncio.to_thread(dense.preload, await _collection_models(store))
        searcher = HybridSearcher(store, dense, SparseEmbedder(), settings.search)
        masker = await _masker(settings)
        llm = build_llm_clients(settings.llm, embedded=await _embedded_llm(settings))
        if masker is not None and settings.pii.llm:
            llm = _masking(llm, masker)
        tracer = Tracer.from_settings(settings.langfuse, settings.pii, masker)
        files = load_prompt_files(settings.chain.prompts_dir)
        missing = [step for step in STEPS if step not in files]
        if missing:
            raise PromptError(
                f"no prompt files {', '.join(f'{m}.md' for m in missing)} in "
                f"{settings.chain.prompts_dir} (CHAIN_PROMPTS_DIR)"
            )
        prompts = PromptStore(
            files,
            tracer.langfuse,
            label=settings.langfuse.prompt_label,
            variants=settings.prompts.parsed,
            refresh_s=settings.langfuse.prompt_refresh_s,
            fetch_timeout_s=settings.langfuse.prompt_fetch_timeout_s,
        )
        await prompts.start()
    except BaseException:
        await store.close()
        raise
    chain = Chain(
        searcher=searcher,
        store=store,
        llm=llm,
        prompts=prompts,
        tracer=tracer,
        settings=settings.chain,
        cache=_cache(settings, store, searcher, prompts, tracer),
    )
    log.info(
        "LLM: %s; answers: %s; tracing %s",
        _describe(llm),
        chain.answer.mode,  # CHAIN_ANSWER_MODE=auto resolved for the answer step's client
        "on" if tracer.enabled else "off",
    )
    loop = LoopRecords(
        store,
        dense,
        searcher.sparse,
        language=settings.loop.language,
        retention_days=settings.loop.retention_days,
        keep_users=settings.loop.keep_users,
        masker=masker,
    )
    return Services(settings, store, searcher, llm, prompts, tracer, chain, loop, masker)


def _cache(
    settings: Settings,
    store: VectorStore,
    searcher: HybridSearcher,
    prompts: PromptStore,
    tracer: Tracer,
) -> AnswerCache | None:
    """The answer cache in the store's sys-cache collection (None with CACHE_MODE=off)."""
    if settings.cache.mode == "off":
        return None
    return AnswerCache(
        store,
        searcher.dense,
        searcher.sparse,
        prompts=prompts,
        settings=settings.cache,
        tracer=tracer,
    )


async def _masker(settings: Settings) -> "Masker | None":
    """The personal-data masker, loaded now (about 2 s) unless PII_MASK=off."""
    if not settings.pii.traces:
        return None
    from app.pii import Masker

    return await asyncio.to_thread(Masker().load)


def _masking(llm: dict[str, LLMClient], masker: "Masker") -> dict[str, LLMClient]:
    """PII_MASK=traces+llm: what is sent to a server is masked, the answer unmasked. The
    embedded model runs in this process: nothing leaves it, so it is not wrapped (and its
    quote mode matches the passages verbatim)."""
    from app.pii.llm import MaskingLLM

    wrapped: dict[int, LLMClient] = {}
    for client in llm.values():
        if not isinstance(client, LlamaCppClient | UnavailableLLM) and id(client) not in wrapped:
            wrapped[id(client)] = MaskingLLM(client, masker)
    return {step: wrapped.get(id(client), client) for step, client in llm.items()}


async def _embedded_llm(settings: Settings) -> Callable[[], LLMClient]:
    """The in-process llama.cpp client's factory, after a probe in a child process when a
    step uses it: a model that crashes on this CPU must not take the process down."""
    llm = settings.llm
    served = all(getattr(llm, f"{step}_base_url") or llm.base_url for step in STEPS)
    problem = None if served or not llm.probe else await probe_embedded_llm()
    if problem is None:
        return lambda: LlamaCppClient(llm)
    log.error("%s; answering with sources only (set LLM_BASE_URL to use a server)", problem)
    return lambda: UnavailableLLM(problem)


async def _collection_models(store: VectorStore) -> list[str]:
    specs = [await store.get_collection(name) for name in await store.list_collections()]
    return sorted({spec.embedding_model for spec in specs if spec is not None})


def _describe(llm: dict[str, LLMClient]) -> str:
    return ", ".join(f"{step}={client.model}" for step, client in llm.items())
