"""The one way a step calls the LLM: render its prompt (the variant of the run's user), call
the step's client with the prompt's regex, record a generation in the trace, and check the
output's shape; or, on a client that can, score given replies to rendered prompts."""

import logging
import re
import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from app.errors import LLMResponseError
from app.llm.base import Completion, LikelihoodScorer, LLMClient, OnDelta
from app.prompts import PromptStore, RenderedPrompt
from app.tracing import Tracer

log = logging.getLogger(__name__)
# The prompt whose reply likelihood measures relevance on a client that can score replies.
LIKELIHOOD_PROMPT = "question"
# Calls per step when the output breaks its regex: one retry, then the step has failed.
_ATTEMPTS = 2
# Seconds spent inside LLM calls by the current chain run (shared with the tasks it starts).
_LLM_SECONDS: ContextVar[list[float] | None] = ContextVar("llm_seconds", default=None)
# Whose run it is: the steps render that user's prompt variants (prompt A/B).
_USER: ContextVar[str | None] = ContextVar("prompt_user", default=None)


def llm_clock() -> list[float]:
    """Start counting LLM time for the current run; the list receives each call's seconds."""
    clock: list[float] = []
    _LLM_SECONDS.set(clock)
    return clock


def serve_user(user_id: str | None) -> None:
    """The current chain run is this user's: its steps render the user's prompt variants
    (set once per run, like llm_clock, and seen by the tasks the run starts)."""
    _USER.set(user_id)


@dataclass(frozen=True, slots=True)
class Generated:
    """A completion, whether it has the shape the prompt's regex asks for, and its LLM time."""

    completion: Completion
    valid: bool
    seconds: float


def _clocked(seconds: float) -> float:
    """Count an LLM call's seconds in the current run's clock; returns them."""
    clock = _LLM_SECONDS.get()
    if clock is not None:
        clock.append(seconds)
    return seconds


class LLMStep:
    """Base of the steps that ask the LLM: a prompt name, a client, the prompts, the tracer."""

    prompt_name: str = ""

    def __init__(self, llm: LLMClient, prompts: PromptStore, tracer: Tracer) -> None:
        self.llm = llm
        self.prompts = prompts
        self.tracer = tracer

    @property
    def can_score(self) -> bool:
        """The client can score given replies (the embedded llama.cpp model)."""
        return isinstance(self.llm, LikelihoodScorer)

    def _generation(self, prompt: RenderedPrompt, label: str, **params: Any) -> Any:
        messages = [{"role": m.role, "content": m.content} for m in prompt.messages]
        return self.tracer.generation(
            prompt.name,
            input=messages,
            model=self.llm.model,
            params=params,
            prompt=prompt.langfuse_prompt,
            prompt_version=prompt.version,
            prompt_variant=label,
        )

    async def reply_likelihoods(
        self, prompt_name: str, reply: str, contexts: Sequence[Mapping[str, Any]]
    ) -> list[float]:
        """The reply's mean log-probability per token after a prompt rendered with each set
        of variables (only when can_score); raises app.errors.LLMError when the LLM fails."""
        if not isinstance(self.llm, LikelihoodScorer):
            raise TypeError(f"{self.llm.model} cannot score replies")
        label, template = self.prompts.choose(prompt_name, _USER.get())
        prompts = [template.render(**variables) for variables in contexts]
        with self._generation(prompts[0], label, reply=reply, prompts=len(prompts)) as generation:
            started = time.perf_counter()
            try:
                scores = await self.llm.reply_log_probs([p.messages for p in prompts], reply)
            except Exception as exc:
                generation.fail(exc)
                raise
            _clocked(time.perf_counter() - started)
            generation.update(output=[round(s, 3) for s in scores])
        return scores

    async def generate(self, on_delta: OnDelta | None = None, **variables: Any) -> Generated:
        """Run the step's prompt. An output that breaks the regex (a server that ignores the
        constraint) is asked for once more, then raises LLMResponseError like any other LLM
        failure; one cut short by max_tokens comes back with valid=False for the step to
        trim. Raises app.errors.LLMError when the LLM fails."""
        label, template = self.prompts.choose(self.prompt_name, _USER.get())
        prompt = template.render(**variables)
        for attempt in range(1, _ATTEMPTS + 1):
            # A preview only appends: a second attempt must not stream after the first.
            delta = on_delta if attempt == 1 else None
            generated = await self._attempt(prompt, label, delta, attempt)
            if generated.valid or generated.completion.finish_reason == "length":
                return generated
        raise LLMResponseError(
            f"{prompt.name}: the output does not match the step's regex ({_ATTEMPTS} attempts);"
            " does the server apply structured_outputs?"
        )

    async def _attempt(
        self, prompt: RenderedPrompt, label: str, on_delta: OnDelta | None, attempt: int
    ) -> Generated:
        """One LLM call, its generation in the trace, and the check of its output's shape."""
        params = {
            "temperature": prompt.params.temperature,
            "max_tokens": prompt.params.max_tokens,
            "regex": prompt.regex,
        }
        with self._generation(prompt, label, **params) as generation:
            if attempt > 1:
                generation.update(metadata={"attempt": attempt, "retry": "regex mismatch"})
            started = time.perf_counter()
            try:
                completion = await self.llm.complete(
                    prompt.messages, regex=prompt.regex, params=prompt.params, on_delta=on_delta
                )
            except Exception as exc:
                generation.fail(exc)
                raise
            seconds = _clocked(time.perf_counter() - started)
            generation.record_completion(completion)
            # The same regex the request carried, on our side: the whole output must match.
            valid = re.fullmatch(prompt.regex, completion.text) is not None
            if not valid:
                # A server that ignores structured outputs, or max_tokens reached mid-shape.
                log.warning(
                    "%s output does not match its regex (attempt %s, finish %s): %.200r",
                    prompt.name,
                    attempt,
                    completion.finish_reason,
                    completion.text,
                )
                generation.update(level="WARNING", status_message="output does not match regex")
        return Generated(completion, valid, seconds)
