"""The one interface every LLM client implements: messages in, text out, optionally
constrained by a regex."""

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant"]
# Called with each new piece of text while a completion streams.
OnDelta = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message."""

    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """Sampling parameters a prompt file declares."""

    temperature: float = 0.0
    max_tokens: int = 256
    top_p: float = 1.0
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one completion."""

    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class Completion:
    """What a client returns: the text and what it cost."""

    text: str
    model: str
    usage: Usage
    seconds: float
    # "stop" (done, or the regex is complete), "length" (max_tokens reached)
    finish_reason: str


class LLMClient(Protocol):
    """An LLM endpoint. Errors are app.errors.LLMError subclasses, never transport errors."""

    @property
    def model(self) -> str:
        """The model name reported in traces."""
        ...

    @property
    def parallel(self) -> bool:
        """True when concurrent requests really run concurrently (a server, not llama.cpp)."""
        ...

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        regex: str | None = None,
        params: GenerationParams = GenerationParams(),
        on_delta: OnDelta | None = None,
    ) -> Completion:
        """Generate a reply; with a regex the whole output matches it (fullmatch)."""
        ...

    async def aclose(self) -> None:
        """Release connections, threads and models."""
        ...


@runtime_checkable
class LikelihoodScorer(Protocol):
    """A client that can say how likely a given reply is, instead of generating one.

    The embedded llama.cpp client is one. A small base model's own verdict (even constrained
    to YES|NO, even ranked by likelihood) says little; how well a passage predicts the user's
    question says much more. Servers are not asked this way (most do not expose it)."""

    async def reply_log_probs(
        self, prompts: Sequence[Sequence[Message]], reply: str
    ) -> list[float]:
        """The reply's mean log-probability per token as the answer to each prompt."""
        ...


class WrappedLLM:
    """An LLMClient around another, passing everything through: subclasses override what they
    change (the eval's token counting, personal-data masking)."""

    def __init__(self, inner: LLMClient) -> None:
        self._inner = inner

    @property
    def model(self) -> str:
        """The wrapped client's model."""
        return self._inner.model

    @property
    def parallel(self) -> bool:
        """The wrapped client's concurrency."""
        return self._inner.parallel

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        regex: str | None = None,
        params: GenerationParams = GenerationParams(),
        on_delta: OnDelta | None = None,
    ) -> Completion:
        """The wrapped client's completion."""
        return await self._inner.complete(messages, regex=regex, params=params, on_delta=on_delta)

    async def aclose(self) -> None:
        """Close the wrapped client."""
        await self._inner.aclose()
