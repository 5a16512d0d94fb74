"""Content owners: /gaps lists the most frequent unanswered questions of the collections they
own (grouped by meaning), each with "Answer" — the owner writes the answer as a reply, and it
becomes a Q&A document of that collection, which the bot answers from next time."""

import logging

from aiogram import Bot, F, Router
from aiogram.filters import Command, CommandObject
from aiogram.fsm.storage.base import BaseStorage
from aiogram.types import CallbackQuery, ForceReply, Message, User

from app.bot import conversation
from app.bot.access import Access
from app.bot.keyboards import AnswerGap
from app.bot.texts import language_of, t
from app.loop.answers import save_answer
from app.loop.digest import post_gaps
from app.loop.gaps import report
from app.loop.records import LoopRecords, parse_since
from ingestion.pipeline import Ingestor

log = logging.getLogger(__name__)
_SHOWN = 10
_DAYS = (7, 30)


async def gaps(
    message: Message,
    *,
    command: CommandObject,
    access: Access,
    bot: Bot,
    fsm_storage: BaseStorage,
    loop: LoopRecords | None = None,
) -> None:
    """The owner's report: /gaps (30 days) or /gaps 7."""
    user = message.from_user
    owned = [c.name for c in access.owned(user.id)] if user else []
    if message.chat.type != "private":
        await message.answer(t("owners_private", user, bot=(await bot.me()).username or ""))
        return
    if not owned:
        await message.answer(t("not_owner", user))
        return
    if loop is None:
        await message.answer(t("gaps_off", user))
        return
    days = _days(command.args)
    found = (await report(loop, parse_since(f"{days}d"), owned))[:_SHOWN]
    if not found:
        await message.answer(t("gaps_none", user, days=days))
        return
    await post_gaps(
        bot,
        fsm_storage,
        message.chat.id,
        language=language_of(user),
        head=t("gaps_head", user, days=days),
        found=found,
        owned=owned,
        access=access,
    )


def _days(args: str | None) -> int:
    text = (args or "").strip().lower().removesuffix("d")
    return int(text) if text.isdigit() and int(text) in _DAYS else _DAYS[-1]


async def answer_gap(
    query: CallbackQuery,
    *,
    callback_data: AnswerGap,
    access: Access,
    bot: Bot,
    fsm_storage: BaseStorage,
) -> None:
    """ "Answer" under a gap: ask the owner for the answer (a ForceReply)."""
    user, message = query.from_user, query.message
    if not isinstance(message, Message):
        await query.answer()
        return
    record = await conversation.message_record(
        fsm_storage, bot.id, message.chat.id, message.message_id
    )
    listing = record.get("gaps") or []
    index = callback_data.index
    if not 0 <= index < len(listing) or not access.owns(user.id, listing[index][1]):
        await query.answer(t("option_gone", user), show_alert=True)
        return
    question, collection, language = listing[index]
    await query.answer()
    title = access.collections[collection].label
    prompt = await message.answer(
        t("gap_write", user, question=question, title=title),
        reply_markup=ForceReply(input_field_placeholder=t("gap_placeholder", user)[:64]),
    )
    await conversation.mark_messages(
        fsm_storage,
        bot.id,
        message.chat.id,
        [prompt.message_id],
        {"answer_for": question, "collection": collection, "language": language, "by": user.id},
    )


async def _answer_request(
    message: Message, bot: Bot, fsm_storage: BaseStorage
) -> dict[str, object] | bool:
    """A filter: the message replies to the bot's request for this owner's answer."""
    record = await conversation.replied_record(message, bot, fsm_storage)
    if record is None or record.get("by") != record["from"] or "answer_for" not in record:
        return False
    return {"answer_request": record}


async def answered(
    message: Message,
    *,
    answer_request: dict[str, object],
    access: Access,
    bot: Bot,
    fsm_storage: BaseStorage,
    ingestor: Ingestor,
) -> None:
    """The owner's answer: a Q&A document of the collection, from now on in the answers."""
    user, replied = message.from_user, message.reply_to_message
    collection = str(answer_request["collection"])
    if user is None or replied is None or not access.owns(user.id, collection):
        await message.answer(t("not_owner", user))
        return
    await conversation.forget_message(fsm_storage, bot.id, message.chat.id, replied.message_id)
    saved = await save_answer(
        ingestor,
        collection,
        str(answer_request["answer_for"]),
        message.text or "",
        author=_name(user),
        language=str(answer_request.get("language") or language_of(user)),
    )
    title = access.collections[collection].label
    if saved.report.status == "failed":
        log.warning("saving an answer to %s failed: %s", collection, saved.report.reason)
        await message.answer(t("gap_failed", user, title=title))
        return
    await message.answer(t("gap_saved", user, title=title, doc=saved.doc_id))


def _name(user: User) -> str:
    return " ".join(p for p in (user.first_name, user.last_name) if p) or f"id {user.id}"


def router() -> Router:
    """A fresh router with this module's handlers (one per Dispatcher)."""
    built = Router(name=__name__)
    built.message.register(gaps, Command("gaps"))
    built.callback_query.register(answer_gap, AnswerGap.filter())
    built.message.register(answered, F.text, ~F.text.startswith("/"), _answer_request)
    return built
