"""The conversation as users live it, through the fake Bot API: previews in HTML, comments only
by reply, concurrent updates of one conversation, forum topics, reactions as feedback, /new and
/help, mentions by entity, the stop button."""

import asyncio
from typing import Any

import pytest

from app.chain.chain import Chain
from tests import test_bot
from tests.fakes import telegram_objects as tg
from tests.fakes.telegram_server import BotMessage
from tests.test_bot import GROUP, MULTI_OWNER, READER, SECRET, Env, button_data, prompts_seen, reply

pytest_plugins = ["tests.fakes.telegram_server", "tests.fakes.langfuse_server"]
# The bot of tests/test_bot.py, polling the fake Bot API (pytest finds fixtures by name).
bot_store = test_bot.bot_store
env = test_bot.env


def answers(env: Env, chat_id: int) -> list[BotMessage]:
    """The bot's answers (with sources) in a chat, in order."""
    return [m for m in env.telegram.sent_messages(chat_id) if "Sources:" in (m.plain_text or "")]


async def n_answers(env: Env, chat_id: int, count: int, wait_s: float = 30.0) -> list[BotMessage]:
    """Wait until the chat has count answers."""

    def enough() -> list[BotMessage] | None:
        found = answers(env, chat_id)
        return found if len(found) >= count else None

    return await env.telegram.wait_for(
        enough,
        timeout=wait_s,
        what=f"{count} answers in chat {chat_id}",
    )


async def final_scores(env: Env, count: int) -> dict[str, dict[str, Any]]:
    """The last state of each feedback score, by id, once count ids exist."""

    def latest() -> dict[str, dict[str, Any]] | None:
        env.tracer.flush()
        by_id: dict[str, dict[str, Any]] = {}
        for score in env.langfuse.scores():
            by_id[str(score["id"])] = score
        return by_id if len(by_id) >= count else None

    return await env.telegram.wait_for(latest, timeout=10, what=f"{count} scores")


def rating(message: BotMessage) -> list[str]:
    """The 👍 and 👎 callback data under an answer."""
    return [data for data in button_data(message) if data.startswith("fb:")]


def history_seen(env: Env) -> str:
    """What the paraphrase step was shown (the history it rewrites with)."""
    return "\n".join(m.content for c in env.llm.calls if c.step == "paraphrase" for m in c.messages)


# -- 1. previews -------------------------------------------------------------------------------


async def test_previews_are_sent_as_html(env: Env) -> None:
    env.llm.replies["answer"] = "Don't mix <tags> & quotes here [1]."
    env.telegram.push_message(READER, "How do I connect to the VPN?")
    await reply(env, READER, "Sources:")
    drafts = env.telegram.drafts(READER)
    assert drafts
    assert {d.parse_mode for d in drafts} == {"HTML"}
    shown = tg.text_problem(drafts[-1].text or "", drafts[-1].parse_mode)[0]
    assert "Don't mix <tags> & quotes" in shown
    env.telegram.push_message(
        2, "@kb_test_bot how do I connect to the VPN?", chat_id=GROUP, chat_type="group"
    )
    await reply(env, GROUP, "Sources:")
    sent = [
        c
        for c in env.telegram.calls("sendMessage") + env.telegram.calls("editMessageText")
        if c.params.get("chat_id") == GROUP
    ]
    assert len(sent) >= 2, "a preview, then the final answer"
    assert {c.params.get("parse_mode") for c in sent} == {"HTML"}


# -- 2. comments only by reply -----------------------------------------------------------------


async def test_a_question_after_thumbs_down_is_answered(env: Env) -> None:
    env.telegram.push_message(READER, "How do I connect to the VPN?")
    answer = await reply(env, READER, "Sources:")
    down = rating(answer)[1]
    trace_id = down.split(":")[1]
    env.telegram.push_callback(READER, down, answer.message_id)
    prompt = await reply(env, READER, "What was wrong?")
    # The user simply asks the next question: it is answered, not taken as a comment.
    env.telegram.push_message(READER, "How do I reset my password?")
    await n_answers(env, READER, 2)
    assert not [m for m in env.telegram.sent_messages(READER) if "comment goes" in (m.text or "")]
    assert (prompt.reply_markup or {}).get("force_reply") is True
    assert (prompt.reply_markup or {}).get("input_field_placeholder")
    # A reply to the request is the comment.
    env.telegram.push_message(
        READER, "it was about the wrong office", reply_to_message_id=prompt.message_id
    )
    await reply(env, READER, "your comment goes to the team")
    scores = await final_scores(env, 1)
    score = scores[f"{trace_id}-feedback-{READER}"]
    assert score["comment"] == "it was about the wrong office"
    assert score["value"] == 0


