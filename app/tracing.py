"""Langfuse tracing: one trace per chain run, one span per step, one generation per LLM call.

Off (no client, no cost beyond a function call) unless the Langfuse keys are set. The SDK
exports spans and scores from background threads in batches, so a slow or unreachable
Langfuse never delays an answer: nothing here flushes on the request path.
"""

import hashlib
import logging
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from langfuse import Langfuse, propagate_attributes
from langfuse.model import PromptClient

from app.llm.base import Completion
from app.settings import LangfuseSettings, PiiSettings

if TYPE_CHECKING:
    from app.pii import Masker

log = logging.getLogger(__name__)


def trace_id_for(run_key: str) -> str:
    """The trace id of a run, derived from the caller's own ids (the same value as Langfuse's
    `create_trace_id(seed=run_key)`), so feedback can find its trace with no extra storage."""
    return hashlib.sha256(run_key.encode("utf-8")).hexdigest()[:32]


class Observation:
    """A span or generation that may be recorded; all methods are no-ops when tracing is off."""

    __slots__ = ("_span",)

    def __init__(self, span: Any = None) -> None:
        self._span = span

    def update(self, **fields: Any) -> None:
        """Set output, metadata, level, status_message... on the observation."""
        if self._span is not None:
            self._span.update(**fields)

    def record_completion(self, completion: Completion) -> None:
        """Model, token usage and output of an LLM call."""
        if self._span is not None:
            self._span.update(
                output=completion.text,
                model=completion.model,
                usage_details={
                    "input": completion.usage.prompt_tokens,
                    "output": completion.usage.completion_tokens,
                },
                metadata={"finish_reason": completion.finish_reason},
            )

    def fail(self, error: BaseException) -> None:
        """Mark the observation as failed, with the error's type and message."""
        self.update(level="ERROR", status_message=f"{type(error).__name__}: {error}")


_OFF = Observation()


def pii_client_options(masker: "Masker | None") -> dict[str, Any]:
    """Options of a Langfuse client that mask every span it exports (none without a masker)."""
    if masker is None:
        return {}
    from app.pii.traces import otel_span_masker

    return {"mask_otel_spans": otel_span_masker(masker)}


class Tracer:
    """Creates the observations of chain runs and records feedback scores."""

    def __init__(
        self,
        langfuse: Langfuse | None,
        masker: "Masker | None" = None,
        *,
        base_url: str | None = None,
    ) -> None:
        self._langfuse = langfuse
        # Langfuse's web address, for links to traces (cards of the knowledge loop).
        self._base_url = base_url.rstrip("/") if base_url else None
        # Masks what the client sends outside spans (score comments); spans are masked by
        # the client's own export hook (pii_client_options).
        self._masker = masker

    @classmethod
    def from_settings(
        cls,
        settings: LangfuseSettings,
        pii: PiiSettings | None = None,
        masker: "Masker | None" = None,
    ) -> "Tracer":
        """A tracer on a Langfuse client when both keys are set, otherwise one that is off.
        Unless PII_MASK=off, everything it exports is masked (a Masker is made if not given)."""
        if not settings.enabled or settings.secret_key is None:
            return cls(None)
        pii = pii if pii is not None else PiiSettings()
        if pii.traces and masker is None:
            from app.pii import Masker

            masker = Masker()
        masker = masker if pii.traces else None
        client = Langfuse(
            public_key=settings.public_key,
            secret_key=settings.secret_key.get_secret_value(),
            base_url=settings.base_url,
            environment=settings.environment,
            **pii_client_options(masker),
        )
        return cls(client, masker, base_url=settings.base_url)

    @property
    def enabled(self) -> bool:
        """Whether anything is recorded."""
        return self._langfuse is not None

    def trace_url(self, trace_id: str | None) -> str | None:
        """A link to a trace in Langfuse (None when tracing is off or there is no trace);
        Langfuse's /trace/<id> page opens it in its project."""
        if self._langfuse is None or self._base_url is None or not trace_id:
            return None
        return f"{self._base_url}/trace/{trace_id}"

    @property
    def langfuse(self) -> Langfuse | None:
        """The client (for prompt management), or None when tracing is off."""
        return self._langfuse

    @contextmanager
    def run(
        self,
        *,
        trace_id: str,
        name: str,
        input: Any,
        user_id: str | None = None,
        session_id: str | None = None,
        tags: list[str] | None = None,
    ) -> Iterator[Observation]:
        """The root observation of one chain run; its trace has the given id."""
        if self._langfuse is None:
            yield _OFF
            return
        with (
            self._langfuse.start_as_current_observation(
                name=name, as_type="chain", input=input, trace_context={"trace_id": trace_id}
            ) as span,
            propagate_attributes(
                user_id=user_id, session_id=session_id, tags=tags, trace_name=name
            ),
        ):
            yield Observation(span)

    def step(self, name: str, input: Any) -> AbstractContextManager[Observation]:
        """A span for one chain step, inside the current run."""
        if self._langfuse is None:
            return nullcontext(_OFF)
        return self._observe(name, "span", input=input)

    def generation(
        self,
        name: str,
        *,
        input: Any,
        model: str,
        params: Mapping[str, Any],
        prompt: PromptClient | None,
        prompt_version: str,
        prompt_variant: str | None = None,
    ) -> AbstractContextManager[Observation]:
        """A generation for one LLM call, inside the current step's span; the prompt's
        variant (its label, prompt A/B) goes into the metadata beside its version."""
        if self._langfuse is None:
            return nullcontext(_OFF)
        return self._observe(
            name,
            "generation",
            input=input,
            model=model,
            model_parameters=dict(params),
            prompt=prompt,
            metadata={
                "prompt_name": name,
                "prompt_version": prompt_version,
                "prompt_variant": prompt_variant,
            },
        )

    @contextmanager
    def _observe(self, name: str, as_type: Any, **fields: Any) -> Iterator[Observation]:
        assert self._langfuse is not None
        with self._langfuse.start_as_current_observation(
            name=name, as_type=as_type, **fields
        ) as span:
            yield Observation(span)

    def score(
        self,
        trace_id: str,
        name: str,
        value: float,
        comment: str | None = None,
        *,
        boolean: bool = False,
        score_id: str | None = None,
    ) -> None:
        """Record a score (feedback) on a trace; queued, sent in the background. The same
        score_id again updates that score (a comment added after the thumbs-down)."""
        if self._langfuse is None:
            return
        if comment and self._masker is not None:
            comment = self._masker.redact(comment)
        self._langfuse.create_score(
            name=name,
            value=value,
            trace_id=trace_id,
            comment=comment,
            score_id=score_id,
            data_type="BOOLEAN" if boolean else "NUMERIC",
        )

    def flush(self) -> None:
        """Send what is queued (at shutdown or in tests; never per request)."""
        if self._langfuse is not None:
            self._langfuse.flush()

    def shutdown(self) -> None:
        """Flush and stop the background exporters."""
        if self._langfuse is not None:
            self._langfuse.shutdown()
