"""Bot API objects as Telegram sends them (plain JSON dicts), for the fake Telegram server.

Builders of User, Chat, Message, Document, CallbackQuery and Update; the decoding of request
parameters the way Telegram reads them (aiogram sends every non-string value JSON-encoded in a
form field); and the checks Telegram makes on a message's text (empty, too long, bad HTML).

PYTEST_DONT_REWRITE: imported by a pytest plugin module; it has no assertions to rewrite.
"""

import json
import time
from html.parser import HTMLParser
from typing import Any

JSON = dict[str, Any]

BOT_ID = 1000
BOT_USERNAME = "kb_test_bot"
BOT_FIRST_NAME = "KB"
# Telegram's limits: message text after entity parsing, and getFile for cloud bots.
MAX_TEXT_LENGTH = 4096
MAX_DOWNLOAD_SIZE = 20 * 1024 * 1024

# Update kinds Telegram leaves out unless allowed_updates asks for them by name.
OPT_IN_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})

# Parameters that are strings in the Bot API: never JSON-decoded, so a text "42" or "[1]" stays
# a string. Anything else that parses as JSON (numbers, booleans, objects, lists) is decoded.
STRING_PARAMS = frozenset(
    {"text", "caption", "parse_mode", "data", "callback_query_id", "file_id", "url", "action",
     "secret_token", "inline_message_id", "business_connection_id", "language_code", "title",
     "description", "short_description", "name", "emoji", "query", "ip_address", "question",
     "message_effect_id", "custom_emoji_id", "sticker", "photo", "document", "video", "audio",
     "voice", "animation", "video_note", "thumbnail", "certificate", "explanation"}
)  # fmt: skip

# The HTML tags Telegram accepts with parse_mode=HTML (https://core.telegram.org/bots/api).
HTML_TAGS = frozenset(
    {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler", "a",
     "code", "pre", "blockquote", "tg-emoji", "tg-time"}
)  # fmt: skip


def decode_param(name: str, value: Any) -> Any:
    """A parameter's value as Telegram reads it: JSON-encoded strings decoded, except in
    parameters that are strings in the Bot API (text, caption, data...)."""
    if not isinstance(value, str) or name in STRING_PARAMS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value  # "@channel", "typing", "HTML"... are plain strings


def utf16_len(text: str) -> int:
    """The length of text in UTF-16 code units, the unit of entity offsets and lengths."""
    return len(text.encode("utf-16-le")) // 2


def mention_entity(text: str, mention: str = f"@{BOT_USERNAME}") -> JSON:
    """A "mention" MessageEntity for the first occurrence of mention (e.g. "@kb_test_bot")."""
    start = text.index(mention)
    return {"type": "mention", "offset": utf16_len(text[:start]), "length": utf16_len(mention)}


def bot_command_entity(text: str) -> JSON | None:
    """The "bot_command" entity Telegram adds to a text that starts with "/cmd", else None."""
    if not text.startswith("/"):
        return None
    command = text.split(maxsplit=1)[0]
    return {"type": "bot_command", "offset": 0, "length": utf16_len(command)}


def user(
    user_id: int,
    first_name: str = "User",
    *,
    username: str | None = None,
    last_name: str | None = None,
    language_code: str | None = None,
    is_bot: bool = False,
) -> JSON:
    """A User."""
    result: JSON = {"id": user_id, "is_bot": is_bot, "first_name": first_name}
    optional = {"username": username, "last_name": last_name, "language_code": language_code}
    result.update({key: value for key, value in optional.items() if value is not None})
    return result


def bot_user() -> JSON:
    """The fake bot itself, as getMe answers."""
    return {
        **user(BOT_ID, BOT_FIRST_NAME, username=BOT_USERNAME, is_bot=True),
        "can_join_groups": True,
        "can_read_all_group_messages": False,
        "supports_inline_queries": False,
    }


def chat(
    chat_id: int, chat_type: str = "private", *, title: str | None = None, **names: Any
) -> JSON:
    """A Chat: a private chat carries the user's names, a group or channel a title."""
    if chat_type == "private":
        return {"id": chat_id, "type": chat_type, **names}
    return {"id": chat_id, "type": chat_type, "title": title or f"Chat {chat_id}"}


def message(
    message_id: int,
    chat_: JSON,
    *,
    from_: JSON | None,
    text: str | None = None,
    entities: list[JSON] | None = None,
    reply_to: JSON | None = None,
    date: int | None = None,
    **fields: Any,
) -> JSON:
    """A Message; fields adds any other field (document, caption, reply_markup, edit_date...)."""
    result: JSON = {"message_id": message_id, "date": date or int(time.time()), "chat": chat_}
    if from_ is not None:
        result["from"] = from_
    if text is not None:
        result["text"] = text
    if entities:
        result["entities"] = entities
    if reply_to is not None:
        # Telegram nests the replied message one level deep only.
        result["reply_to_message"] = {k: v for k, v in reply_to.items() if k != "reply_to_message"}
    result.update({key: value for key, value in fields.items() if value is not None})
    return result


