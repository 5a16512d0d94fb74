"""The one way a step calls the LLM: render its prompt, call the step's client with the
prompt's regex, record a generation in the trace, and check the output's shape."""

import logging
import re
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from app.llm.base import Completion, LLMClient, OnDelta
from app.prompts import PromptStore
from app.tracing import Tracer

log = logging.getLogger(__name__)
# Seconds spent inside LLM calls by the current chain run (shared with the tasks it starts).
_LLM_SECONDS: ContextVar[list[float] | None] = ContextVar("llm_seconds", default=None)


def llm_clock() -> list[float]:
    """Start counting LLM time for the current run; the list receives each call's seconds."""
    clock: list[float] = []
    _LLM_SECONDS.set(clock)
    return clock


@dataclass(frozen=True, slots=True)
class Generated:
    """A completion, whether it has the shape the prompt's regex asks for, and its LLM time."""

    completion: Completion
    valid: bool
    seconds: float


class LLMStep:
    """Base of the steps that ask the LLM: a prompt name, a client, the prompts, the tracer."""

    prompt_name: str = ""

    def __init__(self, llm: LLMClient, prompts: PromptStore, tracer: Tracer) -> None:
        self.llm = llm
        self.prompts = prompts
        self.tracer = tracer

    async def generate(self, on_delta: OnDelta | None = None, **variables: Any) -> Generated:
        """Run the step's prompt; raises app.errors.LLMError when the LLM fails."""
        prompt = self.prompts.get(self.prompt_name).render(**variables)
        messages = [{"role": m.role, "content": m.content} for m in prompt.messages]
        params = {
            "temperature": prompt.params.temperature,
            "max_tokens": prompt.params.max_tokens,
            "regex": prompt.regex,
        }
        with self.tracer.generation(
            prompt.name,
            input=messages,
            model=self.llm.model,
            params=params,
            prompt=prompt.langfuse_prompt,
            prompt_version=prompt.version,
        ) as generation:
            started = time.perf_counter()
            try:
                completion = await self.llm.complete(
                    prompt.messages, regex=prompt.regex, params=prompt.params, on_delta=on_delta
                )
            except Exception as exc:
                generation.fail(exc)
                raise
            seconds = time.perf_counter() - started
            clock = _LLM_SECONDS.get()
            if clock is not None:
                clock.append(seconds)
            generation.record_completion(completion)
            valid = re.fullmatch(prompt.regex, completion.text) is not None
            if not valid:
                # A server that ignores structured outputs, or max_tokens reached mid-shape.
                log.warning(
                    "%s output does not match its regex (finish %s): %.200r",
                    prompt.name,
                    completion.finish_reason,
                    completion.text,
                )
                generation.update(level="WARNING", status_message="output does not match regex")
        return Generated(completion, valid, seconds)
