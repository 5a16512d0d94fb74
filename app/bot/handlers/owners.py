"""Content owners: documents sent to the bot go into a collection they own (asked when they
own several); /docs lists a collection's documents; /delete removes one after confirmation.
Anyone else's upload is refused and nothing of it is stored."""

import io
import logging
from collections.abc import Sequence

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandObject
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message, User

from app.bot import conversation
from app.bot.access import Access, CollectionConfig
from app.bot.conversation import PendingUpload
from app.bot.keyboards import (
    ConfirmDelete,
    ListDocs,
    UploadTarget,
    collection_buttons,
    confirm_buttons,
)
from app.bot.scope import by_index
from app.bot.settings import BotSettings
from app.bot.texts import t
from ingestion.pipeline import Ingestor, IngestReport, SourceFile
from ingestion.readers import is_supported
from kb.store import VectorStore

log = logging.getLogger(__name__)
_MB = 1024 * 1024


def _owned(access: Access, user: User) -> list[tuple[int, CollectionConfig]]:
    names = {c.name for c in access.owned(user.id)}
    return [(i, c) for i, c in enumerate(access.collections.values()) if c.name in names]


async def upload(
    message: Message,
    *,
    access: Access,
    state: FSMContext,
    bot: Bot,
    ingestor: Ingestor,
    bot_settings: BotSettings,
) -> None:
    """A document from an owner: ingest it, or ask where it goes first."""
    user, document = message.from_user, message.document
    if user is None or document is None:
        return
    owned = _owned(access, user)
    if not owned:
        await message.answer(t("not_owner", user))
        return
    name = document.file_name or f"{document.file_unique_id}.bin"
    pending = PendingUpload(document.file_id, name, document.file_size or 0)
    if len(owned) == 1:
        await _ingest(
            message,
            user,
            config=owned[0][1],
            files=[pending],
            bot=bot,
            ingestor=ingestor,
            settings=bot_settings,
        )
        return
    talk = await conversation.load(state)
    first = not talk.uploads
    talk.uploads.append(pending)
    await conversation.save(state, talk)
    if first:
        await message.answer(
            t("upload_where", user, count=len(talk.uploads)),
            reply_markup=collection_buttons(owned, UploadTarget),
        )


async def upload_target(
    query: CallbackQuery,
    *,
    callback_data: UploadTarget,
    access: Access,
    state: FSMContext,
    bot: Bot,
    ingestor: Ingestor,
    bot_settings: BotSettings,
) -> None:
    """The owner chose the collection: ingest every pending upload into it."""
    config = by_index(access, callback_data.index)
    message = query.message
    if config is None or not access.owns(query.from_user.id, config.name):
        await query.answer(t("not_owner", query.from_user), show_alert=True)
        return
    talk = await conversation.load(state)
    files, talk.uploads = talk.uploads, []
    await conversation.save(state, talk)
    await query.answer()
    if isinstance(message, Message) and files:
        await message.edit_reply_markup(reply_markup=None)
        await _ingest(
            message,
            query.from_user,
            config=config,
            files=files,
            bot=bot,
            ingestor=ingestor,
            settings=bot_settings,
        )