def document(
    file_id: str,
    file_unique_id: str,
    file_name: str,
    mime_type: str | None,
    file_size: int,
) -> JSON:
    """A Document."""
    result: JSON = {
        "file_id": file_id,
        "file_unique_id": file_unique_id,
        "file_name": file_name,
        "file_size": file_size,
    }
    if mime_type is not None:
        result["mime_type"] = mime_type
    return result


def callback_query(
    query_id: str, from_: JSON, data: str, message_: JSON, chat_instance: str
) -> JSON:
    """A CallbackQuery from an inline button on message_ (the bot's message)."""
    return {
        "id": query_id,
        "from": from_,
        "message": message_,
        "chat_instance": chat_instance,
        "data": data,
    }


# The fields each ChatMember status carries besides status and user (rights all off).
_ADMIN_RIGHTS = frozenset(
    {"can_be_edited", "is_anonymous", "can_manage_chat", "can_delete_messages",
     "can_manage_video_chats", "can_restrict_members", "can_promote_members", "can_change_info",
     "can_invite_users", "can_post_stories", "can_edit_stories", "can_delete_stories",
     "can_send_welcome_messages"}
)  # fmt: skip
_RESTRICTIONS = frozenset(
    {"can_send_messages", "can_send_audios", "can_send_documents", "can_send_photos",
     "can_send_videos", "can_send_video_notes", "can_send_voice_notes", "can_send_polls",
     "can_send_other_messages", "can_add_web_page_previews", "can_react_to_messages",
     "can_edit_tag", "can_change_info", "can_invite_users", "can_pin_messages",
     "can_manage_topics"}
)  # fmt: skip


def chat_member(user_: JSON, status: str = "member", *, is_member: bool = True) -> JSON:
    """A ChatMember: creator, administrator, member, restricted (is_member says whether the
    restricted user is still in the chat), left or kicked."""
    result: JSON = {"status": status, "user": user_}
    if status == "creator":
        result["is_anonymous"] = False
    elif status == "administrator":
        result.update(dict.fromkeys(_ADMIN_RIGHTS, False))
    elif status == "restricted":
        result.update(dict.fromkeys(_RESTRICTIONS, False), is_member=is_member, until_date=0)
    elif status == "kicked":
        result["until_date"] = 0
    return result


def update(update_id: int, **payload: JSON) -> JSON:
    """An Update with one payload, e.g. update(7, message={...})."""
    return {"update_id": update_id, **payload}


def update_type(update_: JSON) -> str:
    """The kind of an Update: the name of its one field besides update_id."""
    return next(key for key in update_ if key != "update_id")


def error_body(status: int, description: str, retry_after: int | None = None) -> JSON:
    """An error answer in Telegram's format (with parameters.retry_after for a 429)."""
    body: JSON = {"ok": False, "error_code": status, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return body


class _EntityParser(HTMLParser):
    """Telegram's HTML parse mode, strictly enough to catch what Telegram refuses."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.plain: list[str] = []
        self.error: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in HTML_TAGS:
            self._fail(f'Unsupported start tag "{tag}"')
        self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1] != tag:
            expected = f', expected "</{self.open[-1]}>"' if self.open else ""
            self._fail(f'Unmatched end tag{expected}, found "</{tag}>"')
            return
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.plain.append(data)

    def _fail(self, problem: str) -> None:
        if self.error is None:
            self.error = problem


def text_problem(text: str, parse_mode: str | None) -> tuple[str, str]:
    """(plain text, "") or (plain text, why Telegram refuses it): empty, too long, bad HTML.
    The plain text is what Telegram would store: tags stripped and entities unescaped."""
    plain = text
    if (parse_mode or "").upper() == "HTML":
        parser = _EntityParser()
        parser.feed(text)
        parser.close()
        plain = "".join(parser.plain)
        if parser.error is None and parser.open:
            parser.error = f'Can\'t find end tag corresponding to start tag "{parser.open[-1]}"'
        if parser.error is not None:
            return plain, f"Bad Request: can't parse entities: {parser.error}"
    if not plain.strip():
        return plain, "Bad Request: message text is empty"
    if utf16_len(plain) > MAX_TEXT_LENGTH:
        return plain, "Bad Request: message is too long"
    return plain, ""
