"""Runs golden items through the chain the bot uses, with bounded concurrency and a progress
bar; offline, or as a Langfuse experiment whose task is the same run and whose evaluators are
app.eval.metrics' functions."""

import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from langfuse import Langfuse
from langfuse.api import DatasetItem
from tqdm import tqdm

from app.chain.chain import Chain
from app.chain.retrieve import Retriever
from app.chain.types import ChainRequest, Passage
from app.eval.golden import GoldenItem, from_dataset_item
from app.eval.metrics import ItemResult, item_scores, measure, run_scores
from app.eval.text import Stemmer, default_stemmer
from app.llm.base import (
    Completion,
    GenerationParams,
    LikelihoodScorer,
    LLMClient,
    Message,
    OnDelta,
    WrappedLLM,
)
from app.prompts import PromptStore
from app.settings import ChainSettings
from app.tracing import Tracer
from kb.search import HybridSearcher
from kb.store import VectorStore


@dataclass(slots=True)
class _Record:
    """What one item's chain run retrieved and spent (filled by the wrappers below)."""

    passages: tuple[Passage, ...] = ()
    prompt_tokens: int = 0
    completion_tokens: int = 0


_RECORD: ContextVar[_Record | None] = ContextVar("eval_record", default=None)


class _RecordingRetriever(Retriever):
    """The chain's retriever, keeping what it found for the retrieval metrics."""

    async def __call__(self, query: str, collections: Sequence[str]) -> tuple[Passage, ...]:
        passages = await super().__call__(query, collections)
        record = _RECORD.get()
        if record is not None:
            record.passages = passages
        return passages


class _CountingLLM(WrappedLLM):
    """A step's client, counting the tokens of its completions for the current item."""

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        regex: str | None = None,
        params: GenerationParams = GenerationParams(),
        on_delta: OnDelta | None = None,
    ) -> Completion:
        """The wrapped completion; its usage is added to the item's record."""
        completion = await super().complete(messages, regex=regex, params=params, on_delta=on_delta)
        record = _RECORD.get()
        if record is not None:
            record.prompt_tokens += completion.usage.prompt_tokens
            record.completion_tokens += completion.usage.completion_tokens
        return completion

    async def aclose(self) -> None:
        """The wrapped client is closed by its owner."""


class _CountingScorer(_CountingLLM):
    """A counting wrapper that keeps the wrapped client's reply scoring (llama.cpp)."""

    def __init__(self, inner: LLMClient, scorer: LikelihoodScorer) -> None:
        super().__init__(inner)
        self._scorer = scorer

    async def reply_log_probs(
        self, prompts: Sequence[Sequence[Message]], reply: str
    ) -> list[float]:
        """The wrapped client's likelihoods."""
        return await self._scorer.reply_log_probs(prompts, reply)


def _counting(llm: LLMClient) -> LLMClient:
    if isinstance(llm, LikelihoodScorer):
        return _CountingScorer(llm, llm)
    return _CountingLLM(llm)


def eval_chain(
    *,
    searcher: HybridSearcher,
    store: VectorStore,
    llm: Mapping[str, LLMClient],
    prompts: PromptStore,
    tracer: Tracer,
    settings: ChainSettings,
) -> Chain:
    """The bot's Chain on the same parts, with its retrieval and token use observed."""
    counted: dict[str, LLMClient] = {}
    wrapped: dict[int, LLMClient] = {}
    for step, client in llm.items():
        # Steps that share a client share its wrapper.
        counted[step] = wrapped.setdefault(id(client), _counting(client))
    chain = Chain(
        searcher=searcher,
        store=store,
        llm=counted,
        prompts=prompts,
        tracer=tracer,
        settings=settings,
    )
    chain.retrieve = _RecordingRetriever(searcher, store, tracer, settings)
    return chain


# An optional second opinion on an item's result (the judge), filling in its fields.
Grader = Callable[[GoldenItem, ItemResult, tuple[Passage, ...]], Awaitable[None]]


@dataclass
class Evaluator:
    """Runs items through a chain and measures them."""

    chain: Chain
    collections: Sequence[str] | None = None
    grader: Grader | None = None
    concurrency: int = 2
    progress: bool = True
    stemmer: Stemmer = field(default_factory=default_stemmer)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    # More of the experiment's metadata: the prompt variant under test (prompt_label).
    metadata: Mapping[str, str] = field(default_factory=dict)

    async def run_item(self, item: GoldenItem) -> ItemResult:
        """One item through the chain, measured (never raises for chain failures)."""
        record = _Record()
        _RECORD.set(record)
        request = ChainRequest(
            message=item.question,
            collections=list(self.collections or item.collections),
            history=item.turns(),
            user_id="eval",
            session_id=f"eval-{self.run_id}",
            run_key=f"eval:{self.run_id}:{item.id}",
        )
        result = await self.chain.run(request)
        row = measure(item, result, record.passages, self.stemmer)
        row.prompt_tokens, row.completion_tokens = record.prompt_tokens, record.completion_tokens
        if self.grader is not None and result.kind.value == "answer":
            await self.grader(item, row, record.passages)
        return row

    async def run(self, items: Sequence[GoldenItem]) -> list[ItemResult]:
        """Every item, at most `concurrency` at a time, in the items' order."""
        limit = asyncio.Semaphore(self.concurrency)
        with self._bar(len(items)) as bar:

            async def one(item: GoldenItem) -> ItemResult:
                async with limit:
                    row = await self.run_item(item)
                bar.update()
                return row

            return list(await asyncio.gather(*(one(i) for i in items)))

    async def run_experiment(
        self, langfuse: Langfuse, dataset: str, items: Sequence[DatasetItem]
    ) -> list[ItemResult]:
        """The items as a Langfuse experiment on their dataset: each item a traced task with
        its measures as scores, the summary as run scores."""
        loop = asyncio.get_running_loop()
        with self._bar(len(items)) as bar:

            async def task(*, item: Any, **_: Any) -> dict[str, Any]:
                # The SDK runs its own event loop in a worker thread; the chain's clients
                # belong to this one.
                future = asyncio.run_coroutine_threadsafe(
                    self.run_item(from_dataset_item(item)), loop
                )
                row = await asyncio.wrap_future(future)
                bar.update()
                return row.to_dict()

            result = await asyncio.to_thread(
                langfuse.run_experiment,
                name=f"eval {dataset}",
                run_name=" ".join(
                    filter(None, ("eval", dataset, self.metadata.get("prompt_label"), self.run_id))
                ),
                description="python -m app eval",
                data=list(items),
                task=task,
                evaluators=[item_scores],
                run_evaluators=[run_scores],
                max_concurrency=self.concurrency,
                metadata={"run_id": self.run_id, **self.metadata},
            )
        rows = [ItemResult.from_dict(r.output) for r in result.item_results]
        order = {from_dataset_item(item).id: n for n, item in enumerate(items)}
        return sorted(rows, key=lambda r: order.get(r.id, len(order)))

    def _bar(self, total: int) -> "tqdm[Any]":
        return tqdm(
            total=total, desc="eval", unit="item", file=sys.stderr, disable=not self.progress
        )
