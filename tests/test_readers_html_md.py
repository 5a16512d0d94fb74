"""HTML and Markdown readers: main content only, heading paths, readable tables, code and links."""

import pytest

from ingestion.errors import UnreadableDocumentError
from ingestion.readers import ParsedDocument, read_document
from ingestion.readers.html import read_html
from ingestion.readers.markdown import read_markdown

PAGE = b"""<!DOCTYPE html>
<html lang="en">
<head>
  <title>Install Guide | Example Docs</title>
  <link rel="canonical" href="https://docs.example.com/install">
  <style>.content { color: red; }</style>
  <script>var tracking = "SCRIPT-SECRET";</script>
</head>
<body class="has-navbar-fixed-top">
  <header class="site-header"><a href="/">SITE-LOGO</a></header>
  <nav><a href="/docs">NAV-LINK</a></nav>
  <div role="navigation">ROLE-NAV</div>
  <div class="docnav"><a href="/prev">DOCNAV-PREV</a></div>
  <ol class="breadcrumb"><li>BREADCRUMB-HOME</li><li>Docs</li></ol>
  <main>
    <article>
      <header><h1>Installing the agent</h1></header>
      <p>The agent runs on Linux and
         Windows servers.</p>
      <h2>Linux</h2>
      <p>Install it with the package manager.</p>
      <h3>Debian</h3>
      <p>Use apt on Debian.</p>
      <h3>Fedora</h3>
      <p>Use dnf on Fedora.</p>
      <h2>Windows</h2>
      <ul><li>Download the <b>installer</b></li><li>Run it as administrator</li></ul>
      <table>
        <tr><th>Port</th><th>Purpose</th></tr>
        <tr><td>8080</td><td>HTTP API</td></tr>
      </table>
      <pre>agent --config /etc/agent.toml
    # keep this comment
    --verbose</pre>
      <script>console.log("INLINE-SCRIPT");</script>
      <footer>Article last reviewed in May.</footer>
    </article>
  </main>
  <footer class="site-footer">SITE-FOOTER</footer>
</body>
</html>
"""


def all_text(doc: ParsedDocument) -> str:
    return "\n\n".join(section.text for section in doc.sections)


def sections(doc: ParsedDocument) -> dict[tuple[str, ...], str]:
    return {section.heading_path: section.text for section in doc.sections}


# --- HTML ------------------------------------------------------------------------------------


def test_html_drops_navigation_chrome_scripts_and_styles() -> None:
    text = all_text(read_html("install.html", PAGE))
    for chrome in [
        "SITE-LOGO",
        "NAV-LINK",
        "ROLE-NAV",
        "DOCNAV-PREV",
        "BREADCRUMB-HOME",
        "SITE-FOOTER",
        "SCRIPT-SECRET",
        "INLINE-SCRIPT",
        "color: red",
    ]:
        assert chrome not in text
    # A header or footer inside the article is content, and a theme class on <body> that
    # happens to contain "navbar" does not make the whole page chrome.
    assert "Article last reviewed in May." in text
    assert "Install it with the package manager." in text


def test_html_heading_paths_nest_and_pop_back() -> None:
    by_path = sections(read_html("install.html", PAGE))
    assert list(by_path) == [
        ("Installing the agent",),
        ("Installing the agent", "Linux"),
        ("Installing the agent", "Linux", "Debian"),
        ("Installing the agent", "Linux", "Fedora"),
        ("Installing the agent", "Windows"),
    ]
    # Source line breaks inside a paragraph are spaces, not hard breaks.
    assert by_path[("Installing the agent",)] == "The agent runs on Linux and Windows servers."
    assert by_path[("Installing the agent", "Linux", "Fedora")] == "Use dnf on Fedora."


def test_html_lists_tables_and_code_stay_readable() -> None:
    windows = sections(read_html("install.html", PAGE))[("Installing the agent", "Windows")]
    blocks = windows.split("\n\n")
    assert blocks[:2] == ["- Download the installer", "- Run it as administrator"]
    assert "Port | Purpose\n8080 | HTTP API" in blocks
    # <pre> is kept verbatim: indentation, and '#' lines are not headings.
    assert "agent --config /etc/agent.toml\n    # keep this comment\n    --verbose" in blocks


def test_html_title_and_canonical_url() -> None:
    doc = read_html("install.html", PAGE)
    assert doc.title == "Install Guide | Example Docs"
    assert doc.url == "https://docs.example.com/install"


def test_html_title_falls_back_to_first_h1_then_file_name() -> None:
    no_title = b"<html><body><p>Intro.</p><h1>Release\n notes</h1><p>Fixed bugs.</p></body></html>"
    doc = read_html("notes.html", no_title)
    assert doc.title == "Release notes"
    assert doc.url is None
    bare = read_html("docs/faq.htm", b"<html><body><p>Just text.</p></body></html>")
    assert bare.title == "faq"
    # A relative canonical link is no address to cite.
    relative = b'<html><head><link rel="canonical" href="/faq"></head><body><p>x</p></body></html>'
    assert read_html("faq.html", relative).url is None


