"""Prompt A/B: PROMPT_VARIANTS, the deterministic split of users, variant files beside the
default and Langfuse labels as variants, the chain rendering each user's variant, and the
variant on the generation and as a trace tag at the local Langfuse receiver (real SDK)."""

import shutil
from collections import Counter
from pathlib import Path

import pytest

from app.ab.variants import Variant, assign, parse_tag, parse_variants, tag
from app.chain.chain import Chain
from app.chain.types import ChainRequest, ResultKind
from app.errors import PromptError
from app.prompts import PromptStore, load_prompt_files
from app.settings import ChainSettings, PromptSettings
from app.tracing import Tracer, trace_id_for
from kb.errors import ConfigurationError
from kb.search import HybridSearcher
from kb.settings import load_settings
from tests.conftest import PROMPTS, ROOT, without_env
from tests.fakes.langfuse_server import PROMPTS_PATH, FakeLangfuse, LangfuseFactory
from tests.fakes.llm import ScriptedLLM

pytest_plugins = ["tests.fakes.langfuse_server"]

LLM_STEPS = ("paraphrase", "relevance", "clarify", "answer")
MARKER = "Be brief: one sentence only. (variant B)"
HALF = parse_variants("answer=production:50,prod-b:50")


def variant_dir(tmp_path: Path) -> Path:
    """The shipped prompts plus answer.prod-b.md, an answer prompt with a marked rule."""
    folder = Path(shutil.copytree(ROOT / "prompts", tmp_path / "prompts"))
    text = (folder / "answer.md").read_text(encoding="utf-8")
    changed = text.replace("Be brief: a few sentences, or a short list for steps.", MARKER)
    assert changed != text
    (folder / "answer.prod-b.md").write_text(changed, encoding="utf-8")
    return folder


def users_with(store: PromptStore, name: str, label: str, count: int) -> list[str]:
    """The first `count` user ids the store assigns this label of a prompt."""
    found = [u for u in (f"user-{n}" for n in range(500)) if store.variant_for(name, u) == label]
    assert len(found) >= count
    return found[:count]


# --- PROMPT_VARIANTS and the assignment -----------------------------------------------------


