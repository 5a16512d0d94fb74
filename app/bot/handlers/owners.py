"""Content owners, in a private chat with the bot: documents sent to it go into a collection
they own (asked once for files sent together, when they own several); /docs lists a
collection's documents; /delete removes one after confirmation. In a group these only point
to the private chat; anyone else's upload is refused; nothing of either is downloaded."""

import asyncio

from aiogram import Bot, F, Router
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
from app.bot.locks import ConversationLocks
from app.bot.scope import by_index, chat_kind
from app.bot.settings import BotSettings
from app.bot.texts import t
from app.bot.uploads import ingest_files
from ingestion.pipeline import Ingestor
from kb.store import VectorStore

# Files sent together (an album, several at once) arrive within this many seconds of each
# other: the one question "which collection?" waits that long, then counts them all.
GATHER_S = 1.0


def _owned(access: Access, user: User) -> list[tuple[int, CollectionConfig]]:
    names = {c.name for c in access.owned(user.id)}
    return [(i, c) for i, c in enumerate(access.collections.values()) if c.name in names]


async def _in_private(message: Message, bot: Bot, user: User | None) -> bool:
    """True in a private chat; in a group, point to the private chat instead."""
    if chat_kind(message.chat) == "private":
        return True
    me = await bot.me()
    await message.answer(t("owners_private", user, bot=me.username or me.first_name))
    return False


async def upload(
    message: Message,
    *,
    access: Access,
    state: FSMContext,
    bot: Bot,
    ingestor: Ingestor,
    bot_settings: BotSettings,
    locks: ConversationLocks,
) -> None:
    """A document from an owner: ingest it, or ask where it goes first."""
    user, document = message.from_user, message.document
    if user is None or document is None:
        return
    owned = _owned(access, user)
    if chat_kind(message.chat) != "private":
        # Files shared in a team chat are not for the bot; an owner's may be, so say where.
        if owned:
            await _in_private(message, bot, user)
        return
    if not owned:
        await message.answer(t("not_owner", user))
        return
    name = document.file_name or f"{document.file_unique_id}.bin"
    pending = PendingUpload(document.file_id, name, document.file_size or 0)
    if len(owned) == 1:
        await ingest_files(
            message,
            user,
            config=owned[0][1],
            files=[pending],
            bot=bot,
            ingestor=ingestor,
            settings=bot_settings,
        )
        return
    async with conversation.editing(state, locks) as talk:
        talk.uploads.append(pending)
        first = len(talk.uploads) == 1
    if not first:
        return  # the question asked for the first file covers this one
    await asyncio.sleep(GATHER_S)
    count = len((await conversation.load(state)).uploads)
    if count:
        await message.answer(
            t("upload_where", user, count=count),
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
    locks: ConversationLocks,
) -> None:
    """The owner chose the collection: ingest every pending upload into it."""
    config = by_index(access, callback_data.index)
    message = query.message
    if (
        config is None
        or not isinstance(message, Message)
        or chat_kind(message.chat) != "private"
        or not access.owns(query.from_user.id, config.name)
    ):
        await query.answer(t("not_owner", query.from_user), show_alert=True)
        return
    async with conversation.editing(state, locks) as talk:
        files, talk.uploads = talk.uploads, []
    if not files:
        await query.answer(t("upload_nothing", query.from_user), show_alert=True)
        return
    await query.answer()
    await message.edit_reply_markup(reply_markup=None)
    await ingest_files(
        message,
        query.from_user,
        config=config,
        files=files,
        bot=bot,
        ingestor=ingestor,
        settings=bot_settings,
    )


async def docs(message: Message, access: Access, store: VectorStore, bot: Bot) -> None:
    """The documents of the collection the owner owns (asked when several)."""
    user = message.from_user
    if not await _in_private(message, bot, user):
        return
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
    message = query.message
    if (
        config is None
        or not isinstance(message, Message)
        or chat_kind(message.chat) != "private"
        or not access.owns(query.from_user.id, config.name)
    ):
        await query.answer(t("not_owner", query.from_user), show_alert=True)
        return
    await query.answer()
    await message.answer(await _listing(store, config, query.from_user))


async def _listing(store: VectorStore, config: CollectionConfig, user: User | None) -> str:
    if await store.get_collection(config.name) is None:
        return t("docs_none", user, title=config.label)
    documents = await store.list_documents(config.name)
    if not documents:
        return t("docs_none", user, title=config.label)
    lines = [t("docs_count", user, title=config.label, count=len(documents))]
    for d in documents[:100]:
        lines.append(t("docs_line", user, doc=d.doc_id, title=d.title, chunks=d.stored_chunks))
        if d.synced_at is not None:
            # A synced document: where it comes from (folder path, URL) and when a sync last
            # found it current.
            when = f"{d.synced_at:%Y-%m-%d %H:%M}"
            lines.append(t("docs_synced", user, source=d.source, when=when))
    return "\n".join(lines)[:4000]


async def delete(
    message: Message,
    *,
    command: CommandObject,
    access: Access,
    state: FSMContext,
    store: VectorStore,
    bot: Bot,
    locks: ConversationLocks,
) -> None:
    """Ask to confirm removing a document from a collection the user owns."""
    user = message.from_user
    if not await _in_private(message, bot, user):
        return
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
            async with conversation.editing(state, locks) as talk:
                talk.delete = [config.name, doc_id]
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
    locks: ConversationLocks,
) -> None:
    """Delete (or cancel) the pending deletion."""
    async with conversation.editing(state, locks) as talk:
        pending, talk.delete = talk.delete, None
    await query.answer()
    message = query.message if isinstance(query.message, Message) else None
    if message is not None:
        await message.edit_reply_markup(reply_markup=None)
    if not callback_data.yes or pending is None or message is None:
        if message is not None:
            await message.answer(t("cancelled", query.from_user))
        return
    name, doc_id = pending
    if chat_kind(message.chat) != "private" or not access.owns(query.from_user.id, name):
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
