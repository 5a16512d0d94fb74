"""Chain results as Telegram HTML messages, split at Telegram's length limit; an answer also
as one rich message (Bot API 10.1) whose citations are footnotes."""

import html
import re
from collections.abc import Sequence

from aiogram.types import InputRichMessage

from app.chain.types import ChainResult, ResultKind, SourceRef

# Telegram's limit is 4096 characters of text after entity parsing; escaped HTML is longer
# than what it shows, so pieces are measured escaped, with room to spare.
LIMIT = 4000
# A quoted passage (a source opened from its button) is cut to this many characters.
QUOTE_LIMIT = 1500
_SOURCES = {"en": "Sources", "ru": "Источники"}
# The abbreviations of one page and of several ("p. 3", "pp. 3-5"); Russian uses one for both.
_PAGES = {"en": ("p.", "pp."), "ru": ("\u0441.", "\u0441.")}
_DASH = "\u2013"
# Rich messages hold up to 32768 characters of text in up to 500 blocks; the Markdown source is
# measured (it is longer than what it shows), with room to spare.
RICH_LIMIT = 32000
RICH_BLOCKS = 450
_CITATION = re.compile(r"\[(\d+)\]")
# Characters with a meaning in Markdown (or an entity, a formula, an HTML tag), shown as they are.
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>=$^&])")


def sources_block(sources: Sequence[SourceRef], language: str) -> str:
    """ "Sources:" and one line per cited document, linked when it has a URL."""
    if not sources:
        return ""
    lines = [f"<b>{_SOURCES.get(language, _SOURCES['en'])}:</b>"]
    for source in sources:
        title = html.escape(source.title)
        if source.url:
            title = f'<a href="{html.escape(source.url, quote=True)}">{title}</a>'
        pages = page_label(source.pages, language)
        lines.append(f"[{source.n}] {title}, {pages}" if pages else f"[{source.n}] {title}")
    return "\n".join(lines)


def page_label(pages: Sequence[int], language: str) -> str:
    """The pages a citation comes from, runs joined by an en dash: "p. 3", "pp. 3-5, 9"; ""
    when there are none."""
    if not pages:
        return ""
    one, many = _PAGES.get(language, _PAGES["en"])
    distinct = sorted(set(pages))
    runs: list[list[int]] = []
    for page in distinct:
        if runs and page == runs[-1][-1] + 1:
            runs[-1].append(page)
        else:
            runs.append([page])
    text = ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}{_DASH}{r[-1]}" for r in runs)
    return f"{one if len(distinct) == 1 else many} {text}"


def passage_message(
    title: str, text: str, pages: Sequence[int], language: str, limit: int = QUOTE_LIMIT
) -> str:
    """A cited passage as HTML: the document's title (and page), the text quoted, cut at a
    word boundary to limit characters."""
    text = text.strip()
    if len(text) > limit:
        cut = text.rfind(" ", 0, limit)
        text = text[: cut if cut > limit // 2 else limit].rstrip() + " …"
    label = page_label(pages, language)
    head = f"<b>{html.escape(title)}</b>" + (f", {label}" if label else "")
    return f"{head}\n<blockquote>{html.escape(text)}</blockquote>"


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


def rich_answer(result: ChainResult) -> InputRichMessage | None:
    """An answer as a rich message: the text with each citation [n] a footnote naming the source
    (title, page, link); None when it is not an answer with sources or exceeds the rich limits."""
    if result.kind is not ResultKind.ANSWER or not result.sources:
        return None
    cited = {source.n: source for source in result.sources}
    paragraphs = [p for p in re.split(r"\n\s*\n", result.text.strip()) if p.strip()]
    body = "\n\n".join(_rich_paragraph(p, cited) for p in paragraphs)
    notes = [f"[^{s.n}]: {_footnote(s, result.language)}" for s in result.sources]
    source = "\n\n".join([body, *notes])
    if len(source) > RICH_LIMIT or len(paragraphs) + len(notes) > RICH_BLOCKS:
        return None
    return InputRichMessage(markdown=source)


def _rich_paragraph(text: str, cited: dict[int, SourceRef]) -> str:
    """Escaped Markdown of one paragraph: its citations as footnote references, its line breaks
    kept (hard breaks)."""
    out: list[str] = []
    at = 0
    for match in _CITATION.finditer(text):
        n = int(match.group(1))
        if n in cited:
            out += [_escape_markdown(text[at : match.start()]), f"[^{n}]"]
            at = match.end()
    out.append(_escape_markdown(text[at:]))
    lines = "".join(out).split("\n")
    return "  \n".join(line.strip() for line in lines)


def _footnote(source: SourceRef, language: str) -> str:
    """A footnote: the document's title (a link when it has a URL) and its pages."""
    title = _escape_markdown(source.title)
    if source.url:
        # Characters that would end or break a link destination, percent-encoded.
        url = source.url
        for char, code in ((" ", "%20"), ("(", "%28"), (")", "%29"), ("<", "%3C"), (">", "%3E")):
            url = url.replace(char, code)
        title = f"[{title}]({url})"
    pages = page_label(source.pages, language)
    return f"{title}, {_escape_markdown(pages)}" if pages else title


def _escape_markdown(text: str) -> str:
    return _MARKDOWN.sub(r"\\\1", text)
