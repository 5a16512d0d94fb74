"""Answers on the Debian FAQ set: the answer step of the chain on the embedded model (llama.cpp,
the bundled Gemma 3 270M) over what the chain retrieves, in each answer mode. Reports the share
of answers that cite a relevant document, that refuse, and that contain text found in no
passage (a word, or a whole sentence not copied verbatim), and the answer step's latency.

With --verdicts it also checks the relevance step out of sample: each question with its own
context (should be relevant) and with the context of another question (should not be), by
the embedded model's question likelihood and by its constrained YES|NO."""

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.chain.answer import Answerer, AnswerMode
from app.chain.quote import normalized, unquoted
from app.chain.relevance import RelevanceJudge
from app.chain.retrieve import Retriever
from app.chain.types import ENGLISH, Passage
from app.llm.base import Completion, GenerationParams, LLMClient, Message, OnDelta
from app.llm.llamacpp import LlamaCppClient
from app.prompts import PromptStore, load_prompt_files
from app.settings import ChainSettings, LLMSettings
from app.tracing import Tracer
from bench._common import fresh_bench, print_result
from ingestion.pipeline import discover
from kb.search import HybridSearcher
from kb.settings import SearchSettings, load_settings

DEBIAN = Path("/work/shared/bench/debian-faq-en")
COLLECTION = "debian"
_WORD = re.compile(r"[^\W_]{3,}")


class GenerateOnly:
    """An LLM client that only generates: hides the embedded client's scoring, so that the
    relevance step takes the YES|NO path it takes on a server."""

    def __init__(self, llm: LLMClient) -> None:
        self._llm = llm
        self.model = llm.model
        self.parallel = False

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        regex: str | None = None,
        params: GenerationParams = GenerationParams(),
        on_delta: OnDelta | None = None,
    ) -> Completion:
        """The wrapped client's completion."""
        return await self._llm.complete(messages, regex=regex, params=params, on_delta=on_delta)

    async def aclose(self) -> None:
        """The wrapped client is closed by its owner."""


