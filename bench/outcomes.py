"""Outcomes on the golden set: the whole chain on the embedded model (llama.cpp, the bundled
Gemma 3 270M) over the sample documents, English ("company") and Russian ("company-ru"). For
each question of bench/golden/outcomes.jsonl it checks the kind of result (answer, not found,
clarify) against the expected one, and for answers whether they cite an expected document and
contain the expected facts."""

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.chain.chain import Chain
from app.chain.types import ChainRequest, ChainResult
from app.llm.llamacpp import LlamaCppClient
from app.prompts import PromptStore, load_prompt_files
from app.settings import STEPS, ChainSettings, LLMSettings
from app.tracing import Tracer
from bench._common import Bench, fresh_bench, print_result
from ingestion.pipeline import discover
from kb.search import HybridSearcher
from kb.settings import SearchSettings, load_settings

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden" / "outcomes.jsonl"
KINDS = ("answer", "not_found", "clarify", "error")


def read_golden(path: Path) -> list[dict[str, Any]]:
    """The golden items, one JSON object a line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


async def ingest_samples(bench: Bench) -> None:
    """The English samples into "company", the Russian ones (samples/ru) into "company-ru"."""
    samples = ROOT / "samples"
    english = discover([samples / "en"])
    await bench.ingestor.ingest(english, "company", "en")
    await bench.ingestor.ingest(discover([samples / "ru"]), "company-ru", "ru")


def _contains(text: str, fact: str) -> bool:
    return " ".join(fact.casefold().split()) in " ".join(text.casefold().split())


def prompt_lines(directory: Path) -> list[str]:
    """The fixed lines of the prompt files' messages (an answer repeating one is an echo)."""
    lines = []
    for path in directory.glob("*.md"):
        body = path.read_text(encoding="utf-8").split("\n---\n", 1)[-1]
        lines += [ln.strip() for ln in body.splitlines() if len(ln) >= 30 and "{" not in ln]
    return lines


ECHO = prompt_lines(ROOT / "prompts")


def judge(item: dict[str, Any], result: ChainResult) -> dict[str, Any]:
    """One item's outcome: the kind, and for answers their citations and facts."""
    kind = result.kind.value
    row: dict[str, Any] = {"id": item["id"], "expected": item["kind"], "got": kind}
    if kind == "answer":
        cited = {s.doc_id for s in result.sources}
        row["cites_expected"] = bool(cited & set(item["documents"]))
        # A repeated prompt contains every fact of the excerpts: it does not count.
        row["echo"] = any(line in result.text for line in ECHO)
        row["facts"] = not row["echo"] and all(_contains(result.text, f) for f in item["facts"])
    if kind == "clarify":
        row["options"] = result.options
    row["text"] = result.text[:300]
    row["seconds"] = round(result.timings.get("total", 0.0) / 1000, 2)
    return row


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of outcomes per expected kind, accuracy, and the answers' quality."""
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        by_kind[row["expected"]][row["got"]] += 1
    answered = [r for r in rows if r["expected"] == "answer"]
    return {
        "items": len(rows),
        "outcome_accuracy": round(sum(r["expected"] == r["got"] for r in rows) / len(rows), 3),
        "outcomes": {k: {got: c[got] for got in KINDS if c[got]} for k, c in by_kind.items()},
        # Of the questions that have an answer: answered, citing an expected document, with
        # every expected fact in the text.
        "answers_cite_expected": round(
            sum(bool(r.get("cites_expected")) for r in answered) / max(len(answered), 1), 3
        ),
        "answers_with_facts": round(
            sum(bool(r.get("facts")) for r in answered) / max(len(answered), 1), 3
        ),
        "answers_echoing_prompt": sum(bool(r.get("echo")) for r in rows),
        "p50_s": round(statistics.median(r["seconds"] for r in rows), 2),
    }


async def run(golden: Path, only: str | None) -> dict[str, Any]:
    """Ingest the samples, run every golden question through the chain, judge."""
    items = [i for i in read_golden(golden) if only is None or i["id"].startswith(only)]
    settings = load_settings(ChainSettings)
    llm = LlamaCppClient.from_settings(load_settings(LLMSettings))
    await llm.start()
    rows = []
    async with fresh_bench() as bench:
        await ingest_samples(bench)
        chain = Chain(
            searcher=HybridSearcher(
                bench.store, bench.embedders, bench.sparse, load_settings(SearchSettings)
            ),
            store=bench.store,
            llm=dict.fromkeys(STEPS, llm),
            prompts=PromptStore(load_prompt_files(settings.prompts_dir)),
            tracer=Tracer(None),
            settings=settings,
        )
        for item in items:
            started = time.perf_counter()
            result = await chain.run(ChainRequest(item["question"], item["collections"]))
            row = judge(item, result)
            row["seconds"] = round(time.perf_counter() - started, 2)
            rows.append(row)
            print(json.dumps(row, ensure_ascii=False), flush=True)
    await llm.aclose()
    return summary(rows)


def main() -> None:
    """Parse arguments, run, print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--golden", type=Path, default=GOLDEN)
    parser.add_argument("--only", help="only the items whose id starts with this (en-, ru-)")
    args = parser.parse_args()
    print_result(asyncio.run(run(args.golden, args.only)))


if __name__ == "__main__":
    main()
