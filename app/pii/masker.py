"""Masking with placeholders: `mask` finds personal data (Presidio analyzer, natasha) and lets
Presidio's anonymizer resolve overlaps and replace each value by [LABEL_n]; `unmask` puts the
values back. The analyzer is built once, on first use or by `load()`."""

import re
import threading
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from itertools import accumulate
from typing import Any

from presidio_analyzer import AnalyzerEngine
from presidio_anonymizer import AnonymizerEngine, ConflictResolutionStrategy
from presidio_anonymizer.entities import OperatorConfig
from presidio_anonymizer.entities import RecognizerResult as Span

from app.pii.engine import analyze, build_analyzer
from app.pii.recognizers import LABELS

Found = tuple[tuple[str, int, int, float], ...]

_PLACEHOLDER = re.compile(r"\[(" + "|".join(sorted(set(LABELS.values()))) + r")_(\d+)\]")
_TOKEN = re.compile("\ue000(\\d+)\ue001")
# Phones and identifiers have digits, e-mail an @, names a Cyrillic capital: a line with none
# of them is not analysed at all (most lines of a document).
_MAYBE = re.compile(r"[\d@А-ЯЁ]")
# Lines longer than this are analysed in pieces of about this size, cut at spaces.
_PIECE = 2000


class Masker:
    """Finds personal data and replaces it with numbered placeholders; thread-safe."""

    def __init__(self, analyzer: AnalyzerEngine | None = None, cache_size: int = 8192) -> None:
        self._analyzer = analyzer
        self._lock = threading.Lock()
        self._anonymizer = AnonymizerEngine()  # type: ignore[no-untyped-call]
        # The same lines come back often (a question in several spans, passages in every
        # step's prompt): what was found in a line is remembered.
        self._cache = _LineCache(cache_size)

    def load(self) -> "Masker":
        """Build the analyzer now (about 2 s with natasha) rather than on the first text."""
        if self._analyzer is None:
            with self._lock:
                if self._analyzer is None:
                    self._analyzer = build_analyzer()
        return self

    def find(self, text: str) -> list[Span]:
        """Every personal-data match in the text (overlaps not yet resolved). Lines not seen
        before are analysed together, a few thousand characters per call (each call of the
        analyzer costs milliseconds of its own), and remembered one by one."""
        units: list[tuple[int, str]] = []
        offset = 0
        for line in text.splitlines(keepends=True):
            for piece in _pieces(line):
                if _MAYBE.search(piece):
                    units.append((offset, piece))
                offset += len(piece)
        known = {piece: self._cache.get(piece) for _, piece in units}
        missing = [piece for piece, found in known.items() if found is None]
        for batch in _batches(missing):
            known.update(self._analyze_lines(batch))
        return [
            Span(kind, offset + start, offset + end, score)
            for offset, piece in units
            for kind, start, end, score in known[piece] or ()
        ]

    def mask(
        self, text: str, mapping: Mapping[str, str] | None = None
    ) -> tuple[str, dict[str, str]]:
        """The text with each value replaced by [LABEL_n], and placeholder -> value. With a
        mapping (of earlier messages), its placeholders are reused and extended."""
        found = self.find(text)
        merged = dict(mapping or {})
        if not found:
            return text, merged
        # The anonymizer resolves overlaps and replaces from the end of the text; values get
        # a temporary token first and their numbers afterwards, in order of appearance.
        values: list[tuple[str, str]] = []

        def replacer(label: str) -> Callable[[str], str]:
            def replace(value: str) -> str:
                values.append((label, value))
                return f"\ue000{len(values) - 1}\ue001"

            return replace

        operators = {
            kind: OperatorConfig("custom", {"lambda": replacer(label)})
            for kind, label in LABELS.items()
        }
        tokens = self._anonymizer.anonymize(
            text=text,
            analyzer_results=found,
            operators=operators,
            conflict_resolution=ConflictResolutionStrategy.REMOVE_INTERSECTIONS,
        ).text
        by_value = {(_label_of(p), v): p for p, v in merged.items()}
        counts: dict[str, int] = {}
        for placeholder in merged:
            label = _label_of(placeholder)
            counts[label] = max(counts.get(label, 0), _number_of(placeholder))

        def number(match: re.Match[str]) -> str:
            key = values[int(match[1])]
            if key not in by_value:
                counts[key[0]] = counts.get(key[0], 0) + 1
                by_value[key] = f"[{key[0]}_{counts[key[0]]}]"
                merged[by_value[key]] = key[1]
            return by_value[key]

        return _TOKEN.sub(number, tokens), merged

    def redact(self, text: str) -> str:
        """The text masked, for traces and logs (the values are not kept)."""
        return self.mask(text)[0]

    def redact_data(self, data: Any) -> Any:
        """Strings inside JSON-like data (dicts, lists, tuples) redacted; the rest as is."""
        if isinstance(data, str):
            return self.redact(data)
        if isinstance(data, Mapping):
            return {key: self.redact_data(value) for key, value in data.items()}
        if isinstance(data, list | tuple):
            return [self.redact_data(value) for value in data]
        return data

    @staticmethod
    def unmask(text: str, mapping: Mapping[str, str]) -> str:
        """Placeholders of the mapping replaced by their values (others left as they are)."""
        if not mapping:
            return text
        return _PLACEHOLDER.sub(lambda m: mapping.get(m[0], m[0]), text)

    def _analyze_lines(self, lines: list[str]) -> dict[str, Found]:
        """Analyse lines as one text; each line's matches (clipped to it), remembered."""
        analyzer = self.load()._analyzer
        assert analyzer is not None
        cores = [line.rstrip("\r\n") for line in lines]
        starts = list(accumulate((len(core) + 1 for core in cores[:-1]), initial=0))
        found: dict[str, list[tuple[str, int, int, float]]] = {line: [] for line in lines}
        for result in analyze(analyzer, "\n".join(cores)):
            i = bisect_right(starts, result.start) - 1
            end = min(result.end, starts[i] + len(cores[i]))
            if end > result.start:
                start = result.start - starts[i]
                found[lines[i]].append((result.entity_type, start, end - starts[i], result.score))
        for line, matches in found.items():
            self._cache.put(line, tuple(matches))
        return {line: tuple(matches) for line, matches in found.items()}


