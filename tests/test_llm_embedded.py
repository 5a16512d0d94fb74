"""The embedded llama.cpp client on the real bundled Gemma 3 270M (loaded once for the module):
the chat template, regexes enforced by llguidance, streaming, serialization, context limits.

Gemma 3 270M is a small base model: what it says is often a copy of the prompt, but under a
regex its output has the required form, and with temperature 0 it is always the same."""

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.chain.quote import quote_regex
from app.chain.types import Passage
from app.errors import LLMResponseError, LLMUnavailableError
from app.llm.base import GenerationParams, LLMClient, Message, OnDelta
from app.llm.llama_decoding import TextOutput
from app.llm.llamacpp import LlamaCppClient
from app.settings import LLMSettings
from tests.conftest import without_env

# Fixtures run on the session loop (pyproject); the tests must share it.
pytestmark = pytest.mark.asyncio(loop_scope="session")

N_CTX = 2048
GEMMA_BOS = 2  # <bos> in Gemma 3's vocabulary

VERDICT = "(YES|NO)"
PARAPHRASE = "[A-Za-z0-9 ,.?'-]{3,120}"
CLARIFY = (
    "CLEAR|ASK: [A-Za-z0-9 ,.?'-]{5,100}\n- [A-Za-z0-9 ,.'-]{1,40}\n- [A-Za-z0-9 ,.'-]{1,40}"
    "(\n- [A-Za-z0-9 ,.'-]{1,40}){0,2}"
)
CITED = r"(?:[A-Za-z0-9 ,.;:'()-]|\[(?:1|2)\])*\[(?:1|2)\](?:[A-Za-z0-9 ,.;:'()-]|\[(?:1|2)\])*"
CYRILLIC = "[ЁёА-Яа-я ,.]{5,60}"

SOURCES = (
    "Sources:\n[1] Vacation requests go through the HR portal.\n"
    "[2] Managers approve requests within five days.\n\nQuestion: How do I request vacation?"
)
CASES = {
    "verdict": (
        VERDICT,
        [
            Message("system", "Does the passage answer the question? Reply YES or NO."),
            Message("user", "Question: When did the office open?\nPassage: It opened in 2019."),
        ],
        4,
    ),
    "paraphrase": (
        PARAPHRASE,
        [
            Message("system", "Rewrite the last question so that it stands alone."),
            Message("user", "We talked about the VPN client.\nQuestion: how do I install it?"),
        ],
        48,
    ),
    "clarify": (
        CLARIFY,
        [
            Message(
                "system",
                "If the question is ambiguous, reply ASK: with a question and options, each "
                'on its own line after "- ". Otherwise reply CLEAR.',
            ),
            Message("user", "Which one?"),
        ],
        80,
    ),
    "cited answer": (
        CITED,
        [
            Message("system", "Answer from the sources and cite them as [1] or [2]."),
            Message("user", SOURCES),
        ],
        64,
    ),
    "cyrillic": (
        CYRILLIC,
        [Message("system", "Отвечай по-русски."), Message("user", "Как называется столица?")],
        40,
    ),
}


