"""Which client each step uses, and a fallback endpoint behind a simple circuit breaker."""

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from pydantic import SecretStr

from app.errors import LLMTimeoutError, LLMUnavailableError
from app.llm.base import Completion, GenerationParams, LLMClient, Message, OnDelta
from app.llm.openai_compat import OpenAICompatClient
from app.settings import STEPS, LLMSettings
from kb.errors import ConfigurationError

logger = logging.getLogger(__name__)

_DEFAULT_PARAMS = GenerationParams()


class FallbackClient:
    """A primary client and an optional fallback that gets the request when the primary fails.

    Only LLMTimeoutError and LLMUnavailableError (raised after the primary's own retries) move
    a request to the fallback; a refused request (LLMResponseError) would be refused there too.
    After failure_threshold consecutive failures the primary is skipped for cooldown_s, so
    users do not wait for its timeouts; the first request after that tries it again. Without a
    fallback every request simply goes to the primary.
    """

    def __init__(
        self,
        primary: LLMClient,
        fallback: LLMClient | None = None,
        *,
        failure_threshold: int = 3,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self._threshold = failure_threshold
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._skip_until = 0.0
        # Told "primary_failed" and "fallback" as they happen (app/ops/metrics.py counts them).
        self.on_event: Callable[[str], None] | None = None

    @property
    def model(self) -> str:
        """The primary's model (Completion.model tells which one answered)."""
        return self.primary.model

    @property
    def parallel(self) -> bool:
        """True only when both clients run concurrent requests concurrently."""
        return self.primary.parallel and (self.fallback is None or self.fallback.parallel)

    @property
    def primary_skipped(self) -> bool:
        """The circuit is open: requests go straight to the fallback."""
        return self.fallback is not None and self._clock() < self._skip_until

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        regex: str | None = None,
        params: GenerationParams = _DEFAULT_PARAMS,
        on_delta: OnDelta | None = None,
    ) -> Completion:
        """Ask the primary, or the fallback when the primary fails or is being skipped.

        A primary that fails after streaming text raises as is: the fallback would send the
        caller's on_delta the beginning of the answer a second time.
        """
        if self.fallback is None:
            return await self.primary.complete(
                messages, regex=regex, params=params, on_delta=on_delta
            )
        if self.primary_skipped:
            self._tell("fallback")
            return await self.fallback.complete(
                messages, regex=regex, params=params, on_delta=on_delta
            )
        streamed = False

        async def tracking(text: str) -> None:
            nonlocal streamed
            streamed = True
            if on_delta is not None:
                await on_delta(text)

        try:
            completion = await self.primary.complete(
                messages, regex=regex, params=params, on_delta=tracking if on_delta else None
            )
        except (LLMTimeoutError, LLMUnavailableError) as exc:
            self._primary_failed(exc)
            if streamed:
                raise
            self._tell("fallback")
            return await self.fallback.complete(
                messages, regex=regex, params=params, on_delta=on_delta
            )
        self._primary_succeeded()
        return completion

    def _tell(self, event: str) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def _primary_failed(self, exc: Exception) -> None:
        self._tell("primary_failed")
        self._failures += 1
        if self._failures >= self._threshold:
            self._skip_until = self._clock() + self._cooldown_s
            logger.warning(
                "LLM primary %s failed %s times in a row (%s); using fallback %s for %s s",
                _name(self.primary),
                self._failures,
                exc,
                _name(self.fallback),
                self._cooldown_s,
            )
        else:
            logger.warning(
                "LLM primary %s failed (%s); this request goes to fallback %s",
                _name(self.primary),
                exc,
                _name(self.fallback),
            )

    def _primary_succeeded(self) -> None:
        if self._failures >= self._threshold:
            logger.info(
                "LLM primary %s answers again; fallback no longer used", _name(self.primary)
            )
        self._failures = 0

    async def aclose(self) -> None:
        """Close the primary and the fallback."""
        for client in _members(self):
            await client.aclose()


