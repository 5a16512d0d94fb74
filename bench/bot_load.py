"""Bot under load: N users write at once through a fake Bot API server to the real bot
(aiogram Dispatcher, long polling), whose chain runs on the sample documents with an
OpenAI-compatible fake LLM (in its own process, like vLLM) that answers each request after a
fixed latency. Reports how many were answered, errors, the wall time and the 95th percentile
of the time from a user's message to the bot's final reply. Each question needs two LLM
latencies in a row (relevance and clarify side by side, then the answer), so wall_s can't be
below 2x the latency; the rest is the bot's own work for all N users. Where it goes, per user
(median_ms, and slowest_ms for the user who sets wall_s): before the chain starts (polling,
dispatch, the handler), retrieval, the verdicts and the answer beyond the LLM's latency, and
after the chain (the final reply); cpu_s is this process's CPU time meanwhile (the bot and
the fake Bot API server), api_calls counts the Bot API calls of the run."""

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydantic import SecretStr

from app.bot.access import load_collections
from app.bot.app import BotDeps, build_dispatcher
from app.bot.settings import BotSettings
from app.chain.chain import Chain
from app.chain.types import ChainResult
from app.llm.base import LLMClient
from app.llm.router import aclose_all, build_llm_clients
from app.prompts import PromptStore, load_prompt_files
from app.settings import ChainSettings, LLMSettings
from app.tracing import Tracer, trace_id_for
from bench._common import fresh_bench, print_result
from ingestion.pipeline import discover
from kb.search import HybridSearcher
from kb.settings import SearchSettings, load_settings
from tests.fakes.openai_server import FakeLLMServer, by_step
from tests.fakes.telegram_server import FakeTelegramServer

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [
    "How many vacation days do I get?",
    "How do I connect to the VPN?",
    "I forgot my password, what should I do?",
    "How long do I have to submit an expense report?",
    "Who approves my leave requests?",
]
REPLIES = {
    "paraphrase": "How do I connect to the VPN?",
    "relevance": "YES",
    "clarify": "CLEAR",
    "answer": "The knowledge base answers this in the first document [1].",
}


def _no_embedded_model() -> LLMClient:
    raise RuntimeError("the benchmark's LLM is the fake server")


def _serve_llm(latency: float, ports: "multiprocessing.Queue[int]", stop: Any) -> None:
    """The fake LLM in its own process, as vLLM would be: its threads don't compete with the
    bot for the GIL."""
    with FakeLLMServer() as server:
        server.responder = by_step(REPLIES)
        server.delay_s = latency
        ports.put(server.port)
        stop.wait()


def _final(telegram: FakeTelegramServer, user: int) -> float | None:
    """When the user's final reply (an answer with sources, or any other result) arrived."""
    for message in telegram.sent_messages(user):
        text = message.plain_text or ""
        if "Sources:" in text or "could not find" in text or "Sorry" in text:
            return message.sent_at
    return None


def record_runs(chain: Chain) -> dict[str, tuple[float, dict[str, float]]]:
    """When each run of the chain ended and its step times, by trace id (filled as they end)."""
    finished: dict[str, tuple[float, dict[str, float]]] = {}

    def note(result: ChainResult) -> None:
        finished[result.trace_id] = (time.monotonic(), dict(result.timings))

    chain.result_hooks.append(note)
    return finished


PARTS = ("before", "retrieve", "verdicts", "answer", "after")


def user_parts(
    pushed: Any, final: float, run: tuple[float, dict[str, float]], latency: float
) -> tuple[float, ...]:
    """Where one user's time went (seconds): from the message to the chain's start (polling,
    dispatch, the handler's own work), retrieval, the verdicts and the answer beyond the LLM's
    latency (the client, waiting for the loop), from the chain's end to the final reply."""
    end, ms = run
    verdicts = max(ms.get("relevance", 0.0), ms.get("clarify", 0.0)) / 1000
    return (
        end - ms["total"] / 1000 - pushed.at,
        ms.get("retrieve", 0.0) / 1000,
        verdicts - latency,
        ms.get("answer", 0.0) / 1000 - latency,
        final - end,
    )


def breakdown(
    sent: dict[int, Any],
    done: dict[int, float | None],
    finished: dict[str, tuple[float, dict[str, float]]],
    latency: float,
) -> dict[str, Any]:
    """The parts of user_parts in ms: the median over users, and the slowest user's (who
    sets wall_s)."""
    rows = {}
    for user, pushed in sent.items():
        run = finished.get(trace_id_for(f"{user}:{pushed.message_id}:"))
        final = done.get(user)
        if run is not None and final is not None:
            rows[final - pushed.at] = user_parts(pushed, final, run, latency)
    if not rows:
        return {}
    columns = list(zip(*rows.values(), strict=True))
    slowest = rows[max(rows)]
    return {
        "median_ms": {
            p: round(statistics.median(c) * 1000, 1) for p, c in zip(PARTS, columns, strict=True)
        },
        "slowest_ms": {p: round(v * 1000, 1) for p, v in zip(PARTS, slowest, strict=True)},
    }


