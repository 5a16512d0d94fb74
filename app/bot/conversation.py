"""What the bot remembers per conversation (a user in a chat, per forum topic): the chosen
collection, the last turns, and what it is waiting for; and, per chat, which trace each answer
message belongs to. Kept in aiogram's FSM storage (memory, or Redis with a TTL)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from aiogram import Bot
from aiogram.fsm.context import FSMContext
from aiogram.fsm.storage.base import BaseStorage, StorageKey
from aiogram.types import Message

from app.bot.locks import ConversationLocks
from app.chain.types import Turn


@dataclass
class PendingUpload:
    """A document an owner sent while the bot asks which collection it goes to."""

    file_id: str
    file_name: str
    size: int


@dataclass
class Conversation:
    """The state of one conversation."""

    collection: str | None = None
    history: list[list[str]] = field(default_factory=list)
    # A clarifying question waiting for an option: the original question and the options.
    question: str | None = None
    options: list[str] = field(default_factory=list)
    uploads: list[PendingUpload] = field(default_factory=list)
    # (collection, doc_id) waiting for the delete confirmation.
    delete: list[str] | None = None
    # Bumped by /new: a question that was running across it does not add its turn.
    epoch: int = 0

    def turns(self) -> list[Turn]:
        """The history as chain turns."""
        return [
            Turn("user" if role == "user" else "assistant", text) for role, text in self.history
        ]

    def reset(self) -> None:
        """A fresh conversation: history and pending clarification gone, collection kept."""
        self.history, self.question, self.options = [], None, []
        self.epoch += 1

    def remember(self, question: str, answer: str, keep_turns: int) -> None:
        """Add a question and its answer; keep the last keep_turns pairs."""
        self.history.extend([["user", question], ["assistant", answer]])
        self.history = self.history[-2 * keep_turns :] if keep_turns else []


async def load(state: FSMContext) -> Conversation:
    """The conversation stored for this chat and user (a fresh one when there is none)."""
    data: dict[str, Any] = await state.get_data()
    uploads = [PendingUpload(**u) for u in data.get("uploads", [])]
    known = {k: v for k, v in data.items() if k in Conversation.__dataclass_fields__}
    known["uploads"] = uploads
    return Conversation(**known)


async def save(state: FSMContext, conversation: Conversation) -> None:
    """Store the conversation (plain JSON types, so Redis storage works)."""
    await state.set_data(asdict(conversation))


def lock_key(key: StorageKey) -> str:
    """The lock name of a conversation (its FSM key: bot, chat, topic, user)."""
    return f"{key.bot_id}:{key.chat_id}:{key.thread_id or 0}:{key.user_id}"


@asynccontextmanager
async def editing(state: FSMContext, locks: ConversationLocks) -> AsyncIterator[Conversation]:
    """The conversation loaded under its lock, saved when the block ends without an error."""
    async with locks.hold(lock_key(state.key)):
        talk = await load(state)
        yield talk
        await save(state, talk)


def _message_key(bot_id: int, chat_id: int, message_id: int) -> StorageKey:
    # The bot as the "user" and the message as the "topic": no conversation has the bot as its
    # user, so these records never meet a conversation's state (and share its TTL in Redis).
    return StorageKey(bot_id=bot_id, chat_id=chat_id, user_id=bot_id, thread_id=message_id)


async def mark_messages(
    storage: BaseStorage, bot_id: int, chat_id: int, message_ids: list[int], record: dict[str, Any]
) -> None:
    """Note what the bot's messages are: {"trace": id} for an answer, plus
    {"comment_by": user id} for a request for a comment."""
    for message_id in message_ids:
        await storage.set_data(_message_key(bot_id, chat_id, message_id), record)


async def message_record(
    storage: BaseStorage, bot_id: int, chat_id: int, message_id: int
) -> dict[str, Any]:
    """What mark_messages noted for a message ({} when nothing or expired)."""
    return await storage.get_data(_message_key(bot_id, chat_id, message_id))


async def replied_record(message: Message, bot: Bot, storage: BaseStorage) -> dict[str, Any] | None:
    """What the bot's message this one replies to stands for (mark_messages), with the
    replying user's id as "from"; None when it replies to nothing of the bot's (the storage is
    read only for replies to the bot)."""
    replied, user = message.reply_to_message, message.from_user
    if replied is None or user is None or replied.from_user is None:
        return None
    if replied.from_user.id != (await bot.me()).id:
        return None
    record = await message_record(storage, bot.id, message.chat.id, replied.message_id)
    return {**record, "from": user.id}


async def forget_message(storage: BaseStorage, bot_id: int, chat_id: int, message_id: int) -> None:
    """Drop a message's record (a comment request that was answered)."""
    await storage.set_data(_message_key(bot_id, chat_id, message_id), {})
