"""Personal data never reaches Langfuse: the real chain traced by the real SDK, exporting over
OTLP to the local receiver (tests/fakes/langfuse_server.py), with PII_MASK=traces (the
default) and off; feedback comments too."""

import json
from collections.abc import Callable

import pytest

from app.chain.chain import Chain
from app.chain.types import ChainRequest
from app.pii import Masker
from app.pii.traces import FAILED, otel_span_masker
from app.prompts import PromptStore
from app.settings import ChainSettings, LangfuseSettings, PiiSettings
from app.tracing import Tracer
from kb.edge import EdgeStore
from kb.embedder import DenseEmbedder, DenseEmbedders, SparseEmbedder
from kb.search import HybridSearcher
from kb.settings import SearchSettings
from tests.conftest import PROMPTS, without_env
from tests.fakes.langfuse_server import (
    OTEL_PATH,
    SECRET_KEY,
    FakeLangfuse,
    LangfuseFactory,
    unique_public_key,
)
from tests.fakes.llm import ScriptedLLM

pytest_plugins = ["tests.fakes.langfuse_server"]

PHONE, INN, EMAIL, CARD = (
    "+7 912 345-67-89",
    "7707083893",
    "ivan.petrov@example.ru",
    ("4276 3800 1234 5679"),
)
QUESTION = f"Сколько дней отпуска? Мой телефон {PHONE}, ИНН {INN}, почта {EMAIL}, карта {CARD}"
VALUES = (PHONE, "345-67-89", INN, EMAIL, CARD, "1234 5679")


@pytest.fixture(scope="module")
def masker() -> Masker:
    """One loaded masker for the module."""
    return Masker().load()


ChainBuilder = Callable[[Tracer], Chain]


@pytest.fixture
def chain_with(
    sample_store: EdgeStore,
    dense_embedder: DenseEmbedder,
    sparse_embedder: SparseEmbedder,
    search_settings: SearchSettings,
) -> ChainBuilder:
    """build(tracer): the real chain on the sample store, one scripted LLM for every step."""

    def build(tracer: Tracer) -> Chain:
        llm = ScriptedLLM()
        return Chain(
            searcher=HybridSearcher(
                sample_store, DenseEmbedders.of(dense_embedder), sparse_embedder, search_settings
            ),
            store=sample_store,
            llm=dict.fromkeys(["paraphrase", "relevance", "clarify", "answer"], llm),
            prompts=PromptStore(PROMPTS),
            tracer=tracer,
            settings=without_env(ChainSettings),
        )

    return build


def exported_text(server: FakeLangfuse) -> str:
    """Every attribute value of every span the receiver accepted, as one text."""
    spans = server.spans()
    assert spans, "nothing was exported"
    return json.dumps([s.attributes for s in spans], ensure_ascii=False)


def settings_for(server: FakeLangfuse) -> LangfuseSettings:
    """Langfuse settings pointing at the receiver, with a key no other client uses."""
    return without_env(
        LangfuseSettings,
        public_key=unique_public_key(),
        secret_key=SECRET_KEY,
        LANGFUSE_BASE_URL=server.base_url,
    )


@pytest.mark.parametrize("mode", ["traces", "traces+llm"])
async def test_question_reaches_langfuse_masked(
    mode: str,
    masker: Masker,
    langfuse_server: FakeLangfuse,
    make_langfuse: LangfuseFactory,  # clears LANGFUSE_* and OTEL_* variables
    chain_with: ChainBuilder,
) -> None:
    pii = without_env(PiiSettings, mask=mode)
    tracer = Tracer.from_settings(settings_for(langfuse_server), pii, masker)
    try:
        chain = chain_with(tracer)
        result = await chain.run(ChainRequest(QUESTION, ["company"], run_key=f"pii:{mode}"))
        tracer.score(result.trace_id, "feedback", 0, comment=f"перезвоните на {PHONE}")
        tracer.flush()
    finally:
        tracer.shutdown()
    exported = exported_text(langfuse_server)
    for value in VALUES:
        assert value not in exported
    for placeholder in ("[PHONE_1]", "[INN_1]", "[EMAIL_1]", "[CARD_1]"):
        assert placeholder in exported
    # The raw bodies too (gunzipped protobuf): nothing is left in a field the decoder skips.
    for request in langfuse_server.requests_to(OTEL_PATH):
        assert PHONE.encode() not in request.content
        assert EMAIL.encode() not in request.content
    comments = [s.get("comment") for s in langfuse_server.scores()]
    assert comments == ["перезвоните на [PHONE_1]"]


async def test_masking_off_sends_the_question_as_it_is(
    langfuse_server: FakeLangfuse,
    make_langfuse: LangfuseFactory,
    chain_with: ChainBuilder,
) -> None:
    pii = without_env(PiiSettings, mask="off")
    tracer = Tracer.from_settings(settings_for(langfuse_server), pii)
    assert tracer.langfuse is not None
    try:
        chain = chain_with(tracer)
        await chain.run(ChainRequest(QUESTION, ["company"], run_key="pii:off"))
        tracer.flush()
    finally:
        tracer.shutdown()
    exported = exported_text(langfuse_server)
    for value in (PHONE, INN, EMAIL, CARD):
        assert value in exported


def test_a_failing_value_is_replaced_not_the_batch_dropped(
    masker: Masker, make_langfuse: LangfuseFactory, langfuse_server: FakeLangfuse
) -> None:
    class Broken(Masker):
        def redact_data(self, data: object) -> object:
            raise RuntimeError("broken")

    client = make_langfuse(mask_otel_spans=otel_span_masker(Broken(masker._analyzer)))
    with client.start_as_current_observation(name="q", input={"message": f"тел. {PHONE}"}):
        pass
    client.flush()
    exported = exported_text(langfuse_server)
    assert PHONE not in exported
    assert FAILED in exported