async def test_comment_in_a_group_is_a_reply_to_the_request(env: Env) -> None:
    env.telegram.push_message(
        2, "@kb_test_bot how do I connect to the VPN?", chat_id=GROUP, chat_type="group"
    )
    answer = await reply(env, GROUP, "Sources:")
    env.telegram.push_callback(2, rating(answer)[1], answer.message_id, chat_id=GROUP)
    prompt = await reply(env, GROUP, "What was wrong?")
    assert (prompt.reply_markup or {}).get("selective") is True
    assert "tg://user?id=2" in (prompt.text or "")
    # The buttons stay for the others in the group.
    now = next(m for m in env.telegram.sent_messages(GROUP) if m.message_id == answer.message_id)
    assert rating(now)
    env.telegram.push_message(
        2, "wrong office", chat_id=GROUP, chat_type="group", reply_to_message_id=prompt.message_id
    )
    await reply(env, GROUP, "your comment goes")
    scores = await final_scores(env, 1)
    assert next(iter(scores.values()))["comment"] == "wrong office"


# -- 3. one conversation, concurrent updates ---------------------------------------------------


async def test_two_questions_at_once_keep_both_turns(env: Env) -> None:
    env.llm.reply_delay_s = 0.3
    first = env.telegram.push_message(READER, "How do I connect to the VPN?")
    env.telegram.push_message(READER, "How do I reset my password?")
    both = await n_answers(env, READER, 2)
    env.llm.reply_delay_s = 0.0
    env.llm.calls.clear()
    env.telegram.push_message(READER, "and where is the office?")
    await n_answers(env, READER, 3)
    seen = history_seen(env)
    assert "How do I connect to the VPN?" in seen
    assert "How do I reset my password?" in seen
    # The first answer comes after a newer question: it quotes its own.
    assert first.message_id in {m.reply_to_message_id for m in both}


