"""Tracing with the real Langfuse SDK: the real chain (sample documents, scripted LLM) traced
through app.tracing.Tracer, spans caught in memory or sent over OTLP to a local Langfuse
receiver (tests/fakes/langfuse_server.py), scores sent to it, and Langfuse down or refusing
connections without any effect on the answers."""

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx
import pytest
from langfuse import Langfuse
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.chain.chain import Chain
from app.chain.types import ChainRequest, ChainResult, ResultKind, Turn
from app.prompts import PromptStore
from app.settings import ChainSettings
from app.tracing import Tracer, trace_id_for
from kb.edge import EdgeStore
from kb.embedder import DenseEmbedder, DenseEmbedders, SparseEmbedder
from kb.search import HybridSearcher
from kb.settings import SearchSettings
from tests.conftest import PROMPTS, without_env
from tests.fakes.langfuse_server import (
    INGESTION_PATH,
    OTEL_PATH,
    SCORES_PATH,
    FakeLangfuse,
    LangfuseFactory,
)
from tests.fakes.llm import Call, ScriptedLLM

# The langfuse_server and make_langfuse fixtures.
pytest_plugins = ["tests.fakes.langfuse_server"]

STEP_NAMES = ["paraphrase", "retrieve", "relevance", "clarify", "answer"]
LLM_STEPS = ["paraphrase", "relevance", "clarify", "answer"]
HISTORY = [
    Turn("user", "What does the vacation policy say?"),
    Turn("assistant", "It covers annual leave [1]."),
]


class ChainFactory(Protocol):
    """chain_for(llm, tracer, prompts=None, **chain_settings) -> Chain."""

    def __call__(
        self, llm: ScriptedLLM, tracer: Tracer, prompts: PromptStore | None = None, **settings: Any
    ) -> Chain: ...


@pytest.fixture
def chain_for(
    sample_store: EdgeStore,
    dense_embedder: DenseEmbedder,
    sparse_embedder: SparseEmbedder,
    search_settings: SearchSettings,
) -> ChainFactory:
    """Build a chain on the sample store with one scripted LLM for every step and a tracer."""

    def build(
        llm: ScriptedLLM, tracer: Tracer, prompts: PromptStore | None = None, **settings: Any
    ) -> Chain:
        return Chain(
            searcher=HybridSearcher(
                sample_store, DenseEmbedders.of(dense_embedder), sparse_embedder, search_settings
            ),
            store=sample_store,
            llm=dict.fromkeys(LLM_STEPS, llm),
            prompts=prompts or PromptStore(PROMPTS),
            tracer=tracer,
            settings=without_env(ChainSettings, **settings),
        )

    return build