class _LineCache:
    """What was found per line, the least recently used forgotten first; thread-safe."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[str, Found] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, line: str) -> Found | None:
        with self._lock:
            found = self._data.get(line)
            if found is not None:
                self._data.move_to_end(line)
            return found

    def put(self, line: str, found: Found) -> None:
        with self._lock:
            self._data[line] = found
            self._data.move_to_end(line)
            while len(self._data) > self._size:
                self._data.popitem(last=False)


def _batches(lines: list[str]) -> Iterator[list[str]]:
    """Consecutive lines, about _PIECE characters at a time."""
    batch: list[str] = []
    size = 0
    for line in lines:
        if batch and size + len(line) > _PIECE:
            yield batch
            batch, size = [], 0
        batch.append(line)
        size += len(line)
    if batch:
        yield batch


def _label_of(placeholder: str) -> str:
    match = _PLACEHOLDER.fullmatch(placeholder)
    return match[1] if match else placeholder


def _number_of(placeholder: str) -> int:
    match = _PLACEHOLDER.fullmatch(placeholder)
    return int(match[2]) if match else 0


def _pieces(line: str) -> list[str]:
    """A long line cut at spaces into pieces of about _PIECE characters."""
    if len(line) <= _PIECE:
        return [line]
    pieces, start = [], 0
    while start < len(line):
        end = min(len(line), start + _PIECE)
        if end < len(line):
            space = line.rfind(" ", start + _PIECE // 2, end)
            end = space + 1 if space > 0 else end
        pieces.append(line[start:end])
        start = end
    return pieces
