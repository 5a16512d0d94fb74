"""The prompt files (parse, render, output regexes), malformed prompts, Langfuse overrides
through the real SDK against a local receiver (tests/fakes/langfuse_server.py), `prompts push`
and `python -m app prompts check`."""

import asyncio
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, cast

import pytest
from langfuse.model import ChatPromptClient

from app.chain.clarify import parse_clarification
from app.chain.types import ENGLISH, RUSSIAN, Language, Passage, Turn
from app.chain.variables import prompt_variables
from app.errors import PromptError
from app.prompts import Prompt, PromptStore, load_prompt_files, parse_prompt
from app.prompts_push import push_prompts
from app.settings import STEPS
from tests.conftest import PROMPTS, ROOT
from tests.fakes.langfuse_server import (
    PROMPTS_PATH,
    FakeLangfuse,
    LangfuseFactory,
)

# The langfuse_server and make_langfuse fixtures.
pytest_plugins = ["tests.fakes.langfuse_server"]

PASSAGES = (
    Passage(
        1,
        "company",
        "handbook/vacation-policy.md",
        "Vacation policy",
        "Full-time employees get 25 working days of paid vacation per calendar year.",
        "handbook/vacation-policy.md",
        0.82,
        ("Berlin office", "London office", "Part-time staff"),
    ),
    Passage(
        2,
        "company",
        "it/vpn.md",
        "VPN",
        "Install the WireGuard client and import the profile from the IT portal.",
        "https://intranet.example.com/it/vpn",
        0.41,
        ("Linux", "Windows"),
    ),
)
HISTORY = (
    Turn("user", "What does the vacation policy say?"),
    Turn("assistant", "It covers annual leave [1]."),
)
# What a clarifying question may offer: the retrieved passages' sections.
CHOICES = ["Berlin office", "London office", "Part-time staff", "Linux", "Windows"]
ASK = "ASK: Which office do you mean?\n- Berlin office\n- London office"


def variables(
    language: Language = ENGLISH, passages: tuple[Passage, ...] = PASSAGES
) -> dict[str, Any]:
    """Everything any prompt may use, as the chain's steps pass it."""
    return prompt_variables(
        query="How many vacation days do I get?",
        language=language,
        passages=passages,
        message="and how many days do I get?",
        history=HISTORY,
    )


def regex_of(name: str, language: Language = ENGLISH, **overrides: Any) -> str:
    """The rendered output regex of a prompt file."""
    return PROMPTS[name].render(**(variables(language) | overrides)).regex


def matches(regex: str, text: str) -> bool:
    """Whether the whole text has the shape the regex allows (as the LLM output must)."""
    return re.fullmatch(regex, text) is not None


# --- The prompt files ---------------------------------------------------------------------


def test_there_is_one_prompt_file_per_llm_step() -> None:
    # Besides the steps: quote mode's answer, and the embedded model's relevance likelihood.
    assert sorted(PROMPTS) == sorted([*STEPS, "answer_quote", "question"])
    for name, prompt in PROMPTS.items():
        assert prompt.name == name
        assert re.fullmatch(r"file-[0-9a-f]{8}", prompt.version)
        assert prompt.langfuse_prompt is None


@pytest.mark.parametrize("language", [ENGLISH, RUSSIAN], ids=["en", "ru"])
@pytest.mark.parametrize("name", sorted(PROMPTS))
def test_every_prompt_renders_with_realistic_variables(name: str, language: Language) -> None:
    prompt = PROMPTS[name]
    rendered = prompt.render(**variables(language))
    assert (rendered.name, rendered.version) == (name, prompt.version)
    assert [m.role for m in rendered.messages] == ["system", "user"]
    for message in rendered.messages:
        assert message.content
        assert message.content == message.content.strip()
        assert "{{" not in message.content
        assert "{%" not in message.content
    re.compile(rendered.regex)
    assert "{{" not in rendered.regex
    assert rendered.params == prompt.params
    assert rendered.params.max_tokens > 0
    system, user = (m.content for m in rendered.messages)
    if name == "paraphrase":
        assert f"Write the query in {language.name}" in system
        assert "User: What does the vacation policy say?" in user
        assert "Assistant: It covers annual leave [1]." in user
        assert "Latest message: and how many days do I get?" in user
    elif name == "question":
        # The excerpts alone: the question is the reply whose likelihood is measured.
        assert "How many vacation days" not in system + user
        for passage in PASSAGES:
            assert f"{passage.title}\n{passage.text}" in user
    else:
        assert "Question: How many vacation days do I get?" in user
        # Every passage, numbered as the answer must cite it.
        for passage in PASSAGES:
            assert f"[{passage.n}] {passage.title}\n{passage.text}" in user
    if name in ("answer", "clarify"):
        assert language.name in system
    if name == "clarify":
        # The options it may offer are the retrieved sections, listed for the model.
        assert f"Options: {'; '.join(CHOICES)}" in user


