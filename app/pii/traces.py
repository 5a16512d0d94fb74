"""The Langfuse export hook: every span this client sends passes through it, whatever code
made the span, so no path can forget to mask. It runs on the exporter's background thread,
not on the request path; if it failed, the SDK would drop the batch rather than send it."""

import json
import logging
from collections.abc import Callable

from langfuse.types import (
    AttributeValue,
    MaskOtelSpansParams,
    MaskOtelSpansResult,
    OtelSpanPatch,
)

from app.pii.masker import Masker

log = logging.getLogger(__name__)

# Attributes that carry text of users, documents or the LLM (model parameters too: they hold
# the regex, and the reply whose likelihood is scored, which is the user's question). Ids
# (user, session, trace), model names and types are left alone: a user id looks like a phone.
_TEXT_SUFFIXES = (
    ".input",
    ".output",
    ".status_message",
    ".expected_output",
    ".tags",
    ".model.parameters",
)
_TEXT_INFIXES = (".metadata",)
FAILED = "[PII masking failed]"

OtelMask = Callable[..., MaskOtelSpansResult | None]


def _is_text(key: str) -> bool:
    return key.endswith(_TEXT_SUFFIXES) or any(part in key for part in _TEXT_INFIXES)


def mask_attribute(masker: Masker, value: str) -> str:
    """One attribute value: JSON (how the SDK stores input, output, metadata) has its strings
    masked and is encoded again; any other text is masked as it is."""
    try:
        data = json.loads(value)
    except json.JSONDecodeError:
        return masker.redact(value)
    if isinstance(data, str | list | dict):
        return json.dumps(masker.redact_data(data), ensure_ascii=False)
    return value


def otel_span_masker(masker: Masker) -> OtelMask:
    """The `mask_otel_spans` hook of a Langfuse client, masking with this masker."""

    def mask_otel_spans(*, params: MaskOtelSpansParams) -> MaskOtelSpansResult:
        patches = {}
        for identifier, span in params.spans.items():
            updates: dict[str, AttributeValue] = {}
            for key, value in span.attributes.items():
                if not _is_text(key):
                    continue
                try:
                    masked = _mask_value(masker, value)
                except Exception:  # one bad value must not cost the whole batch its traces
                    log.exception("masking attribute %s of span %s failed", key, span.name)
                    masked = FAILED
                if masked != value:
                    updates[key] = masked
            if updates:
                patches[identifier] = OtelSpanPatch(set_attributes=updates)
        return MaskOtelSpansResult(span_patches=patches)

    return mask_otel_spans


def _mask_value(masker: Masker, value: AttributeValue) -> AttributeValue:
    if isinstance(value, str):
        return mask_attribute(masker, value)
    if isinstance(value, tuple | list) and all(isinstance(v, str) for v in value):
        return tuple(masker.redact(str(v)) for v in value)
    return value
