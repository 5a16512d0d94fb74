"""The web crawler source against a real local HTTP site: sitemap and links, robots.txt,
canonical ids, conditional requests answered 304, and failures that must delete nothing."""

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from ingestion.readers import read_document
from ingestion.sources.base import SourceDocument, SourceError
from ingestion.sources.web import WebSource
from ingestion.sources.web_pages import Scope, normalize, parse_sitemap
from tests.fakes.site import FakeSite
from tests.test_readers_formats import make_pdf

pytest_plugins = ["tests.fakes.site"]

Make = Callable[..., WebSource]

VPN = "<h1>Remote access</h1><p>Connect with the WireGuard VPN client from home.</p>"
HOLIDAYS = "<h1>Holidays</h1><p>Every employee gets twenty-eight days of paid leave.</p>"
PRINTER = "<h1>Printing</h1><p>The third-floor printer prints double-sided.</p>"


@pytest.fixture
async def make_source() -> AsyncIterator[Make]:
    """make(url, **kwargs): a fast WebSource, closed after the test."""
    sources: list[WebSource] = []

    def make(url: str, **kwargs: object) -> WebSource:
        kwargs.setdefault("rate_per_s", 500.0)
        sources.append(WebSource(url, **kwargs))  # type: ignore[arg-type]
        return sources[-1]

    yield make
    for source in sources:
        await source.aclose()


def sitemap_site(site: FakeSite) -> None:
    """Three pages in a sitemap (one out of the crawl's prefix), a private page robots.txt
    forbids, a canonical link with tracking parameters."""
    site.put(
        "/robots.txt",
        f"User-agent: *\nDisallow: /docs/private\nSitemap: {site.url}/sitemap.xml\n".encode(),
        "text/plain",
    )
    site.page("/docs/vpn", "VPN", VPN, head=f'<link rel="canonical" href="{site.url}/docs/vpn/">')
    site.page("/docs/holidays.html", "Holidays", HOLIDAYS)
    site.page("/docs/private", "Secret", "<p>Salaries</p>")
    site.page("/blog/news", "News", "<p>Out of scope</p>")
    site.sitemap(
        ["/docs/vpn?utm_source=mail", "/docs/holidays.html", "/docs/private", "/blog/news"]
    )


def known(documents: list[SourceDocument]) -> dict[str, str]:
    return {d.doc_id: d.version for d in documents}


def by_id(documents: list[SourceDocument]) -> dict[str, SourceDocument]:
    return {d.doc_id: d for d in documents}


async def test_sitemap_listing_obeys_robots_scope_and_canonical_urls(
    fake_site: FakeSite, make_source: Make
) -> None:
    sitemap_site(fake_site)
    source = make_source(f"{fake_site.url}/docs/")
    docs = by_id(await source.list({}))
    base = fake_site.url
    assert set(docs) == {f"{base}/docs/vpn", f"{base}/docs/holidays.html"}
    assert fake_site.statuses("/docs/private") == []  # robots.txt: never requested
    assert fake_site.statuses("/blog/news") == []  # outside /docs/
    vpn = docs[f"{base}/docs/vpn"]
    assert vpn.url == f"{base}/docs/vpn/"  # the page's own canonical link, cited as is
    assert vpn.name == "vpn.html"
    assert vpn.version.startswith("etag:")
    hits = len(fake_site.hits)
    body = await source.read(vpn)
    assert len(fake_site.hits) == hits  # fetched once, while listing
    assert read_document(vpn.name, body).title == "VPN"
    assert source.label == f"web {base}/docs"