@pytest.mark.parametrize("language", [ENGLISH, RUSSIAN], ids=["en", "ru"])
@pytest.mark.parametrize("name", ["answer", "answer_quote"])
def test_a_refusal_stands_without_a_citation(name: str, language: Language) -> None:
    refusal = variables(language)["refusal"]
    assert refusal in PROMPTS[name].render(**variables(language)).messages[0].content
    assert matches(regex_of(name, language), refusal)
    assert not matches(regex_of(name, language), "Something else entirely.")
    if name == "answer_quote":
        assert not matches(regex_of(name, language), refusal + " [1]")


@pytest.mark.parametrize(
    "text",
    [
        "The allowance is 1 500 ₽ (≈ €15) per day [1].",
        # Escapes: curly single quotes, en dash and times sign look like ASCII in source.
        "Use <Ctrl> | <Alt> ~ then “Save” or \u2018Apply\u2019 — see «Настройки» [2].",
        "Range: 10\u201320 days… or $30, £25, 5 °C, § 3 \u00d7 2, a^b [1].",
        "Run `sudo apt install wireguard` [2].",
    ],
)
def test_answer_alphabet_has_what_corporate_text_contains(text: str) -> None:
    assert matches(regex_of("answer", RUSSIAN), text)


def test_quote_answer_is_verbatim_sentences_of_the_passages() -> None:
    regex = regex_of("answer_quote")
    first = "Full-time employees get 25 working days of paid vacation per calendar year. [1]"
    second = "Install the WireGuard client and import the profile from the IT portal. [2]"
    assert matches(regex, first)
    assert matches(regex, second)
    for wrong in (
        "Full-time employees get 25 days of paid vacation per calendar year. [1]",
        "Full-time employees get 25 working days of paid vacation per calendar year. [2]",
        f"{first}\n{first}",
        f"{first}\n{second}",
    ):
        assert not matches(regex, wrong), wrong


def test_answer_regex_allows_only_citations_of_retrieved_passages() -> None:
    regex = regex_of("answer")
    assert matches(regex, "Full-time employees get 25 working days [1].")
    assert matches(regex, "Install WireGuard [2], then import the profile [1][2].")
    assert matches(regex, "Steps:\n1. Install the client [2].\n2. Import the profile.")
    for wrong in ("See [3].", "See [12].", "See [0].", "See [1, 2].", "No citation at all."):
        assert not matches(regex, wrong), wrong
    assert matches(regex_of("answer", citations="1|2|3"), "See [3].")
    assert not matches(regex_of("answer", citations="1"), "See [2].")


@pytest.mark.parametrize(
    ("name", "english", "russian"),
    [
        ("answer", "Employees get 25 days [1].", "Сотрудникам положено 25 дней [1]."),
        ("paraphrase", "How many vacation days do I get?", "Сколько дней отпуска мне положено?"),
        ("clarify", ASK, "ASK: Какой офис вы имеете в виду?\n- Berlin office\n- London office"),
    ],
)
def test_alphabet_english_excludes_cyrillic_russian_allows_it(
    name: str, english: str, russian: str
) -> None:
    assert matches(regex_of(name, ENGLISH), english)
    assert not matches(regex_of(name, ENGLISH), russian)
    assert matches(regex_of(name, RUSSIAN), russian)
    # Russian answers may still name Latin-script products (VPN, WireGuard).
    assert matches(regex_of(name, RUSSIAN), english)


def test_relevance_verdict_is_exactly_yes_or_no() -> None:
    regex = regex_of("relevance")
    assert matches(regex, "YES")
    assert matches(regex, "NO")
    for wrong in ("yes", "Yes", "YES.", "NO ", " NO", "YESNO", "MAYBE", ""):
        assert not matches(regex, wrong), repr(wrong)


