"""The answer cache: its semantic threshold calibrated on labelled pairs, then measured through
the chain on pairs it was not calibrated on.

bench/cache_pairs.jsonl holds pairs of a cached question and a question asked later, English
and Russian, written from the sample knowledge base (samples/) and the Debian FAQ questions:
paraphrases (the same question: should hit) and hard negatives (similar wording, a different
question: a different number, date, name or product, the opposite action, or another topic;
must never hit). The pairs are split by their cached question (a hash of it), so no cached
question of the reported half was seen in calibration.

1. Calibration (the "calibrate" half): the cosine of each pair with the cache's model; the
   threshold is just above the highest negative that the guards let through.
2. Measurement (the "test" half), through the real chain on Qdrant Edge with the sample
   documents and an LLM that answers instantly: each cached question is asked (a miss: the
   answer is stored), asked again (an exact hit), then its pair is asked (a paraphrase should
   hit, a negative must not); the entries are evicted before the next pair.
"""

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.cache import AnswerCache
from app.cache.cache import CALIBRATED_THRESHOLDS
from app.cache.guards import mismatch, signature
from app.chain.chain import Chain
from app.chain.types import ChainRequest, ChainResult
from app.prompts import PromptStore, load_prompt_files
from app.settings import CacheSettings, ChainSettings
from app.tracing import Tracer
from bench._common import fresh_bench, print_result
from ingestion.pipeline import discover
from kb.embedder import DenseEmbedder
from kb.search import HybridSearcher
from kb.settings import SearchSettings, load_settings
from tests.fakes.llm import ScriptedLLM

ROOT = Path(__file__).resolve().parent.parent
PAIRS = ROOT / "bench" / "cache_pairs.jsonl"
COLLECTIONS = ("company", "company-ru")
# Above the highest negative the guards let through, by this much.
MARGIN = 0.005


def load_pairs(path: Path) -> list[dict[str, Any]]:
    """The labelled pairs."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def calibrate(pairs: list[dict[str, Any]], dense: DenseEmbedder) -> dict[str, Any]:
    """The lowest threshold with no false hit on these pairs (guards applied first)."""
    cosines = []
    for pair in pairs:
        a = np.asarray(dense.embed_query(pair["cached"]))
        b = np.asarray(dense.embed_query(pair["asked"]))
        cosines.append(float(a @ b))
    guarded = [mismatch(signature(p["cached"]), signature(p["asked"])) for p in pairs]
    through = [
        c for p, c, g in zip(pairs, cosines, guarded, strict=True) if not p["same"] and not g
    ]
    threshold = round(min(1.0, (max(through) if through else 0.0) + MARGIN), 3)
    same = [
        c >= threshold and g is None
        for p, c, g in zip(pairs, cosines, guarded, strict=True)
        if p["same"]
    ]
    negatives = [p for p in pairs if not p["same"]]
    return {
        "model": dense.model_name,
        "pairs": len(pairs),
        "negatives_stopped_by_guards": sum(
            1 for p, g in zip(pairs, guarded, strict=True) if not p["same"] and g
        ),
        "negatives": len(negatives),
        "threshold": threshold,
        "calibration_paraphrase_hit_rate": round(sum(same) / max(1, len(same)), 3),
    }


async def _ask(chain: Chain, question: str, n: int) -> ChainResult:
    return await chain.run(ChainRequest(question, COLLECTIONS, run_key=f"bench-cache:{n}"))


def _p50(values: list[float]) -> float:
    return round(statistics.median(values), 2) if values else 0.0


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Calibrate, then run the test half through the chain."""
    pairs = load_pairs(args.pairs)
    settings = load_settings(ChainSettings)
    prompts = PromptStore(load_prompt_files(settings.prompts_dir))
    async with fresh_bench("ru", args.model) as bench:
        calibration = calibrate([p for p in pairs if p["split"] == "calibrate"], bench.dense)
        print(json.dumps({"calibration": calibration}, ensure_ascii=False))
        threshold = args.threshold or calibration["threshold"]
        await bench.ingestor.ingest(discover([ROOT / "samples" / "en"]), COLLECTIONS[0])
        await bench.ingestor.ingest(discover([ROOT / "samples" / "ru"]), COLLECTIONS[1], "ru")
        cache = AnswerCache(
            bench.store,
            bench.embedders,
            bench.sparse,
            prompts=prompts,
            settings=CacheSettings(mode="semantic", semantic_threshold=threshold),
        )
        llm = ScriptedLLM(name="instant")
        chain = Chain(
            searcher=HybridSearcher(
                bench.store, bench.embedders, bench.sparse, load_settings(SearchSettings)
            ),
            store=bench.store,
            llm=dict.fromkeys(("paraphrase", "relevance", "clarify", "answer"), llm),
            prompts=prompts,
            tracer=Tracer(None),
            settings=settings,
            cache=cache,
        )
        await _ask(chain, "warm-up question", 0)
        exact, semantic, misses = [], [], []
        false_hits: list[dict[str, str]] = []
        paraphrase_hits = 0
        test = [p for p in pairs if p["split"] == "test"]
        for n, pair in enumerate(test, 1):
            first = await _ask(chain, pair["cached"], 3 * n)
            misses.append(first.timings["total"])
            again = await _ask(chain, pair["cached"], 3 * n + 1)
            if again.cached:
                exact.append(again.timings["total"])
            asked = await _ask(chain, pair["asked"], 3 * n + 2)
            if asked.cached:
                semantic.append(asked.timings["total"])
                if pair["same"]:
                    paraphrase_hits += 1
                else:
                    false_hits.append({"cached": pair["cached"], "asked": pair["asked"]})
            for entry in {first.cache_entry, asked.cache_entry} - {None}:
                await cache.evict(str(entry))
    paraphrases = sum(1 for p in test if p["same"])
    detail = {
        "threshold": threshold,
        "shipped_threshold": CALIBRATED_THRESHOLDS.get(calibration["model"]),
        "exact_hits": len(exact),
        "exact_hit_p50_ms": _p50(exact),
        "semantic_hits": len(semantic),
        "semantic_hit_p50_ms": _p50(semantic),
        "false_hit_pairs": false_hits,
    }
    print(json.dumps({"detail": detail}, ensure_ascii=False))
    return {
        "hit_p50_ms": _p50(exact + semantic),
        "miss_p50_ms": _p50(misses),
        "hard_negatives": len(test) - paraphrases,
        "false_hits": len(false_hits),
        "paraphrases": paraphrases,
        "paraphrase_hit_rate": round(paraphrase_hits / max(1, paraphrases), 3),
    }


def main() -> None:
    """Parse arguments, run, print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=Path, default=PAIRS)
    parser.add_argument("--model", help="the cache's model (default: EMBEDDING_MODEL_RU's)")
    parser.add_argument("--threshold", type=float, help="use this instead of the calibrated one")
    print_result(asyncio.run(measure(parser.parse_args())))


if __name__ == "__main__":
    main()