def test_variants_setting_parses_prompts_labels_and_weights() -> None:
    parsed = parse_variants(" answer = production:70, prod-b:30 ; clarify=a:1,b:0 ")
    assert parsed == {
        "answer": (Variant("production", 70.0), Variant("prod-b", 30.0)),
        "clarify": (Variant("a", 1.0), Variant("b", 0.0)),
    }
    assert parse_variants("") == {}


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("answer=production:50", "at least two labels"),
        ("answer=production:50,prod-b", "not LABEL:WEIGHT"),
        ("answer=production:50,Prod B:50", "not LABEL:WEIGHT"),
        ("answer=production:x,prod-b:1", "is not a number"),
        ("answer=production:-1,prod-b:1", "0 or more"),
        ("answer=a:0,b:0", "every weight is 0"),
        ("answer=a:1,a:2", "a label is given twice"),
        ("answer=a:1,b:1;answer=a:1,b:1", "given twice"),
        ("production:50,prod-b:50", "expected NAME="),
    ],
)
def test_a_bad_variants_setting_fails_at_start_naming_the_variable(
    value: str, problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMPT_VARIANTS", value)
    with pytest.raises(ConfigurationError, match="PROMPT_VARIANTS") as caught:
        load_settings(PromptSettings)
    assert problem in str(caught.value)


def test_a_user_keeps_their_variant_and_users_split_near_the_weights() -> None:
    variants = parse_variants("answer=production:70,prod-b:30")["answer"]
    users = [str(1_000_000 + n) for n in range(20_000)]
    first = [assign("answer", u, variants) for u in users]
    # The same user, asked again (another message, another process), gets the same one.
    assert [assign("answer", u, variants) for u in users] == first
    shares = Counter(first)
    assert set(shares) == {"production", "prod-b"}
    assert abs(shares["prod-b"] / len(users) - 0.30) < 0.015
    # A weight of 0 takes a variant out; a prompt's split is independent of another's.
    off = (Variant("production", 1), Variant("prod-b", 0))
    assert {assign("answer", u, off) for u in users[:500]} == {"production"}
    other = [assign("clarify", u, variants) for u in users]
    same = sum(a == b for a, b in zip(first, other, strict=True)) / len(users)
    assert abs(same - (0.7 * 0.7 + 0.3 * 0.3)) < 0.02


def test_variant_tags_round_trip() -> None:
    assert tag("answer", "prod-b") == "prompt:answer=prod-b"
    assert parse_tag("prompt:answer=prod-b") == ("answer", "prod-b")
    assert parse_tag("company") is None
    assert parse_tag("prompt:answer") is None


# --- Variant files and the store -------------------------------------------------------------


def test_a_variant_file_is_served_to_its_users_only(tmp_path: Path) -> None:
    files = load_prompt_files(variant_dir(tmp_path))
    assert files["answer.prod-b"].name == "answer"
    assert files["answer.prod-b"].label == "prod-b"
    store = PromptStore(files, variants=HALF)
    assert set(store.files) == set(PROMPTS)
    b_user = users_with(store, "answer", "prod-b", 1)[0]
    a_user = users_with(store, "answer", "production", 1)[0]
    assert store.get("answer", b_user) is files["answer.prod-b"]
    assert store.get("answer", a_user) is files["answer"]
    assert store.get("answer") is files["answer"]  # no user: the default
    assert store.get("clarify", b_user) is files["clarify"]  # not under A/B
    assert store.tags_for(b_user) == ["prompt:answer=prod-b"]
    assert store.tags_for(a_user) == ["prompt:answer=production"]
    versions_b, versions_a = store.versions_for(b_user), store.versions_for(a_user)
    assert versions_b["answer"] == files["answer.prod-b"].version != versions_a["answer"]
    assert {k: v for k, v in versions_b.items() if k != "answer"} == {
        k: v for k, v in versions_a.items() if k != "answer"
    }


def test_a_variant_file_unused_until_declared_or_pinned(tmp_path: Path) -> None:
    files = load_prompt_files(variant_dir(tmp_path))
    store = PromptStore(files)
    assert {store.get("answer", f"u{n}").version for n in range(50)} == {files["answer"].version}
    assert store.tags_for("u1") == []
    assert store.pin("prod-b") == ["answer"]
    assert store.get("answer", "u1") is files["answer.prod-b"]
    assert store.get("clarify", "u1") is files["clarify"]
    assert store.tags_for("u1")[0] == "prompt:answer=prod-b"


def test_declared_variants_that_do_not_exist_fail_at_start(tmp_path: Path) -> None:
    files = load_prompt_files(variant_dir(tmp_path))
    with pytest.raises(PromptError, match=r"no prompt file clarify\.prod-b\.md"):
        PromptStore(files, variants=parse_variants("clarify=production:1,prod-b:1"))
    with pytest.raises(PromptError, match="names no prompt file: summary"):
        PromptStore(files, variants=parse_variants("summary=production:1,prod-b:1"))
    orphan = {"summary.prod-b": files["answer.prod-b"]}
    orphan["summary.prod-b"] = load_prompt_files(variant_dir(tmp_path / "x"))["answer.prod-b"]
    (tmp_path / "bad").mkdir()
    shutil.copy(ROOT / "prompts" / "relevance.md", tmp_path / "bad" / "relevance.md")
    shutil.copy(ROOT / "prompts" / "relevance.md", tmp_path / "bad" / "summary.prod-b.md")
    with pytest.raises(PromptError, match=r"summary\.prod-b\.md has no default summary\.md"):
        PromptStore(load_prompt_files(tmp_path / "bad"))
    shutil.copy(ROOT / "prompts" / "relevance.md", tmp_path / "bad" / "relevance.Prod B.md")
    with pytest.raises(PromptError, match="is not a label"):
        load_prompt_files(tmp_path / "bad")


async def test_langfuse_labels_are_variants_fetched_in_the_background(
    make_langfuse: LangfuseFactory, langfuse_server: FakeLangfuse, tmp_path: Path
) -> None:
    messages, config = PROMPTS["relevance"].to_langfuse()
    messages[0]["content"] += "\nVariant B: be strict."
    langfuse_server.add_prompt("relevance", messages, config=config, labels=["prod-b"])
    variants = parse_variants("relevance=production:1,prod-b:1;answer=production:1,prod-b:1")
    files = load_prompt_files(variant_dir(tmp_path))
    store = PromptStore(files, make_langfuse(), variants=variants, fetch_timeout_s=1.0)
    await store.refresh()
    fetched = langfuse_server.requests_to(PROMPTS_PATH + "/", "GET")
    asked = sorted((r.path.rsplit("/", 1)[1], r.query["label"]) for r in fetched)
    assert ("relevance", "prod-b") in asked
    assert ("answer", "prod-b") in asked
    assert len(asked) == len(PROMPTS) + 2  # every default, and each variant in use
    user = users_with(store, "relevance", "prod-b", 1)[0]
    relevance = store.get("relevance", user)
    assert relevance.version == "1"
    assert relevance.langfuse_prompt is not None
    assert relevance.messages[0][1].endswith("Variant B: be strict.")
    # answer@prod-b is not in Langfuse: the file beside the default serves it.
    user = users_with(store, "answer", "prod-b", 1)[0]
    assert store.get("answer", user) is files["answer.prod-b"]
    # A Langfuse-only variant that disappears: its users fall back to the default.
    store2 = PromptStore(PROMPTS, make_langfuse(), variants=variants, fetch_timeout_s=1.0)
    await store2.refresh()
    user = next(
        u for u in map(str, range(99)) if assign("answer", u, variants["answer"]) == "prod-b"
    )
    assert store2.choose("answer", user) == ("production", PROMPTS["answer"])
    assert store2.tags_for(user)[0] == "prompt:answer=production"  # the tag says what served


# --- The chain and the trace -------------------------------------------------------------------


def variant_chain(
    llm: ScriptedLLM, tracer: Tracer, prompts: PromptStore, searcher: HybridSearcher
) -> Chain:
    """The chain on a searcher's store with one scripted LLM for every step."""
    return Chain(
        searcher=searcher,
        store=searcher.store,
        llm=dict.fromkeys(LLM_STEPS, llm),
        prompts=prompts,
        tracer=tracer,
        settings=without_env(ChainSettings),
    )


async def test_the_chain_renders_each_users_variant(
    tmp_path: Path, sample_searcher: HybridSearcher
) -> None:
    store = PromptStore(load_prompt_files(variant_dir(tmp_path)), variants=HALF)
    llm = ScriptedLLM()
    chain = variant_chain(llm, Tracer(None), store, sample_searcher)
    b_users = users_with(store, "answer", "prod-b", 3)
    a_users = users_with(store, "answer", "production", 3)
    for user in b_users + a_users + b_users:
        request = ChainRequest("How do I connect to the VPN?", ["company"], user_id=user)
        assert (await chain.run(request)).kind is ResultKind.ANSWER
    answers = [c for c in llm.calls if c.step == "answer"]
    marked = [MARKER in c.messages[0].content for c in answers]
    assert marked == [True] * 3 + [False] * 3 + [True] * 3


async def test_variant_is_on_the_generation_and_a_trace_tag_at_the_receiver(
    tmp_path: Path,
    make_langfuse: LangfuseFactory,
    langfuse_server: FakeLangfuse,
    sample_searcher: HybridSearcher,
) -> None:
    # answer's variant is a file; relevance's a Langfuse label (linked on the generation).
    messages, config = PROMPTS["relevance"].to_langfuse()
    langfuse_server.add_prompt("relevance", messages, config=config, labels=["prod-b"])
    variants = parse_variants("answer=production:1,prod-b:1;relevance=production:0,prod-b:1")
    client = make_langfuse()
    files = load_prompt_files(variant_dir(tmp_path))
    store = PromptStore(files, client, variants=variants, fetch_timeout_s=1.0)
    await store.refresh()
    tracer = Tracer(client)
    chain = variant_chain(ScriptedLLM(), tracer, store, sample_searcher)
    users = {
        "prod-b": users_with(store, "answer", "prod-b", 1)[0],
        "production": users_with(store, "answer", "production", 1)[0],
    }
    for label, user in users.items():
        request = ChainRequest(
            "How do I connect to the VPN?", ["company"], user_id=user, run_key=f"ab:{label}"
        )
        assert (await chain.run(request)).kind is ResultKind.ANSWER
    tracer.flush()
    spans = langfuse_server.spans()
    for label, user in users.items():
        trace = [s for s in spans if s.trace_id == trace_id_for(f"ab:{label}")]
        [root] = [s for s in trace if s.name == "question"]
        assert root.attributes["user.id"] == user
        tags = set(root.attributes["langfuse.trace.tags"])
        assert tags == {"company", f"prompt:answer={label}", "prompt:relevance=prod-b"}
        [answer] = [
            s for s in trace if s.name == "answer" and s.attributes.get(
                "langfuse.observation.type") == "generation"
        ]  # fmt: skip
        prompt = files["answer.prod-b" if label == "prod-b" else "answer"]
        assert answer.attributes["langfuse.observation.metadata.prompt_variant"] == f'"{label}"'
        assert answer.attributes["langfuse.observation.metadata.prompt_version"] == (
            f'"{prompt.version}"'
        )
        [relevance] = [
            s for s in trace if s.name == "relevance" and s.attributes.get(
                "langfuse.observation.type") == "generation"
        ]  # fmt: skip
        assert relevance.attributes["langfuse.observation.prompt.name"] == "relevance"
        assert relevance.attributes["langfuse.observation.prompt.version"] == 1
        assert relevance.attributes["langfuse.observation.metadata.prompt_variant"] == '"prod-b"'
