"""An OpenAI-compatible server (vLLM in production) as an LLMClient.

The chat completions API is spoken directly over aiohttp, not through the openai SDK: with
300 concurrent requests the SDK and httpx took 3-5 ms of event-loop CPU per request, measured
against a local fake server (10 ms under a profiler), against 0.3-0.5 ms here. The SDK's request
transform and response model construction and httpcore's pool bookkeeping (quadratic in open
connections) made the bot miss its load target. One JSON body out, one JSON body or an SSE
stream back, is all this client needs.

Retries are ours: they know which failures are worth another attempt, log them, and turn the
last one into an app.errors.LLMError naming the endpoint. The regex goes out as vLLM's
structured_outputs.regex; the older guided_regex field is silently ignored by current vLLM (the
output would simply be unconstrained), so no guided_* field is ever sent.

A retry is only safe before the first delta reached on_delta: the caller has shown that text
already, and a second attempt would show it again (perhaps differently). So a stream that
fails after emitting text raises at once, without retrying.
"""

import asyncio
import json
import logging
import random
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from app.errors import LLMError, LLMResponseError, LLMTimeoutError, LLMUnavailableError
from app.llm.base import Completion, GenerationParams, Message, OnDelta, Usage

logger = logging.getLogger(__name__)

# Longest server message quoted in an error (vLLM can echo whole prompts back).
_MAX_MESSAGE_CHARS = 300
# Besides 5xx: request timeout and rate limiting, where another attempt may well succeed.
_RETRYABLE_STATUS = frozenset({408, 429})
_DEFAULT_PARAMS = GenerationParams()
# The SDK's cap on open connections; more concurrent requests wait for one inside the attempt.
_MAX_CONNECTIONS = 1000
# Idle connections are dropped before vLLM's server (uvicorn, 5 s keep-alive) drops them, so a
# request never goes out on a connection the server is closing.
_KEEPALIVE_S = 4.0


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

    def take_usage(self, usage: Any) -> None:
        """Token counts from a usage object (null or absent in most stream chunks)."""
        if isinstance(usage, dict):
            self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.completion_tokens = int(usage.get("completion_tokens") or 0)