async def _ingest(
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
    lines: list[str] = []
    sources: list[SourceFile] = []
    for file in files:
        if file.size > settings.max_download_mb * _MB:
            lines.append(_too_large(user, file.file_name, file.size, settings))
            continue
        if not is_supported(file.file_name):
            lines.append(t("unsupported", user, name=file.file_name))
            continue
        try:
            info = await bot.get_file(file.file_id)
            buffer = io.BytesIO()
            await bot.download_file(info.file_path or "", destination=buffer)
        except TelegramBadRequest as exc:
            if "too big" in exc.message.lower():
                lines.append(_too_large(user, file.file_name, file.size, settings))
                continue
            raise
        sources.append(
            SourceFile(file.file_name, f"telegram:{file.file_name}", None, buffer.getvalue())
        )
    if sources:
        await message.answer(t("ingesting", user, count=len(sources), title=config.label))
        report = await ingestor.ingest(sources, config.name, config.language)
        lines.extend(_report_lines(report))
    await message.answer("\n".join(lines))


def _too_large(user: User, name: str, size: int, settings: BotSettings) -> str:
    return t(
        "too_large", user, name=name, size=round(size / _MB, 1), limit=settings.max_download_mb
    )


def _report_lines(report: IngestReport) -> list[str]:
    lines = []
    for file in report.files:
        if file.status == "failed":
            lines.append(f"✗ {file.doc_id}: failed: {file.reason}")
        else:
            lines.append(f"✓ {file.doc_id}: {file.status} ({file.chunks} chunks)")
    return lines


async def docs(message: Message, access: Access, store: VectorStore) -> None:
    """The documents of the collection the owner owns (asked when several)."""
    user = message.from_user
    owned = _owned(access, user) if user else []
    if not owned:
        await message.answer(t("not_owner", user))
    elif len(owned) == 1:
        await message.answer(await _listing(store, owned[0][1], user))
    else:
        await message.answer(
            t("docs_which", user), reply_markup=collection_buttons(owned, ListDocs)
        )


async def docs_of(
    query: CallbackQuery, callback_data: ListDocs, access: Access, store: VectorStore
) -> None:
    """List the chosen collection's documents."""
    config = by_index(access, callback_data.index)
    if config is None or not access.owns(query.from_user.id, config.name):
        await query.answer(t("not_owner", query.from_user), show_alert=True)
        return
    await query.answer()
    if isinstance(query.message, Message):
        await query.message.answer(await _listing(store, config, query.from_user))


async def _listing(store: VectorStore, config: CollectionConfig, user: User | None) -> str:
    if await store.get_collection(config.name) is None:
        return t("docs_none", user, title=config.label)
    documents = await store.list_documents(config.name)
    if not documents:
        return t("docs_none", user, title=config.label)
    lines = [f"{config.label}: {len(documents)}"]
    lines += [f"• {d.doc_id} ({d.title}, {d.stored_chunks})" for d in documents[:100]]
    return "\n".join(lines)[:4000]


async def delete(
    message: Message,
    *,
    command: CommandObject,
    access: Access,
    state: FSMContext,
    store: VectorStore,
) -> None:
    """Ask to confirm removing a document from a collection the user owns."""
    user = message.from_user
    owned = _owned(access, user) if user else []
    doc_id = (command.args or "").strip()
    if not owned:
        await message.answer(t("not_owner", user))
        return
    if not doc_id:
        await message.answer(t("delete_usage", user))
        return
    for _, config in owned:
        if await store.get_collection(config.name) is None:
            continue
        if any(d.doc_id == doc_id for d in await store.list_documents(config.name)):
            talk = await conversation.load(state)
            talk.delete = [config.name, doc_id]
            await conversation.save(state, talk)
            await message.answer(
                t("delete_confirm", user, doc=doc_id, title=config.label),
                reply_markup=confirm_buttons(t("yes", user), t("no", user)),
            )
            return
    await message.answer(t("delete_missing", user, doc=doc_id, title=owned[0][1].label))


async def delete_confirmed(
    query: CallbackQuery,
    *,
    callback_data: ConfirmDelete,
    access: Access,
    state: FSMContext,
    ingestor: Ingestor,
) -> None:
    """Delete (or cancel) the pending deletion."""
    talk = await conversation.load(state)
    pending, talk.delete = talk.delete, None
    await conversation.save(state, talk)
    await query.answer()
    message = query.message if isinstance(query.message, Message) else None
    if message is not None:
        await message.edit_reply_markup(reply_markup=None)
    if not callback_data.yes or pending is None or message is None:
        if message is not None:
            await message.answer(t("cancelled", query.from_user))
        return
    name, doc_id = pending
    if not access.owns(query.from_user.id, name):
        await message.answer(t("not_owner", query.from_user))
        return
    removed = await ingestor.delete(name, doc_id)
    title = access.collections[name].label
    await message.answer(t("deleted", query.from_user, doc=doc_id, title=title, chunks=removed))


def router() -> Router:
    """A fresh router with this module's handlers (one per Dispatcher)."""
    built = Router(name=__name__)
    built.message.register(upload, F.document)
    built.callback_query.register(upload_target, UploadTarget.filter())
    built.message.register(docs, Command("docs"))
    built.callback_query.register(docs_of, ListDocs.filter())
    built.message.register(delete, Command("delete"))
    built.callback_query.register(delete_confirmed, ConfirmDelete.filter())
    return built
