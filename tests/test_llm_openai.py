"""The OpenAI-compatible client, the fallback router and build_llm_clients, over real HTTP
against the fake server (tests/fakes/openai_server.py)."""

import asyncio
import json
import socket
import time
from typing import Any

import httpx
import pytest

from app.chain.llm_step import LLMStep
from app.chain.types import ENGLISH
from app.chain.variables import prompt_variables
from app.errors import LLMResponseError, LLMTimeoutError, LLMUnavailableError
from app.llm.base import Completion, GenerationParams, LLMClient, Message, OnDelta, Usage
from app.llm.openai_compat import OpenAICompatClient, _server_message
from app.llm.router import FallbackClient, aclose_all, build_llm_clients
from app.prompts import PromptStore
from app.settings import STEPS, LLMSettings
from app.tracing import Tracer
from tests.conftest import PROMPTS
from tests.fakes.llm import ScriptedLLM
from tests.fakes.openai_server import FakeLLMServer, Reply, ServerFactory, by_regex

# The fake_llm_server and make_fake_llm_server fixtures.
pytest_plugins = ["tests.fakes.openai_server"]

HELLO = [Message("system", "Be brief."), Message("user", "Hello there")]


def client_for(server: FakeLLMServer, **overrides: Any) -> OpenAICompatClient:
    """A client of the server with short waits (a tiny backoff, timeouts of seconds)."""
    options: dict[str, Any] = {
        "model": "test-model",
        "api_key": "sk-test-key",
        "connect_timeout_s": 1.0,
        "timeout_s": 2.0,
        "retries": 2,
        "backoff_s": 0.01,
    }
    return OpenAICompatClient(base_url=server.base_url, **(options | overrides))


class Deltas:
    """An on_delta that keeps what it was given."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    async def __call__(self, text: str) -> None:
        self.parts.append(text)


def keys(value: object) -> set[str]:
    """Every key of a JSON value, at any depth."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys(v)}
    return set()


def llm_settings(**values: Any) -> LLMSettings:
    """LLMSettings from the defaults and values only, whatever LLM_* or .env say."""
    defaults = {
        name: field.get_default(call_default_factory=True)
        for name, field in LLMSettings.model_fields.items()
    }
    return LLMSettings.model_validate(defaults | values)


async def test_regex_goes_out_as_structured_outputs_and_never_guided(
    fake_llm_server: FakeLLMServer,
) -> None:
    fake_llm_server.responder = by_regex("maybe", "yes", "no")
    async with client_for(fake_llm_server) as client:
        plain = await client.complete(HELLO, regex="yes|no")
        streamed = await client.complete(HELLO, regex=r"no|\d+", on_delta=Deltas())
    assert (plain.text, streamed.text) == ("yes", "no")
    first, second = (r.body for r in fake_llm_server.chat_requests)
    assert first["structured_outputs"] == {"regex": "yes|no"}
    assert second["structured_outputs"] == {"regex": r"no|\d+"}
    assert not any(k.startswith("guided") for k in keys(first) | keys(second))


async def test_no_structured_outputs_without_regex(fake_llm_server: FakeLLMServer) -> None:
    async with client_for(fake_llm_server) as client:
        await client.complete(HELLO)
    body = fake_llm_server.chat_requests[0].body
    assert "structured_outputs" not in keys(body)
    assert not any(k.startswith("guided") for k in keys(body))


async def test_model_messages_and_params_are_sent(fake_llm_server: FakeLLMServer) -> None:
    params = GenerationParams(temperature=0.7, max_tokens=33, top_p=0.9, stop=("\n\n", "END"))
    async with client_for(fake_llm_server, model="served/model-7b") as client:
        await client.complete(HELLO, params=params)
        await client.complete(HELLO)
    with_stop, without_stop = (r.body for r in fake_llm_server.chat_requests)
    assert with_stop["model"] == "served/model-7b"
    assert with_stop["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello there"},
    ]
    assert (with_stop["temperature"], with_stop["top_p"], with_stop["max_tokens"]) == (0.7, 0.9, 33)
    assert with_stop["stop"] == ["\n\n", "END"]
    assert "stop" not in without_stop
    assert not with_stop.get("stream")


