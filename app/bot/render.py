"""Chain results as Telegram HTML messages, split at Telegram's length limit."""

import html
from collections.abc import Sequence

from app.chain.types import ChainResult, ResultKind, SourceRef

# Telegram's limit is 4096 characters of text after entity parsing; escaped HTML is longer
# than what it shows, so pieces are measured escaped, with room to spare.
LIMIT = 4000
_SOURCES = {"en": "Sources", "ru": "Источники"}


def sources_block(sources: Sequence[SourceRef], language: str) -> str:
    """ "Sources:" and one line per cited document, linked when it has a URL."""
    if not sources:
        return ""
    lines = [f"<b>{_SOURCES.get(language, _SOURCES['en'])}:</b>"]
    for source in sources:
        title = html.escape(source.title)
        if source.url:
            title = f'<a href="{html.escape(source.url, quote=True)}">{title}</a>'
        lines.append(f"[{source.n}] {title}")
    return "\n".join(lines)


def split_text(text: str, limit: int = LIMIT) -> list[str]:
    """Plain text cut into pieces whose escaped HTML fits the limit, at paragraph, line or
    word boundaries where possible; each piece is returned escaped, so no tag or entity is
    ever cut."""
    pieces: list[str] = []
    rest = text.strip()
    while rest:
        if len(html.escape(rest)) <= limit:
            pieces.append(html.escape(rest))
            break
        cut = _cut(rest, limit)
        pieces.append(html.escape(rest[:cut].rstrip()))
        rest = rest[cut:].lstrip()
    return pieces or [""]


def _cut(text: str, limit: int) -> int:
    # The longest prefix whose escaped form fits (escaping at most multiplies length by 6).
    end = min(len(text), limit)
    while end > limit // 6 and len(html.escape(text[:end])) > limit:
        end -= max(1, (len(html.escape(text[:end])) - limit) // 6)
    for separator in ("\n\n", "\n", ". ", " "):
        at = text.rfind(separator, 0, end)
        if at > end // 2:
            return at + len(separator)
    return end


def answer_messages(result: ChainResult, limit: int = LIMIT) -> list[str]:
    """The answer's text and its sources block, as HTML messages within the limit."""
    pieces = split_text(result.text, limit)
    block = sources_block(result.sources, result.language)
    if block and len(pieces[-1]) + 2 + len(block) <= limit:
        pieces[-1] += "\n\n" + block
    elif block:
        pieces.append(block)
    return pieces


def result_messages(result: ChainResult, limit: int = LIMIT) -> list[str]:
    """Any result kind as HTML messages: answers with sources, the rest as they are."""
    if result.kind is ResultKind.ANSWER:
        return answer_messages(result, limit)
    if result.kind is ResultKind.ERROR and result.sources:
        return answer_messages(result, limit)
    return split_text(result.text, limit)
