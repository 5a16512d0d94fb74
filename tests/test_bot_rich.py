"""Rich answers through the fake Bot API: citations as footnotes in one rich message with the
answer's buttons; HTML where the server has no sendRichMessage (learnt once), where a chat type
refuses it (learnt per type), or where the answer exceeds the rich limits; quoting the question
in groups."""

import re

from tests import test_bot
from tests.fakes.telegram_server import BotMessage, RecordedCall
from tests.test_bot import GROUP, READER, Env, button_data, reply

pytest_plugins = ["tests.fakes.telegram_server", "tests.fakes.langfuse_server"]
# The bot of tests/test_bot.py, polling the fake Bot API (pytest finds fixtures by name).
bot_store = test_bot.bot_store
env = test_bot.env

VPN = "How do I connect to the VPN?"


async def rich_reply(env: Env, chat_id: int, contains: str) -> BotMessage:
    """The bot's rich message in a chat whose text contains a string (waits for it)."""
    return await env.telegram.wait_for_message(
        chat_id, lambda m: m.method == "sendRichMessage" and contains in (m.text or ""), timeout=20
    )


def rich_calls(env: Env) -> list[RecordedCall]:
    return env.telegram.calls("sendRichMessage")


async def test_answer_is_a_rich_message_with_footnotes_and_buttons(env: Env) -> None:
    env.telegram.support_rich()
    env.llm.replies["answer"] = "Open the client [1] and sign in (with 2FA) [1]."
    env.telegram.push_message(READER, VPN)
    answer = await rich_reply(env, READER, "[^1]")
    source = answer.text or ""
    # Each citation is a footnote reference; the footnote names the document, once.
    assert source.count("[^1]") == 3
    assert re.search(r"^\[\^1\]: Connecting to the VPN", source, re.MULTILINE)
    assert "\\(with 2FA\\)" in source, "the answer's own Markdown characters are escaped"
    assert "Sources:" not in (answer.plain_text or "")
    data = button_data(answer)
    assert len([d for d in data if d.startswith("fb:")]) == 2
    assert [d for d in data if d.startswith("src:")], "a button per source"
    assert env.telegram.drafts(READER), "the draft still streams first"
    html = [m for m in env.telegram.sent_messages(READER) if m.method == "sendMessage"]
    assert not html, "one answer, not a rich one and an HTML one"
    # The buttons work on it: a source opens its passage.
    source_button = next(d for d in data if d.startswith("src:"))
    env.telegram.push_callback(READER, source_button, answer.message_id)
    await reply(env, READER, "Connecting to the VPN")


async def test_group_answer_replaces_its_preview(env: Env) -> None:
    env.telegram.support_rich()
    env.telegram.push_message(2, f"@kb_test_bot {VPN}", chat_id=GROUP, chat_type="group")
    answer = await rich_reply(env, GROUP, "[^")
    assert answer.reply_to_message_id is not None, "it replies to the question"
    previews = [m for m in env.telegram.sent_messages(GROUP) if m.method == "sendMessage"]
    await env.telegram.wait_for(
        lambda: all(
            m.deleted for m in env.telegram.sent_messages(GROUP) if m.method == "sendMessage"
        )
    )
    assert all(
        not m.deleted for m in env.telegram.sent_messages(GROUP) if m.method == "sendRichMessage"
    )
    assert len(previews) <= 1


async def test_server_without_rich_messages_gets_html_and_is_asked_once(env: Env) -> None:
    # The fake answers sendRichMessage 404 "method not found" until support_rich().
    env.telegram.push_message(READER, VPN)
    first = await reply(env, READER, "Sources:")
    assert first.method == "sendMessage"
    assert [call.status for call in rich_calls(env)] == [404]
    env.telegram.push_message(2, "How much leave can I take?")
    await reply(env, 2, "Sources:")
    env.telegram.push_message(READER, "Where do I find the VPN client?")
    await env.telegram.wait_for(
        lambda: (
            len(
                [
                    m
                    for m in env.telegram.sent_messages(READER)
                    if "Sources:" in (m.plain_text or "")
                ]
            )
            >= 2
        )
    )
    assert len(rich_calls(env)) == 1, "the server's answer is remembered for the process"