async def test_completion_reports_usage_finish_reason_and_served_model(
    fake_llm_server: FakeLLMServer,
) -> None:
    fake_llm_server.reply(Reply("one two three", finish_reason="length", model="served-name"))
    async with client_for(fake_llm_server) as client:
        completion = await client.complete(HELLO)
        assert client.model == "test-model"
        assert client.parallel
    assert completion.text == "one two three"
    assert completion.model == "served-name"
    assert completion.finish_reason == "length"
    assert completion.usage == Usage(prompt_tokens=4, completion_tokens=3)
    assert 0 < completion.seconds < 2


async def test_streaming_deltas_concatenate_and_usage_is_read(
    fake_llm_server: FakeLLMServer,
) -> None:
    fake_llm_server.reply("The answer is  forty-two.\nSee [1].")
    deltas = Deltas()
    async with client_for(fake_llm_server) as client:
        completion = await client.complete(HELLO, on_delta=deltas)
    assert len(deltas.parts) > 3
    assert "".join(deltas.parts) == completion.text == "The answer is  forty-two.\nSee [1]."
    assert completion.usage == Usage(prompt_tokens=4, completion_tokens=6)
    assert completion.finish_reason == "stop"
    body = fake_llm_server.chat_requests[0].body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_api_key_is_a_bearer_header_and_stays_out_of_errors(
    fake_llm_server: FakeLLMServer,
) -> None:
    fake_llm_server.fail_next(503, times=3)
    async with client_for(fake_llm_server) as client:
        with pytest.raises(LLMUnavailableError) as caught:
            await client.complete(HELLO)
    assert fake_llm_server.chat_requests[0].headers["authorization"] == "Bearer sk-test-key"
    assert f"127.0.0.1:{fake_llm_server.port}" in str(caught.value)
    assert "sk-test-key" not in str(caught.value)


async def test_a_server_that_quotes_the_key_back_does_not_put_it_in_the_error(
    fake_llm_server: FakeLLMServer,
) -> None:
    fake_llm_server.fail_next(401, message="Incorrect API key provided: sk-test-key.")
    async with client_for(fake_llm_server) as client:
        with pytest.raises(LLMResponseError) as caught:
            await client.complete(HELLO)
    assert "sk-test-key" not in str(caught.value)
    assert "Incorrect API key provided: ***." in str(caught.value)


@pytest.mark.parametrize("statuses", [(500,), (503,), (500, 503), (429,)])
async def test_retries_transient_statuses_then_succeeds(
    fake_llm_server: FakeLLMServer, statuses: tuple[int, ...]
) -> None:
    for status in statuses:
        fake_llm_server.fail_next(status)
    async with client_for(fake_llm_server) as client:
        completion = await client.complete(HELLO)
    assert completion.text == "ok"
    assert len(fake_llm_server.chat_requests) == len(statuses) + 1


async def test_retries_a_dropped_connection(fake_llm_server: FakeLLMServer) -> None:
    fake_llm_server.drop_next(2)
    async with client_for(fake_llm_server) as client:
        completion = await client.complete(HELLO, on_delta=Deltas())
    assert completion.text == "ok"
    assert len(fake_llm_server.chat_requests) == 3


async def test_no_retry_on_400(fake_llm_server: FakeLLMServer) -> None:
    fake_llm_server.fail_next(400, message="max_tokens   is too large:\n 99999 > 8192" + "x" * 500)
    async with client_for(fake_llm_server) as client:
        with pytest.raises(LLMResponseError) as caught:
            await client.complete(HELLO)
    message = str(caught.value)
    assert "HTTP 400" in message
    assert "max_tokens is too large: 99999 > 8192" in message
    assert len(message) < 450
    assert len(fake_llm_server.chat_requests) == 1


