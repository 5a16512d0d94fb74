"""Markdown reader: ATX and setext headings as paths, code fences kept, links kept readable."""

import re

from ingestion.readers.base import ParsedDocument, Section

# The closing #s must follow a space: "# Learn C#" keeps its "#".
_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_LIST_ITEM = re.compile(r"^ {0,3}([-*+]|\d{1,9}[.)])[ \t]")
_FRONT_TITLE = re.compile(r"^title:\s*['\"]?(.*?)['\"]?\s*$", re.MULTILINE)
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_EMPHASIS = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")


def _inline(line: str) -> str:
    """Markdown inline syntax to plain reading text; link targets stay, as they carry facts."""
    line = _IMAGE.sub(r"\1", line)
    line = _LINK.sub(lambda m: m[1] if m[1] == m[2] else f"{m[1]} ({m[2]})", line)
    return _EMPHASIS.sub(r"\2", line)


def _is_paragraph_line(line: str) -> bool:
    return bool(line.strip()) and not _FENCE.match(line) and not _LIST_ITEM.match(line)


def _split_front_matter(text: str) -> tuple[str, str]:
    if text.startswith("---\n"):
        end = text.find("\n---", 4)
        if end != -1:
            return text[4:end], text[end + 4 :].lstrip("\n")
    return "", text


class _Builder:
    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.path: list[tuple[int, str]] = []
        self.lines: list[str] = []
        self.first_h1 = ""

    def flush(self) -> None:
        text = "\n".join(self.lines).strip()
        self.lines = []
        if text:
            self.sections.append(Section(tuple(t for _, t in self.path), text))

    def heading(self, level: int, text: str) -> None:
        self.flush()
        text = _inline(text).strip()
        if level == 1 and not self.first_h1:
            self.first_h1 = text
        while self.path and self.path[-1][0] >= level:
            self.path.pop()
        if text:
            self.path.append((level, text))


def read_markdown(name: str, text: str) -> ParsedDocument:
    """Parse Markdown into sections under their heading paths; title from front matter or H1."""
    front, body = _split_front_matter(text.replace("\r\n", "\n").replace("\r", "\n"))
    builder = _Builder()
    fence: str | None = None
    for line in body.split("\n"):
        fence_match = _FENCE.match(line)
        if fence is not None:
            builder.lines.append(line)
            if fence_match and fence_match[1][0] == fence[0] and len(fence_match[1]) >= len(fence):
                fence = None
            continue
        if fence_match:
            fence = fence_match[1]
            builder.lines.append(line)
            continue
        atx = _ATX.match(line)
        if atx:
            builder.heading(len(atx[1]), atx[2])
            continue
        setext = _SETEXT.match(line)
        # Only a paragraph line is underlined into a heading: not a closing fence or list item.
        if setext and builder.lines and _is_paragraph_line(builder.lines[-1]):
            heading = builder.lines.pop()
            builder.heading(1 if setext[1][0] == "=" else 2, heading)
            continue
        builder.lines.append(_inline(line))
    builder.flush()
    front_title = _FRONT_TITLE.search(front)
    title = (front_title[1] if front_title else "") or builder.first_h1
    stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return ParsedDocument(title=title or stem, sections=builder.sections)
