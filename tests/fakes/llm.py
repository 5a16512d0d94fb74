"""An in-process LLM client for chain tests: answers per step by looking at the request,
records every call, and can fail on demand."""

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from app.errors import LLMTimeoutError
from app.llm.base import Completion, GenerationParams, Message, OnDelta, Usage


@dataclass
class Call:
    """One recorded request."""

    step: str
    messages: list[Message]
    regex: str | None
    params: GenerationParams


def step_of(regex: str | None) -> str:
    """Which chain step a request comes from, by its output regex."""
    if regex is None:
        return "unconstrained"
    if regex == "YES|NO":
        return "relevance"
    if regex.startswith("CLEAR|ASK"):
        return "clarify"
    # A generated answer cites \[(1|2)\]; a quoted one ends its sentences with \[1\].
    if r"\[(" in regex or re.search(r"\\\[\d+\\\]", regex):
        return "answer"
    return "paraphrase"


def _default_reply(step: str, messages: Sequence[Message], regex: str | None) -> str:
    if step == "relevance":
        return "YES"
    if step == "clarify":
        return "CLEAR"
    if step == "answer":
        number = re.search(r"\\\[\((\d+)", regex or "")
        return f"The knowledge base says so [{number.group(1) if number else 1}]."
    text = messages[-1].content
    latest = re.search(r"Latest message: (.*)", text)
    return latest.group(1).strip() if latest else text.splitlines()[-1]


@dataclass
class ScriptedLLM:
    """Replies from `replies` (step -> text, or a callable of the call) or sensible defaults."""

    replies: dict[str, str | Callable[[Call], str]] = field(default_factory=dict)
    fail_steps: set[str] = field(default_factory=set)
    calls: list[Call] = field(default_factory=list)
    name: str = "scripted"
    concurrent: bool = True
    # Pause before replying (so concurrent steps really interleave), and between streamed
    # pieces (a real model takes time per token).
    reply_delay_s: float = 0.0
    delta_delay_s: float = 0.0

    @property
    def model(self) -> str:
        """The model name in traces."""
        return self.name

    @property
    def parallel(self) -> bool:
        """Whether the chain may run verdicts concurrently."""
        return self.concurrent

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        regex: str | None = None,
        params: GenerationParams = GenerationParams(),
        on_delta: OnDelta | None = None,
    ) -> Completion:
        """Record the call and reply."""
        await asyncio.sleep(self.reply_delay_s)
        step = step_of(regex)
        call = Call(step, list(messages), regex, params)
        self.calls.append(call)
        if step in self.fail_steps:
            raise LLMTimeoutError(f"scripted timeout in {step}")
        reply = self.replies.get(step)
        text = reply(call) if callable(reply) else reply
        if text is None:
            text = _default_reply(step, messages, regex)
        if on_delta is not None:
            for piece in re.findall(r"\S+\s*", text):
                await asyncio.sleep(self.delta_delay_s)
                await on_delta(piece)
        return Completion(text, self.name, Usage(10, len(text.split())), 0.0, "stop")

    async def aclose(self) -> None:
        """Nothing to release."""

    def steps(self) -> list[str]:
        """The steps called, in order."""
        return [c.step for c in self.calls]
