"""A fake OpenAI-compatible server (the part of vLLM's API the app uses), over real HTTP.

It listens on 127.0.0.1 on a free port, answers POST /v1/chat/completions (JSON, or SSE with a
usage chunk at the end) and GET /v1/models, and records every request. Each request runs in its
own thread, so delays and many concurrent users do not block one another.

What it answers, first match wins: an injected fault (fail_next, drop_next, ...), a queued
reply (reply), the responder callable, default_reply. With enforce_regex (the default) a reply
that does not fullmatch the request's regex is refused with HTTP 400 and listed in
regex_violations, because vLLM could never have produced it.
"""

import json
import logging
import re
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import pytest

from tests.fakes.openai_wire import (
    CHAT_PATH,
    RecordedRequest,
    Reply,
    Responder,
    by_regex,
    by_step,
    choose_matching,
    completion_body,
    stream_chunks,
)

__all__ = [
    "FakeLLMServer",
    "RecordedRequest",
    "Reply",
    "Responder",
    "ServerFactory",
    "by_regex",
    "by_step",
    "choose_matching",
    "fake_llm_server",
    "make_fake_llm_server",
]

logger = logging.getLogger(__name__)

ServerFactory = Callable[..., "FakeLLMServer"]


@dataclass(frozen=True, slots=True)
class _Fault:
    kind: Literal["status", "drop", "drop_mid_stream", "delay"]
    status: int = 500
    message: str = ""
    seconds: float = 0.0


class FakeLLMServer:
    """The server, its script and its record; use as a context manager or start()/stop()."""

    def __init__(self, *, model: str = "fake-model", default_reply: str = "ok") -> None:
        self.model = model
        self.default_reply = default_reply
        self.responder: Responder | None = None
        self.enforce_regex = True
        # Every request waits this long before answering, in its own thread.
        self.delay_s = 0.0
        # Pause between streamed chunks, to watch deltas arrive one by one.
        self.stream_chunk_delay_s = 0.0
        self.regex_violations: list[str] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._requests: list[RecordedRequest] = []
        self._faults: deque[_Fault] = deque()
        self._replies: deque[str | Reply] = deque()
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """What an OpenAI client takes as base_url."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request so far (a copy), in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """The chat completion requests so far."""
        return [r for r in self.requests if r.path == CHAT_PATH]

    def reply(self, *replies: str | Reply) -> None:
        """Queue replies for the next chat requests, one each, before the responder."""
        with self._lock:
            self._replies.extend(replies)

    def fail_next(self, status: int = 500, times: int = 1, message: str = "injected") -> None:
        """Answer the next `times` requests with this HTTP status and an OpenAI error body."""
        self._add(_Fault("status", status=status, message=message), times)

    def drop_next(self, times: int = 1) -> None:
        """Close the connection of the next `times` requests without answering."""
        self._add(_Fault("drop"), times)

    def drop_mid_stream_next(self, times: int = 1) -> None:
        """Stream the first piece of the next `times` replies, then close the connection."""
        self._add(_Fault("drop_mid_stream"), times)

    def delay_next(self, seconds: float, times: int = 1) -> None:
        """Wait `seconds` (on top of delay_s) before answering the next `times` requests."""
        self._add(_Fault("delay", seconds=seconds), times)

    def _add(self, fault: _Fault, times: int) -> None:
        with self._lock:
            self._faults.extend([fault] * times)

    def start(self) -> "FakeLLMServer":
        """Serve in a daemon thread."""
        # A short poll interval keeps stop() (once per test) fast.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; requests sleeping in a delay wake up at once."""
        self._stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()

    def __enter__(self) -> "FakeLLMServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _record(self, request: RecordedRequest) -> _Fault | None:
        with self._lock:
            self._requests.append(request)
            return self._faults.popleft() if self._faults else None

    def _answer(self, request: RecordedRequest) -> Reply:
        """The reply for a request, checked against its regex; ValueError when refused."""
        with self._lock:
            queued = self._replies.popleft() if self._replies else None
        if queued is None:
            queued = self.responder(request) if self.responder else self.default_reply
        reply = Reply(queued) if isinstance(queued, str) else queued
        regex = request.regex
        if self.enforce_regex and regex is not None and not re.fullmatch(regex, reply.text):
            problem = f"reply {reply.text!r} does not match regex {regex!r}"
            self.regex_violations.append(problem)
            raise ValueError(problem)
        return reply

    def _sleep(self, seconds: float) -> None:
        # An Event, not time.sleep, so that stop() cuts a long delay short.
        if seconds > 0:
            self._stopping.wait(seconds)