async def test_refusal_in_a_group_falls_back_for_groups_only(env: Env) -> None:
    env.telegram.support_rich()
    env.telegram.refuse_rich("group")
    env.telegram.push_message(2, f"@kb_test_bot {VPN}", chat_id=GROUP, chat_type="group")
    first = await reply(env, GROUP, "Sources:")
    assert button_data(first), "the HTML answer keeps its buttons"
    assert [call.status for call in rich_calls(env)] == [400]
    env.telegram.push_message(
        2, "@kb_test_bot how much leave can I take?", chat_id=GROUP, chat_type="group"
    )
    await env.telegram.wait_for(
        lambda: (
            len(
                [m for m in env.telegram.sent_messages(GROUP) if "Sources:" in (m.plain_text or "")]
            )
            >= 2
        )
    )
    assert len(rich_calls(env)) == 1, "groups are not asked again"
    env.telegram.push_message(READER, VPN)
    await rich_reply(env, READER, "[^")
    assert [call.status for call in rich_calls(env)] == [400, 200], "private chats still are"


async def test_answer_beyond_the_rich_limits_is_sent_as_html(env: Env) -> None:
    env.telegram.support_rich()
    env.llm.delta_delay_s = 0.0
    sentence = "The VPN client must be configured with the company profile before use [1]. "
    env.llm.replies["answer"] = sentence * (33_000 // len(sentence) + 1)
    env.telegram.push_message(READER, VPN)
    await reply(env, READER, "Sources:", wait_s=60)
    parts = [m for m in env.telegram.sent_messages(READER) if m.method == "sendMessage"]
    assert len(parts) >= 8, "split at Telegram's limit, as before"
    assert not rich_calls(env), "too long for a rich message: not even tried"
    env.llm.replies["answer"] = "Short again [1]."
    env.telegram.push_message(READER, VPN)
    await rich_reply(env, READER, "Short again")


def answers(env: Env, chat_id: int) -> list[BotMessage]:
    """The bot's HTML answers (with sources) in a chat, in order."""
    return [m for m in env.telegram.sent_messages(chat_id) if "Sources:" in (m.plain_text or "")]


async def test_group_answer_quotes_a_long_question(env: Env) -> None:
    long_question = (
        "we moved to the new office last week and my laptop no longer reaches the intranet from "
        "the guest network, so how do I connect to the VPN from there?"
    )
    env.telegram.push_message(2, f"@kb_test_bot {long_question}", chat_id=GROUP, chat_type="group")
    answer = await reply(env, GROUP, "Sources:")
    parameters = answer.params["reply_parameters"]
    quote = parameters["quote"]
    assert long_question.startswith(quote)
    assert 60 < len(quote) <= 160
    assert parameters["allow_sending_without_reply"] is True
    # A short question (and nothing else pending) is replied to without a quote.
    env.telegram.push_message(2, "@kb_test_bot how much leave?", chat_id=GROUP, chat_type="group")
    await env.telegram.wait_for(lambda: len(answers(env, GROUP)) >= 2, timeout=20)
    short = answers(env, GROUP)[1]
    assert short.reply_to_message_id is not None
    assert "quote" not in short.params["reply_parameters"]


async def test_rejected_quote_falls_back_to_a_plain_reply(env: Env) -> None:
    env.telegram.support_rich()
    env.telegram.fail_next(
        "sendRichMessage", status=400, description="Bad Request: QUOTE_TEXT_INVALID"
    )
    question = "@kb_test_bot " + "please tell me, in detail, " * 6 + "how do I connect to the VPN?"
    pushed = env.telegram.push_message(2, question, chat_id=GROUP, chat_type="group")
    answer = await rich_reply(env, GROUP, "[^")
    assert answer.reply_to_message_id == pushed.message_id
    assert "quote" not in answer.params["reply_parameters"]
    first, second = rich_calls(env)
    assert question.removeprefix("@kb_test_bot ").startswith(
        first.params["reply_parameters"]["quote"]
    )
    assert second.status == 200
    # A rejected quote says nothing about rich messages in groups.
    env.telegram.push_message(2, f"@kb_test_bot {VPN}", chat_id=GROUP, chat_type="group")
    await env.telegram.wait_for(lambda: len(rich_calls(env)) == 3, timeout=20)
