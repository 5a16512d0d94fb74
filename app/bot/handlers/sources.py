"""Sources under an answer: a "[n]" button shows the cited passage, quoted, and for a file
uploaded through Telegram sends the original back. Access is decided again at the press, for
the chat the button is in: the point is looked up only in collections that chat may read now,
so a revoked member, a stale button or forged callback data finds nothing."""

import uuid
from collections.abc import Sequence
from pathlib import Path

from aiogram import Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import CallbackQuery, FSInputFile, Message

from app.bot.access import Access
from app.bot.keyboards import OpenSource
from app.bot.render import passage_message
from app.bot.scope import readable
from app.bot.texts import language_of, t
from ingestion.pipeline import Ingestor
from kb.schema import Chunk
from kb.store import VectorStore


async def find_chunk(store: VectorStore, point_id: str, collections: Sequence[str]) -> Chunk | None:
    """The chunk with this point id in one of these collections (and only these)."""
    for name in collections:
        if await store.get_collection(name) is None:
            continue
        for chunk in await store.fetch(name, [point_id]):
            if chunk.collection == name:
                return chunk
    return None


async def open_source(
    query: CallbackQuery,
    callback_data: OpenSource,
    access: Access,
    store: VectorStore,
    ingestor: Ingestor | None = None,
) -> None:
    """Quote the cited passage (and send the uploaded original) if this chat may read it."""
    user, message = query.from_user, query.message
    chunk = None
    if isinstance(message, Message):
        try:
            point_id = str(uuid.UUID(hex=callback_data.point))
        except ValueError:
            point_id = ""
        allowed = [c.name for _, c in await readable(access, user.id, message.chat)]
        chunk = await find_chunk(store, point_id, allowed) if point_id else None
    if chunk is None or not isinstance(message, Message):
        # One refusal for "no access" and "gone": whether it exists is not for them to learn.
        await query.answer(t("source_unavailable", user), show_alert=True)
        return
    await query.answer()
    pages = [chunk.page] if chunk.page is not None else []
    text = passage_message(chunk.title or chunk.doc_id, chunk.text, pages, language_of(user))
    await message.reply(text, parse_mode="HTML")
    originals = ingestor.originals if ingestor is not None else None
    kept = originals.find(chunk.collection, chunk.doc_id) if originals is not None else None
    await send_original(message, chunk, kept)


async def send_original(message: Message, chunk: Chunk, kept: Path | None) -> None:
    """The uploaded original: by its Telegram file id, or the copy kept in ORIGINALS_DIR when
    the id is gone (re-ingested from the folder) or Telegram no longer knows it."""
    if chunk.file_id:
        try:
            await message.answer_document(chunk.file_id)
            return
        except TelegramBadRequest:
            if kept is None:
                raise
    if kept is not None:
        await message.answer_document(FSInputFile(kept, filename=chunk.doc_id))


def router() -> Router:
    """A fresh router with this module's handlers (one per Dispatcher)."""
    built = Router(name=__name__)
    built.callback_query.register(open_source, OpenSource.filter())
    return built