async def test_unchanged_pages_are_answered_304_and_changes_show_as_new_versions(
    fake_site: FakeSite, make_source: Make
) -> None:
    sitemap_site(fake_site)
    source = make_source(f"{fake_site.url}/docs/")
    first = await source.list({})
    mark = len(fake_site.hits)
    second = await source.list(known(first))
    assert known(second) == known(first)
    assert source.not_modified == 2
    assert fake_site.count(304, since=mark) == 2
    assert fake_site.count(200, since=mark) == 2  # robots.txt and the sitemap only
    # A page whose version the collection does not hold is downloaded, not asked for a 304.
    partial = known(first)
    del partial[f"{fake_site.url}/docs/holidays.html"]
    mark = len(fake_site.hits)
    await source.list(partial)
    assert fake_site.statuses("/docs/holidays.html")[-1] == 200

    fake_site.page("/docs/holidays.html", "Holidays", HOLIDAYS + "<p>Plus two days.</p>")
    third = by_id(await source.list(known(first)))
    holidays = f"{fake_site.url}/docs/holidays.html"
    assert third[holidays].version != by_id(first)[holidays].version
    assert b"Plus two days" in await source.read(third[holidays])
    assert (
        third[f"{fake_site.url}/docs/vpn"].version
        == by_id(first)[f"{fake_site.url}/docs/vpn"].version
    )


async def test_removed_and_renamed_pages(fake_site: FakeSite, make_source: Make) -> None:
    sitemap_site(fake_site)
    source = make_source(f"{fake_site.url}/docs/")
    first = by_id(await source.list({}))
    old = first[f"{fake_site.url}/docs/holidays.html"]
    # Renamed: the same content at a new URL, the old URL gone from the site and the sitemap.
    fake_site.remove("/docs/holidays.html")
    fake_site.page("/docs/leave", "Holidays", HOLIDAYS)
    fake_site.sitemap(["/docs/vpn", "/docs/leave"])
    second = by_id(await source.list(known(list(first.values()))))
    assert set(second) == {f"{fake_site.url}/docs/vpn", f"{fake_site.url}/docs/leave"}
    assert second[f"{fake_site.url}/docs/leave"].content_hash == old.content_hash
    # Removed: listed in the sitemap still, but answering 404.
    fake_site.remove("/docs/leave")
    third = by_id(await source.list(known(list(second.values()))))
    assert set(third) == {f"{fake_site.url}/docs/vpn"}


async def test_crawl_follows_same_site_links_and_keeps_them_for_304_pages(
    fake_site: FakeSite, make_source: Make, tmp_path: Path
) -> None:
    base = fake_site.url
    pdf = make_pdf([("Expenses", 0, ["Travel costs are reimbursed in thirty days."])])
    fake_site.page(
        "/kb/",
        "Start",
        '<p>See <a href="vpn#setup">VPN</a>, <a href="/kb/vpn/?utm_campaign=x">again</a>,'
        ' <a href="guide.pdf">the guide</a>, <a href="logo.png">logo</a>,'
        ' <a href="/other/">elsewhere</a>, <a href="https://example.invalid/x">away</a>,'
        ' <a href="hidden" rel="nofollow">hidden</a>, <a href="draft">draft</a>,'
        ' <a href="mailto:it@example.com">mail</a></p>',
        last_modified=True,
        etag=False,
    )
    fake_site.page("/kb/vpn", "VPN", VPN + '<a href="deep">deeper</a>')
    fake_site.page("/kb/deep", "Printing", PRINTER)
    # Not a document itself (noindex), but its links are followed.
    noindex = '<meta name="robots" content="noindex">'
    fake_site.page("/kb/draft", "Draft", '<a href="/kb/faq">FAQ</a>', head=noindex)
    fake_site.page("/kb/faq", "FAQ", HOLIDAYS)
    fake_site.put("/kb/guide.pdf", pdf, "application/pdf")
    fake_site.page("/other/", "Other", "<p>Not in scope</p>")
    fake_site.page("/kb/hidden", "Hidden", "<p>nofollow</p>")
    state = tmp_path / "crawl-state.json"

    source = make_source(f"{base}/kb/", state_path=state)
    docs = by_id(await source.list({}))
    assert set(docs) == {
        f"{base}/kb",
        f"{base}/kb/vpn",
        f"{base}/kb/deep",
        f"{base}/kb/guide.pdf",
        f"{base}/kb/faq",
    }
    assert docs[f"{base}/kb"].version.startswith("modified:")
    assert docs[f"{base}/kb/guide.pdf"].name == "guide.pdf"
    assert read_document("guide.pdf", await source.read(docs[f"{base}/kb/guide.pdf"])).title
    # Each page once, whatever the fragment, tracking parameters or trailing slash.
    assert fake_site.statuses("/kb/vpn") == [200]
    for never in ("/kb/logo.png", "/other/", "/kb/hidden"):
        assert fake_site.statuses(never) == []
    assert state.exists()

    # A new source (the next scheduled run) finds the links of unchanged pages in the state.
    again = make_source(f"{base}/kb/", state_path=state)
    mark = len(fake_site.hits)
    second = await again.list(known(list(docs.values())))
    assert known(second) == known(list(docs.values()))
    assert fake_site.count(200, since=mark) == 0  # every page answered 304
    assert again.not_modified == 6  # five documents and the noindex page
    start = [h for h in fake_site.hits[mark:] if h.path == "/kb/"]
    assert [(h.status, h.if_none_match) for h in start] == [(304, None)]
    assert start[0].if_modified_since is not None  # Last-Modified is its only validator