async def test_retries_exhausted_is_unavailable(fake_llm_server: FakeLLMServer) -> None:
    fake_llm_server.fail_next(503, times=5, message="engine overloaded")
    async with client_for(fake_llm_server, retries=3) as client:
        with pytest.raises(
            LLMUnavailableError, match=r"failed 4 time.*HTTP 503: engine overloaded"
        ):
            await client.complete(HELLO)
    assert len(fake_llm_server.chat_requests) == 4


async def test_unreachable_server_is_unavailable() -> None:
    server = FakeLLMServer()
    server.stop()  # the port is closed now: connections are refused
    async with client_for(server, retries=1) as client:
        with pytest.raises(LLMUnavailableError, match="failed 2 time"):
            await client.complete(HELLO)


async def test_slow_server_times_out_within_the_bound(fake_llm_server: FakeLLMServer) -> None:
    fake_llm_server.delay_s = 3.0
    started = time.perf_counter()
    async with client_for(fake_llm_server, timeout_s=0.3, retries=1) as client:
        with pytest.raises(LLMTimeoutError, match=r"within 0\.3 s"):
            await client.complete(HELLO, on_delta=Deltas())
    elapsed = time.perf_counter() - started
    assert 0.55 < elapsed < 0.3 * 2 + 0.5
    assert len(fake_llm_server.chat_requests) == 2


async def test_a_timed_out_attempt_is_retried(fake_llm_server: FakeLLMServer) -> None:
    fake_llm_server.delay_next(2.0)
    async with client_for(fake_llm_server, timeout_s=0.3, retries=1) as client:
        completion = await client.complete(HELLO)
    assert completion.text == "ok"
    assert completion.seconds < 0.3  # the time of the attempt that answered
    assert len(fake_llm_server.chat_requests) == 2


async def test_failure_after_a_delta_is_not_retried(fake_llm_server: FakeLLMServer) -> None:
    fake_llm_server.reply("first second third")
    fake_llm_server.drop_mid_stream_next()
    deltas = Deltas()
    async with client_for(fake_llm_server) as client:
        with pytest.raises(LLMUnavailableError, match="mid-stream"):
            await client.complete(HELLO, on_delta=deltas)
    assert deltas.parts == ["first "]
    assert len(fake_llm_server.chat_requests) == 1


async def test_openai_error_body_is_quoted_on_one_line(fake_llm_server: FakeLLMServer) -> None:
    fake_llm_server.fail_next(422, message="'messages'   must not be empty\n(got [])")
    async with client_for(fake_llm_server) as client:
        with pytest.raises(LLMResponseError) as caught:
            await client.complete(HELLO)
    assert str(caught.value) == (
        f"LLM endpoint 127.0.0.1:{fake_llm_server.port} refused the request "
        "(HTTP 422): 'messages' must not be empty (got [])"
    )
    assert len(fake_llm_server.chat_requests) == 1


@pytest.mark.parametrize(
    ("body", "quoted"),
    [
        (b'{"error": {"message": "bad  request", "code": 400}}', "bad request"),
        (b'{"object": "error", "message": "too long", "code": 400}', "too long"),
        (b'{"detail": "Not Found"}', "Not Found"),
        (b'{"detail": [{"loc": ["body"], "msg": "field required"}]}', "field required"),
        (b"<html>\n<h1>502 Bad Gateway</h1>\n</html>", "<html> <h1>502 Bad Gateway</h1> </html>"),
        (b'{"error": "' + b"x" * 1000 + b'"}', "x" * 299 + "…"),
    ],
)
def test_server_error_bodies_are_quoted(body: bytes, quoted: str) -> None:
    assert quoted in _server_message(body)
    assert len(_server_message(body)) <= 300


