"""The fake Telegram server against the real aiogram stack: a Dispatcher long-polling it, with
an echo, a callback and a document handler, and a bare Bot calling methods directly."""

import asyncio
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field

import pytest
from aiogram import Bot, Dispatcher, F, Router
from aiogram.enums import ChatAction, ChatType, ParseMode
from aiogram.exceptions import TelegramBadRequest, TelegramRetryAfter, TelegramServerError
from aiogram.types import (
    BufferedInputFile,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    Message,
)

from tests.fakes.telegram_objects import BOT_USERNAME, text_problem
from tests.fakes.telegram_server import BotMessage, FakeTelegramServer, WaitTimeout

# The telegram_server fixture.
pytest_plugins = ["tests.fakes.telegram_server"]


@dataclass
class RunningBot:
    """A Dispatcher polling the fake server, and what its document handler downloaded."""

    server: FakeTelegramServer
    bot: Bot
    dispatcher: Dispatcher
    downloads: dict[str, bytes] = field(default_factory=dict)


BotStarter = Callable[..., Awaitable[RunningBot]]


def mentions_bot(message: Message) -> bool:
    """A group message that mentions the bot (by a "mention" entity)."""
    return any(
        entity.type == "mention" and entity.extract_from(message.text or "") == f"@{BOT_USERNAME}"
        for entity in message.entities or []
    )


def build_router(downloads: dict[str, bytes]) -> Router:
    """Echo text (typing action, a draft in private chats, a reply with a button), answer the
    button, and download documents into downloads."""
    router = Router()

    @router.message(F.text, F.chat.type == ChatType.PRIVATE)
    async def echo(message: Message, bot: Bot) -> None:
        await bot.send_chat_action(message.chat.id, ChatAction.TYPING)
        await bot.send_message_draft(chat_id=message.chat.id, draft_id=1, text="…")
        button = InlineKeyboardButton(text="press", callback_data=f"press:{message.message_id}")
        await message.reply(
            f"echo: {message.text}",
            reply_markup=InlineKeyboardMarkup(inline_keyboard=[[button]]),
            link_preview_options=LinkPreviewOptions(is_disabled=True),
        )

    @router.message(F.text, mentions_bot)
    async def group_echo(message: Message) -> None:
        await message.reply(f"group echo: {message.text}")

    @router.callback_query(F.data.startswith("press:"))
    async def pressed(callback: CallbackQuery) -> None:
        await callback.answer("pressed")
        if isinstance(callback.message, Message):
            await callback.message.edit_text(f"pressed {callback.data}")

    @router.message(F.document)
    async def document(message: Message, bot: Bot) -> None:
        doc = message.document
        if doc is None:
            return
        try:
            buffer = await bot.download(doc.file_id, destination=io.BytesIO())
        except TelegramBadRequest as exc:
            await message.answer(f"error: {exc.message}")
            return
        if buffer is None:
            return
        data = buffer.read()
        downloads[doc.file_name or ""] = data
        await message.answer(f"got {doc.file_name}: {len(data)} bytes")

    return router


@pytest.fixture
async def start_bot(telegram_server: FakeTelegramServer) -> AsyncIterator[BotStarter]:
    """start(polling_timeout=1) runs a Dispatcher on the fake server until it polls; every one
    is stopped (stop_polling, which also closes the bot's session) after the test."""
    running: list[tuple[Dispatcher, asyncio.Task[None]]] = []

    async def start(polling_timeout: int = 1) -> RunningBot:
        downloads: dict[str, bytes] = {}
        dispatcher = Dispatcher()
        dispatcher.include_router(build_router(downloads))
        bot = telegram_server.new_bot()
        task = asyncio.create_task(
            dispatcher.start_polling(bot, handle_signals=False, polling_timeout=polling_timeout)
        )
        running.append((dispatcher, task))
        await telegram_server.wait_for_poll()
        return RunningBot(telegram_server, bot, dispatcher, downloads)

    yield start
    for dispatcher, task in running:
        if not task.done():
            with suppress(RuntimeError):  # "Polling is not started": it ended by itself
                await dispatcher.stop_polling()
        await task
    assert telegram_server.errors == []


