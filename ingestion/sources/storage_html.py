"""Confluence storage format (XHTML with ac:/ri: macros) into plain HTML the HTML reader reads.

Macros that hold content keep it (panels, notes, expands, layouts: their rich-text body; code
blocks: their plain-text body as <pre>); links become their text; macros that only generate
content at view time (a table of contents, child-page lists, Jira queries), images, emoticons
and parameters are dropped.
"""

from html import escape

from bs4 import BeautifulSoup, Tag

# Macros whose plain-text body is code; macros whose "title" parameter heads their content.
_CODE_MACROS = frozenset({"code", "noformat"})
_TITLED = frozenset({"expand", "panel", "info", "note", "tip", "warning", "details"})
_DROP = ("ac:parameter", "ac:placeholder", "ac:image", "ac:emoticon", "ac:task-id",
         "ac:task-status", "ac:inline-comment-marker-ref")  # fmt: skip
# What a link without text of its own shows: the name of its target.
_TARGETS = (("ri:page", "ri:content-title"), ("ri:attachment", "ri:filename"),
            ("ri:blog-post", "ri:content-title"), ("ri:space", "ri:space-key"))  # fmt: skip


def storage_to_html(title: str, storage: str, url: str | None = None) -> bytes:
    """A full HTML page for one Confluence page: its title, a canonical link, its content."""
    soup = BeautifulSoup(storage, "html.parser")
    for macro in soup.find_all("ac:structured-macro"):
        if isinstance(macro, Tag) and not macro.decomposed:
            _macro(soup, macro)
    for link in soup.find_all("ac:link"):
        if isinstance(link, Tag):
            link.replace_with(_link_text(link))
    _simplify(soup)
    head = f"<title>{escape(title)}</title>"
    if url:
        head += f'<link rel="canonical" href="{escape(url, quote=True)}">'
    page = f"<!doctype html><html><head><meta charset='utf-8'>{head}</head><body>"
    page += f"<h1>{escape(title)}</h1>{soup.decode()}</body></html>"
    return page.encode("utf-8")


def _simplify(soup: BeautifulSoup) -> None:
    """Drop what has no text, turn task lists into lists, unwrap the remaining ac: tags."""
    for tag in soup.find_all(_DROP):
        if isinstance(tag, Tag) and not tag.decomposed:
            tag.decompose()
    for tag in soup.find_all("ac:task-list"):
        if isinstance(tag, Tag):
            tag.name = "ul"
    for tag in soup.find_all("ac:task"):
        if isinstance(tag, Tag):
            tag.name = "li"
    for tag in soup.find_all(_namespaced):
        if isinstance(tag, Tag) and not tag.decomposed:
            if tag.name.startswith("ri:"):
                tag.decompose()  # a reference (page, user, attachment): no text of its own
            else:
                tag.unwrap()  # layouts, bodies: keep what they hold


def _namespaced(tag: Tag) -> bool:
    return isinstance(tag.name, str) and tag.name.startswith(("ac:", "ri:"))


def _parameter(macro: Tag, name: str) -> str:
    for parameter in macro.find_all("ac:parameter", recursive=False):
        if isinstance(parameter, Tag) and parameter.get("ac:name") == name:
            return parameter.get_text(" ", strip=True)
    return ""


def _macro(soup: BeautifulSoup, macro: Tag) -> None:
    name = str(macro.get("ac:name", "")).lower()
    if name in _CODE_MACROS:
        body = macro.find("ac:plain-text-body")
        pre = soup.new_tag("pre")
        pre.string = body.get_text() if isinstance(body, Tag) else ""
        macro.replace_with(pre)
        return
    rich = macro.find("ac:rich-text-body", recursive=False)
    if not isinstance(rich, Tag):
        macro.decompose()  # generated at view time (toc, children, jira): nothing to read
        return
    block = soup.new_tag("div")
    heading = _parameter(macro, "title") if name in _TITLED else ""
    if heading:
        strong = soup.new_tag("p")
        strong.string = heading
        block.append(strong)
    for child in list(rich.contents):
        block.append(child.extract())
    macro.replace_with(block)


def _link_text(link: Tag) -> str:
    body = link.find(["ac:link-body", "ac:plain-text-link-body"])
    if isinstance(body, Tag) and body.get_text(strip=True):
        return body.get_text(" ", strip=True)
    for tag, attribute in _TARGETS:
        target = link.find(tag)
        if isinstance(target, Tag) and target.get(attribute):
            return str(target.get(attribute))
    return ""
