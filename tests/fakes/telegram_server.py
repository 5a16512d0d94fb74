"""A fake Telegram Bot API server over real HTTP, for the real aiogram stack (long polling).

It listens on 127.0.0.1 on a free port and answers `{base_url}/bot{token}/{method}` (GET or POST;
JSON, urlencoded or multipart bodies, as aiogram sends them) and file downloads at
`{base_url}/file/bot{token}/{file_path}`. Point a bot at it with
`AiohttpSession(api=TelegramAPIServer.from_base(server.base_url))`, or take `server.new_bot()`.

Tests drive it like users would (push_message, push_document, push_callback: updates that the
next getUpdates returns), read what the bot did (calls, sent_messages, drafts, chat_actions),
and wait for it without sleeps (wait_for, wait_for_message, wait_for_call, wait_for_poll).
It answers like Telegram, errors included (chat not found, message is not modified, file is too
big, can't parse entities, 409 for a second getUpdates), and injects faults on demand
(fail_next, rate_limit_next, set_latency). sendRichMessage answers 404 "method not found", as an
older server does, until support_rich(); refuse_rich(chat_type) makes it refuse a chat type.

Design: an aiohttp.web server on its own event loop in a daemon thread. A long poll then waits
on that loop and never blocks the test's loop (nor the other way round: a test that blocks its
own loop cannot stall the server), it serves hundreds of concurrent requests without a thread
each, and the server outlives no test loop. The state sits behind one lock; the test side
wakes pending long polls with call_soon_threadsafe, and the server wakes the test's waiters the
same way.

PYTEST_DONT_REWRITE: test modules import this plugin before pytest_plugins registers it, which
would make pytest warn that it cannot rewrite it; it has no assertions to rewrite.
"""

import asyncio
import dataclasses
import html
import itertools
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiohttp import web
from aiohttp.web_request import FileField

from tests.fakes import telegram_objects as tg
from tests.fakes.telegram_objects import JSON

__all__ = [
    "DEFAULT_TOKEN",
    "BotMessage",
    "Draft",
    "FakeTelegramServer",
    "PushedUpdate",
    "RecordedCall",
    "StoredFile",
    "UploadedFile",
    "WaitTimeout",
    "telegram_server",
]

logger = logging.getLogger(__name__)

