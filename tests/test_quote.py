"""Quote mode's pieces without a model: passages into quotable sentences, the per-request
regex (what it allows, its size, that llguidance accepts it), and the check for text that is
in no passage; the language of a question; the answer mode "auto" resolves to."""

import re
import time

import pytest

from app.chain.answer import resolve_answer_mode
from app.chain.quote import MAX_CHARS, RUN, quote_regex, run_regex, sentences, unquoted
from app.chain.types import ENGLISH, RUSSIAN, Language, Passage, detect_language
from app.chain.variables import foreign_words, prompt_variables
from app.llm.llama_decoding import regex_grammar
from tests.conftest import PROMPTS, ROOT
from tests.fakes.llm import ScriptedLLM

HR = (ROOT / "samples" / "ru" / "hr" / "otpusk.md").read_text(encoding="utf-8")
VPN = (ROOT / "samples" / "en" / "it" / "vpn.md").read_text(encoding="utf-8")


def passage(n: int, text: str, title: str = "Doc") -> Passage:
    """A retrieved passage with the given number and text."""
    return Passage(n, "company", f"doc{n}.md", title, text, f"doc{n}.md", 0.5)


def matches(regex: str, text: str) -> bool:
    """Whether the whole text has the shape the regex allows."""
    return re.fullmatch(regex, text) is not None


def test_sentences_join_wrapped_lines_and_skip_headings() -> None:
    found = sentences(HR)
    assert found[0].startswith("Положение действует для всех сотрудников")
    assert found[0].endswith("2025 года.")
    assert (
        "Каждому сотруднику положено 28 календарных дней ежегодного оплачиваемого отпуска." in found
    )
    assert not any(s.startswith("#") for s in found)
    assert "Перенос отпуска" not in found  # a heading, not an answer
    # Each is verbatim text of the document, wrapped lines aside.
    flat = " ".join(HR.split())
    assert all(s in flat for s in found)


def test_list_items_and_code_stay_whole_without_their_markers() -> None:
    found = sentences(VPN)
    assert found[1].startswith("Install the WireGuard client from the software center")
    assert found[1].endswith("(`sudo apt install wireguard` on Debian and Ubuntu).")
    assert not any(re.match(r"\d\. ", s) for s in found)
    table = sentences("Country | Meals\nGermany | 28 EUR\n\n## Next\nShort heading\n\nText.")
    assert table == ["Country | Meals", "Germany | 28 EUR", "Text."]


def test_long_sentences_are_cut_at_clause_boundaries() -> None:
    clause = "the request goes to the team lead, who checks the calendar of the team"
    long = "When you apply, " + ", ".join([clause] * 6) + "."
    pieces = sentences(long)
    assert len(pieces) > 1
    assert all(len(p) <= MAX_CHARS for p in pieces)
    assert " ".join(pieces) == long
    assert all(p.endswith(",") for p in pieces[:-1])


def test_quote_regex_allows_runs_of_sentences_in_order_each_once() -> None:
    first = passage(1, "One is first. Two is second. Three is third. Four is fourth.")
    second = passage(2, "Other text here.")
    regex = quote_regex([first, second])
    assert matches(regex, "Two is second. [1]")
    assert matches(regex, "One is first. [1]\nTwo is second. [1]\nThree is third. [1]")
    assert matches(regex, "Other text here. [2]")
    for wrong in (
        "Two is second. [1]\nTwo is second. [1]",  # twice
        "Two is second. [1]\nOne is first. [1]",  # out of order
        "One is first. [1]\nThree is third. [1]",  # not consecutive
        "One is first. [1]\nTwo is second. [1]\nThree is third. [1]\nFour is fourth. [1]",
        "Two is second. [2]",  # another passage's number
        "Two is second.",  # no citation
        "Two is the second. [1]",  # not verbatim
        "One is first. [1]\nOther text here. [2]",  # one passage per answer
    ):
        assert not matches(regex, wrong), wrong
    assert RUN == 3


