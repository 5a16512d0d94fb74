"""The chain: composes the steps, times them, and turns failures into an error result.

Relevance and clarify both only need the query and the passages, so on an LLM server that
serves requests concurrently they run at the same time (the slower verdict sets the pace);
on in-process llama.cpp, which generates one request at a time, clarify runs only when the
context is relevant, and decides from the relevance step's per-passage gains. An answer that
refuses ("the knowledge base does not say") is a not-found result.
"""

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from app.cache import AnswerCache, chain_setup
from app.chain.answer import Answerer, resolve_answer_mode
from app.chain.clarify import Clarification, Clarifier
from app.chain.llm_step import llm_clock, serve_user
from app.chain.paraphrase import Paraphraser
from app.chain.relevance import Relevance, RelevanceJudge
from app.chain.retrieve import Retriever
from app.chain.types import (
    ChainRequest,
    ChainResult,
    Language,
    Passage,
    ResultKind,
    SourceRef,
    detect_language,
)
from app.errors import AppError, LLMError
from app.llm.base import LLMClient
from app.prompts import PromptStore
from app.settings import ChainSettings
from app.texts import text
from app.tracing import Tracer, trace_id_for
from kb.errors import KBError
from kb.search import HybridSearcher
from kb.store import VectorStore

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class _Timer:
    """Milliseconds per step, and the part of them spent inside LLM calls."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self.started = time.perf_counter()

    async def time(self, name: str, work: Awaitable[_T]) -> _T:
        start = time.perf_counter()
        try:
            return await work
        finally:
            self.ms[name] = round((time.perf_counter() - start) * 1000, 2)

    def done(self, llm_seconds: float) -> dict[str, float]:
        self.ms["llm"] = round(llm_seconds * 1000, 2)
        self.ms["total"] = round((time.perf_counter() - self.started) * 1000, 2)
        return self.ms


class Chain:
    """paraphrase → retrieve → relevance → clarify → answer, one trace per run."""

    def __init__(
        self,
        *,
        searcher: HybridSearcher,
        store: VectorStore,
        llm: Mapping[str, LLMClient],
        prompts: PromptStore,
        tracer: Tracer,
        settings: ChainSettings,
        cache: AnswerCache | None = None,
    ) -> None:
        self.tracer = tracer
        self.settings = settings
        self.prompts = prompts
        self.paraphrase = Paraphraser(llm["paraphrase"], prompts, tracer)
        self.retrieve = Retriever(searcher, store, tracer, settings)
        self.relevance = RelevanceJudge(llm["relevance"], prompts, tracer, settings)
        self.clarify = Clarifier(llm["clarify"], prompts, tracer, settings)
        mode = resolve_answer_mode(settings.answer_mode, llm["answer"])
        self.answer = Answerer(llm["answer"], prompts, tracer, mode)
        self._parallel_verdicts = llm["relevance"].parallel and llm["clarify"].parallel
        # Answers of earlier runs (app/cache), keyed with what of this chain changes them.
        self.cache = cache
        self.setup = chain_setup(settings, llm, mode)
        # Called with every result (metrics and the per-question log line: app/ops).
        self.result_hooks: list[Callable[[ChainResult], None]] = []

    async def run(self, request: ChainRequest) -> ChainResult:
        """One question to one result; never raises for LLM or knowledge-base failures."""
        trace_id = trace_id_for(request.run_key or uuid.uuid4().hex)
        message = request.message.strip()
        if request.clarification:
            message = f"{message} ({request.clarification.strip()})"
        language = detect_language(message)
        result = ChainResult(ResultKind.ERROR, "", trace_id, message, language.code)
        timer = _Timer()
        clock = llm_clock()
        serve_user(request.user_id)  # the steps render this user's prompt variants
        with self.tracer.run(
            trace_id=trace_id,
            name="question",
            input={"message": message, "collections": list(request.collections)},
            user_id=request.user_id,
            session_id=request.session_id,
            tags=sorted(request.collections) + self.prompts.tags_for(request.user_id),
        ) as root:
            try:
                await self._steps(request, message, language, result, timer)
            except LLMError as exc:
                log.warning("LLM failed for trace %s: %s", trace_id, exc)
                self._fail(result, exc, "llm_failed")
            except (AppError, KBError) as exc:
                log.error("chain failed for trace %s: %s", trace_id, exc)
                self._fail(result, exc, "kb_failed")
            result.timings = timer.done(sum(clock))
            root.update(output=result.to_dict())
        for hook in self.result_hooks:
            try:
                hook(result)
            except Exception:  # a metric or a log line must never cost the user the answer
                log.exception("result hook %r failed for trace %s", hook, trace_id)
        return result

    async def _steps(
        self,
        request: ChainRequest,
        message: str,
        language: Language,
        result: ChainResult,
        timer: _Timer,
    ) -> None:
        turns = self.settings.history_turns
        history = list(request.history)[-2 * turns :] if turns else []
        paraphrased = await timer.time("paraphrase", self.paraphrase(message, history, language))
        result.query = paraphrased.query
        # Cached: only answers, looked up by the standalone question (after the paraphrase).
        cached = None
        if self.cache is not None:
            cached = await timer.time(
                "cache", self.cache.lookup(request, result.query, language.code, self.setup)
            )
            if cached.serve(result):
                return
        passages = await timer.time(
            "retrieve", self.retrieve(paraphrased.query, request.collections)
        )
        # Until an answer exists, the documents found are what an error result can offer.
        result.sources = [SourceRef.of(p) for p in passages]
        relevance, clarification = await self._verdicts(
            request, result.query, passages, language, timer
        )
        if not relevance.relevant:
            self._not_found(result, language)
            return
        if clarification is None:
            skip = "clarification given" if request.clarification else None
            clarification = await timer.time(
                "clarify",
                self.clarify(result.query, passages, language, skip, relevance.gains),
            )
        if clarification.question is not None:
            result.kind, result.text = ResultKind.CLARIFY, clarification.question
            result.options, result.sources = clarification.options, []
            return
        answer = await timer.time(
            "answer",
            self.answer(result.query, passages, language, request.on_delta, relevance.gains),
        )
        if answer.refused:
            # "The knowledge base does not say" is a not-found like any other (for the loop).
            self._not_found(result, language)
            return
        result.kind, result.text, result.sources = ResultKind.ANSWER, answer.text, answer.sources
        if self.cache is not None and cached is not None and answer.complete:
            result.cache_entry = await self.cache.save(cached, request, result)

    @staticmethod
    def _not_found(result: ChainResult, language: Language) -> None:
        result.kind, result.sources = ResultKind.NOT_FOUND, []
        result.text = text("not_found", language.code)

    async def _verdicts(
        self,
        request: ChainRequest,
        query: str,
        passages: tuple[Passage, ...],
        language: Language,
        timer: _Timer,
    ) -> tuple[Relevance, Clarification | None]:
        """Relevance, and on a server clarify beside it (None: clarify is still to run)."""
        relevance_call = self.relevance(query, passages, language)
        if not (self._parallel_verdicts and passages and not request.clarification):
            return await timer.time("relevance", relevance_call), None
        relevance, clarification = await asyncio.gather(
            timer.time("relevance", relevance_call),
            timer.time("clarify", self.clarify(query, passages, language, None)),
        )
        return relevance, clarification

    def _fail(self, result: ChainResult, exc: Exception, key: str) -> None:
        result.kind = ResultKind.ERROR
        result.error = f"{type(exc).__name__}: {exc}"
        message = text(key, result.language)
        if key == "llm_failed" and result.sources:
            message += "\n" + text("llm_failed_sources", result.language)
        result.text = message
