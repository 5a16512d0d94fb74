"""The embedded engines' smoke test, and a probe that runs it in a child process.

llama.cpp and the embedding engines are native code: built for instructions this CPU does not
run (AMX on some virtual machines), they die with SIGILL and take the whole process with them.
`scripts/setup` ends with `python -m app smoke`; the bot runs the LLM part in a child process
before it loads the embedded model, so such a fault becomes one clear log line and answers
with sources only, not a dead bot.
"""

import asyncio
import logging
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from app.errors import LLMUnavailableError
from app.llm.base import Completion, GenerationParams, Message, OnDelta
from app.settings import Settings

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 120.0
_SENTENCES = {"en": "How many vacation days do I get?", "ru": "Сколько дней отпуска положено?"}


async def smoke(settings: Settings, parts: Sequence[str]) -> dict[str, Any]:
    """Run each engine once (blocking work off the loop); the seconds each took."""
    result: dict[str, Any] = {}
    if "embedders" in parts:
        from kb.embedder import DenseEmbedders

        embedders = DenseEmbedders(settings.embedding)
        for language, sentence in _SENTENCES.items():
            started = time.perf_counter()
            embedder = await asyncio.to_thread(embedders.for_language, language)
            vector = await asyncio.to_thread(embedder.embed_passages, [sentence])
            if len(vector[0]) != embedder.dimension:
                raise RuntimeError(f"{embedder.model_name} returned a vector of the wrong size")
            result[f"embed_{language}"] = {
                "model": embedder.model_name,
                "seconds": round(time.perf_counter() - started, 2),
            }
    if "llm" in parts and not settings.llm.base_url:
        from app.llm.llamacpp import LlamaCppClient

        started = time.perf_counter()
        client = await LlamaCppClient.create(settings.llm)
        try:
            completion = await client.complete(
                [Message("user", "Reply with one word: YES or NO. Is water wet?")],
                regex="YES|NO",
                params=GenerationParams(temperature=0.0, max_tokens=4),
            )
        finally:
            await client.aclose()
        result["llm"] = {
            "model": client.model,
            "output": completion.text,
            "seconds": round(time.perf_counter() - started, 2),
        }
    return result


async def probe_embedded_llm(
    timeout_s: float = PROBE_TIMEOUT_S, command: Sequence[str] = ()
) -> str | None:
    """Run the LLM smoke test in a child process: None when it works, else what went wrong.
    command replaces `python -m app smoke --only llm` (tests)."""
    started = time.perf_counter()
    command = command or (sys.executable, "-m", "app", "smoke", "--only", "llm")
    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        return f"the embedded llama.cpp did not answer a smoke test within {timeout_s:.0f} s"
    log.info("embedded LLM probe took %.1f s", time.perf_counter() - started)
    code = process.returncode
    if code == 0:
        return None
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        hint = ""
        if -code == signal.SIGILL:
            hint = (
                " (illegal instruction: llama.cpp was built for another CPU; rebuild it "
                "portably with scripts/setup)"
            )
        return f"the embedded llama.cpp crashed with {name}{hint}"
    lines = stderr.decode(errors="replace").strip().splitlines()
    return f"the embedded llama.cpp failed its smoke test: {lines[-1] if lines else code}"


class UnavailableLLM:
    """Stands in for an embedded model that cannot run: every call fails with the reason, so
    the chain answers with the sources it found instead of the process dying."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    @property
    def model(self) -> str:
        """No model is running."""
        return "unavailable"

    @property
    def parallel(self) -> bool:
        """Nothing runs, so nothing runs at once."""
        return False

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        regex: str | None = None,
        params: GenerationParams = GenerationParams(),
        on_delta: OnDelta | None = None,
    ) -> Completion:
        """Always fails with the reason the model is unavailable."""
        raise LLMUnavailableError(self.reason)

    async def score_options(
        self, messages: Sequence[Message], options: Sequence[str]
    ) -> list[float]:
        """Always fails with the reason the model is unavailable."""
        raise LLMUnavailableError(self.reason)

    async def aclose(self) -> None:
        """Nothing to release."""
