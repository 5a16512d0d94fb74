"""/start, /help, /new and /collection: greeting, usage, a fresh conversation, and choosing
the knowledge base."""

from aiogram import Router
from aiogram.filters import Command, CommandStart
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message

from app.bot import conversation
from app.bot.access import Access
from app.bot.keyboards import ChooseCollection, collection_buttons
from app.bot.locks import ConversationLocks
from app.bot.scope import by_index, readable
from app.bot.texts import t


async def start(message: Message, access: Access) -> None:
    """Greet, explain, and offer the collections this user may read."""
    await message.answer(t("start", message.from_user))
    await _offer(message, access)


async def help_(message: Message) -> None:
    """Usage, in the user's language."""
    user = message.from_user
    await message.answer(f"{t('help', user)}\n{t('help_conversation', user)}")


async def new(message: Message, state: FSMContext, locks: ConversationLocks) -> None:
    """A fresh conversation: history and pending clarification gone, collection kept."""
    async with conversation.editing(state, locks) as talk:
        talk.reset()
    await message.answer(t("new_conversation", message.from_user))


async def choose(message: Message, access: Access) -> None:
    """Offer the collections again."""
    await _offer(message, access)


async def _offer(message: Message, access: Access) -> None:
    user = message.from_user
    options = await readable(access, user.id if user else 0, message.chat)
    if not options:
        await message.answer(t("no_access", user))
    elif len(options) == 1:
        await message.answer(t("chosen", user, title=options[0][1].label))
    else:
        await message.answer(
            t("choose", user), reply_markup=collection_buttons(options, ChooseCollection)
        )


async def chosen(
    query: CallbackQuery,
    callback_data: ChooseCollection,
    access: Access,
    state: FSMContext,
    locks: ConversationLocks,
) -> None:
    """Remember the chosen collection, if this chat may read it."""
    config = by_index(access, callback_data.index)
    chat = query.message.chat if query.message else None
    options = await readable(access, query.from_user.id, chat) if chat else []
    allowed = {c.name for _, c in options}
    if config is None or config.name not in allowed:
        await query.answer(t("no_access", query.from_user), show_alert=True)
        return
    async with conversation.editing(state, locks) as talk:
        talk.collection = config.name
    await query.answer()
    if isinstance(query.message, Message):
        await query.message.edit_text(t("chosen", query.from_user, title=config.label))


def router() -> Router:
    """A fresh router with this module's handlers (one per Dispatcher)."""
    built = Router(name=__name__)
    built.message.register(start, CommandStart())
    built.message.register(help_, Command("help"))
    built.message.register(new, Command("new", "reset"))
    built.message.register(choose, Command("collection"))
    built.callback_query.register(chosen, ChooseCollection.filter())
    return built
