"""Show an answer while it is written: a streamed draft (sendMessageDraft) in private chats,
one message edited at a modest rate elsewhere; then the final messages in full.

The LLM client calls on_delta inside its request timeout, so on_delta only appends; a
background task does the Telegram calls at the configured interval.
"""

import asyncio
import contextlib
import html
import logging
import random

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import InlineKeyboardMarkup

from app.bot.render import LIMIT

log = logging.getLogger(__name__)


class AnswerStream:
    """One answer's live preview and final delivery."""

    def __init__(
        self,
        bot: Bot,
        chat_id: int,
        *,
        private: bool,
        interval_s: float,
        reply_to: int | None = None,
    ) -> None:
        self.bot = bot
        self.chat_id = chat_id
        self.private = private
        self.interval_s = interval_s
        self.reply_to = reply_to
        self.draft_id = random.randint(1, 2**31 - 1)
        self._text = ""
        self._shown = ""
        self._changed = asyncio.Event()
        self._closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._message_id: int | None = None

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
                await self.bot.send_message_draft(
                    chat_id=self.chat_id, draft_id=self.draft_id, text=text
                )
            elif self._message_id is None:
                sent = await self.bot.send_message(
                    self.chat_id, text, reply_to_message_id=self.reply_to
                )
                self._message_id = sent.message_id
            else:
                await self.bot.edit_message_text(
                    text=text, chat_id=self.chat_id, message_id=self._message_id
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
        self, messages: list[str], markup: InlineKeyboardMarkup | None = None
    ) -> list[int]:
        """Deliver the final HTML messages (buttons under the last); returns their ids."""
        await self.stop()
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
            sent = await self.bot.send_message(
                self.chat_id,
                text,
                parse_mode="HTML",
                reply_markup=buttons,
                reply_to_message_id=self.reply_to if i == 0 else None,
                disable_web_page_preview=True,
            )
            ids.append(sent.message_id)
        return ids