@dataclass(frozen=True)
class Node:
    """One finished span, reduced to what the assertions need."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    start: int
    end: int
    attributes: dict[str, Any]

    @property
    def kind(self) -> str:
        """The Langfuse observation type (span, generation, chain...)."""
        return str(self.attributes.get("langfuse.observation.type"))

    def json(self, key: str) -> Any:
        """An attribute the SDK stores as JSON text, decoded; KeyError when it is missing."""
        return json.loads(self.attributes[key])


def nodes_of(spans: Sequence[ReadableSpan]) -> list[Node]:
    """The spans as Nodes, in the order they ended."""
    nodes = []
    for span in spans:
        context, parent = span.context, span.parent
        assert context is not None
        assert span.start_time is not None
        assert span.end_time is not None
        nodes.append(
            Node(
                span.name,
                format(context.trace_id, "032x"),
                format(context.span_id, "016x"),
                format(parent.span_id, "016x") if parent is not None else None,
                span.start_time,
                span.end_time,
                dict(span.attributes or {}),
            )
        )
    return nodes


@dataclass
class Trace:
    """The spans of one trace, with lookups by name and kind."""

    nodes: list[Node]

    @property
    def root(self) -> Node:
        """The one span whose parent is not in the trace."""
        ids = {n.span_id for n in self.nodes}
        roots = [n for n in self.nodes if n.parent_id not in ids]
        assert len(roots) == 1, [n.name for n in roots]
        return roots[0]

    def children(self, parent: Node, kind: str | None = None) -> list[Node]:
        """The direct children of a span (of one observation type, when given)."""
        return [
            n
            for n in self.nodes
            if n.parent_id == parent.span_id and (kind is None or n.kind == kind)
        ]

    def one(self, name: str, kind: str) -> Node:
        """The only span with this name and observation type."""
        found = [n for n in self.nodes if n.name == name and n.kind == kind]
        assert len(found) == 1, f"{len(found)} {kind} spans named {name!r}"
        return found[0]

    def names(self, kind: str) -> list[str]:
        """The names of the spans of one observation type, sorted."""
        return sorted(n.name for n in self.nodes if n.kind == kind)


async def eventually(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll until the condition holds (True) or the time is up (False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)


def traced(make_langfuse: LangfuseFactory) -> tuple[Tracer, InMemorySpanExporter]:
    """A tracer on a real Langfuse client whose spans land in memory (scores still go to the
    receiver)."""
    exporter = InMemorySpanExporter()
    return Tracer(make_langfuse(span_exporter=exporter)), exporter


def flushed_trace(tracer: Tracer, exporter: InMemorySpanExporter, trace_id: str) -> Trace:
    """Flush the tracer and return the spans of one trace (every span must belong to it)."""
    tracer.flush()
    nodes = nodes_of(exporter.get_finished_spans())
    assert nodes, "no spans were exported"
    assert {n.trace_id for n in nodes} == {trace_id}
    return Trace(nodes)


def vacation_request(run_key: str, **fields: Any) -> ChainRequest:
    """A follow-up about vacation days, from a known user and chat."""
    fields = {"history": HISTORY, "user_id": "u-42", "session_id": "chat-7"} | fields
    return ChainRequest("and how many days do I get?", ["company"], run_key=run_key, **fields)


def paraphrased() -> ScriptedLLM:
    """A scripted LLM whose paraphrase is a standalone vacation question."""
    return ScriptedLLM(replies={"paraphrase": "How many vacation days do I get?"})


def test_trace_id_is_langfuse_seeded_trace_id() -> None:
    for key in ("chat1:msg1", "-100123:77", "чат:1"):
        assert trace_id_for(key) == Langfuse.create_trace_id(seed=key)
    assert trace_id_for("a") != trace_id_for("b")


async def test_one_trace_per_run_with_steps_and_generations_nested(
    chain_for: ChainFactory, make_langfuse: LangfuseFactory
) -> None:
    tracer, exporter = traced(make_langfuse)
    result = await chain_for(paraphrased(), tracer).run(vacation_request("chat7:msg42"))
    assert result.kind is ResultKind.ANSWER
    assert result.trace_id == trace_id_for("chat7:msg42")
    trace = flushed_trace(tracer, exporter, Langfuse.create_trace_id(seed="chat7:msg42"))

    root = trace.root
    assert (root.name, root.kind) == ("question", "chain")
    steps = trace.children(root)
    assert sorted(s.name for s in steps) == sorted(STEP_NAMES)
    assert {s.kind for s in steps} == {"span"}
    # Only LLM calls are generations, each inside its own step's span.
    assert trace.names("generation") == sorted(LLM_STEPS)
    for step in steps:
        generations = trace.children(step)
        expected = [] if step.name == "retrieve" else [step.name]
        assert [g.name for g in generations] == expected
        assert all(g.kind == "generation" for g in generations)
    assert len(trace.nodes) == 1 + len(STEP_NAMES) + len(LLM_STEPS)


async def test_generations_carry_model_usage_prompt_and_io(
    chain_for: ChainFactory, make_langfuse: LangfuseFactory
) -> None:
    tracer, exporter = traced(make_langfuse)
    llm = paraphrased()
    result = await chain_for(llm, tracer).run(vacation_request("chat7:msg43"))
    trace = flushed_trace(tracer, exporter, trace_id_for("chat7:msg43"))
    calls = {c.step: c for c in llm.calls}
    for name in LLM_STEPS:
        generation = trace.one(name, "generation")
        reply = generation.attributes["langfuse.observation.output"]
        assert generation.attributes["langfuse.observation.model.name"] == "scripted"
        assert generation.json("langfuse.observation.usage_details") == {
            "input": 10,
            "output": len(reply.split()),
        }
        # The exact messages sent, and the regex among the model parameters.
        sent = [{"role": m.role, "content": m.content} for m in calls[name].messages]
        assert generation.json("langfuse.observation.input") == sent
        parameters = generation.json("langfuse.observation.model.parameters")
        assert parameters["regex"] == calls[name].regex
        assert parameters["max_tokens"] == PROMPTS[name].params.max_tokens
        # File prompts: name and version as metadata, no Langfuse prompt link.
        assert generation.json("langfuse.observation.metadata.prompt_name") == name
        assert generation.json("langfuse.observation.metadata.prompt_version") == (
            PROMPTS[name].version
        )
        assert generation.json("langfuse.observation.metadata.finish_reason") == "stop"
        assert "langfuse.observation.prompt.name" not in generation.attributes
    assert trace.one("answer", "generation").attributes["langfuse.observation.output"] == (
        result.text
    )


async def test_trace_attributes_user_session_tags_on_every_span(
    chain_for: ChainFactory, make_langfuse: LangfuseFactory
) -> None:
    tracer, exporter = traced(make_langfuse)
    await chain_for(paraphrased(), tracer).run(vacation_request("chat7:msg44"))
    trace = flushed_trace(tracer, exporter, trace_id_for("chat7:msg44"))
    for node in trace.nodes:
        assert node.attributes.get("user.id") == "u-42", node.name
        assert node.attributes.get("session.id") == "chat-7", node.name
        assert node.attributes.get("langfuse.trace.tags") == ("company",), node.name
        assert node.attributes.get("langfuse.trace.name") == "question", node.name
    # The root is marked as the trace's root (its parent is the seeded remote context).
    assert trace.root.attributes.get("langfuse.internal.as_root") is True


async def test_every_step_span_has_input_and_output(
    chain_for: ChainFactory, make_langfuse: LangfuseFactory
) -> None:
    tracer, exporter = traced(make_langfuse)
    result = await chain_for(paraphrased(), tracer).run(vacation_request("chat7:msg45"))
    trace = flushed_trace(tracer, exporter, trace_id_for("chat7:msg45"))
    for name in STEP_NAMES:
        step = trace.one(name, "span")
        assert step.attributes.get("langfuse.observation.input"), name
        assert step.attributes.get("langfuse.observation.output"), name
    assert trace.one("paraphrase", "span").attributes["langfuse.observation.output"] == (
        "How many vacation days do I get?"
    )
    retrieved = trace.one("retrieve", "span").json("langfuse.observation.output")
    assert retrieved[0]["doc_id"] == "handbook/vacation-policy.md"
    assert trace.one("relevance", "span").json("langfuse.observation.output")["relevant"] is True
    assert trace.one("clarify", "span").json("langfuse.observation.output")["question"] is None
    answer = trace.one("answer", "span").json("langfuse.observation.output")
    assert answer["text"] == result.text
    root = trace.root
    assert root.json("langfuse.observation.input") == {
        "message": "and how many days do I get?",
        "collections": ["company"],
    }
    output = root.json("langfuse.observation.output")
    assert (output["kind"], output["trace_id"]) == ("answer", result.trace_id)


async def test_not_found_run_has_no_answer_span(
    chain_for: ChainFactory, make_langfuse: LangfuseFactory
) -> None:
    tracer, exporter = traced(make_langfuse)
    llm = ScriptedLLM(replies={"relevance": "NO"})
    result = await chain_for(llm, tracer).run(
        ChainRequest("How do I reset my password?", ["company"], run_key="nf:1")
    )
    assert result.kind is ResultKind.NOT_FOUND
    trace = flushed_trace(tracer, exporter, trace_id_for("nf:1"))
    names = [n.name for n in trace.nodes]
    assert "answer" not in names
    # No history: the paraphrase span says it was skipped and has no generation.
    assert sorted(c.name for c in trace.children(trace.root)) == sorted(
        ["paraphrase", "retrieve", "relevance", "clarify"]
    )
    assert trace.names("generation") == ["clarify", "relevance"]
    paraphrase = trace.one("paraphrase", "span")
    assert paraphrase.json("langfuse.observation.metadata.skipped") == "no history"
    assert trace.root.json("langfuse.observation.output")["kind"] == "not_found"


async def test_failed_llm_call_marks_its_generation(
    chain_for: ChainFactory, make_langfuse: LangfuseFactory
) -> None:
    tracer, exporter = traced(make_langfuse)
    llm = ScriptedLLM(fail_steps={"answer"})
    result = await chain_for(llm, tracer).run(
        ChainRequest("How do I connect to the VPN?", ["company"], run_key="fail:1")
    )
    assert result.kind is ResultKind.ERROR
    trace = flushed_trace(tracer, exporter, trace_id_for("fail:1"))
    generation = trace.one("answer", "generation")
    assert generation.attributes["langfuse.observation.level"] == "ERROR"
    assert generation.attributes["langfuse.observation.status_message"].startswith(
        "LLMTimeoutError: scripted timeout"
    )
    assert trace.one("answer", "span").parent_id == trace.root.span_id
    assert trace.root.json("langfuse.observation.output")["kind"] == "error"


async def test_concurrent_verdicts_and_runs_stay_nested(
    chain_for: ChainFactory, make_langfuse: LangfuseFactory
) -> None:
    seen: dict[tuple[str, str], str] = {}

    def remember(reply: str) -> Callable[[Call], str]:
        # The span current while the LLM is called (what an instrumented HTTP client would see).
        def reply_for(call: Call) -> str:
            context = otel_trace.get_current_span().get_span_context()
            seen[(format(context.trace_id, "032x"), call.step)] = format(context.span_id, "016x")
            return reply

        return reply_for

    llm = ScriptedLLM(
        replies={"relevance": remember("YES"), "clarify": remember("CLEAR")},
        concurrent=True,
        reply_delay_s=0.03,
    )
    tracer, exporter = traced(make_langfuse)
    chain = chain_for(llm, tracer)
    keys = ["par:1", "par:2"]
    results = await asyncio.gather(
        chain.run(ChainRequest("How do I connect to the VPN?", ["company"], run_key=keys[0])),
        chain.run(ChainRequest("How many vacation days do I get?", ["company"], run_key=keys[1])),
    )
    assert [r.kind for r in results] == [ResultKind.ANSWER, ResultKind.ANSWER]
    tracer.flush()
    nodes = nodes_of(exporter.get_finished_spans())
    for key in keys:
        trace_id = trace_id_for(key)
        trace = Trace([n for n in nodes if n.trace_id == trace_id])
        assert trace.root.name == "question"
        relevance, clarify = trace.one("relevance", "span"), trace.one("clarify", "span")
        assert relevance.parent_id == clarify.parent_id == trace.root.span_id
        # They did run at the same time...
        assert relevance.start < clarify.end
        assert clarify.start < relevance.end
        # ...and each generation is still inside its own step.
        for step in (relevance, clarify):
            generation = trace.one(step.name, "generation")
            assert generation.parent_id == step.span_id
            assert seen[(trace_id, step.name)] == generation.span_id
    assert len(nodes) == 2 * (1 + 5 + 3)  # no history: no paraphrase generation


async def test_generation_links_the_langfuse_prompt_version(
    chain_for: ChainFactory, make_langfuse: LangfuseFactory, langfuse_server: FakeLangfuse
) -> None:
    exporter = InMemorySpanExporter()
    client = make_langfuse(span_exporter=exporter)
    messages, config = PROMPTS["relevance"].to_langfuse()
    langfuse_server.add_prompt("relevance", messages, config=config)
    langfuse_server.add_prompt("relevance", messages, config=config)
    prompts = PromptStore(PROMPTS, client, fetch_timeout_s=1)
    await prompts.refresh()
    tracer = Tracer(client)
    await chain_for(ScriptedLLM(), tracer, prompts=prompts).run(
        ChainRequest("How do I connect to the VPN?", ["company"], run_key="link:1")
    )
    trace = flushed_trace(tracer, exporter, trace_id_for("link:1"))
    relevance = trace.one("relevance", "generation")
    assert relevance.attributes["langfuse.observation.prompt.name"] == "relevance"
    assert relevance.attributes["langfuse.observation.prompt.version"] == 2
    assert relevance.json("langfuse.observation.metadata.prompt_version") == "2"
    answer = trace.one("answer", "generation")
    assert "langfuse.observation.prompt.name" not in answer.attributes
    assert answer.json("langfuse.observation.metadata.prompt_version") == PROMPTS["answer"].version


async def test_feedback_score_reaches_langfuse(
    chain_for: ChainFactory, make_langfuse: LangfuseFactory, langfuse_server: FakeLangfuse
) -> None:
    tracer, _ = traced(make_langfuse)
    result = await chain_for(ScriptedLLM(), tracer).run(
        ChainRequest("How do I connect to the VPN?", ["company"], run_key="fb:1")
    )
    tracer.score(result.trace_id, "feedback", 0, comment="wrong office")
    tracer.score(result.trace_id, "helpful", 1, boolean=True)
    tracer.flush()
    scores = {s["name"]: s for s in langfuse_server.scores()}
    assert set(scores) == {"feedback", "helpful"}
    feedback = scores["feedback"]
    assert feedback["traceId"] == trace_id_for("fb:1")
    assert (feedback["value"], feedback["comment"]) == (0, "wrong office")
    assert feedback["dataType"] == "NUMERIC"
    assert (scores["helpful"]["value"], scores["helpful"]["dataType"]) == (1, "BOOLEAN")
    request = langfuse_server.requests_to(SCORES_PATH)[0]
    assert request.headers["authorization"].startswith("Basic ")
    assert request.headers["x-langfuse-public-key"].startswith("pk-lf-test-")


def test_receiver_takes_legacy_ingestion_batches(langfuse_server: FakeLangfuse) -> None:
    # SDK 5 sends scores to /api/public/scores; older SDKs batch score-create events.
    event = {
        "id": "event-1",
        "type": "score-create",
        "timestamp": "2026-01-01T00:00:00Z",
        "body": {"traceId": trace_id_for("old:1"), "name": "feedback", "value": 1},
    }
    url = f"{langfuse_server.base_url}{INGESTION_PATH}"
    refused = httpx.post(url, json={"batch": [event]})
    assert refused.status_code == 401
    answer = httpx.post(url, json={"batch": [event]}, auth=("pk-lf-old", "sk-lf-old"))
    assert answer.status_code == 207
    assert answer.json() == {"successes": [{"id": "event-1", "status": 201}], "errors": []}
    assert langfuse_server.scores() == [event["body"]]


async def test_spans_reach_langfuse_over_otlp(
    chain_for: ChainFactory, make_langfuse: LangfuseFactory, langfuse_server: FakeLangfuse
) -> None:
    tracer = Tracer(make_langfuse())  # the SDK's own OTLP exporter
    await chain_for(paraphrased(), tracer).run(vacation_request("otlp:1"))
    tracer.flush()
    exports = langfuse_server.requests_to(OTEL_PATH, "POST")
    assert exports
    assert exports[0].headers["content-type"] == "application/x-protobuf"
    assert exports[0].headers["authorization"].startswith("Basic ")
    spans = langfuse_server.spans()
    assert {s.trace_id for s in spans} == {trace_id_for("otlp:1")}
    assert sorted(s.name for s in spans) == sorted(["question", *STEP_NAMES, *LLM_STEPS])
    by_id = {s.span_id: s for s in spans}
    for span in spans:
        if span.attributes["langfuse.observation.type"] == "generation":
            assert by_id[span.parent_span_id].name == span.name
            assert span.attributes["langfuse.observation.model.name"] == "scripted"
        elif span.name != "question":
            assert by_id[span.parent_span_id].name == "question"
        assert span.attributes["user.id"] == "u-42"


async def test_tracing_off_records_nothing(
    chain_for: ChainFactory, langfuse_server: FakeLangfuse
) -> None:
    current: list[bool] = []

    def reply(call: Call) -> str:
        current.append(otel_trace.get_current_span().get_span_context().is_valid)
        return "YES"

    tracer = Tracer(None)
    assert not tracer.enabled
    assert tracer.langfuse is None
    result = await chain_for(ScriptedLLM(replies={"relevance": reply}), tracer).run(
        vacation_request("off:1", history=())
    )
    assert result.kind is ResultKind.ANSWER
    assert result.trace_id == trace_id_for("off:1")
    assert result.sources[0].doc_id == "handbook/vacation-policy.md"
    assert current == [False]  # no span was current during the LLM call
    tracer.score(result.trace_id, "feedback", 0)
    tracer.flush()
    tracer.shutdown()
    assert langfuse_server.requests == []


def _same_answer(a: ChainResult, b: ChainResult) -> bool:
    return (a.kind, a.text, a.sources, a.query, a.trace_id) == (
        b.kind,
        b.text,
        b.sources,
        b.query,
        b.trace_id,
    )


@pytest.mark.parametrize("failure", ["hang", "refused"])
async def test_unreachable_langfuse_never_delays_or_breaks_a_run(
    failure: Literal["hang", "refused"],
    chain_for: ChainFactory,
    make_langfuse: LangfuseFactory,
    langfuse_server: FakeLangfuse,
) -> None:
    request = vacation_request("down:1")
    untraced = chain_for(paraphrased(), Tracer(None))
    await untraced.run(request)  # warm up the search path
    started = time.perf_counter()
    expected = await untraced.run(request)
    untraced_s = time.perf_counter() - started

    langfuse_server.outage(failure)
    try:
        # Export each span at once, so the exporter is busy failing while the chain runs.
        tracer = Tracer(make_langfuse(flush_at=1, flush_interval=0.05))
        chain = chain_for(paraphrased(), tracer)
        for _ in range(2):
            started = time.perf_counter()
            result = await chain.run(request)
            traced_s = time.perf_counter() - started
            assert _same_answer(result, expected)
            assert traced_s < untraced_s + 0.5, (traced_s, untraced_s)
        started = time.perf_counter()
        tracer.score(result.trace_id, "feedback", 0, comment="wrong office")
        assert time.perf_counter() - started < 0.1
        if failure == "hang":
            # The exporter did reach the receiver, and its request is hanging there.
            assert await eventually(lambda: bool(langfuse_server.requests_to(OTEL_PATH)), 3.0)
    finally:
        langfuse_server.recover()  # so that the client shuts down quickly at teardown
