"""An OpenAI-compatible server (vLLM in production) as an LLMClient.

The SDK's own retries are off: ours know which failures are worth another attempt, log them,
and turn the last one into an app.errors.LLMError naming the endpoint. The regex goes out as
vLLM's structured_outputs.regex; the older guided_regex field is silently ignored by current
vLLM (the output would simply be unconstrained), so no guided_* field is ever sent.

A retry is only safe before the first delta reached on_delta: the caller has shown that text
already, and a second attempt would show it again (perhaps differently). So a stream that
fails after emitting text raises at once, without retrying.
"""

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from app.errors import LLMError, LLMResponseError, LLMTimeoutError, LLMUnavailableError
from app.llm.base import Completion, GenerationParams, Message, OnDelta, Usage

logger = logging.getLogger(__name__)

# Longest server message quoted in an error (vLLM can echo whole prompts back).
_MAX_MESSAGE_CHARS = 300
# Besides 5xx: request timeout and rate limiting, where another attempt may well succeed.
_RETRYABLE_STATUS = frozenset({408, 429})
_DEFAULT_PARAMS = GenerationParams()


@dataclass(slots=True)
class _Attempt:
    """What one attempt got before it ended (text streamed so far, the server's report)."""

    parts: list[str] = field(default_factory=list)
    # Some text reached on_delta, so retrying would show it twice.
    delivered: bool = False
    model: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class OpenAICompatClient:
    """One OpenAI-compatible endpoint and model, with bounded time and our own retries."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        connect_timeout_s: float = 5.0,
        timeout_s: float = 60.0,
        retries: int = 2,
        backoff_s: float = 0.5,
    ) -> None:
        parts = urlsplit(base_url)
        # Host and port only: what a log line needs, and never credentials in the URL.
        self.endpoint = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
        self._model = model
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_s = backoff_s
        self._closed = False
        self._client = AsyncOpenAI(
            base_url=base_url,
            # The SDK insists on a key; servers started without --api-key ignore it.
            api_key=api_key or "none",
            max_retries=0,
            timeout=openai.Timeout(timeout_s, connect=connect_timeout_s),
        )

    @property
    def model(self) -> str:
        """The configured model name."""
        return self._model

    @property
    def parallel(self) -> bool:
        """A server batches concurrent requests."""
        return True

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        regex: str | None = None,
        params: GenerationParams = _DEFAULT_PARAMS,
        on_delta: OnDelta | None = None,
    ) -> Completion:
        """Generate a reply, retrying transient failures (never after a delta was delivered).

        timeout_s bounds each attempt as a whole, on_delta's own time included, so on_delta
        should hand the text off rather than wait on slow I/O.
        """
        request = self._request(messages, regex, params)
        attempt = 0
        while True:
            started = time.perf_counter()
            state = _Attempt()
            try:
                async with asyncio.timeout(self._timeout_s):
                    await self._run(request, state, on_delta)
                return self._completion(state, time.perf_counter() - started)
            except openai.APIStatusError as exc:
                if exc.status_code < 500 and exc.status_code not in _RETRYABLE_STATUS:
                    raise self._response_error(exc) from exc
                failure: Exception = exc
            except (openai.APIConnectionError, TimeoutError) as exc:
                failure = exc
            except openai.APIError as exc:
                raise self._response_error(exc) from exc
            if state.delivered or attempt >= self._retries:
                raise self._final_error(failure, attempt + 1, state) from failure
            attempt += 1
            await self._pause(attempt, failure)

    def _request(
        self, messages: Sequence[Message], regex: str | None, params: GenerationParams
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self._model,
            "messages": [_message(m) for m in messages],
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
        }
        if params.stop:
            request["stop"] = list(params.stop)
        if regex is not None:
            request["extra_body"] = {"structured_outputs": {"regex": regex}}
        return request

    async def _run(
        self, request: dict[str, Any], state: _Attempt, on_delta: OnDelta | None
    ) -> None:
        if on_delta is not None:
            await self._stream(request, state, on_delta)
            return
        response = await self._client.chat.completions.create(**request, stream=False)
        if not response.choices:
            raise LLMResponseError(f"LLM endpoint {self.endpoint}: reply without choices")
        choice = response.choices[0]
        state.parts.append(choice.message.content or "")
        state.finish_reason = choice.finish_reason
        state.model = response.model
        if response.usage is not None:
            state.prompt_tokens = response.usage.prompt_tokens
            state.completion_tokens = response.usage.completion_tokens

    async def _stream(self, request: dict[str, Any], state: _Attempt, on_delta: OnDelta) -> None:
        stream = await self._client.chat.completions.create(
            **request, stream=True, stream_options={"include_usage": True}
        )
        async with stream:
            async for chunk in stream:
                state.model = chunk.model or state.model
                # With include_usage the last chunk has the usage and no choices.
                if chunk.usage is not None:
                    state.prompt_tokens = chunk.usage.prompt_tokens
                    state.completion_tokens = chunk.usage.completion_tokens
                for choice in chunk.choices[:1]:
                    state.finish_reason = choice.finish_reason or state.finish_reason
                    if choice.delta.content:
                        state.parts.append(choice.delta.content)
                        state.delivered = True
                        await on_delta(choice.delta.content)

    def _completion(self, state: _Attempt, seconds: float) -> Completion:
        return Completion(
            text="".join(state.parts),
            model=state.model or self._model,
            usage=Usage(state.prompt_tokens, state.completion_tokens),
            seconds=seconds,
            # A server that omits it ended the text normally as far as we can tell.
            finish_reason=state.finish_reason or "stop",
        )

    async def _pause(self, attempt: int, failure: Exception) -> None:
        delay = self._backoff_s * 2 ** (attempt - 1)
        # Jitter keeps clients that failed together from retrying in lockstep.
        delay += random.uniform(0, delay / 10)
        logger.warning(
            "LLM endpoint %s: attempt %s of %s failed (%s); retrying in %.2f s",
            self.endpoint,
            attempt,
            self._retries + 1,
            self._describe(failure),
            delay,
        )
        await asyncio.sleep(delay)

    def _response_error(self, exc: openai.APIError) -> LLMResponseError:
        status = f"HTTP {exc.status_code}" if isinstance(exc, openai.APIStatusError) else "error"
        return LLMResponseError(
            f"LLM endpoint {self.endpoint} refused the request ({status}): {_server_message(exc)}"
        )

    def _final_error(self, failure: Exception, attempts: int, state: _Attempt) -> LLMError:
        if state.delivered:
            how = f"failed mid-stream after {len(''.join(state.parts))} characters, not retried"
        else:
            how = f"failed {attempts} time(s)"
        message = f"LLM endpoint {self.endpoint} {how}; last: {self._describe(failure)}"
        if isinstance(failure, TimeoutError | openai.APITimeoutError):
            return LLMTimeoutError(message)
        return LLMUnavailableError(message)

    def _describe(self, failure: Exception) -> str:
        """What went wrong, in a few words for a log line."""
        if isinstance(failure, openai.APIStatusError):
            return f"HTTP {failure.status_code}: {_server_message(failure)}"
        if isinstance(failure, TimeoutError):
            return f"no complete answer within {self._timeout_s:g} s"
        # The SDK's "Connection error." hides what happened; the transport error says it.
        cause = failure.__cause__
        detail = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
        return f"{failure}{detail}"

    async def aclose(self) -> None:
        """Close the connection pool (once; later calls do nothing)."""
        if not self._closed:
            self._closed = True
            await self._client.close()

    async def __aenter__(self) -> "OpenAICompatClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _message(message: Message) -> ChatCompletionMessageParam:
    if message.role == "system":
        return {"role": "system", "content": message.content}
    if message.role == "assistant":
        return {"role": "assistant", "content": message.content}
    return {"role": "user", "content": message.content}


def _server_message(exc: openai.APIError) -> str:
    """The server's own error text, on one line and trimmed."""
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    message = body.get("message") if isinstance(body, dict) else None
    text = " ".join(str(message or exc.message).split())
    if len(text) > _MAX_MESSAGE_CHARS:
        text = text[: _MAX_MESSAGE_CHARS - 1] + "…"
    return text