class Deltas:
    """An on_delta that keeps what it was given."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    async def __call__(self, piece: str) -> None:
        self.parts.append(piece)


@pytest.fixture(scope="module")
async def client() -> AsyncIterator[LlamaCppClient]:
    """The bundled model, loaded once (about 3 s: the model, then llguidance's vocabulary)."""
    llm = await LlamaCppClient.create(without_env(LLMSettings, n_ctx=N_CTX))
    yield llm
    await llm.aclose()


async def test_identity(client: LlamaCppClient) -> None:
    protocol: LLMClient = client
    assert protocol.model == "gemma-3-270m-q4_k_m"
    assert protocol.parallel is False


async def test_prompt_uses_gemma_template(client: LlamaCppClient) -> None:
    messages = [Message("system", "Answer briefly."), Message("user", "Where is Paris?")]
    prompt = await client.render_prompt(messages)
    # Gemma has no system turn: the system text opens the first user turn.
    assert prompt == (
        "<bos><start_of_turn>user\nAnswer briefly.\n\nWhere is Paris?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    tokens = await client.prompt_tokens(messages)
    assert tokens[0] == GEMMA_BOS
    assert GEMMA_BOS not in tokens[1:]  # the template's <bos>, not a second one
    assert len(tokens) < len(prompt) // 2  # the turn markers are single special tokens


async def test_template_rejects_roles_out_of_order(client: LlamaCppClient) -> None:
    with pytest.raises(LLMResponseError, match="roles must alternate"):
        await client.complete([Message("user", "Hi"), Message("user", "Hi again")])


@pytest.mark.parametrize("case", CASES)
async def test_output_matches_regex(client: LlamaCppClient, case: str) -> None:
    regex, messages, max_tokens = CASES[case]
    deltas = Deltas()
    params = GenerationParams(max_tokens=max_tokens)
    result = await client.complete(messages, regex=regex, params=params, on_delta=deltas)
    assert re.fullmatch(regex, result.text), result.text
    assert result.finish_reason == "stop"
    assert 0 < result.usage.completion_tokens <= max_tokens
    assert result.usage.prompt_tokens == len(await client.prompt_tokens(messages))
    assert result.model == "gemma-3-270m-q4_k_m"
    assert result.seconds > 0
    # Streamed pieces are whole characters and add up to the text.
    assert "".join(deltas.parts) == result.text
    assert not any("\ufffd" in part for part in deltas.parts)


async def test_same_prompt_same_greedy_output(client: LlamaCppClient) -> None:
    regex, messages, max_tokens = CASES["paraphrase"]
    params = GenerationParams(max_tokens=max_tokens)
    first = await client.complete(messages, regex=regex, params=params)
    second = await client.complete(messages, regex=regex, params=params)
    assert first.text == second.text


async def test_max_tokens_leaves_a_prefix_of_a_match(client: LlamaCppClient) -> None:
    _, messages, _ = CASES["cited answer"]
    params = GenerationParams(max_tokens=3)
    result = await client.complete(messages, regex=CITED, params=params)
    assert result.finish_reason == "length"
    assert result.usage.completion_tokens == 3
    # Not a match yet, but one citation more makes it one.
    assert re.fullmatch(CITED, result.text + "[1]"), result.text


async def test_unconstrained_generation_stops(client: LlamaCppClient) -> None:
    messages = [Message("user", "Say hello.")]
    result = await client.complete(messages, params=GenerationParams(max_tokens=12))
    assert result.text
    assert result.finish_reason in {"stop", "length"}
    assert result.usage.completion_tokens <= 12


async def test_stop_string_cuts_the_output(client: LlamaCppClient) -> None:
    messages = [Message("user", "Say hello.")]
    deltas = Deltas()
    params = GenerationParams(max_tokens=24, stop=("\n",), temperature=0.7, top_p=0.9)
    result = await client.complete(messages, params=params, on_delta=deltas)
    assert "\n" not in result.text
    assert "".join(deltas.parts) == result.text
    assert result.finish_reason == "stop" or result.usage.completion_tokens == 24


async def test_concurrent_requests_run_one_after_the_other(client: LlamaCppClient) -> None:
    order: list[str] = []

    def recorder(tag: str) -> OnDelta:
        async def record(piece: str) -> None:
            order.append(tag)

        return record

    params = GenerationParams(max_tokens=8)
    first, second = await asyncio.gather(
        client.complete(CASES["verdict"][1], regex=VERDICT, params=params, on_delta=recorder("a")),
        client.complete(CASES["paraphrase"][1], params=params, on_delta=recorder("b")),
    )
    assert re.fullmatch(VERDICT, first.text)
    assert second.text
    assert re.fullmatch("a+b+|b+a+", "".join(order))  # streamed one after the other


async def test_abandoned_request_frees_the_worker(client: LlamaCppClient) -> None:
    class CallbackError(Exception):
        pass

    async def fail(piece: str) -> None:
        raise CallbackError(piece)

    long = GenerationParams(max_tokens=1000)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(
            client.complete([Message("user", "Tell a story.")], params=long), 0.3
        )
    with pytest.raises(CallbackError):
        await client.complete([Message("user", "Tell a story.")], params=long, on_delta=fail)
    # Both generations were stopped, not run to 1000 tokens ahead of this one.
    result = await client.complete(CASES["verdict"][1], regex=VERDICT)
    assert re.fullmatch(VERDICT, result.text)
    assert result.seconds < 10  # each of them would take 15 s or more


@pytest.mark.parametrize(
    ("words", "max_tokens"), [(N_CTX, 16), (10, N_CTX)], ids=["long prompt", "long answer"]
)
async def test_context_overflow_is_a_clear_error(
    client: LlamaCppClient, words: int, max_tokens: int
) -> None:
    messages = [Message("user", "word " * words)]
    with pytest.raises(LLMResponseError, match="exceeds the model's context of 2048 tokens"):
        await client.complete(messages, params=GenerationParams(max_tokens=max_tokens))


@pytest.mark.parametrize("regex", ["(YES", "(?=YES)YES"], ids=["unbalanced", "lookahead"])
async def test_invalid_regex_is_rejected(client: LlamaCppClient, regex: str) -> None:
    with pytest.raises(LLMResponseError, match="regex"):
        await client.complete([Message("user", "Hi")], regex=regex)


OFFICE = "The office opens at 8:00. Badges are issued within 3 days. Parking is free for staff."


async def test_quote_regex_constrains_the_output_to_sentences_of_the_passage(
    client: LlamaCppClient,
) -> None:
    regex = quote_regex([Passage(1, "c", "office.md", "Office", OFFICE, "office.md", 0.5)])
    messages = [
        Message("system", "Quote the sentences that answer the question, each with [1]."),
        Message("user", f"[1] Office\n{OFFICE}\n\nQuestion: When does the office open?"),
    ]
    result = await client.complete(messages, regex=regex, params=GenerationParams(max_tokens=64))
    assert re.fullmatch(regex, result.text), result.text
    assert result.finish_reason == "stop"
    lines = result.text.splitlines()
    assert len(set(lines)) == len(lines) <= 3
    assert all(line.endswith(" [1]") and line[:-4] in OFFICE for line in lines)


async def test_reply_likelihood_is_higher_after_the_prompt_that_leads_to_it(
    client: LlamaCppClient,
) -> None:
    def excerpt(text: str) -> list[Message]:
        return [
            Message("system", "Write the question this excerpt answers."),
            Message("user", text),
        ]

    prompts = [excerpt(s) for s in OFFICE.split(". ")]
    question = "When does the office open?"
    scores = await client.reply_log_probs(prompts, question)
    assert scores[0] == max(scores)
    assert all(s < 0 for s in scores)  # mean log-probabilities per token
    # Evaluating a prompt after others (sharing their prefix) changes nothing that matters.
    alone = await client.reply_log_probs(prompts[2:], question)
    assert alone[0] == pytest.approx(scores[2], abs=0.02)
    with pytest.raises(LLMResponseError, match="empty reply"):
        await client.reply_log_probs(prompts, "")


async def test_closed_client_refuses_requests() -> None:
    # The model loads lazily, so this costs nothing.
    unloaded = LlamaCppClient.from_settings(without_env(LLMSettings))
    await unloaded.aclose()
    await unloaded.aclose()
    with pytest.raises(LLMUnavailableError, match="closed"):
        await unloaded.complete([Message("user", "Hi")])


async def test_missing_model_file_is_unavailable(tmp_path: Path) -> None:
    settings = without_env(LLMSettings, gguf_path=tmp_path / "missing.gguf")
    broken = LlamaCppClient(settings)
    assert broken.model == "missing"
    with pytest.raises(LLMUnavailableError, match="cannot load the GGUF model"):
        await broken.start()
    await broken.aclose()


async def test_text_output_keeps_characters_whole_and_cuts_at_stop() -> None:
    pieces: list[str] = []
    output = TextOutput(stops=("END",), sink=pieces.append)
    data = "Привет, EN".encode()
    # Byte by byte: every Cyrillic letter arrives split in two.
    assert not any(output.feed(data[i : i + 1]) for i in range(len(data)))
    assert "".join(pieces) == "Привет, "  # "EN" may start the stop string: held back
    assert output.feed(b"D and more")
    assert output.text == "Привет, " == "".join(pieces)


async def test_text_output_flushes_a_held_tail() -> None:
    pieces: list[str] = []
    output = TextOutput(stops=("END",), sink=pieces.append)
    assert not output.feed("да E".encode())
    output.finish()
    assert output.text == "да E" == "".join(pieces)
