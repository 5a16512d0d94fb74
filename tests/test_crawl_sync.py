"""A crawled site synced into the real Edge store with the bundled models: pages added, 304s
for unchanged pages, a change re-embedded, a rename re-keyed, a removal deleted, and failures
that change nothing."""

from collections.abc import AsyncIterator, Callable

import pytest

from ingestion.pipeline import Ingestor
from ingestion.sources.sync import SyncReport, sync
from ingestion.sources.web import WebSource
from kb.edge import EdgeStore
from kb.schema import DocumentInfo
from tests.fakes.site import FakeSite

pytest_plugins = ["tests.fakes.site"]
pytestmark = pytest.mark.slow

IngestorFactory = Callable[..., Ingestor]

PAGES = {
    "/help/vpn": ("Remote access", "<h1>Remote access</h1><p>Connect to the office network "
                  "with the WireGuard VPN client; the helpdesk issues the file.</p>"),
    "/help/leave": ("Holidays", "<h1>Holidays</h1><p>Every employee gets twenty-eight "
                    "calendar days of paid annual leave, approved by the manager.</p>"),
    "/help/print": ("Printing", "<h1>Printing</h1><p>The third-floor printer prints "
                    "double-sided; toner is in the supply cupboard.</p>"),
}  # fmt: skip


@pytest.fixture
async def site_source(fake_site: FakeSite) -> AsyncIterator[WebSource]:
    """The help pages in a sitemap, and a WebSource over them (closed after the test)."""
    fake_site.put("/robots.txt", f"Sitemap: {fake_site.url}/sitemap.xml\n".encode(), "text/plain")
    for path, (title, body) in PAGES.items():
        fake_site.page(path, title, body)
    fake_site.sitemap(list(PAGES))
    source = WebSource(f"{fake_site.url}/help/", rate_per_s=500.0)
    yield source
    await source.aclose()


async def documents(store: EdgeStore, collection: str) -> dict[str, DocumentInfo]:
    return {d.doc_id: d for d in await store.list_documents(collection)}


async def contents(store: EdgeStore, collection: str) -> set[tuple[str, str, int, str | None]]:
    """What a collection holds, without the time of the last sync."""
    return {
        (d.doc_id, d.content_hash, d.stored_chunks, d.source_version)
        for d in await store.list_documents(collection)
    }


def url(site: FakeSite, path: str) -> str:
    return f"{site.url}{path}"


async def synced(source: WebSource, ingestor: Ingestor) -> SyncReport:
    report = await sync(source, "help", ingestor)
    assert report.error is None, report.error
    assert report.failed == [], report.failed
    return report


async def test_crawl_sync_adds_changes_renames_and_deletes(
    fake_site: FakeSite,
    site_source: WebSource,
    edge_store: EdgeStore,
    make_ingestor: IngestorFactory,
) -> None:
    ingestor = make_ingestor(edge_store)
    first = await synced(site_source, ingestor)
    assert sorted(first.added) == sorted(url(fake_site, p) for p in PAGES)
    docs = await documents(edge_store, "help")
    assert docs[url(fake_site, "/help/vpn")].title == "Remote access"
    assert docs[url(fake_site, "/help/vpn")].synced_from == site_source.label

    # Nothing changed: every page answered 304, nothing embedded.
    mark = len(fake_site.hits)
    again = await synced(site_source, ingestor)
    assert sorted(again.unchanged) == sorted(first.added)
    assert again.chunks_written == 0
    assert fake_site.count(304, since=mark) == 3

    # A change, a rename (same page at a new URL), a removal, in one sync.
    fake_site.page("/help/vpn", "Remote access", PAGES["/help/vpn"][1] + "<p>MFA is required.</p>")
    fake_site.remove("/help/leave")
    fake_site.page("/help/holidays", *PAGES["/help/leave"])
    fake_site.remove("/help/print")
    fake_site.sitemap(["/help/vpn", "/help/holidays", "/help/print"])
    report = await synced(site_source, ingestor)
    assert report.changed == [url(fake_site, "/help/vpn")]
    assert report.renamed == [(url(fake_site, "/help/leave"), url(fake_site, "/help/holidays"))]
    assert report.deleted == [url(fake_site, "/help/print")]
    assert report.added == []
    docs = await documents(edge_store, "help")
    assert set(docs) == {url(fake_site, "/help/vpn"), url(fake_site, "/help/holidays")}
    chunks = await edge_store.fetch("help", docs[url(fake_site, "/help/vpn")].point_ids("help"))
    assert any("MFA is required" in c.text for c in chunks)
    assert all(c.source == url(fake_site, "/help/vpn") for c in chunks)


async def test_a_failing_site_deletes_nothing(
    fake_site: FakeSite,
    site_source: WebSource,
    edge_store: EdgeStore,
    make_ingestor: IngestorFactory,
) -> None:
    ingestor = make_ingestor(edge_store)
    await synced(site_source, ingestor)
    before = await contents(edge_store, "help")
    assert len(before) == 3

    fake_site.fail("/sitemap.xml", 500)
    report = await sync(site_source, "help", ingestor)
    assert report.error is not None
    assert "sitemap" in report.error
    fake_site.clear_faults()
    fake_site.fail("*", 401)
    assert (await sync(site_source, "help", ingestor)).error is not None
    fake_site.clear_faults()
    # One page failing: reported by name, its last version kept.
    fake_site.fail("/help/vpn", 503)
    report = await sync(site_source, "help", ingestor)
    assert report.error is None
    assert report.deleted == []
    assert any("/help/vpn" in p and "503" in p for p in report.problems)
    fake_site.clear_faults()
    fake_site.stop()
    unreachable = WebSource(f"{fake_site.url}/help/", rate_per_s=500.0)
    try:
        report = await sync(unreachable, "help", ingestor)
    finally:
        await unreachable.aclose()
    assert report.error is not None
    assert "could not be fetched" in report.error
    assert await contents(edge_store, "help") == before
