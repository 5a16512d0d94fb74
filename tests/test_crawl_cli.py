"""`python -m ingestion crawl` and `confluence` in a subprocess against the fake site and the
fake Confluence: a sync, a dry run that changes nothing, the crawl state kept between runs,
and failures with their exit codes."""

import json
from pathlib import Path

import pytest

from kb.edge import EdgeStore
from tests.fakes.confluence import PAT, FakeConfluence
from tests.fakes.site import FakeSite
from tests.test_cli import last_json, run_cli

pytest_plugins = ["tests.fakes.site"]
pytestmark = pytest.mark.slow


async def doc_ids(qdrant: Path, collection: str) -> list[str]:
    store = EdgeStore(qdrant)
    try:
        return sorted(d.doc_id for d in await store.list_documents(collection))
    finally:
        await store.close()


async def test_crawl_command_syncs_dry_runs_and_fails_without_deleting(
    fake_site: FakeSite, tmp_path: Path
) -> None:
    qdrant = tmp_path / "qdrant"
    fake_site.page("/kb/", "Start", '<h1>Start</h1><p>Read <a href="vpn">the VPN page</a>.</p>')
    fake_site.page("/kb/vpn", "VPN", "<h1>VPN</h1><p>Connect with WireGuard from home.</p>")
    args = ["crawl", f"{fake_site.url}/kb/", "--collection", "site", "--rate", "50", "--json"]

    first = run_cli(args, qdrant, tmp_path)
    assert first.returncode == 0, first.stderr
    summary = last_json(first.stdout)["sources"]
    assert isinstance(summary, list)
    assert summary[0]["added"] == 2
    assert list((tmp_path / "data" / "sync").glob("web-*.json"))  # the crawl state
    assert await doc_ids(qdrant, "site") == [f"{fake_site.url}/kb", f"{fake_site.url}/kb/vpn"]

    fake_site.page("/kb/vpn", "VPN", "<h1>VPN</h1><p>WireGuard, and MFA from May.</p>")
    mark = len(fake_site.hits)
    dry = run_cli([*args, "--dry-run"], qdrant, tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert f"would be changed {fake_site.url}/kb/vpn" in " ".join(dry.stdout.split())
    assert fake_site.count(304, since=mark) == 1  # the start page, from the saved state

    fake_site.fail("*", 503)
    failed = run_cli(args, qdrant, tmp_path)
    assert failed.returncode == 1
    assert "robots.txt answered HTTP 503" in failed.stderr
    assert "nothing was changed" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert await doc_ids(qdrant, "site") == [f"{fake_site.url}/kb", f"{fake_site.url}/kb/vpn"]


async def test_confluence_command(tmp_path: Path) -> None:
    fake = FakeConfluence("datacenter").start()
    try:
        fake.page("HR", "1", "Leave", "<p>Twenty-eight days of paid leave.</p>", groups=["staff"])
        args = ["confluence", fake.base_url, "--space", "HR", "--flavor", "datacenter",
                "--collection", "hr", "--json"]  # fmt: skip
        missing = run_cli(args, tmp_path / "qdrant", tmp_path)
        assert missing.returncode == 2
        assert "CONFLUENCE_TOKEN" in missing.stderr
        done = run_cli(args, tmp_path / "qdrant", tmp_path, CONFLUENCE_TOKEN=PAT)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout.splitlines()[-1])["sources"][0]["added"] == 1
        assert PAT not in done.stdout + done.stderr
        refused = run_cli(args, tmp_path / "qdrant", tmp_path, CONFLUENCE_TOKEN="wrong")
        assert refused.returncode == 1
        assert "space HR: HTTP 401 (unauthorized" in refused.stderr
        assert "wrong" not in refused.stderr
    finally:
        fake.stop()
    assert await doc_ids(tmp_path / "qdrant", "hr") == ["confluence:1"]
