"""Sources a user can open, end to end through the fake Bot API: a PDF citation names its
page, a "[n]" button quotes the passage and sends an uploaded original back, and only to a chat
that may read the collection at the time of the press (forged and stale buttons find nothing)."""

import html

from tests.fakes.telegram_server import BotMessage, PushedUpdate
from tests.test_bot import (
    FINANCE_OWNER,
    GROUP,
    OWNER,
    READER,
    SECRET,
    bot_store,
    button_data,
    reply,
)
from tests.test_bot_access import MEMBER, TEAM, AccessEnv, StartBot, start_bot
from tests.test_readers_formats import make_pdf

pytest_plugins = ["tests.fakes.telegram_server", "tests.fakes.langfuse_server"]
__all__ = ["bot_store", "start_bot"]  # fixtures shared with tests/test_bot_access.py

BADGES = make_pdf(
    [
        ("Parking", 0, ["Parking", "Cars park in the garage under building C."]),
        ("Canteen", 0, ["Canteen", "The canteen opens at eight and closes at four."]),
        ("Badges", 0, ["Badges", "Zephyr visitor badges are teal and are worn above the waist."]),
    ],
    title="Site rules",
)


def sources_of(message: BotMessage) -> list[str]:
    """The callback data of an answer's source buttons, in order."""
    return [data for data in button_data(message) if data.startswith("src:")]


async def press(env: AccessEnv, user_id: int, data: str, message: BotMessage) -> PushedUpdate:
    """Press a button (its data possibly forged) on a message of the bot; waits for the answer
    to the callback query."""
    pushed = env.telegram.push_callback(user_id, data, message.message_id, chat_id=message.chat_id)
    assert pushed.callback_query_id is not None
    query_id = pushed.callback_query_id
    await env.telegram.wait_for(lambda: env.telegram.callback_answer(query_id), timeout=20)
    return pushed


def refused(env: AccessEnv, pushed: PushedUpdate) -> bool:
    """Whether the press was answered with the "not available" alert."""
    assert pushed.callback_query_id is not None
    answer = env.telegram.callback_answer(pushed.callback_query_id) or {}
    return bool(answer.get("show_alert")) and "not available" in str(answer.get("text"))


async def test_pdf_source_cites_its_page_and_opens_with_the_original(start_bot: StartBot) -> None:
    env = await start_bot()
    upload = env.telegram.push_document(OWNER, "site-rules.pdf", BADGES, "application/pdf")
    await reply(env, OWNER, "site-rules.pdf: added")
    env.telegram.push_message(READER, "What colour are the Zephyr visitor badges?")
    answer = await reply(env, READER, "Sources:")
    assert "[1] Site rules, p. 3" in (answer.plain_text or "")
    buttons = sources_of(answer)
    assert buttons
    assert len(buttons[0].encode()) <= 64
    await press(env, READER, buttons[0], answer)
    quote = await reply(env, READER, "Zephyr visitor badges are teal")
    assert "<blockquote>" in (quote.text or "")
    assert (quote.plain_text or "").startswith("Site rules, p. 3")
    sent = await env.telegram.wait_for_call("sendDocument")
    assert sent.params["chat_id"] == READER
    assert sent.params["document"] == upload.file_id


async def test_forged_source_buttons_open_nothing_they_may_not_read(start_bot: StartBot) -> None:
    env = await start_bot()
    # The finance owner's answer carries a button for the salary table.
    env.telegram.push_message(FINANCE_OWNER, "What is in the salary table?")
    secret_answer = await reply(env, FINANCE_OWNER, "Sources:")
    secret_button = sources_of(secret_answer)[0]
    # A company reader pastes that button's data onto an answer of their own.
    env.telegram.push_message(READER, "How do I connect to the VPN?")
    own = await reply(env, READER, "Sources:")
    forged = await press(env, READER, secret_button, own)
    assert refused(env, forged)
    garbage = await press(env, READER, "src:not-a-point", own)
    assert refused(env, garbage)
    # In a group that reads company only, whoever presses.
    env.telegram.push_message(
        FINANCE_OWNER, "@kb_test_bot how do I reset my password?", chat_id=GROUP, chat_type="group"
    )
    group_answer = await reply(env, GROUP, "Sources:")
    assert refused(env, await press(env, FINANCE_OWNER, secret_button, group_answer))
    everything = " ".join(html.unescape(m.text or "") for m in env.telegram.sent_messages())
    assert SECRET not in everything
    assert not env.telegram.calls("sendDocument")
    # The finance owner, privately, does open it.
    await press(env, FINANCE_OWNER, secret_button, secret_answer)
    await reply(env, FINANCE_OWNER, SECRET)


async def test_a_member_who_left_cannot_open_a_source(start_bot: StartBot) -> None:
    env = await start_bot()
    env.telegram.set_member(TEAM, MEMBER, "member")
    env.telegram.push_message(MEMBER, "How do I connect to the VPN?")
    answer = await reply(env, MEMBER, "Sources:")
    env.telegram.set_member(TEAM, MEMBER, "left")
    assert refused(env, await press(env, MEMBER, sources_of(answer)[0], answer))
    assert not [m for m in env.telegram.sent_messages(MEMBER) if "<blockquote>" in (m.text or "")]
    env.telegram.set_member(TEAM, MEMBER, "member")
    await press(env, MEMBER, sources_of(answer)[0], answer)
    await env.telegram.wait_for(
        lambda: [m for m in env.telegram.sent_messages(MEMBER) if "<blockquote>" in (m.text or "")]
    )
