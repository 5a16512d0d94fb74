"""Constrained decoding: the embedded model (llama.cpp, Gemma 3 270M) on the same prompts for
each LLM step, with and without the step's output regex. Reports how many outputs have the
shape the chain can use, how many tokens were generated and how long it took."""

import argparse
import asyncio
import re
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.chain.retrieve import CHARS_PER_TOKEN, assemble, select
from app.chain.types import Turn, detect_language
from app.chain.variables import prompt_variables
from app.llm.llamacpp import LlamaCppClient
from app.prompts import load_prompt_files
from app.settings import ChainSettings, LLMSettings
from bench._common import fresh_bench, print_result
from ingestion.pipeline import discover
from kb.search import HybridSearcher
from kb.settings import SearchSettings, load_settings

ROOT = Path(__file__).resolve().parent.parent
VERDICTS = ("relevance", "clarify")
# (message, history) pairs over the sample documents; the paraphrase step needs history.
CASES: list[tuple[str, list[Turn]]] = [
    ("How many vacation days do I get per year?", []),
    ("and can I carry them over?", [Turn("user", "How many vacation days do I get?"),
                                    Turn("assistant", "25 working days a year [1].")]),
    ("How do I connect to the VPN from home?", []),
    ("what if the handshake never completes?", [Turn("user", "How do I set up the VPN?"),
                                                Turn("assistant", "Install WireGuard [1].")]),
    ("I forgot my password, what should I do?", []),
    ("How long do I have to submit an expense report?", []),
    ("What is the recipe for pancakes?", []),
    ("Как подключиться к VPN?", []),
]  # fmt: skip


async def _variables(searcher: HybridSearcher, message: str, history: list[Turn]) -> Any:
    language = detect_language(message)
    hits = await searcher.search(message, ["samples"], limit=4)
    budget = load_settings(ChainSettings).context_tokens * CHARS_PER_TOKEN
    passages = assemble(select(hits, budget))
    return prompt_variables(
        query=message, language=language, passages=passages, message=message, history=history
    )


async def run(max_tokens: int) -> dict[str, Any]:
    """Every step of every case, with the regex and without it, same prompt and parameters."""
    prompts = load_prompt_files(load_settings(ChainSettings).prompts_dir)
    llm = LlamaCppClient.from_settings(load_settings(LLMSettings))
    tokens: dict[str, dict[str, int]] = {"with": defaultdict(int), "without": defaultdict(int)}
    valid = {"with": 0, "without": 0}
    seconds = {"with": 0.0, "without": 0.0}
    outputs = 0
    async with fresh_bench() as bench:
        await bench.ingestor.ingest(discover([ROOT / "samples" / "en"]), "samples")
        searcher = HybridSearcher(
            bench.store, bench.embedders, bench.sparse, load_settings(SearchSettings)
        )
        for message, history in CASES:
            variables = await _variables(searcher, message, history)
            for step in ("paraphrase", "relevance", "clarify", "answer"):
                if step == "paraphrase" and not history:
                    continue
                rendered = prompts[step].render(**variables)
                # Same budget both ways, so the free model is not cut short by a tiny limit.
                params = replace(rendered.params, max_tokens=max(max_tokens, 1))
                outputs += 1
                for mode, regex in (("with", rendered.regex), ("without", None)):
                    started = time.perf_counter()
                    completion = await llm.complete(rendered.messages, regex=regex, params=params)
                    seconds[mode] += time.perf_counter() - started
                    tokens[mode][step] += completion.usage.completion_tokens
                    valid[mode] += re.fullmatch(rendered.regex, completion.text.strip()) is not None
    await llm.aclose()
    verdict_with = sum(tokens["with"][s] for s in VERDICTS)
    verdict_without = sum(tokens["without"][s] for s in VERDICTS)
    return {
        "outputs": outputs,
        "valid_with": round(valid["with"] / outputs, 3),
        "valid_without": round(valid["without"] / outputs, 3),
        "tokens_with": sum(tokens["with"].values()),
        "tokens_without": sum(tokens["without"].values()),
        "seconds_with": round(seconds["with"], 2),
        "seconds_without": round(seconds["without"], 2),
        "verdict_tokens_with": verdict_with,
        "verdict_tokens_without": verdict_without,
        "verdict_token_ratio": round(verdict_without / max(verdict_with, 1), 2),
        "tokens_by_step_with": dict(tokens["with"]),
        "tokens_by_step_without": dict(tokens["without"]),
    }


def main() -> None:
    """Parse arguments, run, print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--max-tokens", type=int, default=256, help="token limit of every call (default 256)"
    )
    args = parser.parse_args()
    print_result(asyncio.run(run(args.max_tokens)))


if __name__ == "__main__":
    main()
