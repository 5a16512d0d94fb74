"""Chain overhead: the whole chain (paraphrase, retrieve, relevance, clarify, answer) on the
benchmark corpus with an LLM that answers instantly; reports the time spent outside the LLM
per question. A second pass traces every run to a Langfuse that accepts connections and never
answers, to show that a hung Langfuse costs the user nothing."""

import argparse
import asyncio
import json
import socket
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from langfuse import Langfuse

from app.chain.chain import Chain
from app.chain.types import ChainRequest, ChainResult, ResultKind, Turn
from app.prompts import PromptStore, load_prompt_files
from app.settings import ChainSettings
from app.tracing import Tracer
from bench._common import fresh_bench, print_result
from ingestion.pipeline import discover
from kb.search import HybridSearcher
from kb.settings import SearchSettings, load_settings
from tests.fakes.llm import ScriptedLLM

SHARED = Path(__file__).resolve().parents[2] / "shared" / "bench" / "debian-faq-en"
COLLECTION = "bench"
HISTORY = (Turn("user", "I use Debian at work."), Turn("assistant", "Good to know [1]."))


def _hung_server() -> socket.socket:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(512)
    return server


async def _pass(chain: Chain, questions: list[str]) -> tuple[list[float], list[ChainResult]]:
    overheads, results = [], []
    for i, question in enumerate(questions):
        result = await chain.run(
            ChainRequest(question, [COLLECTION], history=HISTORY, run_key=f"bench:{i}")
        )
        overheads.append(result.timings["total"] - result.timings["llm"])
        results.append(result)
    return overheads, results


def _p(values: list[float], q: int) -> float:
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 2)


async def run(corpus: Path, queries_file: Path) -> dict[str, float | int]:
    """Ingest, then ask every question twice (tracing off, then on with Langfuse hung)."""
    lines = queries_file.read_text(encoding="utf-8").splitlines()  # noqa: ASYNC240
    questions = [json.loads(line)["query"] for line in lines if line.strip()]
    prompts = PromptStore(load_prompt_files(load_settings(ChainSettings).prompts_dir))
    settings = load_settings(ChainSettings)
    async with fresh_bench() as bench:
        await bench.ingestor.ingest(discover([corpus]), COLLECTION)
        searcher = HybridSearcher(
            bench.store, bench.embedders, bench.sparse, load_settings(SearchSettings)
        )
        llm = ScriptedLLM(name="instant")
        steps = dict.fromkeys(("paraphrase", "relevance", "clarify", "answer"), llm)

        def chain(tracer: Tracer) -> Chain:
            return Chain(
                searcher=searcher,
                store=bench.store,
                llm=steps,
                prompts=prompts,
                tracer=tracer,
                settings=settings,
            )

        await chain(Tracer(None)).run(ChainRequest("warm-up", [COLLECTION], history=HISTORY))
        # Both passes start with an empty query cache, so the second is not flattered by it.
        bench.dense.clear_query_cache()
        off, results = await _pass(chain(Tracer(None)), questions)
        bench.dense.clear_query_cache()
        hung = _hung_server()
        langfuse = Langfuse(
            public_key="pk-bench",
            secret_key="sk-bench",
            base_url=f"http://127.0.0.1:{hung.getsockname()[1]}",
            timeout=1,
        )
        on, _ = await _pass(chain(Tracer(langfuse)), questions)
    answered = sum(r.kind is ResultKind.ANSWER for r in results)
    return {
        "queries": len(questions),
        "answered": answered,
        "p50_ms": _p(off, 50),
        "p95_ms": _p(off, 95),
        "p50_ms_langfuse_hung": _p(on, 50),
        "p95_ms_langfuse_hung": _p(on, 95),
    }


def main() -> None:
    """Parse arguments, run, print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, default=SHARED / "corpus")
    parser.add_argument("--queries", type=Path, default=SHARED / "queries.jsonl")
    args = parser.parse_args()
    print_result(asyncio.run(run(args.corpus, args.queries)))


if __name__ == "__main__":
    main()