@pytest.fixture
async def running(start_bot: BotStarter) -> RunningBot:
    """A Dispatcher long-polling the fake server (1 s polls)."""
    return await start_bot()


async def test_a_pushed_message_gets_an_echo_reply(running: RunningBot) -> None:
    server = running.server
    pushed = server.push_message(1, "hello", first_name="Ann")

    reply = await server.wait_for_message(1)

    assert reply.text == "echo: hello"
    assert reply.reply_to_message_id == pushed.message_id
    assert reply.message_id == pushed.message_id + 1
    assert reply.reply_markup == {
        "inline_keyboard": [[{"text": "press", "callback_data": f"press:{pushed.message_id}"}]]
    }
    assert reply.link_preview_options == {"is_disabled": True}
    assert server.chat_actions(1) == ["typing"]
    assert [(d.draft_id, d.text) for d in server.drafts(1)] == [(1, "…")]
    assert server.calls("getMe")
    polls = server.calls("getUpdates")
    assert polls[0].params["timeout"] == 1
    assert set(polls[0].params["allowed_updates"]) == {"message", "callback_query"}


async def test_a_group_mention_is_parsed_into_an_entity(running: RunningBot) -> None:
    server = running.server
    server.push_message(2, f"hi @{BOT_USERNAME}", chat_id=-1001, chat_type="supergroup")

    reply = await server.wait_for_message(-1001)

    assert reply.text == f"group echo: hi @{BOT_USERNAME}"
    assert server.drafts(-1001) == []


async def test_a_callback_press_is_answered_and_edits_the_message(running: RunningBot) -> None:
    server = running.server
    server.push_message(3, "menu")
    reply = await server.wait_for_message(3)

    pushed = server.push_callback(3, f"press:{reply.reply_to_message_id}", reply.message_id)
    assert pushed.callback_query_id is not None
    callback_id = pushed.callback_query_id
    answer = await server.wait_for(lambda: server.callback_answer(callback_id))
    edited = await server.wait_for_message(3, lambda m: m.edited_at is not None)

    assert answer["text"] == "pressed"
    assert edited.text == "pressed press:1"
    assert edited.history == ["echo: menu", "pressed press:1"]
    assert edited.reply_markup is None  # editMessageText without reply_markup drops it


async def test_a_document_is_downloaded_with_its_bytes(running: RunningBot) -> None:
    server = running.server
    data = bytes(range(256)) * 300 + b"\x00end"
    server.push_document(4, "notes.bin", data, caption="my notes")

    reply = await server.wait_for_message(4)

    assert reply.text == f"got notes.bin: {len(data)} bytes"
    assert running.downloads["notes.bin"] == data
    assert [call.status for call in server.calls("downloadFile")] == [200]


async def test_a_too_big_file_is_a_bad_request(running: RunningBot) -> None:
    server = running.server
    pushed = server.push_document(5, "huge.pdf", b"%PDF-1.7", "application/pdf", too_big=True)

    reply = await server.wait_for_message(5)

    assert reply.text == "error: Bad Request: file is too big"
    assert pushed.file_id is not None
    with pytest.raises(TelegramBadRequest, match="file is too big"):
        await running.bot.get_file(pushed.file_id)
    assert running.downloads == {}


async def test_long_polling_delivers_an_update_pushed_during_a_wait(
    start_bot: BotStarter, telegram_server: FakeTelegramServer
) -> None:
    telegram_server.max_poll_timeout = 30.0
    await start_bot(polling_timeout=30)
    waiting = len(telegram_server.calls("getUpdates")) - 1

    pushed = telegram_server.push_message(6, "late")
    await telegram_server.wait_for_message(6)

    poll = telegram_server.calls("getUpdates")[waiting]
    assert poll.params["timeout"] == 30
    assert poll.status == 200
    assert [update["update_id"] for update in poll.result] == [pushed.update_id]
    # Answered when the update came, not when the 30 s ran out.
    assert poll.answered_at is not None
    assert poll.answered_at - pushed.at < 1.0