def build_llm_clients(
    settings: LLMSettings,
    embedded: Callable[[], LLMClient],
    *,
    failure_threshold: int = 3,
    cooldown_s: float = 30.0,
) -> dict[str, LLMClient]:
    """The client of each step of app.settings.STEPS.

    A step's LLM_<STEP>_BASE_URL, _MODEL and _API_KEY each override the main one; steps that
    end up with the same endpoint, model and key share one client. Steps without any server
    (LLM_BASE_URL and their own unset) share one embedded() client, created at most once.
    With LLM_FALLBACK_BASE_URL every client is wrapped in a FallbackClient (one per distinct
    client, so each primary has one circuit breaker) around one shared fallback client.
    """
    servers: dict[tuple[str, str, str], LLMClient] = {}
    local: LLMClient | None = None

    def server(base_url: str, model: str, key: SecretStr | None) -> LLMClient:
        api_key = key.get_secret_value() if key else ""
        identity = (base_url.rstrip("/"), model, api_key)
        if identity not in servers:
            servers[identity] = _server_client(settings, base_url, model, api_key)
        return servers[identity]

    clients: dict[str, LLMClient] = {}
    for step in STEPS:
        base_url = getattr(settings, f"{step}_base_url") or settings.base_url
        if base_url is None:
            if local is None:
                local = embedded()
            clients[step] = local
            continue
        model = getattr(settings, f"{step}_model") or settings.model
        if not model:
            raise ConfigurationError(
                f"LLM_{step.upper()}_MODEL or LLM_MODEL must name the served model"
            )
        key = getattr(settings, f"{step}_api_key") or settings.api_key
        clients[step] = server(base_url, model, key)
    if settings.fallback_base_url is None:
        return clients
    fallback = server(
        settings.fallback_base_url,
        settings.fallback_model or settings.model,
        settings.fallback_api_key,
    )
    wrapped: dict[int, LLMClient] = {}
    for step, client in clients.items():
        if id(client) not in wrapped:
            wrapped[id(client)] = FallbackClient(
                client, fallback, failure_threshold=failure_threshold, cooldown_s=cooldown_s
            )
        clients[step] = wrapped[id(client)]
    return clients


async def aclose_all(clients: Mapping[str, LLMClient] | Iterable[LLMClient]) -> None:
    """Close every distinct client once, also those shared by several steps or wrappers.

    All are closed even when one fails; the first failure is raised at the end.
    """
    values = clients.values() if isinstance(clients, Mapping) else clients
    distinct: dict[int, LLMClient] = {}
    for client in values:
        for member in _members(client):
            distinct.setdefault(id(member), member)
    failures: list[Exception] = []
    for client in distinct.values():
        try:
            await client.aclose()
        except Exception as exc:  # the others still need closing; raised below
            logger.exception("closing LLM client %s failed", _name(client))
            failures.append(exc)
    if failures:
        raise failures[0]


def _members(client: LLMClient) -> list[LLMClient]:
    """The clients a FallbackClient is made of (recursively), or the client itself."""
    if not isinstance(client, FallbackClient):
        return [client]
    inner = [client.primary] if client.fallback is None else [client.primary, client.fallback]
    return [leaf for part in inner for leaf in _members(part)]


def _server_client(settings: LLMSettings, base_url: str, model: str, key: str) -> LLMClient:
    return OpenAICompatClient(
        base_url=base_url,
        model=model,
        api_key=key or None,
        connect_timeout_s=settings.connect_timeout_s,
        timeout_s=settings.timeout_s,
        retries=settings.retries,
        backoff_s=settings.backoff_s,
    )


def _name(client: LLMClient | None) -> str:
    """Endpoint and model for a log line (no key)."""
    if client is None:
        return "(none)"
    endpoint = getattr(client, "endpoint", None)
    return f"{client.model}@{endpoint}" if endpoint else client.model