def subset(queries: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """limit queries spread evenly over the file (the FAQ's chapters in turn)."""
    if limit >= len(queries):
        return queries
    return [queries[i * len(queries) // limit] for i in range(limit)]


def novel_words(text: str, passages: Sequence[Passage]) -> list[str]:
    """Words of an answer (3 letters or more) that occur in no passage."""
    known = set(_WORD.findall(" ".join(p.text for p in passages).casefold()))
    known |= set(_WORD.findall(" ".join(p.title for p in passages).casefold()))
    return [w for w in _WORD.findall(normalized(text).casefold()) if w not in known]


def rates(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One mode's shares and latency."""
    n = len(rows)
    return {
        "cites_relevant": round(sum(r["cites_relevant"] for r in rows) / n, 3),
        "refused": round(sum(r["refused"] for r in rows) / n, 3),
        "with_novel_words": round(sum(bool(r["novel"]) for r in rows) / n, 3),
        "with_unquoted_sentences": round(sum(bool(r["unquoted"]) for r in rows) / n, 3),
        "p50_s": round(statistics.median(r["seconds"] for r in rows), 2),
        # Of the answers the chain would show (the relevance step said yes): citing a
        # relevant document.
        "shown": sum(r["relevant"] for r in rows),
        "shown_cite_relevant": round(
            sum(r["cites_relevant"] for r in rows if r["relevant"])
            / max(sum(r["relevant"] for r in rows), 1),
            3,
        ),
    }


async def answers(
    llm: LLMClient,
    prompts: PromptStore,
    mode: AnswerMode,
    query: dict[str, Any],
    passages: Any,
    *,
    gains: dict[int, float],
) -> dict[str, Any]:
    """One question answered in one mode (with the relevance step's gains, as the chain
    does), judged."""
    answerer = Answerer(llm, prompts, Tracer(None), mode)
    started = time.perf_counter()
    answer = await answerer(query["query"], passages, ENGLISH, gains=gains)
    seconds = time.perf_counter() - started
    cited = {s.doc_id for s in answer.sources} if not answer.refused else set()
    text = "" if answer.refused else answer.text
    return {
        "id": query["id"],
        "mode": mode,
        "cites_relevant": bool(cited & set(query["relevant"])),
        "refused": answer.refused,
        "novel": novel_words(text, passages),
        "unquoted": unquoted(text, passages),
        "seconds": round(seconds, 2),
        "text": answer.text[:200],
    }


async def verdicts(
    llm: LLMClient, prompts: PromptStore, settings: ChainSettings, contexts: list[Any]
) -> dict[str, Any]:
    """Relevance with each question's own context and with the next question's."""
    found: dict[str, Any] = {}
    for name, client in (("question_gain", llm), ("yes_no", GenerateOnly(llm))):
        judge = RelevanceJudge(client, prompts, Tracer(None), settings)
        own = other = 0
        for i, (query, passages) in enumerate(contexts):
            foreign = contexts[(i + 1) % len(contexts)][1]
            own += (await judge(query["query"], passages, ENGLISH)).relevant
            other += not (await judge(query["query"], foreign, ENGLISH)).relevant
        n = len(contexts)
        found[name] = {"relevant_own": round(own / n, 3), "irrelevant_other": round(other / n, 3)}
    return found


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Ingest, retrieve, answer in every mode, judge."""
    lines = (args.data / "queries.jsonl").read_text(encoding="utf-8").splitlines()
    queries = subset([json.loads(line) for line in lines if line.strip()], args.limit)
    settings = load_settings(ChainSettings)
    prompts = PromptStore(load_prompt_files(args.prompts or settings.prompts_dir))
    llm = LlamaCppClient.from_settings(load_settings(LLMSettings))
    await llm.start()
    rows: list[dict[str, Any]] = []
    async with fresh_bench("en") as bench:
        await bench.ingestor.ingest(discover([args.data / "corpus"]), COLLECTION)
        searcher = HybridSearcher(
            bench.store, bench.embedders, bench.sparse, load_settings(SearchSettings)
        )
        retriever = Retriever(searcher, bench.store, Tracer(None), settings)
        contexts = [(q, await retriever(q["query"], [COLLECTION])) for q in queries]
        judge = RelevanceJudge(llm, prompts, Tracer(None), settings)
        for query, passages in contexts:
            relevance = await judge(query["query"], passages, ENGLISH)
            for mode in args.modes:
                row = await answers(
                    llm, prompts, mode, query, passages, gains=dict(relevance.gains)
                )
                row["relevant"] = relevance.relevant
                rows.append(row)
                print(json.dumps(row, ensure_ascii=False), flush=True)
        checked = await verdicts(llm, prompts, settings, contexts) if args.verdicts else None
    await llm.aclose()
    retrieved = sum(
        bool({p.doc_id for p in passages} & set(q["relevant"])) for q, passages in contexts
    )
    result: dict[str, Any] = {
        "questions": len(queries),
        "relevant_retrieved": round(retrieved / len(queries), 3),
    }
    for mode in args.modes:
        result[mode] = rates([r for r in rows if r["mode"] == mode])
    if checked is not None:
        result["verdicts"] = checked
    return result


def main() -> None:
    """Parse arguments, run, print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEBIAN, help="corpus/ and queries.jsonl")
    parser.add_argument("--limit", type=int, default=30, help="questions, spread evenly")
    parser.add_argument(
        "--modes", type=lambda s: s.split(","), default=["generate", "quote"], help="e.g. quote"
    )
    parser.add_argument("--prompts", type=Path, help="another prompt folder (default: prompts/)")
    parser.add_argument("--verdicts", action="store_true", help="also check the relevance step")
    args = parser.parse_args()
    print_result(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