class _HTTPServer(ThreadingHTTPServer):
    # The default backlog of 5 makes bursts of concurrent clients wait for SYN retries.
    request_queue_size = 512
    fake: FakeLLMServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; with Nagle's algorithm the second one
        # waits for the client's delayed ACK (40 ms per request on Linux).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug(format, *args)

    def do_GET(self) -> None:
        fake = self.server.fake
        fault = fake._record(RecordedRequest("GET", self.path, self._headers(), {}))
        if fault is not None and fault.kind == "status":  # e.g. a server still loading
            self._send_json(fault.status, {"error": {"message": fault.message}})
            return
        if self.path != "/v1/models":
            self._send_json(404, {"error": {"message": f"no route {self.path}", "code": 404}})
            return
        models = [{"id": fake.model, "object": "model", "owned_by": "fake"}]
        self._send_json(200, {"object": "list", "data": models})

    def do_POST(self) -> None:
        fake = self.server.fake
        raw = self.rfile.read(int(self.headers.get("content-length", 0)))
        request = RecordedRequest("POST", self.path, self._headers(), json.loads(raw or b"{}"))
        fault = fake._record(request)
        fake._sleep(fake.delay_s + (fault.seconds if fault else 0.0))
        if fault is not None and fault.kind == "drop":
            self.close_connection = True
            return
        if fault is not None and fault.kind == "status":
            error = {"message": fault.message, "type": "FakeError", "code": fault.status}
            self._send_json(fault.status, {"error": error})
            return
        if self.path != CHAT_PATH:
            self._send_json(404, {"error": {"message": f"no route {self.path}", "code": 404}})
            return
        try:
            reply = fake._answer(request)
        except Exception as exc:  # a responder's bug: the test sees a 400 and .errors
            fake.errors.append(f"{type(exc).__name__}: {exc}")
            self._send_json(400, {"error": {"message": f"fake server: {exc}", "code": 400}})
            return
        if request.body.get("stream"):
            mid_stream_drop = fault is not None and fault.kind == "drop_mid_stream"
            self._send_stream(request, reply, drop_after_first=mid_stream_drop)
        else:
            self._send_json(200, completion_body(request, reply, request.body.get("model", "")))

    def _headers(self) -> dict[str, str]:
        return {name.lower(): value for name, value in self.headers.items()}

    def _send_json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self._client_gone()

    def _send_stream(self, request: RecordedRequest, reply: Reply, drop_after_first: bool) -> None:
        model = str(request.body.get("model", ""))
        try:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for n, chunk in enumerate(stream_chunks(request, reply, model)):
                self._write_chunk(f"data: {json.dumps(chunk)}\n\n".encode())
                if drop_after_first and n == 1:  # n == 0 is the role-only chunk
                    self.close_connection = True
                    return
                self.server.fake._sleep(self.server.fake.stream_chunk_delay_s)
            self._write_chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self._client_gone()

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _client_gone(self) -> None:
        # Expected when a client gives up first (a timeout test); there is nobody to tell.
        logger.debug("fake LLM server: client closed the connection before the reply")
        self.close_connection = True


@pytest.fixture
def fake_llm_server() -> Iterator[FakeLLMServer]:
    """A started FakeLLMServer, stopped after the test."""
    with FakeLLMServer() as server:
        yield server


@pytest.fixture
def make_fake_llm_server() -> Iterator[ServerFactory]:
    """make(**kwargs) starts another FakeLLMServer (e.g. a fallback); all stop after the test."""
    servers: list[FakeLLMServer] = []

    def make(**kwargs: Any) -> FakeLLMServer:
        servers.append(FakeLLMServer(**kwargs).start())
        return servers[-1]

    yield make
    for server in servers:
        server.stop()
