"""Show an answer while it is written: a streamed draft (sendMessageDraft) in private chats,
one message edited at a modest rate elsewhere; then the final messages in full: one rich message
(footnotes for citations) where the server and the chat type take it, HTML messages otherwise.

The LLM client calls on_delta inside its request timeout, so on_delta only appends; a
background task does the Telegram calls at the configured interval.
"""

import asyncio
import contextlib
import html
import logging
import random
from collections.abc import Awaitable, Callable
from functools import partial

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest, TelegramNotFound
from aiogram.types import InlineKeyboardMarkup, InputRichMessage, Message, ReplyParameters

from app.bot.render import LIMIT

log = logging.getLogger(__name__)
# A question this long is quoted by its answer (its first QUOTE_CHARS, cut at a word); Telegram
# takes up to 1024.
LONG_QUESTION = 120
QUOTE_CHARS = 160
# A refused rich message whose error says one of these is about that message (its length, a
# quote, a chat or a reply gone), not about rich messages in that kind of chat.
_NOT_A_REFUSAL = ("not found", "too long", "too many", "limit", "parse", "quote", "empty")


class RichSupport:
    """Where rich messages go (one per process): off by setting; off for the process once the
    server says it has no sendRichMessage; off per chat type once a chat of that type refused."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.missing = False
        self.refused: set[str] = set()

    def usable(self, chat_type: str) -> bool:
        """Whether to try a rich message in a chat of this type."""
        return self.enabled and not self.missing and chat_type not in self.refused

    def failed(self, exc: TelegramAPIError, chat_type: str) -> None:
        """Remember what a failed sendRichMessage says about the server or the chat type."""
        reason = exc.message.lower()
        if isinstance(exc, TelegramNotFound) or "method not found" in reason:
            self.missing = True
            log.warning("the Bot API server has no sendRichMessage: answers are sent as HTML")
        elif isinstance(exc, TelegramBadRequest) and not any(
            marker in reason for marker in _NOT_A_REFUSAL
        ):
            self.refused.add(chat_type)
            log.warning(
                "rich messages refused in %s chats: answers there are sent as HTML", chat_type
            )


def reply_to(message_id: int, question: str | None = None) -> ReplyParameters:
    """A lenient reply (the question may be deleted while it is answered), quoting the start of
    the question when one is given."""
    quote = None
    if question is not None and question.strip():
        quote = question.strip()
        if len(quote) > QUOTE_CHARS:
            cut = quote.rfind(" ", 0, QUOTE_CHARS)
            quote = quote[: cut if cut > QUOTE_CHARS // 2 else QUOTE_CHARS].rstrip()
    # No parse mode: the quote is the question's plain text (a bot default would parse it).
    return ReplyParameters(
        message_id=message_id, allow_sending_without_reply=True, quote=quote, quote_parse_mode=None
    )


class AnswerStream:
    """One answer's live preview and final delivery."""

    def __init__(
        self,
        bot: Bot,
        chat_id: int,
        *,
        private: bool,
        interval_s: float,
        reply: ReplyParameters | None = None,
        thread_id: int | None = None,
        chat_type: str | None = None,
        rich: RichSupport | None = None,
    ) -> None:
        self.bot = bot
        self.chat_id = chat_id
        self.private = private
        self.interval_s = interval_s
        self.reply = reply
        self.thread_id = thread_id
        self.chat_type = chat_type or ("private" if private else "group")
        self.rich = rich
        self.draft_id = random.randint(1, 2**31 - 1)
        self._text = ""
        self._shown = ""
        self._changed = asyncio.Event()
        self._closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._message_id: int | None = None

    @property
    def written(self) -> str:
        """The answer so far (plain text)."""
        return self._text.strip()

    async def on_delta(self, piece: str) -> None:
        """Take a piece of the answer (cheap: the preview is updated in the background)."""
        self._text += piece
        self._changed.set()
        if self._task is None:
            self._task = asyncio.create_task(self._preview(), name=f"preview-{self.chat_id}")

    async def _preview(self) -> None:
        while not self._closed.is_set():
            await self._changed.wait()
            self._changed.clear()
            text = self._text.strip()
            if text and text != self._shown and not self._closed.is_set():
                await self._show(html.escape(text[-LIMIT:]))
                self._shown = text
            # Wait out the interval, unless the answer is complete.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), self.interval_s)

    async def _show(self, text: str) -> None:
        try:
            if self.private:
                # The stop button: Telegram sends stopped_message_generation when pressed.
                await self.bot.send_message_draft(
                    chat_id=self.chat_id,
                    draft_id=self.draft_id,
                    text=text,
                    parse_mode="HTML",
                    message_thread_id=self.thread_id,
                    can_stop=True,
                )
            elif self._message_id is None:
                sent = await self._replying(
                    lambda reply: self.bot.send_message(
                        self.chat_id,
                        text,
                        parse_mode="HTML",
                        message_thread_id=self.thread_id,
                        reply_parameters=reply,
                    )
                )
                self._message_id = sent.message_id
            else:
                await self.bot.edit_message_text(
                    text=text, chat_id=self.chat_id, message_id=self._message_id, parse_mode="HTML"
                )
        except TelegramAPIError as exc:
            # A preview is a courtesy: the final message is what must arrive.
            log.info("preview update failed in chat %s: %s", self.chat_id, exc)

    async def stop(self) -> None:
        """Stop updating the preview (an update already on its way is let through, so the
        final message never races an older preview)."""
        self._closed.set()
        self._changed.set()
        if self._task is not None:
            try:
                await self._task
            finally:
                self._task = None

    async def finish(
        self,
        messages: list[str],
        markup: InlineKeyboardMarkup | None = None,
        rich: InputRichMessage | None = None,
    ) -> list[int]:
        """Deliver the final answer: the rich message when given and the chat takes it, else
        the HTML messages (buttons under the last); returns their ids."""
        await self.stop()
        if rich is not None and self.rich is not None and self.rich.usable(self.chat_type):
            rich_id = await self._send_rich(self.rich, rich, markup)
            if rich_id is not None:
                await self._drop_preview()
                return [rich_id]
        ids: list[int] = []
        for i, text in enumerate(messages):
            last = i == len(messages) - 1
            buttons = markup if last else None
            if i == 0 and self._message_id is not None:
                await self.bot.edit_message_text(
                    text=text,
                    chat_id=self.chat_id,
                    message_id=self._message_id,
                    reply_markup=buttons,
                    parse_mode="HTML",
                    disable_web_page_preview=True,
                )
                ids.append(self._message_id)
                continue
            sent = await self._replying(partial(self._send_html, text, buttons), reply=i == 0)
            ids.append(sent.message_id)
        return ids

    async def _send_html(
        self, text: str, buttons: InlineKeyboardMarkup | None, reply: ReplyParameters | None
    ) -> Message:
        return await self.bot.send_message(
            self.chat_id,
            text,
            parse_mode="HTML",
            reply_markup=buttons,
            message_thread_id=self.thread_id,
            reply_parameters=reply,
            disable_web_page_preview=True,
        )

    async def _send_rich(
        self, support: RichSupport, rich: InputRichMessage, markup: InlineKeyboardMarkup | None
    ) -> int | None:
        """The rich message's id; None (remembered where it tells about the server or the chat
        type) when Telegram refused it, so the caller sends HTML and the answer is never lost."""
        try:
            sent = await self._replying(
                lambda reply: self.bot.send_rich_message(
                    chat_id=self.chat_id,
                    rich_message=rich,
                    message_thread_id=self.thread_id,
                    reply_parameters=reply,
                    reply_markup=markup,
                )
            )
        except TelegramAPIError as exc:
            support.failed(exc, self.chat_type)
            log.info("rich answer not sent in chat %s, sending HTML: %s", self.chat_id, exc)
            return None
        return sent.message_id

    async def _drop_preview(self) -> None:
        """Delete the edited preview once the rich answer is out: the answer is sent anew, not
        edited in, because only sendRichMessage tells a server without rich messages apart."""
        if self._message_id is None:
            return
        try:
            await self.bot.delete_message(self.chat_id, self._message_id)
        except TelegramAPIError as exc:
            log.info("preview %s in chat %s not deleted: %s", self._message_id, self.chat_id, exc)

    async def _replying(
        self, send: Callable[[ReplyParameters | None], Awaitable[Message]], *, reply: bool = True
    ) -> Message:
        """Send as a reply (when asked and there is one); a quote Telegram rejects is dropped
        for the rest of this answer and the message sent again as a plain reply."""
        parameters = self.reply if reply else None
        try:
            return await send(parameters)
        except TelegramBadRequest as exc:
            if parameters is None or parameters.quote is None or "quote" not in exc.message.lower():
                raise
            log.info("quote refused in chat %s, replying without: %s", self.chat_id, exc)
            self.reply = parameters.model_copy(update={"quote": None})
            return await send(self.reply)