@pytest.mark.parametrize(
    "text",
    [
        "CLEAR",
        ASK,
        "ASK: Which staff do you mean?\n- Berlin office\n- London office\n- Part-time staff",
        "ASK: Which system (in Zürich), exactly?\n- Linux\n- Windows\n- Berlin office"
        "\n- Part-time staff",
    ],
)
def test_clarify_accepts_clear_or_a_question_with_two_to_four_options(text: str) -> None:
    assert matches(regex_of("clarify"), text)
    if text != "CLEAR":
        # What the regex lets through, the chain's parser reads as a question with options.
        parsed = parse_clarification(text)
        assert parsed.question is not None
        assert parsed.question.endswith("?")
        assert len(parsed.options) == text.count("\n- ")


@pytest.mark.parametrize(
    "text",
    [
        "clear",
        "CLEAR.",
        "CLEAR\n- Berlin",
        "ASK: Which office do you mean?",
        "ASK: Which office do you mean?\n- Berlin office",
        "ASK: Which one?\n- Linux\n- Windows\n- Berlin office\n- London office\n- Part-time staff",
        "ASK: Which office do you mean?\n- Berlin office\n- Paris office",
        "ASK: Which office do you mean?\n- Berlin\n- London",
        "ASK: Which office do you mean\n- Berlin office\n- London office",
        "ASK Which office do you mean?\n- Berlin office\n- London office",
        "ASK: Which office do you mean?\nBerlin office\nLondon office",
        "Which office do you mean?\n- Berlin office\n- London office",
    ],
)
def test_clarify_rejects_other_shapes(text: str) -> None:
    assert not matches(regex_of("clarify"), text)


def test_paraphrase_is_one_line_of_text() -> None:
    regex = regex_of("paraphrase")
    assert matches(regex, "How do I set up the company VPN on Debian 12?")
    for wrong in ("", "?", "First line\nsecond line", "x" * 400, "Query: [1]"):
        assert not matches(regex, wrong), wrong


# --- Malformed prompts --------------------------------------------------------------------

GOOD_BODY = "[system]\nYou check things.\n[user]\nQuestion: {{ query }}\n"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param(GOOD_BODY, "missing front matter", id="no-front-matter"),
        pytest.param("---\nparams: {}\n---\n" + GOOD_BODY, "needs a regex", id="no-regex"),
        pytest.param("---\nregex: 5\n---\n" + GOOD_BODY, "needs a regex", id="regex-not-text"),
        pytest.param("---\nregex: [YES\n---\n" + GOOD_BODY, "bad front matter", id="bad-yaml"),
        pytest.param("---\nregex: '(YES|NO'\n---\n" + GOOD_BODY, "bad regex", id="bad-regex"),
        pytest.param(
            "---\nregex: '[{{ letters ]+'\n---\n" + GOOD_BODY, "bad regex", id="bad-regex-jinja"
        ),
        pytest.param(
            "---\nregex: 'YES|NO'\nparams:\n  temprature: 0.1\n---\n" + GOOD_BODY,
            "unknown params ['temprature']",
            id="unknown-param",
        ),
        pytest.param(
            "---\nregex: 'YES|NO'\nparams:\n  max_tokens: many\n---\n" + GOOD_BODY,
            "bad params",
            id="bad-param-value",
        ),
        pytest.param(
            "---\nregex: 'YES|NO'\nparams: [1, 2]\n---\n" + GOOD_BODY,
            "params must be a mapping",
            id="params-not-mapping",
        ),
        pytest.param(
            "---\nregex: 'YES|NO'\n---\nPreamble.\n" + GOOD_BODY,
            "text before the first [role] line",
            id="text-before-role",
        ),
        pytest.param(
            "---\nregex: 'YES|NO'\n---\n[tool]\nHi\n",
            "text before the first [role] line",
            id="unknown-role",
        ),
        pytest.param("---\nregex: 'YES|NO'\n---\n\n", "no [system]/[user]", id="no-messages"),
        pytest.param(
            "---\nregex: 'YES|NO'\n---\n[system]\n{% for p in %}x{% endfor %}\n",
            "bad template",
            id="bad-jinja",
        ),
        pytest.param(
            "---\nregex: 'YES|NO'\n---\n[system]\n{{ query\n", "bad template", id="unclosed-jinja"
        ),
    ],
)
def test_malformed_prompt_is_an_error_naming_it(text: str, problem: str) -> None:
    with pytest.raises(PromptError) as caught:
        parse_prompt(text, "broken")
    assert "prompt 'broken'" in str(caught.value)
    assert problem in str(caught.value)


