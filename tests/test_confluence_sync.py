"""Confluence spaces synced into the real Edge store with the bundled models: pages and
attachments in with their access, only changed versions read again, a renamed page updated in
place, a removed page deleted, and a refused or failing server changing nothing."""

from collections.abc import AsyncIterator, Callable

import pytest

from ingestion.pipeline import Ingestor
from ingestion.sources.confluence import ConfluenceSource
from ingestion.sources.sync import sync
from kb.edge import EdgeStore
from tests.fakes.confluence import API_TOKEN, EMAIL, PAT, FakeConfluence
from tests.test_confluence import handbook

pytest_plugins = ["tests.fakes.confluence"]
pytestmark = pytest.mark.slow

IngestorFactory = Callable[..., Ingestor]


def credentials(fake: FakeConfluence, secret: str | None = None) -> dict[str, str]:
    if fake.flavor == "cloud":
        return {"email": EMAIL, "api_token": secret or API_TOKEN}
    return {"pat": secret or PAT}


@pytest.fixture
async def hr_source(fake_confluence: FakeConfluence) -> AsyncIterator[ConfluenceSource]:
    """The HR space of the handbook, as a source closed after the test."""
    handbook(fake_confluence)
    source = ConfluenceSource(
        fake_confluence.base_url,
        ["HR"],
        flavor=fake_confluence.flavor,
        **credentials(fake_confluence),  # type: ignore[arg-type]
    )
    yield source
    await source.aclose()


async def contents(store: EdgeStore) -> set[tuple[str, str, int, str | None]]:
    return {
        (d.doc_id, d.content_hash, d.stored_chunks, d.source_version)
        for d in await store.list_documents("hr")
    }


async def test_confluence_sync_keeps_access_and_reads_only_changed_versions(
    fake_confluence: FakeConfluence,
    hr_source: ConfluenceSource,
    edge_store: EdgeStore,
    make_ingestor: IngestorFactory,
) -> None:
    ingestor = make_ingestor(edge_store)
    first = await sync(hr_source, "hr", ingestor)
    assert (first.error, first.failed) == (None, [])
    ids = {"confluence:100", "confluence:200", "confluence:201", "confluence:202"}
    assert set(first.added) == ids | {"confluence:att900"}
    docs = {d.doc_id: d for d in await edge_store.list_documents("hr")}
    salaries = await edge_store.fetch("hr", docs["confluence:200"].point_ids("hr"))
    assert salaries
    assert all(c.access == {"users": ["u-boss"], "groups": ["hr"]} for c in salaries)
    assert all(c.metadata["space"] == "HR" for c in salaries)
    vpn = await edge_store.fetch("hr", docs["confluence:100"].point_ids("hr"))
    assert any("wg-quick up office" in c.text for c in vpn)
    assert all(c.access == {} for c in vpn)
    pdf = await edge_store.fetch("hr", docs["confluence:att900"].point_ids("hr"))
    assert any("thirty days" in c.text for c in pdf)

    reads = fake_confluence.count("body.storage")
    fake_confluence.edit("100", body="<p>Use the new VPN gateway in Frankfurt.</p>")
    fake_confluence.edit("201", title="Annual bonuses")
    fake_confluence.remove("202")
    second = await sync(hr_source, "hr", ingestor)
    assert sorted(second.changed) == ["confluence:100", "confluence:201"]
    assert second.deleted == ["confluence:202"]
    assert fake_confluence.count("body.storage") == reads + 2  # unchanged pages are not read
    docs = {d.doc_id: d for d in await edge_store.list_documents("hr")}
    assert docs["confluence:201"].title == "Annual bonuses"
    changed = await edge_store.fetch("hr", docs["confluence:100"].point_ids("hr"))
    assert any("Frankfurt" in c.text for c in changed)


async def test_a_refused_or_failing_confluence_changes_nothing(
    fake_confluence: FakeConfluence,
    hr_source: ConfluenceSource,
    edge_store: EdgeStore,
    make_ingestor: IngestorFactory,
) -> None:
    ingestor = make_ingestor(edge_store)
    await sync(hr_source, "hr", ingestor)
    before = await contents(edge_store)
    assert len(before) == 5

    refused = ConfluenceSource(
        fake_confluence.base_url,
        ["HR"],
        flavor=fake_confluence.flavor,
        **credentials(fake_confluence, "expired"),  # type: ignore[arg-type]
    )
    try:
        report = await sync(refused, "hr", ingestor)
    finally:
        await refused.aclose()
    assert report.error is not None
    assert "HTTP 401" in report.error
    fake_confluence.fail("/child/attachment", 502)
    report = await sync(hr_source, "hr", ingestor)
    assert report.error is not None
    assert "attachments: HTTP 502" in report.error
    fake_confluence.clear_faults()
    # A page that changed but cannot be read: named, and its last version kept.
    fake_confluence.edit("100", body="<p>New text</p>")
    fake_confluence.fail("/content/100?", 500)
    report = await sync(hr_source, "hr", ingestor)
    assert [doc_id for doc_id, _ in report.failed] == ["confluence:100"]
    assert "HTTP 500" in report.failed[0][1]
    assert report.deleted == []
    assert await contents(edge_store) == before