def test_quote_regex_is_linear_in_the_text_and_portable() -> None:
    text = " ".join(f"Sentence number {i} says (a+b) costs 100 ₽ — «ok» [x]." for i in range(300))
    started = time.perf_counter()
    regex = quote_regex([passage(1, text)])
    assert time.perf_counter() - started < 1.0
    # Every sentence is in at most RUN runs, plus the markup around it.
    assert len(regex) < RUN * 1.6 * len(text)
    # Explicit text only: no classes (xgrammar's \w is ASCII), no lookarounds, no \p{L}.
    assert not re.search(r"\\[wWpPdsb]|\(\?", regex)
    grammar = regex_grammar(regex)  # llguidance accepts it (or this raises)
    assert grammar
    sentence = "Sentence number 7 says (a+b) costs 100 ₽ — «ok» [x]."
    assert matches(regex, f"{sentence} [1]")


def test_run_regex_starts_at_the_given_sentence() -> None:
    first = passage(3, "A one. B two. C three. D four.")
    regex = run_regex(first, 1)
    assert matches(regex, "B two. [3]\nC three. [3]\nD four. [3]")
    assert matches(regex, "B two. [3]")
    assert not matches(regex, "A one. [3]")
    assert not matches(regex, "C three. [3]")


@pytest.mark.parametrize("language", [ENGLISH, RUSSIAN], ids=["en", "ru"])
def test_quote_prompt_allows_the_refusal_without_a_citation(language: Language) -> None:
    variables = prompt_variables(query="q", language=language, passages=[passage(1, HR)])
    regex = PROMPTS["answer_quote"].render(**variables).regex
    assert matches(regex, variables["refusal"])
    assert matches(regex, sentences(HR)[2] + " [1]")
    assert not matches(regex, variables["refusal"] + " [1]")
    without = PROMPTS["answer_quote"].render(**(variables | {"refuse": False})).regex
    assert not matches(without, variables["refusal"])
    assert matches(without, sentences(HR)[2] + " [1]")


def test_unquoted_finds_what_is_in_no_passage() -> None:
    passages = [passage(1, "Every employee gets 28 days.\nOf paid leave, per year.")]
    assert unquoted("Every employee gets 28 days. [1]", passages) == []
    assert (
        unquoted("Every employee gets 28 days. [1]\nOf paid leave, per year. [1]", passages) == []
    )
    assert unquoted("Employees get 30 days [1].", passages) == ["Employees get 30 days."]


@pytest.mark.parametrize(
    ("question", "code"),
    [
        ("How do I reset my password in 1\u0421:Бухгалтерия?", "en"),
        ("Как настроить Outlook на Android?", "ru"),
        ("Как подключиться к VPN?", "ru"),
        ("VPN не работает", "ru"),
        ("Where is the Бухгалтерия manual?", "en"),
        ("How many vacation days do I get?", "en"),
        ("Outlook", "en"),
        ("Сбросить пароль", "ru"),
        ("", "en"),
    ],
)
def test_language_is_the_script_of_most_words(question: str, code: str) -> None:
    assert detect_language(question).code == code


def test_english_answers_may_name_the_questions_russian_words() -> None:
    words = foreign_words("How do I reset my password in 1\u0421:Бухгалтерия?", ENGLISH.letters)
    assert words == ["\u0421", "Бухгалтерия"]
    assert foreign_words("Как настроить Outlook?", RUSSIAN.letters) == []
    variables = prompt_variables(
        query="How do I reset my password in 1\u0421:Бухгалтерия?",
        language=ENGLISH,
        passages=[passage(1, "Reset it at id.example.com.")],
    )
    regex = PROMPTS["answer"].render(**variables).regex
    assert matches(regex, "Reset the 1\u0421:Бухгалтерия password at id.example.com [1].")
    assert not matches(regex, "Сбросьте пароль [1].")


def test_auto_answer_mode_is_quote_in_process_and_generate_on_a_server() -> None:
    assert resolve_answer_mode("auto", ScriptedLLM(concurrent=False)) == "quote"
    assert resolve_answer_mode("auto", ScriptedLLM(concurrent=True)) == "generate"
    assert resolve_answer_mode("quote", ScriptedLLM(concurrent=True)) == "quote"
    assert resolve_answer_mode("generate", ScriptedLLM(concurrent=False)) == "generate"
    with pytest.raises(ValueError, match="CHAIN_ANSWER_MODE"):
        resolve_answer_mode("summarize", ScriptedLLM())
