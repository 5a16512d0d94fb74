"""Decoding pieces of the embedded client: token bytes, regexes as llguidance grammars and
logit masks, and sampled bytes turned into streamed text."""

import codecs
import ctypes
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import llama_cpp
import llguidance
import llguidance.numpy
import numpy as np
import numpy.typing as npt

from app.errors import LLMResponseError


def piece(vocab: llama_cpp.llama_vocab_p, token: int) -> bytes:
    """The bytes of one token; control tokens (end of turn, ...) have none."""
    buf = ctypes.create_string_buffer(64)
    n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, False)
    if n < 0:  # the piece is longer than the buffer: -n is its length
        buf = ctypes.create_string_buffer(-n)
        n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, False)
    return buf.raw[:n]


def regex_grammar(regex: str) -> str:
    """The llguidance grammar of a full-match regex; LLMResponseError if either Python's re or
    llguidance (Rust regex syntax: no lookarounds, no backreferences) rejects it."""
    try:
        re.compile(regex)
    except re.error as exc:
        raise LLMResponseError(f"invalid regex {regex!r}: {exc}") from exc
    grammar = llguidance.LLMatcher.grammar_from_regex(regex)
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        raise LLMResponseError(f"llguidance cannot enforce the regex {regex!r}: {messages[0]}")
    return grammar


def mask_logits(
    matcher: llguidance.LLMatcher, tokenizer: llguidance.LLTokenizer
) -> llama_cpp.LogitsProcessor:
    bitmask = llguidance.numpy.allocate_token_bitmask(1, tokenizer.vocab_size)

    def process(
        input_ids: npt.NDArray[np.intc], logits: npt.NDArray[np.single]
    ) -> npt.NDArray[np.single]:
        # The matcher already holds every sampled token: the decode loop feeds it each one
        # before llama.cpp evaluates it and samples the next.
        llguidance.numpy.fill_next_token_bitmask(matcher, bitmask)
        llguidance.numpy.apply_token_bitmask_inplace(logits, bitmask)
        return logits

    return process


@dataclass(slots=True)
class TextOutput:
    """Sampled bytes to text: whole UTF-8 characters only (a Cyrillic letter may span two
    tokens), cut before the first stop string, which is never streamed even in part."""

    stops: tuple[str, ...]
    sink: Callable[[str], None]
    text: str = ""
    _pending: str = ""
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace")
    )

    def feed(self, data: bytes) -> bool:
        """Add a token's bytes; True when a stop string ended the output."""
        self._pending += self._decoder.decode(data)
        hits = [i for stop in self.stops if (i := self._pending.find(stop)) >= 0]
        if hits:
            self._emit(self._pending[: min(hits)])
            self._pending = ""
            return True
        # A tail that may still grow into a stop string waits for the next token.
        held = max(
            (k for s in self.stops for k in range(1, len(s)) if self._pending.endswith(s[:k])),
            default=0,
        )
        cut = len(self._pending) - held
        self._emit(self._pending[:cut])
        self._pending = self._pending[cut:]
        return False

    def finish(self) -> None:
        """Flush the held tail; bytes of an unfinished character are dropped."""
        self._emit(self._pending)
        self._pending = ""

    def _emit(self, piece: str) -> None:
        if piece:
            self.text += piece
            self.sink(piece)
