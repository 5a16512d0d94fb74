"""Which collections a question in a given chat may search: decided before the search, so
text from a collection the chat may not read is never retrieved at all."""

from aiogram.types import Chat

from app.bot.access import Access, ChatKind, CollectionConfig
from app.bot.conversation import Conversation


def chat_kind(chat: Chat) -> ChatKind:
    """Private chat, or a group (where everyone present sees the answer)."""
    return "private" if chat.type == "private" else "group"


async def readable(access: Access, user_id: int, chat: Chat) -> list[tuple[int, CollectionConfig]]:
    """(position in the collections file, collection) pairs this chat may read now; group
    memberships are checked with the bot the chat came with (aiogram binds it)."""
    configs = list(access.collections.values())
    allowed = {c.name for c in await access.readable(user_id, chat.id, chat_kind(chat), chat.bot)}
    return [(i, c) for i, c in enumerate(configs) if c.name in allowed]


async def search_scope(
    access: Access, conversation: Conversation, user_id: int, chat: Chat
) -> list[str]:
    """The collections to search: the group's bound one, else the chosen one, else every
    readable one; always a subset of what the chat may read."""
    names = [c.name for _, c in await readable(access, user_id, chat)]
    bound = access.bound_collection(chat.id) if chat_kind(chat) == "group" else None
    if bound in names:
        return [bound] if bound else names
    if conversation.collection in names:
        return [conversation.collection] if conversation.collection else names
    return names


def by_index(access: Access, index: int) -> CollectionConfig | None:
    """The collection at a position of the collections file (button payloads use these)."""
    configs = list(access.collections.values())
    return configs[index] if 0 <= index < len(configs) else None
