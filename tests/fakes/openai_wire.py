"""The OpenAI chat-completions wire format as the fake server speaks it: what a request
carries, what a reply is, and the JSON and SSE bodies built from them."""

import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

from tests.fakes.llm import step_of

CHAT_PATH = "/v1/chat/completions"


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the server saw it; header names are lower-case."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The chat messages of the request."""
        return cast(list[dict[str, Any]], self.body.get("messages", []))

    @property
    def regex(self) -> str | None:
        """The regex sent as structured_outputs.regex, if any."""
        outputs = self.body.get("structured_outputs")
        return cast(str | None, outputs.get("regex")) if isinstance(outputs, dict) else None

    @property
    def system(self) -> str:
        """The first system message's text ("" without one)."""
        return next((m["content"] for m in self.messages if m.get("role") == "system"), "")

    @property
    def user(self) -> str:
        """The last user message's text ("" without one)."""
        texts = [m["content"] for m in self.messages if m.get("role") == "user"]
        return texts[-1] if texts else ""


@dataclass(frozen=True, slots=True)
class Reply:
    """A canned completion; a plain str means Reply(text)."""

    text: str
    finish_reason: str = "stop"
    # The model name reported back; None echoes the requested one.
    model: str | None = None


Responder = Callable[[RecordedRequest], "str | Reply"]


def choose_matching(request: RecordedRequest, *candidates: str) -> str:
    """The first candidate that fullmatches the request's regex (the first one without a regex)."""
    if request.regex is None and candidates:
        return candidates[0]
    for text in candidates:
        if request.regex is not None and re.fullmatch(request.regex, text):
            return text
    raise ValueError(f"no candidate of {candidates!r} matches regex {request.regex!r}")


def by_step(replies: Mapping[str, str]) -> Responder:
    """A responder answering each request with the reply of its chain step (told apart by the
    step's output regex)."""
    return lambda request: replies[step_of(request.regex)]


def by_regex(*candidates: str) -> Responder:
    """A responder answering each request with the first candidate its regex allows."""
    return lambda request: choose_matching(request, *candidates)


def _tokens(text: str) -> int:
    return len(text.split())


def completion_body(request: RecordedRequest, reply: Reply, model: str) -> dict[str, Any]:
    """A chat.completion object; token counts are word counts."""
    prompt = sum(_tokens(str(m.get("content", ""))) for m in request.messages)
    message = {"role": "assistant", "content": reply.text}
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply.model or model,
        "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": _tokens(reply.text),
            "total_tokens": prompt + _tokens(reply.text),
        },
    }


def stream_chunks(request: RecordedRequest, reply: Reply, model: str) -> Iterator[dict[str, Any]]:
    """The SSE chunks of a streamed reply: role, one per word, finish, then usage if asked."""
    full = completion_body(request, reply, model)
    head = {k: full[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    pieces = [{"role": "assistant", "content": ""}]
    pieces += [{"content": p} for p in re.findall(r"\s*\S+\s*|\s+", reply.text)]
    for delta in pieces:
        yield head | {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    yield head | {"choices": [{"index": 0, "delta": {}, "finish_reason": reply.finish_reason}]}
    if (request.body.get("stream_options") or {}).get("include_usage"):
        yield head | {"choices": [], "usage": full["usage"]}