@pytest.fixture
def on_redis(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The next bot keeps its state and locks in a (fake) Redis, as replicas do; ask for it
    before env."""
    import fakeredis
    from aiogram.fsm.storage.redis import RedisStorage

    from app.bot import app
    from app.bot.locks import RedisLocks

    redis = fakeredis.FakeAsyncRedis()
    monkeypatch.setattr(app, "MemoryStorage", lambda: RedisStorage(redis, data_ttl=600))
    monkeypatch.setattr(app, "MemoryLocks", lambda: RedisLocks(redis))
    return redis


async def test_two_questions_at_once_on_redis(on_redis: Any, env: Env) -> None:
    env.llm.reply_delay_s = 0.3
    env.telegram.push_message(READER, "How do I connect to the VPN?", message_thread_id=4)
    env.telegram.push_message(READER, "How do I reset my password?", message_thread_id=4)
    await n_answers(env, READER, 2)
    env.llm.reply_delay_s = 0.0
    env.llm.calls.clear()
    env.telegram.push_message(READER, "and where is the office?", message_thread_id=4)
    await n_answers(env, READER, 3)
    seen = history_seen(env)
    assert "How do I connect to the VPN?" in seen
    assert "How do I reset my password?" in seen
    keys = {k.decode() for k in await on_redis.keys("fsm:*")}
    assert f"fsm:{READER}:4:{READER}:data" in keys, "the topic is part of the key"
    assert not await on_redis.keys("kb:lock:*")


async def test_thumbs_down_and_comment_while_a_question_runs(env: Env) -> None:
    env.telegram.push_message(READER, "How do I connect to the VPN?")
    first = await reply(env, READER, "Sources:")
    trace_id = rating(first)[1].split(":")[1]
    env.llm.reply_delay_s = 0.5
    env.telegram.push_message(READER, "How do I reset my password?")
    await env.telegram.wait_for(lambda: env.llm.calls and len(env.llm.calls) > 3)
    env.telegram.push_callback(READER, rating(first)[1], first.message_id)
    prompt = await reply(env, READER, "What was wrong?")
    # The running question ends (and saves its turn) between the 👎 and the comment.
    await n_answers(env, READER, 2)
    env.llm.reply_delay_s = 0.0
    env.telegram.push_message(READER, "wrong office", reply_to_message_id=prompt.message_id)
    await reply(env, READER, "your comment goes")
    scores = await final_scores(env, 1)
    assert scores[f"{trace_id}-feedback-{READER}"]["comment"] == "wrong office"
    env.llm.calls.clear()
    env.telegram.push_message(READER, "and where is the office?")
    await n_answers(env, READER, 3)
    assert "How do I reset my password?" in history_seen(env)


# -- 4. forum topics ---------------------------------------------------------------------------


def _in_topic(env: Env, chat_id: int, thread_id: int) -> None:
    sent = [c for c in env.telegram.calls("sendMessage") if c.params.get("chat_id") == chat_id]
    assert sent
    assert {c.params.get("message_thread_id") for c in sent} == {thread_id}


async def test_group_topic_keeps_answers_buttons_and_state(env: Env) -> None:
    ask = "@kb_test_bot how do I reset my password?"
    env.telegram.push_message(2, ask, chat_id=GROUP, chat_type="group", message_thread_id=7)
    answer = await reply(env, GROUP, "Sources:")
    env.telegram.push_callback(2, rating(answer)[1], answer.message_id, chat_id=GROUP)
    await reply(env, GROUP, "What was wrong?")
    _in_topic(env, GROUP, 7)
    assert "typing" in env.telegram.chat_actions(GROUP)
    actions = [c for c in env.telegram.calls("sendChatAction") if c.params["chat_id"] == GROUP]
    assert {c.params.get("message_thread_id") for c in actions} == {7}
    # Another topic is another conversation: no history from topic 7.
    env.llm.calls.clear()
    env.llm.replies["clarify"] = (
        "ASK: Which kind of leave do you mean?\n- Annual leave\n- Sick leave"
    )
    env.telegram.push_message(
        2, "@kb_test_bot how much leave?", chat_id=GROUP, chat_type="group", message_thread_id=9
    )
    question = await reply(env, GROUP, "Which kind of leave")
    assert "reset my password" not in history_seen(env)
    env.llm.replies.pop("clarify")
    env.telegram.push_callback(2, button_data(question)[1], question.message_id, chat_id=GROUP)
    await n_answers(env, GROUP, 2)
    assert question.params.get("message_thread_id") == 9
    assert answers(env, GROUP)[-1].params.get("message_thread_id") == 9
    # Back in topic 7, its history is there.
    env.llm.calls.clear()
    env.telegram.push_message(
        2,
        "@kb_test_bot can I reset my password by SMS?",
        chat_id=GROUP,
        chat_type="group",
        message_thread_id=7,
    )
    await n_answers(env, GROUP, 3)
    assert "how do I reset my password?" in history_seen(env)


async def test_private_chat_topic_gets_drafts_and_answer_there(env: Env) -> None:
    env.telegram.push_message(READER, "How do I connect to the VPN?", message_thread_id=5)
    await reply(env, READER, "Sources:")
    assert {d.message_thread_id for d in env.telegram.drafts(READER)} == {5}
    _in_topic(env, READER, 5)


# -- 5. reactions ------------------------------------------------------------------------------


async def test_reactions_score_the_answer_per_user(env: Env) -> None:
    env.telegram.push_message(READER, "/start")
    greeting = await reply(env, READER, "knowledge base")
    env.telegram.push_message(READER, "How do I connect to the VPN?")
    answer = await reply(env, READER, "Sources:")
    trace_id = rating(answer)[0].split(":")[1]
    env.telegram.push_reaction(READER, greeting.message_id, ["👍"])  # not an answer: ignored
    env.telegram.push_reaction(READER, answer.message_id, ["👍"])
    scores = await final_scores(env, 1)
    assert scores[f"{trace_id}-feedback-{READER}"]["value"] == 1
    env.telegram.push_reaction(READER, answer.message_id, ["👎"], old=["👍"])

    def down_score() -> list[dict[str, Any]]:
        env.tracer.flush()
        return [s for s in env.langfuse.scores() if s["value"] == 0 and s["traceId"] == trace_id]

    await env.telegram.wait_for(down_score, timeout=10)
    assert env.telegram.calls("getUpdates")[-1].params.get("allowed_updates")
    assert "message_reaction" in env.telegram.calls("getUpdates")[-1].params["allowed_updates"]
    # A removed reaction keeps the score.
    env.telegram.push_reaction(READER, answer.message_id, [], old=["👎"])
    env.telegram.push_message(READER, "/help")
    await reply(env, READER, "/new")
    scores = await final_scores(env, 1)
    assert list(scores) == [f"{trace_id}-feedback-{READER}"]
    assert scores[f"{trace_id}-feedback-{READER}"]["value"] == 0


async def test_two_people_in_a_group_rate_separately(env: Env) -> None:
    env.telegram.push_message(
        2, "@kb_test_bot how do I connect to the VPN?", chat_id=GROUP, chat_type="group"
    )
    answer = await reply(env, GROUP, "Sources:")
    up, down = rating(answer)
    trace_id = up.split(":")[1]
    env.telegram.push_callback(2, up, answer.message_id, chat_id=GROUP)
    env.telegram.push_callback(4, down, answer.message_id, chat_id=GROUP)
    env.telegram.push_reaction(5, answer.message_id, ["👍"], chat_id=GROUP)
    scores = await final_scores(env, 3)
    assert {k: s["value"] for k, s in scores.items()} == {
        f"{trace_id}-feedback-2": 1,
        f"{trace_id}-feedback-4": 0,
        f"{trace_id}-feedback-5": 1,
    }


# -- 6. /new and /help -------------------------------------------------------------------------


async def test_new_starts_a_fresh_conversation_and_keeps_the_collection(env: Env) -> None:
    env.telegram.push_message(MULTI_OWNER, "/collection")
    choice = await reply(env, MULTI_OWNER, "Which knowledge base")
    env.telegram.push_callback(MULTI_OWNER, button_data(choice)[0], choice.message_id)
    await env.telegram.wait_for(
        lambda: "Now searching: Company" in (env.telegram.texts(MULTI_OWNER)[-1] or "")
    )
    env.telegram.push_message(MULTI_OWNER, "How do I connect to the VPN?")
    await n_answers(env, MULTI_OWNER, 1)
    env.telegram.push_message(MULTI_OWNER, "/new")
    await reply(env, MULTI_OWNER, "New conversation")
    env.llm.calls.clear()
    env.telegram.push_message(MULTI_OWNER, "What is in the salary table?")
    await n_answers(env, MULTI_OWNER, 2)
    assert "connect to the VPN" not in history_seen(env)
    assert SECRET not in prompts_seen(env.llm), "the chosen collection (company) is kept"


async def test_a_question_running_across_new_stays_out_of_the_new_conversation(env: Env) -> None:
    env.llm.reply_delay_s = 0.5
    env.telegram.push_message(READER, "How do I connect to the VPN?")
    await env.telegram.wait_for(lambda: env.llm.calls)
    env.telegram.push_message(READER, "/new")
    await reply(env, READER, "New conversation")
    await n_answers(env, READER, 1)
    env.llm.reply_delay_s = 0.0
    env.llm.calls.clear()
    env.telegram.push_message(READER, "How do I reset my password?")
    await n_answers(env, READER, 2)
    assert "connect to the VPN" not in history_seen(env)


async def test_help_in_the_users_language(env: Env) -> None:
    env.telegram.push_message(READER, "/help", language_code="ru")
    message = await reply(env, READER, "/new")
    assert "новый разговор" in (message.plain_text or "")
    env.telegram.push_message(4, "/reset", language_code="ru")
    await reply(env, 4, "Новый разговор")


# -- 7. mentions -------------------------------------------------------------------------------


async def test_mention_is_an_entity_not_a_substring(env: Env) -> None:
    other = "@kb_test_botanist how do I connect to the VPN?"
    env.telegram.push_message(
        2,
        other,
        chat_id=GROUP,
        chat_type="group",
        entities=[tg.mention_entity(other, "@kb_test_botanist")],
    )
    by_name = "KB, how do I reset my password?"
    text_mention = {"type": "text_mention", "offset": 0, "length": 2, "user": tg.bot_user()}
    env.telegram.push_message(2, by_name, chat_id=GROUP, chat_type="group", entities=[text_mention])
    answer = await reply(env, GROUP, "Sources:")
    assert "Resetting your password" in (answer.plain_text or "")
    await asyncio.sleep(0.5)
    assert len(answers(env, GROUP)) == 1
    answer_call = next(c for c in env.llm.calls if c.step == "answer")
    assert "KB," not in answer_call.messages[-1].content


# -- 8. the stop button ------------------------------------------------------------------------


async def test_stop_button_ends_the_answer_with_what_was_written(env: Env) -> None:
    env.llm.delta_delay_s = 0.2
    env.llm.replies["answer"] = "Open the client first. " + "Then wait a little. " * 30 + "[1]."
    env.telegram.push_message(READER, "How do I connect to the VPN?")
    draft = await env.telegram.wait_for(
        lambda: next(
            (d for d in env.telegram.drafts(READER) if d.can_stop and "first." in (d.text or "")),
            None,
        )
    )
    env.telegram.push_stop(READER, draft.draft_id)
    stopped = await reply(env, READER, "Stopped.")
    assert "Open the client first." in (stopped.plain_text or "")
    await asyncio.sleep(0.5)
    texts = " ".join(m.plain_text or "" for m in env.telegram.sent_messages(READER))
    assert "Sources:" not in texts
    assert "went wrong" not in texts
    drafts = len(env.telegram.drafts(READER))
    await asyncio.sleep(0.5)
    assert len(env.telegram.drafts(READER)) == drafts, "the run ended"


async def test_the_apology_stays_in_the_topic(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("database exploded")

    monkeypatch.setattr(Chain, "run", broken)
    env.telegram.push_message(
        2,
        "@kb_test_bot how do I reset my password?",
        chat_id=GROUP,
        chat_type="group",
        message_thread_id=7,
    )
    await reply(env, GROUP, "something went wrong")
    _in_topic(env, GROUP, 7)