DEFAULT_TOKEN = "123456:TEST-token"
DOWNLOAD_METHOD = "downloadFile"  # how file downloads (GET /file/bot.../path) are recorded
_T = TypeVar("_T")
# A rich message's text (Bot API 10.1: 32768 characters, what it shows).
MAX_RICH_TEXT_LENGTH = 32768
_Handler = Callable[[JSON, dict[str, "UploadedFile"]], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """A file part of a multipart request."""

    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass(slots=True)
class RecordedCall:
    """One API call: params JSON-decoded (reply_markup is a dict); status and result are set
    when it is answered (result is the "result" or the error description)."""

    method: str
    params: JSON
    files: dict[str, UploadedFile]
    http_method: str
    token: str
    at: float  # time.monotonic() on arrival
    status: int | None = None
    result: Any = None
    answered_at: float | None = None

    def file(self, param: str) -> UploadedFile | None:
        """The uploaded file a parameter refers to ("attach://key", or a part of that name)."""
        return _attached(self.params, self.files, param)


@dataclass(slots=True)
class BotMessage:
    """A message the bot sent, in its current state (text and reply_markup after edits)."""

    chat_id: int
    message_id: int
    method: str  # sendMessage, sendDocument
    text: str | None  # as the bot sent it (with its HTML tags), the caption for a document
    plain_text: str | None  # as Telegram shows it: tags stripped
    parse_mode: str | None
    reply_markup: JSON | None
    reply_to_message_id: int | None
    link_preview_options: JSON | None
    params: JSON  # the call that sent it
    history: list[str | None] = field(default_factory=list)  # every text, the first one first
    document: UploadedFile | None = None
    rich: JSON | None = None  # sendRichMessage: the rich_message sent (text: its html or markdown)
    deleted: bool = False
    sent_at: float = 0.0
    edited_at: float | None = None


@dataclass(frozen=True, slots=True)
class Draft:
    """One sendMessageDraft call."""

    chat_id: int
    draft_id: int
    text: str | None
    parse_mode: str | None
    at: float
    can_stop: bool = False
    message_thread_id: int | None = None


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A file getFile knows; too_big ones answer 400 "file is too big" like Telegram."""

    file_id: str
    file_unique_id: str
    file_path: str
    data: bytes
    file_size: int
    too_big: bool = False


@dataclass(frozen=True, slots=True)
class PushedUpdate:
    """What a push_* method queued."""

    update_id: int
    chat_id: int
    message_id: int
    update: JSON
    at: float  # time.monotonic() when queued
    callback_query_id: str | None = None
    file_id: str | None = None


class WaitTimeout(AssertionError):  # noqa: N818 - it is a failed assertion, not an error
    """A wait_for* gave up; the message lists the last calls the server saw."""


class ApiError(Exception):
    """An error answer in Telegram's format."""

    def __init__(self, status: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class _Fault:
    status: int
    description: str
    retry_after: int | None


def _bad(description: str) -> ApiError:
    return ApiError(400, f"Bad Request: {description}")


NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly the "
    "same as a current content and reply markup of the message"
)
CALLBACK_TOO_OLD = "query is too old and response timeout expired or query ID is invalid"
POLL_CONFLICT = (
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is "
    "running"
)
WEBHOOK_CONFLICT = (
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete "
    "the webhook first"
)


class FakeTelegramServer:
    """The server, its chats and updates, and its record; a context manager or start()/stop().

    max_poll_timeout caps getUpdates' timeout (seconds), so a bot's stop is never slow;
    validate_html refuses text that Telegram's HTML parse mode would refuse.
    """

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        max_poll_timeout: float = 1.0,
        validate_html: bool = True,
    ) -> None:
        self.token = token
        self.max_poll_timeout = max_poll_timeout
        self.validate_html = validate_html
        # Bugs of the fake itself (answered with a 500), for a test to assert empty.
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._calls: list[RecordedCall] = []
        self._updates: list[JSON] = []
        self._update_ids = itertools.count(1)
        self._chats: dict[int, JSON] = {}
        self._messages: dict[tuple[int, int], JSON] = {}
        self._message_ids: dict[int, Iterator[int]] = {}
        self._bot_messages: dict[tuple[int, int], BotMessage] = {}
        self._drafts: list[Draft] = []
        self._files: dict[str, StoredFile] = {}
        self._file_ids = itertools.count(1)
        self._callbacks: dict[str, JSON | None] = {}  # query id -> answer params once answered
        self._callback_ids = itertools.count(1)
        self._commands: dict[str, list[Any]] = {}  # language_code ("" for all) -> commands
        # getChatMember: (chat, user) -> (status, is_member); chats in _hidden_chats answer
        # "chat not found", as for a group the bot is not in.
        self._members: dict[tuple[int, int], tuple[str, bool]] = {}
        self._hidden_chats: set[int] = set()
        self._faults: dict[str, deque[_Fault]] = {}
        self._latency: dict[str, float] = {}
        self._allowed_updates: frozenset[str] | None = None
        self._webhook_url = ""
        self._rich = False
        self._rich_refused: dict[str, str] = {}  # chat type -> the error description
        self._poll_generation = 0
        self._pending_polls = 0
        self._stopping = False
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._handlers: dict[str, tuple[str, _Handler]] = {}
        for name, handler in self._method_table().items():
            self._handlers[name.lower()] = (name, handler)
        # Server side, created on the server's loop.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._update_event: asyncio.Event | None = None
        self._port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port it listens on (after start)."""
        return self._port

    @property
    def base_url(self) -> str:
        """The base URL (what TELEGRAM_API_URL and TelegramAPIServer.from_base take)."""
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> "FakeTelegramServer":
        """Serve on a loop of its own in a daemon thread; returns once it listens."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="fake-telegram", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise RuntimeError("fake Telegram server did not start") from failure[0]
        return self

    async def _serve(self) -> None:
        self._update_event = asyncio.Event()
        app = web.Application(client_max_size=100 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        # handler_cancellation: a long poll whose client gave up (a bot stopping) ends at once.
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=2.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    def stop(self) -> None:
        """Stop serving; pending long polls answer [] at once."""
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None or runner is None:
            return
        with self._lock:
            self._stopping = True
        loop.call_soon_threadsafe(self._wake_polls)
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> "FakeTelegramServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def new_bot(self, **kwargs: Any) -> Bot:
        """An aiogram Bot with this server's token and URL (close its session when done)."""
        session = AiohttpSession(api=TelegramAPIServer.from_base(self.base_url))
        return Bot(self.token, session=session, **kwargs)

    # -- driving: what users do ------------------------------------------------------------

    def add_chat(
        self, chat_id: int, chat_type: str = "private", *, title: str | None = None, **names: Any
    ) -> JSON:
        """Make a chat known (pushes do it themselves), so the bot may write to it first."""
        chat = tg.chat(chat_id, chat_type, title=title, **names)
        with self._lock:
            self._chats[chat_id] = chat
            self._message_ids.setdefault(chat_id, itertools.count(1))
        return chat

    def push_message(
        self,
        user_id: int,
        text: str,
        *,
        chat_id: int | None = None,
        chat_type: str = "private",
        reply_to_message_id: int | None = None,
        entities: list[JSON] | None = None,
        first_name: str = "User",
        username: str | None = None,
        language_code: str | None = None,
        message_thread_id: int | None = None,
    ) -> PushedUpdate:
        """A user writes text; chat_id defaults to the private chat (the user's id) and is
        required for groups. Without entities, Telegram's own are added: a leading /command and
        a mention of @kb_test_bot (pass entities=[] for none). message_thread_id: written in
        that forum topic (the group becomes a forum)."""
        if entities is None:
            found = [tg.bot_command_entity(text)]
            if f"@{tg.BOT_USERNAME}" in text:
                found.append(tg.mention_entity(text))
            entities = [entity for entity in found if entity is not None]
        return self._push_user_message(
            user_id,
            chat_id,
            chat_type,
            tg.user(user_id, first_name, username=username, language_code=language_code),
            reply_to_message_id,
            text=text,
            entities=entities,
            message_thread_id=message_thread_id,
            is_topic_message=True if message_thread_id is not None else None,
        )

    def push_document(
        self,
        user_id: int,
        file_name: str,
        data: bytes,
        mime_type: str | None = "application/octet-stream",
        *,
        caption: str | None = None,
        chat_id: int | None = None,
        chat_type: str = "private",
        too_big: bool = False,
        file_size: int | None = None,
        first_name: str = "User",
        username: str | None = None,
        language_code: str | None = None,
    ) -> PushedUpdate:
        """A user sends a file; getFile and the download then serve data. A too_big file says
        it has over 20 MB (unless file_size says otherwise) and getFile refuses it."""
        if file_size is None:
            file_size = max(len(data), tg.MAX_DOWNLOAD_SIZE + 1) if too_big else len(data)
        stored = self.register_file(data, file_name, too_big=too_big, file_size=file_size)
        doc = tg.document(stored.file_id, stored.file_unique_id, file_name, mime_type, file_size)
        pushed = self._push_user_message(
            user_id,
            chat_id,
            chat_type,
            tg.user(user_id, first_name, username=username, language_code=language_code),
            None,
            document=doc,
            caption=caption,
        )
        return dataclasses.replace(pushed, file_id=stored.file_id)

    def push_callback(
        self,
        user_id: int,
        data: str,
        message_id: int,
        *,
        chat_id: int | None = None,
        first_name: str = "User",
        username: str | None = None,
    ) -> PushedUpdate:
        """A user presses an inline button with callback data on the bot's message."""
        chat_id = user_id if chat_id is None else chat_id
        with self._lock:
            message = self._messages.get((chat_id, message_id))
            if message is None or (chat_id, message_id) not in self._bot_messages:
                raise ValueError(f"no message {message_id} of the bot in chat {chat_id}")
            query_id = f"cbq-{next(self._callback_ids)}"
            self._callbacks[query_id] = None
            query = tg.callback_query(
                query_id,
                tg.user(user_id, first_name, username=username),
                data,
                message,
                chat_instance=f"ci{chat_id}",
            )
            pushed = self._queue(chat_id, message_id, callback_query=query)
        return dataclasses.replace(pushed, callback_query_id=query_id)

    def push_reaction(
        self,
        user_id: int,
        message_id: int,
        new: list[str],
        old: list[str] | None = None,
        *,
        chat_id: int | None = None,
    ) -> int:
        """A user changes their emoji reactions on a message (a message_reaction update, which
        the bot gets only when allowed_updates names it); its update_id."""
        chat_id = user_id if chat_id is None else chat_id
        with self._lock:
            chat = self._chats[chat_id]
        reaction = {
            "chat": chat,
            "message_id": message_id,
            "user": tg.user(user_id),
            "date": int(time.time()),
            "old_reaction": [{"type": "emoji", "emoji": e} for e in old or []],
            "new_reaction": [{"type": "emoji", "emoji": e} for e in new],
        }
        return self.push_update(message_reaction=reaction)

    def push_stop(self, chat_id: int, draft_id: int, message_thread_id: int | None = None) -> int:
        """The user presses the stop button of a draft (a stopped_message_generation update)."""
        with self._lock:
            chat = self._chats[chat_id]
        stopped: JSON = {"chat": chat, "draft_id": draft_id}
        if message_thread_id is not None:
            stopped["message_thread_id"] = message_thread_id
        return self.push_update(stopped_message_generation=stopped)

    def push_update(self, **payload: JSON) -> int:
        """Queue any other update, e.g. push_update(edited_message={...}); its update_id."""
        with self._lock:
            update_id = next(self._update_ids)
            self._updates.append(tg.update(update_id, **payload))
        self._updates_changed()
        return update_id

    def register_file(
        self, data: bytes, file_name: str, *, too_big: bool = False, file_size: int | None = None
    ) -> StoredFile:
        """Make a file known to getFile and the download route."""
        with self._lock:
            number = next(self._file_ids)
            suffix = file_name.rsplit(".", 1)[-1] if "." in file_name else "bin"
            stored = StoredFile(
                file_id=f"BQACAgIAAxkBAAI{number:06d}",
                file_unique_id=f"AgAD{number:04d}",
                file_path=f"documents/file_{number}.{suffix}",
                data=data,
                file_size=len(data) if file_size is None else file_size,
                too_big=too_big,
            )
            self._files[stored.file_id] = stored
        return stored

    def _push_user_message(
        self,
        user_id: int,
        chat_id: int | None,
        chat_type: str,
        from_: JSON,
        reply_to_message_id: int | None,
        **fields: Any,
    ) -> PushedUpdate:
        if chat_id is None:
            if chat_type != "private":
                raise ValueError(f"a {chat_type} chat needs a chat_id")
            chat_id = user_id
        names = {k: v for k, v in from_.items() if k in ("first_name", "last_name", "username")}
        with self._lock:
            chat = self._chats.get(chat_id)
            if chat is None or chat["type"] != chat_type:
                chat = self._chats[chat_id] = tg.chat(chat_id, chat_type, **names)
            if fields.get("is_topic_message") and chat_type != "private":
                chat["is_forum"] = True
            reply_to = None
            if reply_to_message_id is not None:
                reply_to = self._messages.get((chat_id, reply_to_message_id))
                if reply_to is None:
                    raise ValueError(f"no message {reply_to_message_id} in chat {chat_id}")
            message_id = self._next_message_id(chat_id)
            message = tg.message(message_id, chat, from_=from_, reply_to=reply_to, **fields)
            self._messages[(chat_id, message_id)] = message
            return self._queue(chat_id, message_id, message=message)

    def _queue(self, chat_id: int, message_id: int, **payload: JSON) -> PushedUpdate:
        """Append an update (with the lock held) and wake the long polls."""
        update = tg.update(next(self._update_ids), **payload)
        self._updates.append(update)
        self._updates_changed()
        return PushedUpdate(update["update_id"], chat_id, message_id, update, time.monotonic())

    def _updates_changed(self) -> None:
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._wake_polls)

    def _next_message_id(self, chat_id: int) -> int:
        return next(self._message_ids.setdefault(chat_id, itertools.count(1)))

    def set_member(
        self, chat_id: int, user_id: int, status: str = "member", *, is_member: bool = True
    ) -> None:
        """What getChatMember answers for a user of a group (anyone not set: "left")."""
        with self._lock:
            self._members[(chat_id, user_id)] = (status, is_member)

    def hide_chat(self, chat_id: int, hidden: bool = True) -> None:
        """getChatMember in this chat answers "chat not found" (the bot is not in it)."""
        with self._lock:
            (self._hidden_chats.add if hidden else self._hidden_chats.discard)(chat_id)

    # -- faults ----------------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        times: int = 1,
        *,
        status: int = 500,
        description: str = "Internal Server Error",
        retry_after: int | None = None,
    ) -> None:
        """Answer the next `times` calls of method ("*" for any) with this error."""
        with self._lock:
            queue = self._faults.setdefault(method.lower(), deque())
            queue.extend([_Fault(status, description, retry_after)] * times)

    def rate_limit_next(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        """Answer the next `times` calls of method with 429 Too Many Requests, like Telegram."""
        description = f"Too Many Requests: retry after {retry_after}"
        self.fail_next(method, times, status=429, description=description, retry_after=retry_after)

    def support_rich(self, supported: bool = True) -> None:
        """Know sendRichMessage (Bot API 10.1), or answer it 404 like an older server."""
        with self._lock:
            self._rich = supported

    def refuse_rich(
        self, chat_type: str, description: str = "Bad Request: rich messages are not allowed here"
    ) -> None:
        """Answer sendRichMessage in chats of this type with a 400 (the wording is a guess)."""
        with self._lock:
            self._rich_refused[chat_type] = description

    def set_latency(self, seconds: float, method: str | None = None) -> None:
        """Delay every answer (or method's) by seconds, as a real network would."""
        with self._lock:
            self._latency["*" if method is None else method.lower()] = seconds

    # -- the record --------------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[RecordedCall]:
        """Every call so far (copies), or those of one method, in arrival order."""
        wanted = None if method is None else method.lower()
        with self._lock:
            return [
                dataclasses.replace(call)
                for call in self._calls
                if wanted is None or call.method.lower() == wanted
            ]

    def sent_messages(self, chat_id: int | None = None) -> list[BotMessage]:
        """The bot's messages (copies, deleted ones too), in the order it sent them."""
        with self._lock:
            return [
                dataclasses.replace(message, history=list(message.history))
                for message in self._bot_messages.values()
                if chat_id is None or message.chat_id == chat_id
            ]

    def texts(self, chat_id: int) -> list[str | None]:
        """The current texts of the bot's messages in a chat that are not deleted."""
        return [m.text for m in self.sent_messages(chat_id) if not m.deleted]

    def message(self, chat_id: int, message_id: int) -> JSON | None:
        """Any message (the users' or the bot's) as Telegram would send it now."""
        with self._lock:
            return self._messages.get((chat_id, message_id))

    def drafts(self, chat_id: int | None = None) -> list[Draft]:
        """The sendMessageDraft calls (of a chat), in order."""
        with self._lock:
            return [d for d in self._drafts if chat_id is None or d.chat_id == chat_id]

    def chat_actions(self, chat_id: int) -> list[str]:
        """The actions sendChatAction sent to a chat, in order."""
        return [
            str(call.params.get("action"))
            for call in self.calls("sendChatAction")
            if call.params.get("chat_id") == chat_id
        ]

    def callback_answer(self, callback_query_id: str) -> JSON | None:
        """The answerCallbackQuery params for a pushed callback, None while unanswered."""
        with self._lock:
            return self._callbacks.get(callback_query_id)

    def error_calls(self) -> list[RecordedCall]:
        """The calls answered with an error (injected ones included)."""
        return [call for call in self.calls() if call.status is not None and call.status >= 400]

    @property
    def pending_updates(self) -> int:
        """Updates queued and not yet confirmed by a getUpdates offset."""
        with self._lock:
            return len(self._updates)

    @property
    def pending_polls(self) -> int:
        """getUpdates calls waiting for updates right now."""
        with self._lock:
            return self._pending_polls

    @property
    def commands(self) -> list[Any]:
        """The last setMyCommands list for every language (no language_code)."""
        return self.commands_for("")

    def commands_for(self, language_code: str) -> list[Any]:
        """The last setMyCommands list for users of a language ("" for the default list)."""
        with self._lock:
            return list(self._commands.get(language_code, []))

    @property
    def webhook_url(self) -> str:
        """The webhook setWebhook set ("" when none)."""
        with self._lock:
            return self._webhook_url

    def clear_records(self) -> None:
        """Forget the calls and drafts so far (chats, messages and files stay), e.g. after a
        warm-up in a benchmark."""
        with self._lock:
            self._calls.clear()
            self._drafts.clear()

    # -- waiting -----------------------------------------------------------------------------

    async def wait_for(
        self,
        condition: Callable[[], _T | None],
        timeout: float = 5.0,  # noqa: ASYNC109 - bounds a poll of the record, not an I/O call
        what: str = "",
    ) -> _T:
        """The first truthy value of condition(), evaluated again whenever the server records
        or answers a call (and every 0.1 s); WaitTimeout after timeout seconds."""
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()
        waiter = (loop, changed)
        with self._lock:
            self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    changed.clear()
                    result = condition()
                    if result:
                        return result
                    with suppress(TimeoutError):
                        async with asyncio.timeout(0.1):
                            await changed.wait()
        except TimeoutError:
            recent = "\n".join(
                f"  {c.method} {c.params} -> {c.status} {c.result!r}"[:300]
                for c in self.calls()[-10:]
            )
            raise WaitTimeout(
                f"waited {timeout} s for {what or condition}; the last calls:\n{recent}"
            ) from None
        finally:
            with self._lock:
                self._waiters.remove(waiter)

    async def wait_for_message(
        self,
        chat_id: int,
        predicate: Callable[[BotMessage], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> BotMessage:
        """The bot's first message in chat_id (matching predicate, on its current state)."""

        def find() -> BotMessage | None:
            return next(
                (m for m in self.sent_messages(chat_id) if predicate is None or predicate(m)),
                None,
            )

        return await self.wait_for(find, timeout, f"a message of the bot in chat {chat_id}")

    async def wait_for_call(
        self,
        method: str,
        predicate: Callable[[RecordedCall], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> RecordedCall:
        """The first answered call of method (matching predicate)."""

        def find() -> RecordedCall | None:
            return next(
                (
                    call
                    for call in self.calls(method)
                    if call.status is not None and (predicate is None or predicate(call))
                ),
                None,
            )

        return await self.wait_for(find, timeout, f"a {method} call")

    async def wait_for_poll(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Until a getUpdates waits for updates (the bot is up and polling)."""
        await self.wait_for(lambda: self.pending_polls > 0, timeout, "a pending getUpdates")

    def _notify_waiters(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, changed in waiters:
            with suppress(RuntimeError):  # that loop is closed: nobody waits any more
                loop.call_soon_threadsafe(changed.set)

    # -- HTTP --------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        name = request.match_info["method"]
        method, handler = self._handlers.get(name.lower(), (name, self._unknown))
        try:
            params, files = await _read_params(request)
        except ValueError as exc:  # a body that is not the JSON its content type says
            params, files = {"_unreadable_body": str(exc)}, {}
        call = RecordedCall(method, params, files, request.method, token, time.monotonic())
        with self._lock:
            self._calls.append(call)
            fault = self._pop_fault(method)
            latency = self._latency.get(method.lower(), self._latency.get("*", 0.0))
        self._notify_waiters()
        status, body = 200, {"ok": False}
        try:
            if latency > 0:
                await asyncio.sleep(latency)
            if token != self.token:
                raise ApiError(401, "Unauthorized")
            if "_unreadable_body" in params:
                raise _bad("can't parse request body")
            if fault is not None:
                raise ApiError(fault.status, fault.description, fault.retry_after)
            result = await handler(params, files)
            body = {"ok": True, "result": result}
        except ApiError as exc:
            status = exc.status
            body = tg.error_body(exc.status, exc.description, exc.retry_after)
        except Exception as exc:  # a bug of the fake: a 500, and .errors tells the test
            logger.exception("fake Telegram server: %s failed", method)
            self.errors.append(f"{method}: {type(exc).__name__}: {exc}")
            status = 500
            body = tg.error_body(500, f"Internal Server Error: fake server: {exc}")
        with self._lock:
            call.status = status
            call.result = body["result"] if body["ok"] else body["description"]
            call.answered_at = time.monotonic()
        self._notify_waiters()
        return web.json_response(body, status=status)

    async def _download(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        call = RecordedCall(
            DOWNLOAD_METHOD,
            {"file_path": path},
            {},
            request.method,
            request.match_info["token"],
            time.monotonic(),
        )
        with self._lock:
            self._calls.append(call)
            stored = next((f for f in self._files.values() if f.file_path == path), None)
            fault = self._pop_fault(DOWNLOAD_METHOD)
        ok = stored is not None and fault is None and call.token == self.token
        with self._lock:
            call.status = 200 if ok else (fault.status if fault else 404)
            call.answered_at = time.monotonic()
        self._notify_waiters()
        if ok and stored is not None:
            return web.Response(body=stored.data, content_type="application/octet-stream")
        status = call.status or 404
        return web.json_response(tg.error_body(status, "Not Found"), status=status)

    def _pop_fault(self, method: str) -> _Fault | None:
        for key in (method.lower(), "*"):
            queue = self._faults.get(key)
            if queue:
                return queue.popleft()
        return None

    # -- methods -----------------------------------------------------------------------------

    def _method_table(self) -> dict[str, _Handler]:
        return {
            "getMe": self._get_me,
            "getUpdates": self._get_updates,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "sendMessage": self._send_message,
            "sendRichMessage": self._send_rich_message,
            "editMessageText": self._edit_message_text,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "deleteMessage": self._delete_message,
            "sendChatAction": self._send_chat_action,
            "sendMessageDraft": self._send_message_draft,
            "answerCallbackQuery": self._answer_callback_query,
            "getFile": self._get_file,
            "sendDocument": self._send_document,
            "getChatMember": self._get_chat_member,
        }

    async def _unknown(self, params: JSON, files: dict[str, UploadedFile]) -> Any:
        return True

    async def _get_me(self, params: JSON, files: dict[str, UploadedFile]) -> Any:
        return tg.bot_user()

    async def _get_updates(self, params: JSON, files: dict[str, UploadedFile]) -> Any:
        offset = _int(params.get("offset"), 0)
        limit = min(max(_int(params.get("limit"), 100), 1), 100)
        timeout = min(float(params.get("timeout") or 0), self.max_poll_timeout)
        allowed = params.get("allowed_updates")
        with self._lock:
            if self._webhook_url:
                raise ApiError(409, WEBHOOK_CONFLICT)
            if isinstance(allowed, list):
                self._allowed_updates = frozenset(allowed) if allowed else None
            self._poll_generation += 1
            generation = self._poll_generation
            self._pending_polls += 1
        self._wake_polls()  # an older poll still waiting ends with a 409, as on Telegram
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            while True:
                event = self._update_event
                with self._lock:
                    if generation != self._poll_generation:
                        raise ApiError(409, POLL_CONFLICT)
                    ready = self._take_updates(offset, limit)
                    stopping = self._stopping
                remaining = deadline - asyncio.get_running_loop().time()
                if ready or stopping or remaining <= 0 or event is None:
                    return ready
                with suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await event.wait()
        finally:
            with self._lock:
                self._pending_polls -= 1
            self._notify_waiters()

    def _take_updates(self, offset: int, limit: int) -> list[JSON]:
        """With the lock held: confirm updates below offset, drop those not allowed, and
        return up to limit of the rest (they stay queued until a later offset confirms them)."""
        if offset > 0:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        allowed = self._allowed_updates
        if allowed is None:
            self._updates = [u for u in self._updates if tg.update_type(u) not in tg.OPT_IN_UPDATES]
        else:
            self._updates = [u for u in self._updates if tg.update_type(u) in allowed]
        if offset < 0:
            return self._updates[offset:][:limit]
        return self._updates[:limit]

    def _wake_polls(self) -> None:
        """On the server's loop: wake every waiting getUpdates to look again."""
        event = self._update_event
        self._update_event = asyncio.Event()
        if event is not None:
            event.set()

    async def _set_webhook(self, params: JSON, files: dict[str, UploadedFile]) -> Any:
        with self._lock:
            self._webhook_url = str(params.get("url") or "")
            if params.get("drop_pending_updates"):
                self._updates.clear()
        return True

    async def _delete_webhook(self, params: JSON, files: dict[str, UploadedFile]) -> Any:
        with self._lock:
            self._webhook_url = ""
            if params.get("drop_pending_updates"):
                self._updates.clear()
        return True

    async def _get_webhook_info(self, params: JSON, files: dict[str, UploadedFile]) -> Any:
        with self._lock:
            return {
                "url": self._webhook_url,
                "has_custom_certificate": False,
                "pending_update_count": len(self._updates),
            }

    async def _set_my_commands(self, params: JSON, files: dict[str, UploadedFile]) -> Any:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise _bad('parameter "commands" is required')
        with self._lock:
            self._commands[str(params.get("language_code") or "")] = commands
        return True

    async def _get_my_commands(self, params: JSON, files: dict[str, UploadedFile]) -> Any:
        return self.commands_for(str(params.get("language_code") or ""))

    async def _send_message(self, params: JSON, files: dict[str, UploadedFile]) -> Any:
        chat_id = self._known_chat(params)
        text = params.get("text")
        if not isinstance(text, str):
            raise _bad("message text is empty")
        plain = self._check_text(text, params.get("parse_mode"))
        return self._store_bot_message(
            "sendMessage", chat_id, params, text=text, plain=plain, fields={"text": plain}
        )

    async def _send_rich_message(self, params: JSON, files: dict[str, UploadedFile]) -> Any:
        with self._lock:
            supported = self._rich
        if not supported:
            raise ApiError(404, "Not Found: method not found")
        chat_id = self._known_chat(params)
        with self._lock:
            refused = self._rich_refused.get(self._chats[chat_id]["type"])
        if refused is not None:
            raise ApiError(400, refused)
        rich = params.get("rich_message")
        sources = [rich.get(k) for k in ("html", "markdown")] if isinstance(rich, dict) else []
        given = [source for source in sources if isinstance(source, str)]
        if not isinstance(rich, dict) or len(given) + (rich.get("blocks") is not None) != 1:
            raise _bad("exactly one of html, markdown or blocks must be specified")
        source = given[0] if given else str(rich.get("blocks"))
        plain = _rich_plain(source, markdown=source is rich.get("markdown"))
        if not plain.strip():
            raise _bad("message text is empty")
        if len(plain) > MAX_RICH_TEXT_LENGTH:
            raise _bad("rich message is too long")
        blocks = [{"type": "paragraph", "text": part} for part in plain.split("\n\n")]
        return self._store_bot_message(
            "sendRichMessage",
            chat_id,
            params,
            text=source,
            plain=plain,
            rich=rich,
            fields={"rich_message": {"blocks": blocks}},
        )

    async def _send_document(self, params: JSON, files: dict[str, UploadedFile]) -> Any:
        chat_id = self._known_chat(params)
        caption = params.get("caption")
        plain = None
        if isinstance(caption, str) and caption:
            plain, problem = tg.text_problem(caption, self._parse_mode(params))
            if problem and "empty" not in problem:
                raise ApiError(400, problem)
        upload = _attached(params, files, "document")
        name = upload.filename if upload else "document"
        if upload is not None:
            stored = self.register_file(upload.data, upload.filename)
        else:  # a file_id of a known file (or a URL: then an empty file)
            ref = str(params.get("document") or "")
            with self._lock:
                known = self._files.get(ref)
            stored = known or self.register_file(b"", ref.rsplit("/", 1)[-1] or "document")
        mime = upload.content_type if upload else None
        doc = tg.document(stored.file_id, stored.file_unique_id, name, mime, stored.file_size)
        return self._store_bot_message(
            "sendDocument",
            chat_id,
            params,
            text=caption,
            plain=plain,
            upload=upload,
            fields={"document": doc, "caption": plain},
        )

    def _store_bot_message(
        self,
        method: str,
        chat_id: int,
        params: JSON,
        *,
        text: str | None,
        plain: str | None,
        fields: JSON,
        upload: UploadedFile | None = None,
        rich: JSON | None = None,
    ) -> JSON:
        """Keep a message the bot sent (fields: its text or document and caption)."""
        reply_to_id = _reply_to(params)
        markup = params.get("reply_markup")
        with self._lock:
            reply_to = None
            if reply_to_id is not None:
                reply_to = self._messages.get((chat_id, reply_to_id))
                lenient = params.get("allow_sending_without_reply") or (
                    isinstance(params.get("reply_parameters"), dict)
                    and params["reply_parameters"].get("allow_sending_without_reply")
                )
                if reply_to is None and not lenient:
                    raise _bad("message to be replied not found")
                quote = (params.get("reply_parameters") or {}).get("quote")
                shown = (reply_to or {}).get("text") or (reply_to or {}).get("caption") or ""
                if reply_to is not None and quote is not None and quote not in shown:
                    raise _bad("QUOTE_TEXT_INVALID")
            message_id = self._next_message_id(chat_id)
            thread_id = params.get("message_thread_id")
            message = tg.message(
                message_id,
                self._chats[chat_id],
                from_=tg.bot_user(),
                reply_to=reply_to,
                reply_markup=_inline_markup(markup),
                message_thread_id=thread_id,
                is_topic_message=True if thread_id else None,
                **fields,
            )
            self._messages[(chat_id, message_id)] = message
            self._bot_messages[(chat_id, message_id)] = BotMessage(
                chat_id=chat_id,
                message_id=message_id,
                method=method,
                text=text,
                plain_text=plain,
                parse_mode=self._parse_mode(params),
                reply_markup=markup if isinstance(markup, dict) else None,
                reply_to_message_id=reply_to_id,
                link_preview_options=_dict_or_none(params.get("link_preview_options")),
                params=params,
                history=[text],
                document=upload,
                rich=rich,
                sent_at=time.monotonic(),
            )
        return message

    async def _edit_message_text(self, params: JSON, files: dict[str, UploadedFile]) -> Any:
        text = params.get("text")
        if not isinstance(text, str):
            raise _bad("message text is empty")
        plain = self._check_text(text, params.get("parse_mode"))
        return self._edit(params, text=text, plain=plain)

    async def _edit_message_reply_markup(self, params: JSON, files: dict[str, UploadedFile]) -> Any:
        return self._edit(params)

    def _edit(self, params: JSON, text: str | None = None, plain: str | None = None) -> Any:
        if params.get("inline_message_id"):
            return True  # messages sent via inline mode are not kept
        chat_id = self._known_chat(params)
        message_id = _int(params.get("message_id"), 0)
        markup = _dict_or_none(params.get("reply_markup"))
        with self._lock:
            sent = self._bot_messages.get((chat_id, message_id))
            message = self._messages.get((chat_id, message_id))
            if message is None or sent is None or sent.deleted:
                if message is not None:
                    raise _bad("message can't be edited")
                raise _bad("message to edit not found")
            new_text = sent.text if text is None else text
            if new_text == sent.text and markup == sent.reply_markup:
                raise _bad(NOT_MODIFIED)
            edited = {k: v for k, v in message.items() if k != "reply_markup"}
            edited["edit_date"] = int(time.time())
            if text is not None:
                sent.text, sent.plain_text = text, plain
                sent.parse_mode = self._parse_mode(params)
                sent.history.append(text)
                edited["caption" if sent.method == "sendDocument" else "text"] = plain
            sent.reply_markup = markup
            if _inline_markup(markup) is not None:
                edited["reply_markup"] = markup
            sent.edited_at = time.monotonic()
            self._messages[(chat_id, message_id)] = edited
        return edited

    async def _delete_message(self, params: JSON, files: dict[str, UploadedFile]) -> Any:
        chat_id = self._known_chat(params)
        message_id = _int(params.get("message_id"), 0)
        with self._lock:
            if self._messages.pop((chat_id, message_id), None) is None:
                raise _bad("message to delete not found")
            sent = self._bot_messages.get((chat_id, message_id))
            if sent is not None:
                sent.deleted = True
        return True

    async def _send_chat_action(self, params: JSON, files: dict[str, UploadedFile]) -> Any:
        self._known_chat(params)
        if not params.get("action"):
            raise _bad("action is empty")  # Telegram: "wrong parameter action in request"
        return True

    async def _send_message_draft(self, params: JSON, files: dict[str, UploadedFile]) -> Any:
        chat_id = self._known_chat(params)
        with self._lock:
            private = self._chats[chat_id]["type"] == "private"
        # The wording of these two is a guess; Telegram refuses both.
        if not private:
            raise _bad("drafts can be sent to private chats only")
        draft_id = _int(params.get("draft_id"), 0)
        if draft_id == 0:
            raise _bad("draft_id must be non-zero")
        text = params.get("text")
        if isinstance(text, str) and text:
            self._check_text(text, params.get("parse_mode"))
        draft = Draft(
            chat_id,
            draft_id,
            text if isinstance(text, str) else None,
            self._parse_mode(params),
            time.monotonic(),
            can_stop=params.get("can_stop") is True,
            message_thread_id=_int(params.get("message_thread_id"), 0) or None,
        )
        with self._lock:
            self._drafts.append(draft)
        return True

    async def _answer_callback_query(self, params: JSON, files: dict[str, UploadedFile]) -> Any:
        query_id = str(params.get("callback_query_id") or "")
        with self._lock:
            if query_id not in self._callbacks or self._callbacks[query_id] is not None:
                raise _bad(CALLBACK_TOO_OLD)
            self._callbacks[query_id] = params
        return True

    async def _get_chat_member(self, params: JSON, files: dict[str, UploadedFile]) -> Any:
        chat_id, user_id = params.get("chat_id"), _int(params.get("user_id"), 0)
        with self._lock:
            if not isinstance(chat_id, int) or chat_id in self._hidden_chats:
                raise _bad("chat not found")
            status, is_member = self._members.get((chat_id, user_id), ("left", False))
        return tg.chat_member(tg.user(user_id), status, is_member=is_member)

    async def _get_file(self, params: JSON, files: dict[str, UploadedFile]) -> Any:
        with self._lock:
            stored = self._files.get(str(params.get("file_id") or ""))
        if stored is None:
            raise _bad("invalid file_id")
        if stored.too_big:
            raise _bad("file is too big")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.file_size,
            "file_path": stored.file_path,
        }

    # -- helpers -----------------------------------------------------------------------------

    def _known_chat(self, params: JSON) -> int:
        chat_id = params.get("chat_id")
        if chat_id is None or chat_id == "":
            raise _bad("chat_id is empty")
        with self._lock:
            if not isinstance(chat_id, int) or chat_id not in self._chats:
                raise _bad("chat not found")
        return chat_id

    def _check_text(self, text: str, parse_mode: Any) -> str:
        """The plain text; ApiError when Telegram would refuse the text."""
        plain, problem = tg.text_problem(text, parse_mode if self.validate_html else None)
        if problem:
            raise ApiError(400, problem)
        return plain

    @staticmethod
    def _parse_mode(params: JSON) -> str | None:
        value = params.get("parse_mode")
        return value if isinstance(value, str) and value else None


def _rich_plain(source: str, markdown: bool) -> str:
    """Roughly what a rich message shows: tags (HTML) or link targets and escapes (Markdown)
    gone, footnote references [^n] as [n]; no validation: real clients render it."""
    if not markdown:
        return html.unescape(re.sub(r"<[^>]+>", "", source))
    text = re.sub(r"(?<!\\)\[((?:\\.|[^\]\\])*)\]\((?:\\.|[^)\\])*\)", r"\1", source)
    text = re.sub(r"(?<!\\)\[\^(\w+)\]", r"[\1]", text)
    return re.sub(r"\\(.)", r"\1", text).replace("  \n", "\n")


def _attached(params: JSON, files: dict[str, UploadedFile], param: str) -> UploadedFile | None:
    value = params.get(param)
    if isinstance(value, str) and value.startswith("attach://"):
        return files.get(value.removeprefix("attach://"))
    return files.get(param)


async def _read_params(request: web.Request) -> tuple[JSON, dict[str, UploadedFile]]:
    """Query string plus body (JSON, urlencoded or multipart), values decoded like Telegram."""
    raw: dict[str, Any] = dict(request.query)
    files: dict[str, UploadedFile] = {}
    if request.content_type == "application/json":
        body = await request.json()
        if isinstance(body, dict):
            raw.update(body)
    elif request.can_read_body:
        for name, value in (await request.post()).items():
            if isinstance(value, FileField):
                data = value.file.read()
                files[name] = UploadedFile(name, value.filename, value.content_type, data)
            elif isinstance(value, bytes | bytearray):
                raw[name] = bytes(value).decode("utf-8", "replace")
            else:
                raw[name] = value
    return {name: tg.decode_param(name, value) for name, value in raw.items()}, files


def _int(value: Any, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _bad(f"invalid integer {value!r}") from None


def _dict_or_none(value: Any) -> JSON | None:
    return value if isinstance(value, dict) else None


def _inline_markup(markup: Any) -> JSON | None:
    """What a Message carries of a reply_markup: only an inline keyboard."""
    return markup if isinstance(markup, dict) and "inline_keyboard" in markup else None


def _reply_to(params: JSON) -> int | None:
    reply = params.get("reply_parameters")
    if isinstance(reply, dict) and reply.get("message_id") is not None:
        return _int(reply["message_id"], 0)
    value = params.get("reply_to_message_id")
    return None if value is None else _int(value, 0)


@pytest.fixture
def telegram_server() -> Iterator[FakeTelegramServer]:
    """A started FakeTelegramServer (token DEFAULT_TOKEN, long polls capped at 1 s), stopped
    after the test."""
    with FakeTelegramServer() as server:
        yield server