async def serve_in_pieces(body: bytes, size: int) -> asyncio.Server:
    """A one-shot HTTP server streaming body as SSE, `size` bytes per HTTP chunk and packet."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).lower()
        length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
        assert json.loads(await reader.readexactly(length))["stream"] is True
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        )
        for start in range(0, len(body), size):
            piece = body[start : start + size]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.001)  # so that the client reads each piece on its own
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


async def test_a_stream_split_mid_line_and_mid_character_parses() -> None:
    words = ["Привет, ", "мир! ", "Ответ: 42 [1]."]
    events: list[dict[str, Any]] = [{"choices": [{"delta": {"content": w}}]} for w in words]
    events.append({"choices": [{"delta": {}, "finish_reason": "length"}]})
    events.append({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 6}})
    lines = [
        b"data: " + json.dumps(e | {"model": "m2"}, ensure_ascii=False).encode() for e in events
    ]
    # 7-byte pieces split lines, and UTF-8 characters too (the JSON is not ASCII-escaped).
    body = b": keep-alive\n\n" + b"\n\n".join([*lines, b"data: [DONE]", b""])
    deltas = Deltas()
    async with await serve_in_pieces(body, 7) as server:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
        async with OpenAICompatClient(base_url=url, model="m") as client:
            completion = await client.complete(HELLO, on_delta=deltas)
    assert deltas.parts == words
    assert completion.text == "".join(words)
    assert (completion.model, completion.finish_reason) == ("m2", "length")
    assert completion.usage == Usage(prompt_tokens=5, completion_tokens=6)


async def test_an_error_event_in_the_stream_is_quoted_and_not_retried() -> None:
    first = json.dumps({"choices": [{"delta": {"content": "Hi "}}]}).encode()
    error = json.dumps({"error": {"message": "engine  died", "code": 500}}).encode()
    body = b"data: " + first + b"\n\ndata: " + error + b"\n\n"
    async with await serve_in_pieces(body, 1000) as server:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
        async with OpenAICompatClient(base_url=url, model="m") as client:
            with pytest.raises(LLMResponseError, match=r"\(error\): engine died$"):
                await client.complete(HELLO, on_delta=Deltas())


async def test_fake_server_refuses_replies_its_regex_forbids(
    fake_llm_server: FakeLLMServer,
) -> None:
    fake_llm_server.reply("perhaps")
    async with client_for(fake_llm_server) as client:
        with pytest.raises(LLMResponseError, match="does not match"):
            await client.complete(HELLO, regex="yes|no")
    assert fake_llm_server.regex_violations


class Verdict(LLMStep):
    """The relevance prompt (regex YES|NO), asked through LLMStep.generate."""

    prompt_name = "relevance"

    async def ask(self, on_delta: OnDelta | None = None) -> str:
        variables = prompt_variables(query="How do I connect to the VPN?", language=ENGLISH)
        return (await self.generate(on_delta, **variables)).completion.text


async def test_a_reply_that_ignores_the_regex_is_retried_once_then_fails(
    fake_llm_server: FakeLLMServer,
) -> None:
    fake_llm_server.enforce_regex = False  # a server that ignores structured_outputs
    fake_llm_server.reply("Probably yes, the excerpts cover it.", "Maybe.")
    async with client_for(fake_llm_server) as client:
        step = Verdict(client, PromptStore(PROMPTS), Tracer(None))
        with pytest.raises(LLMResponseError, match="does not match"):
            await step.ask()
    assert [r.regex for r in fake_llm_server.chat_requests] == ["YES|NO", "YES|NO"]


async def test_a_retry_that_matches_the_regex_is_the_output(
    fake_llm_server: FakeLLMServer,
) -> None:
    fake_llm_server.enforce_regex = False
    fake_llm_server.reply("Probably yes.", "YES")
    async with client_for(fake_llm_server) as client:
        step = Verdict(client, PromptStore(PROMPTS), Tracer(None))
        assert await step.ask() == "YES"
    assert len(fake_llm_server.chat_requests) == 2


async def test_the_retry_does_not_stream_and_a_cut_output_is_not_retried() -> None:
    """ScriptedLLM: the preview only appends, so the retry is not streamed; an output cut by
    max_tokens would be cut again, so it goes back to the step (valid=False) at once."""
    llm = ScriptedLLM(replies={"relevance": "Probably"})
    step = Verdict(llm, PromptStore(PROMPTS), Tracer(None))
    deltas = Deltas()
    with pytest.raises(LLMResponseError):
        await step.ask(deltas)
    assert llm.steps() == ["relevance", "relevance"]
    assert "".join(deltas.parts) == "Probably"

    class Cut(ScriptedLLM):
        async def complete(self, *args: Any, **kwargs: Any) -> Completion:
            done = await super().complete(*args, **kwargs)
            return Completion(done.text, done.model, done.usage, done.seconds, "length")

    cut = Cut(replies={"relevance": "YE"})
    generated = await Verdict(cut, PromptStore(PROMPTS), Tracer(None)).generate(
        **prompt_variables(query="VPN?", language=ENGLISH)
    )
    assert (generated.completion.text, generated.valid) == ("YE", False)
    assert len(cut.calls) == 1


async def test_fake_server_serves_concurrent_slow_requests(
    fake_llm_server: FakeLLMServer,
) -> None:
    fake_llm_server.delay_s = 0.3
    started = time.perf_counter()
    async with client_for(fake_llm_server) as client:
        replies = await asyncio.gather(*(client.complete(HELLO) for _ in range(40)))
    assert [r.text for r in replies] == ["ok"] * 40
    assert time.perf_counter() - started < 3.0  # one after the other: 12 s
    async with httpx.AsyncClient() as http:
        models = (await http.get(f"{fake_llm_server.base_url}/models")).json()
    assert [m["id"] for m in models["data"]] == ["fake-model"]


async def test_fallback_answers_when_the_primary_keeps_failing(
    make_fake_llm_server: ServerFactory,
) -> None:
    primary, fallback = make_fake_llm_server(), make_fake_llm_server()
    primary.fail_next(503, times=2)
    fallback.reply(Reply("from fallback", model="small-model"))
    router = FallbackClient(client_for(primary, retries=1), client_for(fallback))
    completion = await router.complete(HELLO)
    await aclose_all([router])
    assert (completion.text, completion.model) == ("from fallback", "small-model")
    assert (len(primary.chat_requests), len(fallback.chat_requests)) == (2, 1)


async def test_no_fallback_for_refused_requests_or_after_streamed_text(
    make_fake_llm_server: ServerFactory,
) -> None:
    primary, fallback = make_fake_llm_server(), make_fake_llm_server()
    router = FallbackClient(client_for(primary), client_for(fallback))
    primary.fail_next(400)
    with pytest.raises(LLMResponseError):
        await router.complete(HELLO)
    primary.drop_mid_stream_next()
    with pytest.raises(LLMUnavailableError, match="mid-stream"):
        await router.complete(HELLO, on_delta=Deltas())
    await router.aclose()
    assert not fallback.chat_requests


async def test_circuit_breaker_skips_the_primary_during_the_cooldown(
    make_fake_llm_server: ServerFactory,
) -> None:
    primary, fallback = make_fake_llm_server(), make_fake_llm_server(default_reply="fb")
    primary.fail_next(503, times=2)
    now = [100.0]
    router = FallbackClient(
        client_for(primary, retries=0),
        client_for(fallback),
        failure_threshold=2,
        cooldown_s=5.0,
        clock=lambda: now[0],
    )
    texts = [(await router.complete(HELLO)).text for _ in range(4)]
    assert texts == ["fb"] * 4
    assert len(primary.chat_requests) == 2  # the last two went straight to the fallback
    assert router.primary_skipped
    now[0] += 5.1
    assert (await router.complete(HELLO)).text == "ok"
    assert len(primary.chat_requests) == 3
    assert not router.primary_skipped
    await aclose_all({"answer": router})


async def test_build_llm_clients_per_step_endpoints_models_and_keys(
    make_fake_llm_server: ServerFactory,
) -> None:
    main, other = make_fake_llm_server(), make_fake_llm_server()
    settings = llm_settings(
        base_url=main.base_url,
        model="big",
        api_key="sk-main",
        relevance_model="small",
        answer_base_url=other.base_url + "/",
        answer_api_key="sk-answer",
        backoff_s=0.01,
    )
    clients = build_llm_clients(settings, embedded=_no_embedded)
    assert set(clients) == set(STEPS)
    assert clients["paraphrase"] is clients["clarify"]
    assert len({id(c) for c in clients.values()}) == 3
    for step in STEPS:
        await clients[step].complete([Message("user", step)])
    await aclose_all(clients)
    sent = {r.user: (r.body["model"], r.headers["authorization"]) for r in main.chat_requests}
    assert sent == {
        "paraphrase": ("big", "Bearer sk-main"),
        "clarify": ("big", "Bearer sk-main"),
        "relevance": ("small", "Bearer sk-main"),
    }
    [answer] = other.chat_requests
    assert (answer.body["model"], answer.headers["authorization"]) == ("big", "Bearer sk-answer")


async def test_build_llm_clients_wraps_each_client_with_one_shared_fallback(
    make_fake_llm_server: ServerFactory,
) -> None:
    main, backup = make_fake_llm_server(), make_fake_llm_server()
    settings = llm_settings(
        base_url=main.base_url,
        model="big",
        answer_model="bigger",
        fallback_base_url=backup.base_url,
        retries=0,
    )
    clients = build_llm_clients(settings, embedded=_no_embedded, cooldown_s=1.0)
    wrappers = [c for c in clients.values() if isinstance(c, FallbackClient)]
    assert len(wrappers) == 4
    assert clients["paraphrase"] is clients["relevance"] is clients["clarify"]
    assert wrappers[0].fallback is wrappers[-1].fallback
    main.fail_next(503)
    completion = await clients["answer"].complete(HELLO)
    await aclose_all(clients)
    assert backup.chat_requests[0].body["model"] == "big"  # LLM_FALLBACK_MODEL defaults to it
    assert completion.text == "ok"


class StubClient:
    """An in-process LLMClient standing in for llama.cpp."""

    model = "embedded"
    parallel = False

    def __init__(self) -> None:
        self.closed = 0

    async def complete(
        self,
        messages: Any,
        *,
        regex: str | None = None,
        params: GenerationParams | None = None,
        on_delta: OnDelta | None = None,
    ) -> Completion:
        return Completion("stub", self.model, Usage(0, 0), 0.0, "stop")

    async def aclose(self) -> None:
        self.closed += 1


def _no_embedded() -> LLMClient:
    raise AssertionError("no step should use the embedded client")


async def test_without_a_server_all_steps_share_one_embedded_client(
    make_fake_llm_server: ServerFactory,
) -> None:
    made: list[StubClient] = []

    def embedded() -> LLMClient:
        made.append(StubClient())
        return made[-1]

    clients = build_llm_clients(llm_settings(), embedded=embedded)
    assert len(made) == 1
    assert all(client is made[0] for client in clients.values())
    await aclose_all(clients)
    assert made[0].closed == 1

    server = make_fake_llm_server()
    mixed = build_llm_clients(
        llm_settings(answer_base_url=server.base_url, answer_model="m"), embedded=embedded
    )
    assert isinstance(mixed["answer"], OpenAICompatClient)
    assert mixed["paraphrase"] is mixed["clarify"] is made[1]
    await aclose_all(mixed)