def test_html_is_dispatched_by_suffix_and_empty_page_refused() -> None:
    doc = read_document("Page.HTM", b"<html><body><h1>Hi</h1><p>Hello there.</p></body></html>")
    assert sections(doc) == {("Hi",): "Hello there."}
    with pytest.raises(UnreadableDocumentError, match="no text found in the HTML file"):
        read_document("empty.html", b"<html><body><nav>Only navigation</nav></body></html>")


# --- Markdown --------------------------------------------------------------------------------

GUIDE = """---
title: "Operations Handbook"
tags: [ops]
---
Read this first: see [the wiki](https://wiki.example.com/ops) and **ask** in chat.

# Deployments

Deploys happen on Tuesdays.

## Rollback

```bash
# this comment is not a heading
kubectl rollout undo deployment/api
```

Rollbacks need a ticket.

Monitoring
----------

Dashboards live in Grafana.

### Alerts ###

Pages go to the on-call person.

Learn C#
========

Notes about C# services.

## Issue #42

Fixed.
"""


def test_markdown_atx_and_setext_headings_become_paths() -> None:
    doc = read_markdown("ops.md", GUIDE)
    assert [s.heading_path for s in doc.sections] == [
        (),
        ("Deployments",),
        ("Deployments", "Rollback"),
        ("Deployments", "Monitoring"),
        ("Deployments", "Monitoring", "Alerts"),
        ("Learn C#",),
        ("Learn C#", "Issue #42"),
    ]
    assert sections(doc)[("Deployments", "Monitoring", "Alerts")] == (
        "Pages go to the on-call person."
    )


def test_markdown_fenced_code_is_kept_and_not_parsed() -> None:
    rollback = sections(read_markdown("ops.md", GUIDE))[("Deployments", "Rollback")]
    assert rollback == (
        "```bash\n# this comment is not a heading\nkubectl rollout undo deployment/api\n```"
        "\n\nRollbacks need a ticket."
    )
    tilde = read_markdown("t.md", "# Top\n\n~~~\n## not a heading\n~~~\n\nAfter.")
    assert [s.heading_path for s in tilde.sections] == [("Top",)]
    assert "## not a heading" in tilde.sections[0].text


def test_markdown_closing_hashes_need_a_space() -> None:
    doc = read_markdown("c.md", "# Learn C#\n\ntext\n\n## F# and C# ##\n\nmore")
    assert [s.heading_path for s in doc.sections] == [
        ("Learn C#",),
        ("Learn C#", "F# and C#"),
    ]


def test_markdown_rule_after_code_or_list_is_not_a_heading() -> None:
    source = "# Top\n\n```\ncode\n```\n---\n\n- item\n---\n\nEnd."
    doc = read_markdown("r.md", source)
    assert [s.heading_path for s in doc.sections] == [("Top",)]
    assert "```\ncode\n```" in doc.sections[0].text
    assert "- item" in doc.sections[0].text


def test_markdown_links_images_and_emphasis_are_readable() -> None:
    intro = sections(read_markdown("ops.md", GUIDE))[()]
    assert intro == "Read this first: see the wiki (https://wiki.example.com/ops) and ask in chat."
    doc = read_markdown(
        "l.md", "![diagram](d.png) and <https://x.org> and [https://y.org](https://y.org)"
    )
    assert doc.sections[0].text == "diagram and <https://x.org> and https://y.org"


def test_markdown_title_from_front_matter_then_first_h1_then_name() -> None:
    assert read_markdown("ops.md", GUIDE).title == "Operations Handbook"
    assert (
        read_markdown("a.md", "Intro.\n\n## Sub\n\n# First\n\nx\n\n# Second\n\ny").title == "First"
    )
    assert read_markdown("notes/todo.md", "## Only a subheading\n\ntext").title == "todo"
    assert read_markdown("s.md", "Setext Title\n============\n\nx").title == "Setext Title"


def test_markdown_is_dispatched_with_crlf_and_legacy_encoding() -> None:
    source = "\r\n".join(["# Руководство", "", "Привет, мир.", "", "## Раздел", "", "Текст."])
    doc = read_document("guide.markdown", source.encode("cp1251"))
    assert sections(doc) == {
        ("Руководство",): "Привет, мир.",
        ("Руководство", "Раздел"): "Текст.",
    }
    assert doc.title == "Руководство"
    with pytest.raises(UnreadableDocumentError, match="empty file"):
        read_document("blank.md", b"\n \n")