async def run(users: int, latency: float) -> dict[str, Any]:
    """Start everything, send every user's question at once, wait for all replies."""
    ports: multiprocessing.Queue[int] = multiprocessing.Queue()
    stop = multiprocessing.Event()
    llm_process = multiprocessing.Process(target=_serve_llm, args=(latency, ports, stop))
    llm_process.start()
    llm_url = f"http://127.0.0.1:{ports.get(timeout=30)}/v1"
    with (
        FakeTelegramServer(max_poll_timeout=1.0) as telegram,
        tempfile.TemporaryDirectory() as tmp,
    ):
        collections = Path(tmp) / "collections.yaml"
        collections.write_text("collections:\n  - name: company\n    readers: everyone\n")
        async with fresh_bench() as bench:
            report = await bench.ingestor.ingest(discover([ROOT / "samples" / "en"]), "company")
            if not report.chunks_written:
                raise SystemExit("the sample documents were not ingested: nothing to answer from")
            llm = build_llm_clients(
                LLMSettings(base_url=llm_url, model="fake", timeout_s=30),
                embedded=_no_embedded_model,
            )
            chain_settings = load_settings(ChainSettings)
            chain = Chain(
                searcher=HybridSearcher(
                    bench.store, bench.embedders, bench.sparse, load_settings(SearchSettings)
                ),
                store=bench.store,
                llm=llm,
                prompts=PromptStore(load_prompt_files(chain_settings.prompts_dir)),
                tracer=Tracer(None),
                settings=chain_settings,
            )
            finished = record_runs(chain)
            settings = BotSettings(token=SecretStr(telegram.token), collections_file=collections)
            access = load_collections(collections, [])
            dp = build_dispatcher(
                BotDeps(chain, access, bench.ingestor, Tracer(None), bench.store, settings)
            )
            bot = telegram.new_bot()
            polling = asyncio.create_task(
                dp.start_polling(bot, handle_signals=False, polling_timeout=1)
            )
            await telegram.wait_for_poll()
            # Warm-up: the first question loads what loads lazily (ONNX session, specs).
            telegram.push_message(10_000, QUESTIONS[0])
            await telegram.wait_for(lambda: _final(telegram, 10_000), timeout=60)
            telegram.clear_records()
            started = time.monotonic()
            cpu_started = time.process_time()
            pushed = {
                user: telegram.push_message(user, QUESTIONS[user % len(QUESTIONS)])
                for user in range(1, users + 1)
            }
            sent = {user: update.at for user, update in pushed.items()}
            deadline = started + max(60.0, latency * 20)
            while time.monotonic() < deadline:
                done = {u: _final(telegram, u) for u in sent}
                if all(done.values()):
                    break
                await asyncio.sleep(0.05)
            # The bot's and the fake Bot API server's CPU time (the LLM is another process).
            cpu_s = time.process_time() - cpu_started
            await dp.stop_polling()
            await polling
            await aclose_all(llm)
    stop.set()
    llm_process.join(timeout=10)
    replies = {u: t - sent[u] for u, t in done.items() if t is not None}
    errors = len(telegram.error_calls()) + sum(
        1 for u in sent if any("Sorry" in (m.plain_text or "") for m in telegram.sent_messages(u))
    )
    wall = max((done[u] or deadline) for u in sent) - started
    times = sorted(replies.values())
    p95 = statistics.quantiles(times, n=100, method="inclusive")[94] if len(times) > 1 else 0.0
    calls: dict[str, int] = {}
    for call in telegram.calls():
        calls[call.method] = calls.get(call.method, 0) + 1
    return {
        "users": users,
        "answered": len(replies),
        "errors": errors,
        "wall_s": round(wall, 3),
        "p95_reply_s": round(p95, 3),
        "llm_latency_s": latency,
        "wall_over_latency": round(wall / latency, 2) if latency else None,
        "cpu_s": round(cpu_s, 3),
        **breakdown(pushed, done, finished, latency),
        "api_calls": calls,
    }


def main() -> None:
    """Parse arguments, run, print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--llm-latency", type=float, default=1.0)
    args = parser.parse_args()
    print_result(asyncio.run(run(args.users, args.llm_latency)))


if __name__ == "__main__":
    main()
