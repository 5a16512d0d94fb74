"""HTML reader: main content only (no navigation chrome), headings as paths, tables as rows."""

import re
import warnings

from bs4 import BeautifulSoup, Tag, XMLParsedAsHTMLWarning
from bs4.element import NavigableString
from lxml import etree  # type: ignore[import-untyped]

from ingestion.readers.base import ParsedDocument, Section

_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_DROP_TAGS = ["script", "style", "noscript", "template", "nav", "form", "iframe", "svg", "button"]
_DROP_ROLES = {"navigation", "banner", "contentinfo", "search", "menu", "menubar"}
# Class or id words that mark site chrome rather than content.
_CHROME = re.compile(
    r"(^|[-_\s])(nav|navbar|navigation|docnav|breadcrumbs?|menu|banner|skip|cookies?|"
    r"site-header|site-footer|footer|pagination|toc-nav|sidebar-nav)($|[-_\s])",
    re.IGNORECASE,
)
_BLOCKS = {
    "p", "div", "section", "article", "main", "ul", "ol", "dl", "dt", "dd", "blockquote",
    "figure", "figcaption", "header", "footer", "aside", "body", "html", "li", "address",
    "details", "summary", "caption", "center", "hr",
}  # fmt: skip
_CONTAINERS = {"html", "body", "main", "article"}
_SPACES = re.compile(r"[ \t\r\f\v\xa0]+")
_FEED_BYTES = 1024 * 1024


def _is_chrome(tag: Tag) -> bool:
    # Page-level containers carry theme classes ("has-navbar-fixed-top"): never chrome.
    if tag.name in _CONTAINERS:
        return False
    if tag.name in ("header", "footer") and tag.find_parent(["article", "main"]) is None:
        return True
    if str(tag.get("role", "")).lower() in _DROP_ROLES:
        return True
    classes = tag.get("class")
    names = list(classes) if isinstance(classes, list) else [str(classes or "")]
    words = " ".join([*names, str(tag.get("id", ""))])
    return bool(words.strip()) and _CHROME.search(words) is not None


def _clean(text: str) -> str:
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def _table_text(table: Tag) -> str:
    rows = []
    for tr in table.find_all("tr"):
        cells = [_clean(c.get_text(" ")).replace("\n", " ") for c in tr.find_all(["th", "td"])]
        if any(cells):
            rows.append(" | ".join(cells))
    caption = table.find("caption")
    head = [_clean(caption.get_text(" "))] if caption else []
    return "\n".join(head + rows)


class _Walker:
    """Walks the body in reading order, cutting sections at headings."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.path: list[tuple[int, str]] = []
        self.blocks: list[str] = []
        self.inline: list[str] = []

    def heading_path(self) -> tuple[str, ...]:
        return tuple(text for _, text in self.path)

    def end_paragraph(self) -> None:
        text = _clean("".join(self.inline))
        self.inline.clear()
        if text:
            self.blocks.append(text)

    def end_section(self) -> None:
        self.end_paragraph()
        if self.blocks:
            self.sections.append(Section(self.heading_path(), "\n\n".join(self.blocks)))
        self.blocks = []

    def heading(self, level: int, text: str) -> None:
        self.end_section()
        while self.path and self.path[-1][0] >= level:
            self.path.pop()
        if text:
            self.path.append((level, text))

    def walk(self, node: Tag) -> None:
        for child in node.children:
            if isinstance(child, NavigableString):
                if type(child) is NavigableString:  # skip comments, CDATA, doctype
                    # A newline in HTML source is a space; only <br> breaks a line.
                    self.inline.append(str(child).replace("\n", " "))
                continue
            if not isinstance(child, Tag):
                continue
            self.element(child)

    def element(self, tag: Tag) -> None:
        name = tag.name
        if name in _HEADINGS:
            self.heading(_HEADINGS[name], _clean(tag.get_text(" ")).replace("\n", " "))
        elif name == "table":
            self.end_paragraph()
            self.blocks.append(_table_text(tag))
        elif name == "pre":
            self.end_paragraph()
            code = tag.get_text().strip("\n")
            if code.strip():
                self.blocks.append(code)
        elif name == "br":
            self.inline.append("\n")
        elif name == "li":
            self.end_paragraph()
            self.inline.append("- ")
            self.walk(tag)
            self.end_paragraph()
        elif name in _BLOCKS:
            self.end_paragraph()
            self.walk(tag)
            self.end_paragraph()
        else:
            self.walk(tag)


class _TextCounter:
    """An lxml parser target that only counts characters of text as they stream by (not of
    scripts, styles and the other elements the reader drops)."""

    def __init__(self) -> None:
        self.chars = 0
        self._dropped = 0

    def start(self, tag: str, attrib: object) -> None:
        if tag in _DROP_TAGS:
            self._dropped += 1

    def end(self, tag: str) -> None:
        if tag in _DROP_TAGS and self._dropped:
            self._dropped -= 1

    def data(self, text: str) -> None:
        if not self._dropped:
            self.chars += len(text)

    def close(self) -> int:
        return self.chars


def html_text_chars(data: bytes, stop_after: int) -> int:
    """Characters of text in an HTML page (an upper bound of what the reader keeps), counted
    as a stream, 1 MB at a time, keeping nothing; counting stops soon after stop_after is
    passed."""
    counter = _TextCounter()
    parser = etree.HTMLParser(target=counter, recover=True, huge_tree=True)
    for start in range(0, len(data), _FEED_BYTES):
        parser.feed(data[start : start + _FEED_BYTES])
        if counter.chars > stop_after:
            return counter.chars
    parser.close()
    return counter.chars


def read_html(name: str, data: bytes) -> ParsedDocument:
    """Parse an HTML page into titled sections, leaving out navigation and scripts."""
    with warnings.catch_warnings():
        # XHTML pages are still best read by the forgiving HTML parser.
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(data, "lxml")
    for tag in soup(_DROP_TAGS):
        tag.decompose()
    for tag in soup.find_all(_is_chrome):
        if not tag.decomposed:
            tag.decompose()
    root = soup.body or soup
    walker = _Walker()
    walker.walk(root)
    walker.end_section()
    title_tag = soup.title
    title = _clean(title_tag.get_text(" ")) if title_tag else ""
    if not title:
        first = soup.find(["h1", "h2"])
        title = _clean(first.get_text(" ")) if first else ""
    canonical = soup.find("link", rel="canonical")
    url = str(canonical.get("href", "")) if isinstance(canonical, Tag) else ""
    return ParsedDocument(
        title=title.replace("\n", " ") or _stem(name),
        sections=walker.sections,
        url=url if url.startswith(("http://", "https://")) else None,
    )


def _stem(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[0] if "." in base else base