def test_good_prompt_parses() -> None:
    prompt = parse_prompt("---\nregex: 'YES|NO'\nparams:\n  max_tokens: 4\n---\n" + GOOD_BODY, "ok")
    assert prompt.messages == (
        ("system", "\nYou check things.\n"),
        ("user", "\nQuestion: {{ query }}\n"),
    )
    assert prompt.params.max_tokens == 4
    assert prompt.params.temperature == 0.0
    assert prompt.version == "file"


def test_missing_variable_names_prompt_and_version() -> None:
    with pytest.raises(PromptError, match=r"prompt 'answer' vfile-[0-9a-f]{8}: .*undefined"):
        PROMPTS["answer"].render(query="How many vacation days do I get?")


def test_templates_render_in_a_sandbox() -> None:
    # Langfuse overrides are templates too: no reaching into Python internals.
    prompt = parse_prompt(
        "---\nregex: 'YES|NO'\n---\n[system]\n{{ query.__class__.__mro__ }}\n", "sneaky"
    )
    with pytest.raises(PromptError, match="prompt 'sneaky'"):
        prompt.render(query="q")


def test_loading_a_folder_with_a_broken_file_names_it(tmp_path: Path) -> None:
    (tmp_path / "fine.md").write_text("---\nregex: 'YES|NO'\n---\n" + GOOD_BODY, encoding="utf-8")
    (tmp_path / "oops.md").write_text(GOOD_BODY, encoding="utf-8")
    with pytest.raises(PromptError, match="prompt 'oops'"):
        load_prompt_files(tmp_path)


# --- Langfuse overrides through the real SDK ----------------------------------------------


