"""Owners' uploads into a collection: download from Telegram, ingest, keep the original
(ORIGINALS_DIR, within its limits), and report one line per file in the owner's language (too
large, unsupported and refused files included)."""

import asyncio
import io
from collections.abc import Sequence

from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import Message, User

from app.bot.access import CollectionConfig
from app.bot.conversation import PendingUpload
from app.bot.settings import BotSettings
from app.bot.texts import t
from ingestion.originals import Originals, Refusal
from ingestion.pipeline import Ingestor, IngestReport, SourceFile
from ingestion.readers import is_supported

_MB = 1024 * 1024


async def ingest_files(
    message: Message,
    user: User,
    *,
    config: CollectionConfig,
    files: Sequence[PendingUpload],
    bot: Bot,
    ingestor: Ingestor,
    settings: BotSettings,
) -> None:
    """Download, ingest and report, one line per file (too large and unsupported included)."""
    spec = await ingestor.store.get_collection(config.name)
    if spec is not None and spec.language != config.language:
        # The store keeps the language a collection was built with; nothing would go in.
        refused = [
            t(
                "upload_language",
                user,
                title=config.label,
                name=config.name,
                stored=spec.language,
                configured=config.language,
            )
        ]
        refused += [t("upload_not_added", user, name=file.file_name) for file in files]
        await message.answer("\n".join(refused))
        return
    lines: list[str] = []
    sources: list[SourceFile] = []
    originals = ingestor.originals
    reserved = 0  # bytes of this batch's originals still to be written
    for file in files:
        if file.size > settings.max_download_mb * _MB:
            lines.append(_too_large(user, file.file_name, file.size, settings))
            continue
        if not is_supported(file.file_name):
            lines.append(t("unsupported", user, name=file.file_name))
            continue
        if originals is not None:
            why: Refusal | None = await asyncio.to_thread(
                originals.refusal, config.name, file.file_name, file.size, reserved
            )
            if why is not None:
                lines.append(_not_kept(user, file.file_name, why, originals))
                continue
            reserved += file.size
        try:
            info = await bot.get_file(file.file_id)
            buffer = io.BytesIO()
            await bot.download_file(info.file_path or "", destination=buffer)
        except TelegramBadRequest as exc:
            if "too big" in exc.message.lower():
                lines.append(_too_large(user, file.file_name, file.size, settings))
                continue
            raise
        # The file_id lets the bot send the original back to readers who open the source.
        sources.append(
            SourceFile(
                file.file_name,
                f"telegram:{file.file_name}",
                None,
                buffer.getvalue(),
                file_id=file.file_id,
            )
        )
    if sources:
        await message.answer(t("ingesting", user, count=len(sources), title=config.label))
        report = await ingestor.ingest(sources, config.name, config.language)
        if originals is not None:
            await _keep(originals, config.name, sources, report)
        lines.extend(_report_lines(report, user))
    await message.answer("\n".join(lines))


async def _keep(
    originals: Originals, collection: str, sources: list[SourceFile], report: IngestReport
) -> None:
    """Keep the original of every file that is in the collection now (not of failed ones)."""
    stored = {f.doc_id for f in report.files if f.status != "failed"}
    for source in sources:
        if source.doc_id in stored and source.data is not None:
            await asyncio.to_thread(originals.keep, collection, source.doc_id, source.data)


def _not_kept(user: User, name: str, refused: Refusal, originals: Originals) -> str:
    if refused == "file":
        return t("original_too_large", user, name=name, limit=originals.max_file_bytes // _MB)
    return t("originals_full", user, name=name, limit=originals.max_total_bytes // _MB)


def _too_large(user: User, name: str, size: int, settings: BotSettings) -> str:
    return t(
        "too_large", user, name=name, size=round(size / _MB, 1), limit=settings.max_download_mb
    )


def _report_lines(report: IngestReport, user: User) -> list[str]:
    lines = []
    for file in report.files:
        if file.status == "failed":
            lines.append(t("upload_failed", user, doc=file.doc_id, reason=file.reason))
        else:
            status = t(f"status_{file.status}", user)
            lines.append(t("upload_done", user, doc=file.doc_id, status=status, chunks=file.chunks))
    return lines