class _StatusError(Exception):
    """An HTTP error status and the server's message, quoted."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


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
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._model = model
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_s = backoff_s
        self._closed = False
        self._headers = {"Content-Type": "application/json"}
        # Servers started without --api-key need no header at all.
        self._api_key = api_key or ""
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._http_timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_timeout_s)
        # Looked up once: aiohttp's trust_env would do it per request, in a worker thread.
        self._proxy = _env_proxy(base_url)
        # Made on first use: a session belongs to the running event loop.
        self._session: aiohttp.ClientSession | None = None

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
        request = self._request(messages, regex, params, stream=on_delta is not None)
        body = json.dumps(request).encode()
        attempt = 0
        while True:
            started = time.perf_counter()
            state = _Attempt()
            try:
                async with asyncio.timeout(self._timeout_s):
                    await self._run(body, state, on_delta)
                return self._completion(state, time.perf_counter() - started)
            except _StatusError as exc:
                if exc.status < 500 and exc.status not in _RETRYABLE_STATUS:
                    raise LLMResponseError(
                        f"LLM endpoint {self.endpoint} refused the request "
                        f"(HTTP {exc.status}): {exc.message}"
                    ) from exc
                failure: Exception = exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                failure = exc
            if state.delivered or attempt >= self._retries:
                raise self._final_error(failure, attempt + 1, state) from failure
            attempt += 1
            await self._pause(attempt, failure)

    def _request(
        self, messages: Sequence[Message], regex: str | None, params: GenerationParams, stream: bool
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self._model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
        }
        if params.stop:
            request["stop"] = list(params.stop)
        if regex is not None:
            request["structured_outputs"] = {"regex": regex}
        if stream:
            request["stream"] = True
            request["stream_options"] = {"include_usage": True}
        return request

    def _http(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError(f"LLM client for {self.endpoint} is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=_MAX_CONNECTIONS, keepalive_timeout=_KEEPALIVE_S
                ),
                headers=self._headers,
                timeout=self._http_timeout,
            )
        return self._session

    async def _run(self, body: bytes, state: _Attempt, on_delta: OnDelta | None) -> None:
        async with self._http().post(self._url, data=body, proxy=self._proxy) as response:
            if response.status >= 400:
                message = _server_message(await response.read())
                raise _StatusError(response.status, self._without_key(message))
            if on_delta is not None:
                await self._stream(response, state, on_delta)
                return
            reply = self._decode(await response.read())
        try:
            choice = reply["choices"][0]
            state.parts.append(choice["message"].get("content") or "")
            state.finish_reason = choice.get("finish_reason")
            state.model = reply.get("model") or ""
            state.take_usage(reply.get("usage"))
        except (LookupError, TypeError, AttributeError) as exc:
            raise LLMResponseError(
                f"LLM endpoint {self.endpoint}: reply without choices or message ({exc!r})"
            ) from exc

    async def _stream(
        self, response: aiohttp.ClientResponse, state: _Attempt, on_delta: OnDelta
    ) -> None:
        """Read SSE events, one `data:` line each, sending each piece of text to on_delta.

        Lines are split here, not by the stream reader, so a line may be any length and may
        arrive in any number of pieces (even in the middle of a UTF-8 character).
        """
        pending = b""
        done = False
        # Reading on after [DONE] to the end of the body keeps the connection reusable.
        async for data in response.content.iter_any():
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                if done or not line.startswith(b"data:"):
                    continue  # empty lines end events; ":" starts a comment; event:, id:
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    done = True
                    continue
                text = self._chunk(self._decode(payload), state)
                if text:
                    state.parts.append(text)
                    state.delivered = True
                    await on_delta(text)

    def _chunk(self, chunk: Any, state: _Attempt) -> str:
        """Take one stream chunk's model, finish reason and usage; return its text."""
        try:
            if chunk.get("error"):  # vLLM reports a failure mid-generation in the stream
                raise LLMResponseError(
                    f"LLM endpoint {self.endpoint} refused the request (error): "
                    f"{self._without_key(_error_text(chunk))}"
                )
            state.model = chunk.get("model") or state.model
            # With include_usage the last chunk has the usage and no choices.
            state.take_usage(chunk.get("usage"))
            for choice in chunk.get("choices")[:1]:
                state.finish_reason = choice.get("finish_reason") or state.finish_reason
                return str((choice.get("delta") or {}).get("content") or "")
        except (LookupError, TypeError, AttributeError) as exc:
            raise LLMResponseError(
                f"LLM endpoint {self.endpoint}: malformed stream chunk ({exc!r})"
            ) from exc
        return ""

    def _without_key(self, text: str) -> str:
        """A server's words with our API key masked (some quote a wrong key back): errors
        reach the chain's result, and so its trace."""
        return text.replace(self._api_key, "***") if self._api_key else text

    def _decode(self, data: bytes) -> Any:
        try:
            return json.loads(data)
        except ValueError as exc:
            text = _one_line(data.decode("utf-8", "replace"))
            raise LLMResponseError(f"LLM endpoint {self.endpoint}: not JSON: {text}") from exc

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

    def _final_error(self, failure: Exception, attempts: int, state: _Attempt) -> LLMError:
        if state.delivered:
            how = f"failed mid-stream after {len(''.join(state.parts))} characters, not retried"
        else:
            how = f"failed {attempts} time(s)"
        message = f"LLM endpoint {self.endpoint} {how}; last: {self._describe(failure)}"
        if isinstance(failure, TimeoutError):
            return LLMTimeoutError(message)
        return LLMUnavailableError(message)

    def _describe(self, failure: Exception) -> str:
        """What went wrong, in a few words for a log line."""
        if isinstance(failure, _StatusError):
            return str(failure)
        # aiohttp's own timeouts (connect, socket read) are ClientErrors that say which.
        if isinstance(failure, aiohttp.ClientError):
            return f"{type(failure).__name__}: {_one_line(str(failure)) or 'no details'}"
        return f"no complete answer within {self._timeout_s:g} s"

    async def aclose(self) -> None:
        """Close the connection pool (once; later calls do nothing)."""
        if not self._closed:
            self._closed = True
            if self._session is not None:
                await self._session.close()

    async def __aenter__(self) -> "OpenAICompatClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _env_proxy(url: str) -> str | None:
    """The proxy HTTP(S)_PROXY or ALL_PROXY name for url, unless NO_PROXY exempts its host."""
    parts = urlsplit(url)
    if not parts.hostname or urllib.request.proxy_bypass(parts.hostname):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")


def _server_message(body: bytes) -> str:
    """The server's own error text, on one line and trimmed.

    OpenAI's {"error": {"message": ...}}, vLLM's older flat {"message": ...}, FastAPI's
    {"detail": ...}; anything else is quoted as it came.
    """
    text = body.decode("utf-8", "replace")
    try:
        error = json.loads(text)
    except ValueError:
        return _one_line(text)
    return _error_text(error)


def _error_text(error: Any) -> str:
    """The message of a parsed error body (see _server_message), on one line and trimmed."""
    text = json.dumps(error)
    if isinstance(error, dict) and error.get("error"):
        error = error["error"]
    if isinstance(error, dict):
        found = error.get("message") or error.get("detail")
        text = found if isinstance(found, str) else json.dumps(found or error)
    elif isinstance(error, str):
        text = error
    return _one_line(text)


def _one_line(text: str) -> str:
    """Text with its whitespace runs collapsed to one space, trimmed to _MAX_MESSAGE_CHARS."""
    text = " ".join(text.split())
    if len(text) > _MAX_MESSAGE_CHARS:
        text = text[: _MAX_MESSAGE_CHARS - 1] + "…"
    return text