async def eventually(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll until the condition holds (True) or the time is up (False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)


def store_for(make_langfuse: LangfuseFactory, base_url: str | None = None) -> PromptStore:
    """A PromptStore over the files with a real Langfuse client and a one-second fetch limit."""
    return PromptStore(PROMPTS, make_langfuse(base_url=base_url), fetch_timeout_s=1.0)


def changed_relevance(extra: str = "Be strict.") -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The relevance prompt's messages and config with one more line in the system message."""
    messages, config = PROMPTS["relevance"].to_langfuse()
    messages[0]["content"] = messages[0]["content"].rstrip() + f"\n{extra}\n"
    return messages, config


def override(server: FakeLangfuse, extra: str = "Be strict.") -> None:
    """Store a valid production version of the relevance prompt in the receiver."""
    messages, config = changed_relevance(extra)
    server.add_prompt("relevance", messages, config=config)


async def test_without_overrides_the_files_stay_in_force(
    make_langfuse: LangfuseFactory, langfuse_server: FakeLangfuse
) -> None:
    store = store_for(make_langfuse)
    await store.refresh()
    for name, prompt in PROMPTS.items():
        assert store.get(name) is prompt
    fetched = langfuse_server.requests_to(PROMPTS_PATH + "/", "GET")
    assert sorted(r.path for r in fetched) == sorted(f"{PROMPTS_PATH}/{n}" for n in PROMPTS)
    assert all(r.query.get("label") == "production" for r in fetched)


async def test_valid_override_takes_over_with_its_version(
    make_langfuse: LangfuseFactory, langfuse_server: FakeLangfuse
) -> None:
    store = store_for(make_langfuse)
    client = store._langfuse
    assert client is not None
    messages, config = changed_relevance()
    client.create_prompt(
        name="relevance",
        prompt=cast(Any, messages),
        type="chat",
        config=config,
        labels=["production"],
    )
    await store.refresh()
    prompt = store.get("relevance")
    assert prompt.version == "1"
    rendered = prompt.render(**variables())
    assert rendered.version == "1"
    assert rendered.messages[0].content.endswith("Be strict.")
    assert rendered.regex == "YES|NO"
    assert isinstance(rendered.langfuse_prompt, ChatPromptClient)
    assert (rendered.langfuse_prompt.name, rendered.langfuse_prompt.version) == ("relevance", 1)
    # The other steps, and the files themselves, are untouched.
    assert store.files["relevance"] is PROMPTS["relevance"]
    for name in ("answer", "clarify", "paraphrase"):
        assert store.get(name) is PROMPTS[name]
    # A newer production version replaces it; a version with another label does not.
    langfuse_server.add_prompt("relevance", changed_relevance("Be fair.")[0], config=config)
    langfuse_server.add_prompt(
        "relevance", changed_relevance("Staging!")[0], config=config, labels=["staging"]
    )
    await store.refresh()
    assert store.get("relevance").version == "2"
    assert "Be fair." in store.get("relevance").render(**variables()).messages[0].content


@pytest.mark.parametrize(
    ("prompt", "config"),
    [
        pytest.param(None, {"regex": "(YES|NO", "params": {}}, id="bad-regex"),
        pytest.param(None, {"params": {"max_tokens": 4}}, id="no-regex"),
        pytest.param(None, "YES|NO", id="config-not-a-mapping"),
        pytest.param(None, {"regex": "YES|NO", "params": {"temprature": 1}}, id="unknown-param"),
        pytest.param("Reply YES or NO.", {"regex": "YES|NO"}, id="text-prompt"),
        pytest.param([{"role": "system", "content": "{% if %}"}], {"regex": "YES"}, id="bad-jinja"),
        pytest.param([{"role": "tool", "content": "Hi"}], {"regex": "YES"}, id="bad-role"),
    ],
)
async def test_invalid_override_leaves_the_file_in_force(
    prompt: list[dict[str, str]] | str | None,
    config: Any,
    make_langfuse: LangfuseFactory,
    langfuse_server: FakeLangfuse,
    caplog: pytest.LogCaptureFixture,
) -> None:
    langfuse_server.add_prompt("relevance", prompt or changed_relevance()[0], config=config)
    store = store_for(make_langfuse)
    with caplog.at_level(logging.WARNING, logger="app.prompts"):
        await store.refresh()
    assert store.get("relevance") is PROMPTS["relevance"]
    warnings = [r for r in caplog.records if r.name == "app.prompts" and r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "'relevance' v1" in warnings[0].getMessage()
    assert "using prompts/relevance.md" in warnings[0].getMessage()


@pytest.mark.parametrize("failure", ["hang", "refused"])
async def test_unreachable_langfuse_keeps_the_files_within_the_fetch_timeout(
    failure: Literal["hang", "refused"],
    make_langfuse: LangfuseFactory,
    langfuse_server: FakeLangfuse,
) -> None:
    override(langfuse_server)
    store = store_for(make_langfuse)
    langfuse_server.outage(failure)
    try:
        started = time.perf_counter()
        await store.refresh()
        elapsed = time.perf_counter() - started
    finally:
        langfuse_server.recover()
    # One second per lookup, all four at once (one after another would take four).
    assert elapsed < 2.0
    for name, prompt in PROMPTS.items():
        assert store.get(name) is prompt
    if failure == "hang":
        assert elapsed >= 0.9  # it did wait for the hung requests, up to the timeout
        assert len(langfuse_server.requests_to(PROMPTS_PATH + "/", "GET")) == len(PROMPTS)


async def test_get_never_does_io(
    make_langfuse: LangfuseFactory, langfuse_server: FakeLangfuse
) -> None:
    override(langfuse_server)
    store = store_for(make_langfuse)
    await store.refresh()
    langfuse_server.hang = True  # any request now would block for the fetch timeout
    before = len(langfuse_server.requests)
    slowest = 0.0
    for _ in range(200):
        started = time.perf_counter()
        assert store.get("relevance").version == "1"
        assert store.get("answer") is PROMPTS["answer"]
        slowest = max(slowest, time.perf_counter() - started)
        if slowest > 0.05:
            break
    assert slowest < 0.05
    assert len(langfuse_server.requests) == before
    with pytest.raises(PromptError, match="no prompt named 'summary'"):
        store.get("summary")
    langfuse_server.release()


async def test_background_refresh_follows_langfuse_until_closed(
    make_langfuse: LangfuseFactory, langfuse_server: FakeLangfuse
) -> None:
    store = PromptStore(PROMPTS, make_langfuse(), refresh_s=0.05, fetch_timeout_s=1.0)
    await store.start()
    try:
        assert store.get("relevance") is PROMPTS["relevance"]
        override(langfuse_server)
        assert await eventually(lambda: store.get("relevance").version == "1", 3.0)
    finally:
        await store.aclose()
    override(langfuse_server, "Later.")
    await asyncio.sleep(0.2)
    assert store.get("relevance").version == "1"


# --- prompts push -------------------------------------------------------------------------


def test_first_push_creates_one_production_version_per_file(
    make_langfuse: LangfuseFactory, langfuse_server: FakeLangfuse
) -> None:
    lines = push_prompts(make_langfuse(), PROMPTS, "production")
    assert lines == [f"pushed    {name} as version 1 (production)" for name in PROMPTS]
    for name, prompt in PROMPTS.items():
        [version] = langfuse_server.prompt_versions(name)
        messages, config = prompt.to_langfuse()
        assert version["type"] == "chat"
        assert "production" in version["labels"]
        assert version["prompt"] == messages
        assert version["config"]["regex"] == prompt.regex
        assert version["config"]["params"] == {
            "temperature": prompt.params.temperature,
            "max_tokens": prompt.params.max_tokens,
            "top_p": prompt.params.top_p,
            "stop": list(prompt.params.stop),
        }
        assert version["config"] == config


def test_second_push_is_unchanged_and_force_pushes_again(
    make_langfuse: LangfuseFactory, langfuse_server: FakeLangfuse
) -> None:
    client = make_langfuse()
    push_prompts(client, PROMPTS, "production")
    created = len(langfuse_server.requests_to(PROMPTS_PATH, "POST"))
    assert created == len(PROMPTS)
    lines = push_prompts(client, PROMPTS, "production")
    assert lines == [f"unchanged {name} (version 1 is production)" for name in PROMPTS]
    assert len(langfuse_server.requests_to(PROMPTS_PATH, "POST")) == created
    lines = push_prompts(client, PROMPTS, "production", force=True)
    assert lines == [f"pushed    {name} as version 2 (production)" for name in PROMPTS]
    for name in PROMPTS:
        versions = langfuse_server.prompt_versions(name)
        assert [v["version"] for v in versions] == [1, 2]
        assert "production" in versions[1]["labels"]
        assert "production" not in versions[0]["labels"]


def test_only_a_changed_file_is_pushed(
    make_langfuse: LangfuseFactory, langfuse_server: FakeLangfuse
) -> None:
    client = make_langfuse()
    push_prompts(client, PROMPTS, "staging")
    text = (ROOT / "prompts" / "relevance.md").read_text(encoding="utf-8")
    changed: dict[str, Prompt] = dict(PROMPTS)
    changed["relevance"] = parse_prompt(text.replace("max_tokens: 4", "max_tokens: 3"), "relevance")
    lines = push_prompts(client, changed, "staging")
    assert [line.split()[0] for line in lines] == [
        "pushed" if name == "relevance" else "unchanged" for name in PROMPTS
    ]
    assert langfuse_server.prompt_versions("relevance")[1]["config"]["params"]["max_tokens"] == 3
    # Pushing to staging never touched production.
    assert all(
        "production" not in v["labels"] for n in PROMPTS for v in langfuse_server.prompt_versions(n)
    )


async def test_pushed_prompts_round_trip_into_the_store(make_langfuse: LangfuseFactory) -> None:
    client = make_langfuse()
    push_prompts(client, PROMPTS, "production")
    store = PromptStore(PROMPTS, client, fetch_timeout_s=1.0)
    await store.refresh()
    for language in (ENGLISH, RUSSIAN):
        for name, prompt in PROMPTS.items():
            pushed = store.get(name)
            assert pushed.version == "1"
            expected = prompt.render(**variables(language))
            got = pushed.render(**variables(language))
            assert (got.messages, got.regex, got.params) == (
                expected.messages,
                expected.regex,
                expected.params,
            )


# --- python -m app prompts check ----------------------------------------------------------


def _cli_env(**extra: str) -> dict[str, str]:
    """The environment without Langfuse or chain settings, plus the given variables."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("LANGFUSE_", "CHAIN_"))}
    return keep | {"HF_HUB_OFFLINE": "1"} | extra


@pytest.fixture(scope="module")
def prompts_check() -> subprocess.CompletedProcess[str]:
    """`python -m app prompts check` on the repository's prompt files, run once."""
    return subprocess.run(
        [sys.executable, "-m", "app", "prompts", "check"],
        cwd=ROOT,
        env=_cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_prompts_check_lists_every_file(
    prompts_check: subprocess.CompletedProcess[str],
) -> None:
    assert prompts_check.returncode == 0, prompts_check.stderr
    assert prompts_check.stdout.splitlines() == [
        f"ok {name} ({prompt.version}): 2 messages" for name, prompt in PROMPTS.items()
    ]


def test_prompts_check_fails_on_a_broken_file(tmp_path: Path) -> None:
    (tmp_path / "relevance.md").write_text(
        "---\nregex: '(YES|NO'\n---\n" + GOOD_BODY, encoding="utf-8"
    )
    done = subprocess.run(
        [sys.executable, "-m", "app", "prompts", "check"],
        cwd=ROOT,
        env=_cli_env(CHAIN_PROMPTS_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "prompt 'relevance': bad regex" in done.stderr
