"""The bot's /docs shows where a synced document comes from and when it was last synced."""

from pathlib import Path

import pytest

from ingestion.pipeline import Ingestor
from ingestion.sources.folder import FolderSource
from ingestion.sources.sync import sync
from tests.conftest import FileWriter, IngestorFactory
from tests.test_bot import OWNER, Env, bot_store, env, reply

pytest_plugins = ["tests.fakes.telegram_server", "tests.fakes.langfuse_server"]
pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]
__all__ = ["bot_store", "env"]


async def test_docs_shows_the_source_and_last_sync(
    env: Env, make_ingestor: IngestorFactory, tmp_path: Path, write_files: FileWriter
) -> None:
    folder = write_files(tmp_path / "share", {"desks.md": "# Desks\n\nHot desks are booked."})
    ingestor: Ingestor = make_ingestor(env.store, chunk_tokens=None)
    report = await sync(FolderSource(folder), "company", ingestor)
    assert report.added == ["desks.md"]
    synced_at = (await env.store.document_versions("company", "desks.md"))[0].synced_at
    assert synced_at is not None
    env.telegram.push_message(OWNER, "/docs")
    message = await reply(env, OWNER, "desks.md")
    text = message.plain_text or ""
    line = text[text.index("desks.md") :].splitlines()[1]
    assert str((folder / "desks.md").resolve()) in line
    assert f"last synced {synced_at:%Y-%m-%d %H:%M} UTC" in line
    # Documents that were not synced (the samples, added by hand) get no such line.
    assert text.count("last synced") == 1
