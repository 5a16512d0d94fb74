"""Plain text: decoding bytes of unknown encoding, and paragraphs of a .txt file."""

import codecs
import re
from pathlib import PureWindowsPath

from charset_normalizer import from_bytes

from ingestion.errors import UnreadableDocumentError
from ingestion.readers.base import ParsedDocument, Section

# Longest BOMs first: the UTF-32-LE BOM begins with the UTF-16-LE one.
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Legacy encodings most files here come in (Russian and Western Windows/Unix). Detection on short
# text is ambiguous, so these win ties against exotic code pages that decode the bytes as well.
_PREFERRED = ("cp1251", "koi8_r", "cp1252")
_CHAOS_SLACK = 0.15
_COHERENCE_SLACK = 0.15
# Real text has almost no control characters; binary data decoded as text is full of them.
_MAX_CONTROL_RATIO = 0.1
# C0 and C1 controls except \t \n \v \f \r, and the replacement character of failed decodes.
_CONTROLS = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f\ufffd]")
_DETECT_BYTES = 256 * 1024
_ODDNESS_CHARS = 20_000
_UNDETECTABLE = "cannot detect the text encoding (binary file or unknown encoding?)"
_MAX_TITLE_CHARS = 120
_BLANK_LINES = re.compile(r"\n\n+")
_WORD = re.compile(r"[^\W\d_]+")


def decode_text(data: bytes) -> str:
    """Decode text bytes: BOM, else strict UTF-8, else a detected legacy encoding.

    Raises UnreadableDocumentError for binary data or an encoding that cannot be detected.
    """
    text = _decode(data)
    if _looks_binary(text):
        raise UnreadableDocumentError(_UNDETECTABLE)
    return text


def _decode(data: bytes) -> str:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                # A UTF-16 text starting with U+0000 looks like a UTF-32 BOM; try the shorter BOMs.
                continue
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    # Detection is slow on megabytes and a sample is as telling; cut it at a line end so a
    # multi-byte character is not split.
    sample = data[:_DETECT_BYTES]
    if len(data) > _DETECT_BYTES and b"\n" in sample:
        sample = sample[: sample.rindex(b"\n") + 1]
    detected = _best_encoding(sample)
    if detected is None:
        raise UnreadableDocumentError(_UNDETECTABLE)
    # Bytes past the sample that do not fit become U+FFFD, which the binary check counts.
    return data.decode(detected, errors="replace")


def _best_encoding(data: bytes) -> str | None:
    """Pick the most plausible encoding among charset_normalizer's near-equal candidates."""
    candidates = [*from_bytes(data), *from_bytes(data, cp_isolation=list(_PREFERRED))]
    if not candidates:
        return None
    least_chaos = min(m.chaos for m in candidates)
    calm = [m for m in candidates if m.chaos <= least_chaos + _CHAOS_SLACK]
    # Language coherence misleads on short text (a Mac code page turning letters into symbols
    # can score higher than the right one), so only a clear lead in it counts.
    most_coherent = max(m.coherence for m in calm)
    close = [m for m in calm if m.coherence >= most_coherent - _COHERENCE_SLACK]
    best = min(close, key=lambda m: (_oddness(str(m)), _preference(m.encoding), -m.coherence))
    return str(best.encoding)


def _preference(encoding: str) -> int:
    return _PREFERRED.index(encoding) if encoding in _PREFERRED else len(_PREFERRED)


def _oddness(text: str) -> float:
    """Share of letters that hint at a wrong code page, rounded so only clear signs count.

    KOI8-R read as CP1251 (or the reverse) swaps the case of Cyrillic letters, leaving capitals
    inside words; Latin-1 read as CP1251 mixes Cyrillic letters into Latin words.
    """
    letters = odd = 0
    for word in _WORD.findall(text[:_ODDNESS_CHARS]):
        letters += len(word)
        has_latin = any(_is_latin(c) for c in word)
        has_cyrillic = any("\u0400" <= c <= "\u04ff" for c in word)
        if has_latin and has_cyrillic:
            odd += len(word)
        else:
            odd += sum(1 for c in word[1:] if c.isupper())
    return round(odd / letters, 1) if letters else 0.0


def _is_latin(char: str) -> bool:
    return "a" <= char.lower() <= "z" or "\u00c0" <= char <= "\u024f"


def _looks_binary(text: str) -> bool:
    if not text:
        return False
    return len(_CONTROLS.findall(text)) / len(text) > _MAX_CONTROL_RATIO


def read_text(name: str, text: str) -> ParsedDocument:
    """Parse plain text into one section of paragraphs; the title is a short first line."""
    lines = (line.rstrip() for line in normalize_newlines(text).replace("\x00", "").split("\n"))
    blocks = _BLANK_LINES.split("\n".join(lines))
    body = "\n\n".join(block.strip("\n") for block in blocks if block.strip())
    title = _title_line(body) or fallback_title(name)
    sections = [Section(heading_path=(), text=body)] if body else []
    return ParsedDocument(title=title, sections=sections)


def normalize_newlines(text: str) -> str:
    """Turn CRLF, CR and form feeds into plain newlines."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n\n")


def _title_line(body: str) -> str | None:
    first = body.lstrip().split("\n", 1)[0].strip()
    # A sentence-like first line (trailing comma, period...) is the start of the text, not a title.
    if 0 < len(first) < _MAX_TITLE_CHARS and first[-1] not in ".,;:" and _has_letters(first):
        return first
    return None


def _has_letters(text: str) -> bool:
    return any(char.isalpha() for char in text)


def fallback_title(name: str) -> str:
    """The file name without directories and extension: the title of last resort."""
    # PureWindowsPath splits on both / and \, whichever the uploader's OS used.
    stem = PureWindowsPath(name).stem.strip()
    return stem or name.strip() or "untitled"
