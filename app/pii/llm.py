"""PII_MASK=traces+llm: an LLM client that sends masked messages and restores the values in
what comes back, streamed pieces included, so the user sees the real phone number while the
endpoint (a fallback outside the company) only ever saw [PHONE_1]."""

import asyncio
import re
from collections.abc import Sequence
from dataclasses import replace

from app.llm.base import (
    Completion,
    GenerationParams,
    LLMClient,
    Message,
    OnDelta,
    WrappedLLM,
)
from app.pii.masker import Masker

# A piece that ends inside a possible placeholder is held back until the placeholder closes.
_OPEN_TAIL = re.compile(r"\[[A-Z_0-9]{0,20}$")


class MaskingLLM(WrappedLLM):
    """Wraps any LLMClient; the mask of one call covers all of its messages."""

    def __init__(self, inner: LLMClient, masker: Masker) -> None:
        super().__init__(inner)
        self._masker = masker

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        regex: str | None = None,
        params: GenerationParams = GenerationParams(),
        on_delta: OnDelta | None = None,
    ) -> Completion:
        """Mask the messages (off the event loop), call the LLM, unmask its text."""
        masked, mapping = await asyncio.to_thread(self._mask_all, messages)
        if not mapping:
            return await self._inner.complete(
                messages, regex=regex, params=params, on_delta=on_delta
            )
        relay = _Unmasking(on_delta, mapping) if on_delta is not None else None
        completion = await self._inner.complete(
            masked, regex=regex, params=params, on_delta=relay.feed if relay else None
        )
        if relay is not None:
            await relay.flush()
        return replace(completion, text=Masker.unmask(completion.text, mapping))

    def _mask_all(self, messages: Sequence[Message]) -> tuple[list[Message], dict[str, str]]:
        mapping: dict[str, str] = {}
        masked = []
        for message in messages:
            content, mapping = self._masker.mask(message.content, mapping)
            masked.append(replace(message, content=content))
        return masked, mapping


class _Unmasking:
    """Passes streamed pieces on with placeholders restored, holding back a split one."""

    def __init__(self, on_delta: OnDelta, mapping: dict[str, str]) -> None:
        self._on_delta = on_delta
        self._mapping = mapping
        self._held = ""

    async def feed(self, piece: str) -> None:
        text = self._held + piece
        tail = _OPEN_TAIL.search(text)
        cut = tail.start() if tail else len(text)
        self._held = text[cut:]
        if cut:
            await self._on_delta(Masker.unmask(text[:cut], self._mapping))

    async def flush(self) -> None:
        if self._held:
            held, self._held = self._held, ""
            await self._on_delta(Masker.unmask(held, self._mapping))