async def test_a_failing_site_raises_and_a_failing_page_keeps_its_last_version(
    fake_site: FakeSite, make_source: Make
) -> None:
    sitemap_site(fake_site)
    source = make_source(f"{fake_site.url}/docs/")
    first = await source.list({})

    fake_site.fail("/docs/vpn", 500)
    second = by_id(await source.list(known(first)))
    vpn = f"{fake_site.url}/docs/vpn"
    assert second[vpn].version == by_id(first)[vpn].version  # kept: nothing gets deleted
    assert any("/docs/vpn" in p and "HTTP 500" in p for p in source.problems)
    fake_site.clear_faults()

    fake_site.fail("/sitemap.xml", 500)
    with pytest.raises(SourceError, match="sitemap"):
        await source.list(known(first))
    fake_site.clear_faults()
    fake_site.fail("*", 401)
    with pytest.raises(SourceError, match="401"):
        await source.list(known(first))
    fake_site.clear_faults()
    fake_site.put("/sitemap.xml", b"<html>not xml", "application/xml")
    with pytest.raises(SourceError, match="sitemap"):
        await source.list(known(first))


async def test_start_page_failures_and_an_unreachable_site(
    fake_site: FakeSite, make_source: Make
) -> None:
    source = make_source(f"{fake_site.url}/kb/")
    with pytest.raises(SourceError, match="HTTP 404"):
        await source.list({})  # no sitemap, no robots.txt, and no start page
    fake_site.page("/kb/", "Start", "<p>Hello</p>")
    fake_site.fail("/kb/", 403)
    with pytest.raises(SourceError, match="HTTP 403"):
        await source.list({})
    fake_site.stop()
    with pytest.raises(SourceError, match="could not be fetched"):
        await source.list({})


def test_url_normal_forms_and_scope() -> None:
    assert normalize("HTTP://Example.COM:80/a/b/?b=2&utm_source=x&a=1#top") == (
        "http://example.com/a/b?a=1&b=2"
    )
    assert normalize("https://example.com:8443/") == "https://example.com:8443/"
    scope = Scope.of("https://example.com/docs/index.html")
    assert scope.covers("https://example.com/docs/a")
    assert not scope.covers("https://example.com/docsearch")
    assert not scope.covers("http://example.com/docs/a")
    assert Scope.of("https://example.com/docs").covers("https://example.com/docs")
    with pytest.raises(ValueError, match="not a sitemap"):
        parse_sitemap(b"<html/>")


async def test_an_unreadable_state_file_costs_downloads_only(
    fake_site: FakeSite, make_source: Make, tmp_path: Path
) -> None:
    fake_site.page("/kb/", "Start", "<p>Hello, see <a href='a'>A</a></p>")
    fake_site.page("/kb/a", "A", "<p>Page A</p>")
    state = tmp_path / "state.json"
    first = await make_source(f"{fake_site.url}/kb/", state_path=state).list({})
    state.write_text("{not json", encoding="utf-8")
    mark = len(fake_site.hits)
    again = await make_source(f"{fake_site.url}/kb/", state_path=state).list(known(first))
    assert known(again) == known(first)
    assert fake_site.count(304, since=mark) == 0
    assert fake_site.statuses("/kb/a") == [200, 200]