async def test_send_message_draft_is_recorded(running: RunningBot) -> None:
    server = running.server
    server.add_chat(7)
    server.add_chat(-1007, "group")

    assert await running.bot.send_message_draft(chat_id=7, draft_id=42, text="thinking")

    [draft] = server.drafts(7)
    assert (draft.chat_id, draft.draft_id, draft.text) == (7, 42, "thinking")
    call = await server.wait_for_call("sendMessageDraft")
    assert call.params == {"chat_id": 7, "draft_id": 42, "text": "thinking"}
    with pytest.raises(TelegramBadRequest, match="private chats"):
        await running.bot.send_message_draft(chat_id=-1007, draft_id=1, text="x")


async def test_telegram_errors_and_injected_faults(running: RunningBot) -> None:
    server, bot = running.server, running.bot
    server.add_chat(8)
    server.rate_limit_next("sendMessage", retry_after=3)
    server.fail_next("sendMessage", status=500)

    with pytest.raises(TelegramRetryAfter) as rate_limited:
        await bot.send_message(8, "a")
    with pytest.raises(TelegramServerError):
        await bot.send_message(8, "b")
    sent = await bot.send_message(8, "<b>c</b>", parse_mode=ParseMode.HTML)
    with pytest.raises(TelegramBadRequest, match="can't parse entities"):
        await bot.send_message(8, "<b>c", parse_mode=ParseMode.HTML)
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text("<b>c</b>", chat_id=8, message_id=sent.message_id)
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.send_message(999, "nobody")

    assert rate_limited.value.retry_after == 3
    assert sent.text == "c"  # Telegram answers with the parsed text
    assert server.texts(8) == ["<b>c</b>"]
    assert [call.status for call in server.error_calls()] == [429, 500, 400, 400, 400]


async def test_many_concurrent_messages_are_all_answered(running: RunningBot) -> None:
    server = running.server
    users = range(100, 200)
    for user_id in users:
        server.push_message(user_id, f"question {user_id}")

    def all_answered() -> list[BotMessage] | None:
        replies = [m for m in server.sent_messages() if m.chat_id in users]
        return replies if len(replies) == len(users) else None

    replies = await server.wait_for(all_answered, timeout=10)

    assert sorted((m.chat_id, m.text) for m in replies) == [
        (user_id, f"echo: question {user_id}") for user_id in users
    ]
    assert len(server.calls("sendChatAction")) == len(server.drafts()) == len(users)
    assert server.error_calls() == []


async def test_send_document_uploads_are_recorded_with_their_bytes(running: RunningBot) -> None:
    server = running.server
    server.add_chat(9)

    sent = await running.bot.send_document(
        9, BufferedInputFile(b"report body", "report.txt"), caption="the report"
    )

    [message] = server.sent_messages(9)
    assert message.method == "sendDocument"
    assert message.text == "the report"
    assert message.document is not None
    assert (message.document.filename, message.document.data) == ("report.txt", b"report body")
    assert sent.document is not None
    assert sent.document.file_name == "report.txt"
    downloaded = await running.bot.download(sent.document.file_id, destination=io.BytesIO())
    assert downloaded is not None
    assert downloaded.read() == b"report body"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("<b>bold</b> &amp; <a href='https://x.org'>link</a>", ""),
        ("<pre><code class='language-python'>x = 1</code></pre>", ""),
        ("<b>open", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b>x</i>", 'Unmatched end tag, expected "</b>", found "</i>"'),
        ("line<br>break", 'Unsupported start tag "br"'),
        ("<b> </b>", "message text is empty"),
        ("x" * 4097, "message is too long"),
    ],
)
def test_html_checks_like_telegram(text: str, problem: str) -> None:
    assert text_problem(text, "HTML")[1].endswith(problem)


async def test_wait_for_gives_up_with_the_last_calls(running: RunningBot) -> None:
    with pytest.raises(WaitTimeout, match=r"(?s)a message of the bot in chat 404.*getUpdates"):
        await running.server.wait_for_message(404, timeout=0.2)
