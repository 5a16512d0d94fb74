"""The answer cache through the chain, on a real embedded store with real embedders and
ingestion, and a scripted LLM: what is served from the cache, and every way an entry stops
being served (access, versions, deletion, a 👎, prompts, language, age, forget-user)."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.ab.variants import parse_variants
from app.cache import CACHE_COLLECTION, AnswerCache
from app.chain.chain import Chain
from app.chain.types import ChainRequest, ChainResult, ResultKind, Turn
from app.prompts import PromptStore, parse_prompt
from app.settings import CacheSettings, ChainSettings
from app.tracing import Tracer
from ingestion.pipeline import Ingestor, discover
from kb.edge import EdgeStore
from kb.embedder import DenseEmbedder, DenseEmbedders, SparseEmbedder
from kb.search import HybridSearcher
from kb.settings import SearchSettings
from tests.conftest import PROMPTS, FileWriter, IngestorFactory, without_env
from tests.fakes.llm import ScriptedLLM

VPN = (
    "# VPN\n\nThe company VPN gives access to internal systems. Install the WireGuard client "
    "and import your personal configuration file, then activate the tunnel.\n"
)
VPN_CHANGED = VPN + "\nSince May the configuration file is renewed every 90 days.\n"
LEAVE = (
    "# Annual leave\n\nEvery employee gets 25 working days of paid annual leave per year. "
    "Up to 5 unused days carry over to the next year.\n"
)
SECRET = "# Salaries\n\nThe salary bands are reviewed every March by the board.\n"


@dataclass
class Setup:
    """A store with an open collection and a restricted one, a chain with a cache, its LLM."""

    store: EdgeStore
    ingestor: Ingestor
    docs: Path
    llm: ScriptedLLM
    chain: Chain
    cache: AnswerCache

    async def ask(self, question: str, *collections: str, **options: Any) -> ChainResult:
        request = ChainRequest(question, collections or ("open",), **options)
        return await self.chain.run(request)

    async def write(self, name: str, text: str, collection: str = "open") -> None:
        (self.docs / collection / name).write_text(text, encoding="utf-8")
        await self.ingestor.ingest(discover([self.docs / collection]), collection)

    def answers(self) -> int:
        """How many answers the LLM wrote."""
        return self.llm.steps().count("answer")


def build_chain(
    store: EdgeStore,
    dense: DenseEmbedder,
    sparse: SparseEmbedder,
    prompts: PromptStore,
    llm: ScriptedLLM,
    **cache: Any,
) -> tuple[Chain, AnswerCache]:
    """A chain whose cache uses the test model with a threshold set for it."""
    embedders = DenseEmbedders.of(dense)
    settings = without_env(CacheSettings, **{"semantic_threshold": 0.75, **cache})
    answer_cache = AnswerCache(store, embedders, sparse, prompts=prompts, settings=settings)
    chain = Chain(
        searcher=HybridSearcher(store, embedders, sparse, without_env(SearchSettings)),
        store=store,
        llm=dict.fromkeys(("paraphrase", "relevance", "clarify", "answer"), llm),
        prompts=prompts,
        tracer=Tracer(None),
        settings=without_env(ChainSettings),
        cache=answer_cache,
    )
    return chain, answer_cache


@pytest.fixture
async def setup(  # noqa: PLR0917 - pytest passes fixtures by name
    tmp_path: Path,
    edge_store: EdgeStore,
    make_ingestor: IngestorFactory,
    write_files: FileWriter,
    dense_embedder: DenseEmbedder,
    sparse_embedder: SparseEmbedder,
) -> Setup:
    docs = write_files(
        tmp_path / "docs",
        {"open/vpn.md": VPN, "open/leave.md": LEAVE, "hr/salaries.md": SECRET},
    )
    ingestor = make_ingestor(edge_store, chunk_tokens=None)
    await ingestor.ingest(discover([docs / "open"]), "open")
    await ingestor.ingest(discover([docs / "hr"]), "hr")
    llm = ScriptedLLM()
    chain, cache = build_chain(
        edge_store, dense_embedder, sparse_embedder, PromptStore(PROMPTS), llm
    )
    return Setup(edge_store, ingestor, docs, llm, chain, cache)


async def test_the_same_question_is_answered_from_the_cache(setup: Setup) -> None:
    first = await setup.ask("How do I set up the VPN?", run_key="a")
    assert first.kind is ResultKind.ANSWER
    assert not first.cached
    assert first.cache_entry is not None
    second = await setup.ask("  how do I set up the VPN ", run_key="b")
    assert second.cached
    assert second.kind is ResultKind.ANSWER
    assert (second.text, second.sources) == (first.text, first.sources)
    assert second.cache_entry == first.cache_entry
    # Its own trace, and no LLM call at all.
    assert second.trace_id != first.trace_id
    assert setup.answers() == 1
    assert "answer" not in second.timings
    assert "cache" in second.timings


async def test_a_paraphrase_is_a_semantic_hit_but_an_opposite_is_not(setup: Setup) -> None:
    await setup.ask("How do I activate the VPN tunnel?")
    paraphrase = await setup.ask("How can I activate the VPN tunnel?")
    assert paraphrase.cached
    opposite = await setup.ask("How can I deactivate the VPN tunnel?")
    assert not opposite.cached
    number = await setup.ask("How many unused days carry over?")
    other_number = await setup.ask("Do 10 unused days carry over?")
    assert not number.cached
    assert not other_number.cached
    assert setup.answers() == 4


async def test_exact_mode_serves_no_paraphrase(  # noqa: PLR0917 - fixtures by name
    edge_store: EdgeStore,
    make_ingestor: IngestorFactory,
    write_files: FileWriter,
    tmp_path: Path,
    dense_embedder: DenseEmbedder,
    sparse_embedder: SparseEmbedder,
) -> None:
    docs = write_files(tmp_path / "docs", {"vpn.md": VPN})
    await make_ingestor(edge_store, chunk_tokens=None).ingest(discover([docs]), "open")
    chain, _ = build_chain(
        edge_store,
        dense_embedder,
        sparse_embedder,
        PromptStore(PROMPTS),
        ScriptedLLM(),
        mode="exact",
    )
    await chain.run(ChainRequest("How do I activate the VPN tunnel?", ["open"]))
    again = await chain.run(ChainRequest("How do I activate the VPN tunnel?", ["open"]))
    paraphrase = await chain.run(ChainRequest("How can I activate the VPN tunnel?", ["open"]))
    assert again.cached
    assert not paraphrase.cached


async def test_never_across_an_access_boundary(setup: Setup) -> None:
    await setup.ask("How do I set up the VPN?", "open", "hr")
    # A reader of "open" only, and one with the collections in another order.
    narrow = await setup.ask("How do I set up the VPN?", "open")
    assert not narrow.cached
    reordered = await setup.ask("How do I set up the VPN?", "hr", "open")
    assert reordered.cached


async def test_a_reingested_document_invalidates_its_answers(setup: Setup) -> None:
    first = await setup.ask("How do I set up the VPN?")
    assert any(s.doc_id == "vpn.md" for s in first.sources)
    other = await setup.ask("When are the salary bands reviewed?", "hr")
    assert [s.doc_id for s in other.sources] == ["salaries.md"]
    await setup.write("vpn.md", VPN_CHANGED)
    again = await setup.ask("How do I set up the VPN?")
    assert not again.cached
    # The stale entry was replaced by the new answer; another collection's answer stands.
    assert (await setup.ask("How do I set up the VPN?")).cached
    assert (await setup.ask("When are the salary bands reviewed?", "hr")).cached


async def test_a_new_document_retires_the_collections_answers(setup: Setup) -> None:
    """A cached answer cites none of the new document, yet the new one may answer better:
    any write to a collection is a new generation, and its answers are asked again."""
    await setup.ask("How many days of annual leave do I get?")
    await setup.ask("When are the salary bands reviewed?", "hr")
    await setup.write(
        "leave-2027.md",
        "# Annual leave from 2027\n\nFrom 2027 every employee "
        "gets 28 working days of paid annual leave per year.\n",
    )
    assert not (await setup.ask("How many days of annual leave do I get?")).cached
    assert (await setup.ask("When are the salary bands reviewed?", "hr")).cached
    # A scope of both collections changed too; a deletion is a new generation as well.
    await setup.ask("When are the salary bands reviewed?", "hr", "open")
    await setup.ingestor.delete("open", "leave-2027.md")
    assert not (await setup.ask("When are the salary bands reviewed?", "hr", "open")).cached


async def test_an_unchanged_reingestion_keeps_the_entry(setup: Setup) -> None:
    await setup.ask("How do I set up the VPN?")
    await setup.write("vpn.md", VPN)
    assert (await setup.ask("How do I set up the VPN?")).cached


async def test_a_deleted_document_invalidates_its_answers(setup: Setup) -> None:
    first = await setup.ask("How do I set up the VPN?")
    cited = {s.doc_id for s in first.sources}
    for doc_id in cited:
        await setup.ingestor.delete("open", doc_id)
    again = await setup.ask("How do I set up the VPN?")
    assert not again.cached
    assert first.cache_entry is not None
    key = first.cache_entry.split(":")[1]
    # The entry of the old generation is never served again; the expiry removes it.
    entries = await setup.store.list_documents(CACHE_COLLECTION)
    assert key in [i.content_hash for i in entries]
    await setup.cache.expire(datetime.now(UTC) + timedelta(days=2))
    entries = await setup.store.list_documents(CACHE_COLLECTION)
    assert key not in [i.content_hash for i in entries]


async def test_a_thumbs_down_evicts_only_that_entry(setup: Setup) -> None:
    vpn = await setup.ask("How do I set up the VPN?")
    await setup.ask("How many days of annual leave do I get?")
    assert vpn.cache_entry is not None
    assert await setup.cache.evict(vpn.cache_entry) == 1
    assert await setup.cache.evict(vpn.cache_entry) == 0
    assert not (await setup.ask("How do I set up the VPN?")).cached
    assert (await setup.ask("How many days of annual leave do I get?")).cached
    assert await setup.cache.evict("not-an-entry") == 0


async def test_a_fresh_answer_bypasses_and_replaces_the_entry(setup: Setup) -> None:
    await setup.ask("How do I set up the VPN?")
    setup.llm.replies["answer"] = "Use WireGuard [1]."
    fresh = await setup.ask("How do I set up the VPN?", fresh=True)
    assert not fresh.cached
    assert fresh.text == "Use WireGuard [1]."
    served = await setup.ask("How do I set up the VPN?")
    assert served.cached
    assert served.text == "Use WireGuard [1]."


async def test_only_answers_are_cached(setup: Setup) -> None:
    setup.llm.replies["relevance"] = "NO"
    assert (await setup.ask("How do I set up the VPN?")).kind is ResultKind.NOT_FOUND
    setup.llm.replies.pop("relevance")
    setup.llm.replies["clarify"] = "ASK: Which document do you mean?\n- VPN\n- Annual leave"
    assert (await setup.ask("How do I set up the VPN?")).kind is ResultKind.CLARIFY
    setup.llm.replies.pop("clarify")
    setup.llm.fail_steps.add("answer")
    assert (await setup.ask("How do I set up the VPN?")).kind is ResultKind.ERROR
    setup.llm.fail_steps.clear()
    assert not (await setup.ask("How do I set up the VPN?")).cached
    assert (await setup.ask("How do I set up the VPN?")).cached


async def test_a_follow_up_is_looked_up_by_its_standalone_question(setup: Setup) -> None:
    await setup.ask("How do I set up the VPN?")
    setup.llm.replies["paraphrase"] = "How do I set up the VPN?"
    history = [Turn("user", "What is the VPN?"), Turn("assistant", "Access [1].")]
    follow_up = await setup.ask("and how do I set it up?", history=history)
    assert follow_up.cached
    assert follow_up.query == "How do I set up the VPN?"


async def test_a_new_prompt_version_or_language_is_another_scope(
    setup: Setup, dense_embedder: DenseEmbedder, sparse_embedder: SparseEmbedder
) -> None:
    await setup.ask("How do I set up the VPN?")
    text = (Path(__file__).parent.parent / "prompts" / "answer_quote.md").read_text()
    changed = dict(PROMPTS)
    changed["answer_quote"] = parse_prompt(text, "answer_quote", version="changed")
    chain, _ = build_chain(
        setup.store, dense_embedder, sparse_embedder, PromptStore(changed), setup.llm
    )
    assert not (await chain.run(ChainRequest("How do I set up the VPN?", ["open"]))).cached
    # The same words read as Russian (a tie of scripts) are another language's question.
    await setup.ask("VPN настроить how")
    assert not (await setup.ask("VPN настроить")).cached


async def test_old_entries_expire(setup: Setup) -> None:
    await setup.ask("How do I set up the VPN?")
    assert await setup.cache.expire(datetime.now(UTC) + timedelta(hours=23)) == 0
    assert await setup.cache.expire(datetime.now(UTC) + timedelta(hours=25)) == 1
    assert not (await setup.ask("How do I set up the VPN?")).cached


async def test_forget_user_deletes_what_they_asked(setup: Setup) -> None:
    await setup.ask("How do I set up the VPN?", user_id="7")
    await setup.ask("How many days of annual leave do I get?", user_id="8")
    assert await setup.cache.forget_user(7) == 1
    assert not (await setup.ask("How do I set up the VPN?", user_id="9")).cached
    assert (await setup.ask("How many days of annual leave do I get?", user_id="9")).cached


async def test_off_mode_keeps_nothing(
    setup: Setup, dense_embedder: DenseEmbedder, sparse_embedder: SparseEmbedder
) -> None:
    chain, cache = build_chain(
        setup.store,
        dense_embedder,
        sparse_embedder,
        PromptStore(PROMPTS),
        setup.llm,
        mode="off",
    )
    first = await chain.run(ChainRequest("How do I set up the VPN?", ["open"]))
    again = await chain.run(ChainRequest("How do I set up the VPN?", ["open"]))
    assert first.cache_entry is None
    assert not again.cached
    assert await setup.store.get_collection(CACHE_COLLECTION) is None
    assert await cache.forget_user(1) == 0


async def test_users_of_two_prompt_variants_never_share_an_answer(
    setup: Setup, dense_embedder: DenseEmbedder, sparse_embedder: SparseEmbedder
) -> None:
    text = (Path(__file__).parent.parent / "prompts" / "answer_quote.md").read_text()
    files = dict(PROMPTS)
    files["answer_quote.prod-b"] = parse_prompt(text, "answer_quote", "variant-b", "prod-b")
    prompts = PromptStore(files, variants=parse_variants("answer_quote=production:50,prod-b:50"))
    chain, _ = build_chain(setup.store, dense_embedder, sparse_embedder, prompts, setup.llm)
    users = [str(n) for n in range(40)]
    a = [u for u in users if prompts.variant_for("answer_quote", u) == "production"][:2]
    b = [u for u in users if prompts.variant_for("answer_quote", u) == "prod-b"][:1]
    question = "How do I set up the VPN?"
    assert not (await chain.run(ChainRequest(question, ["open"], user_id=a[0]))).cached
    assert not (await chain.run(ChainRequest(question, ["open"], user_id=b[0]))).cached
    assert (await chain.run(ChainRequest(question, ["open"], user_id=a[1]))).cached
