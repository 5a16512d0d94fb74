"""A local Langfuse receiver over real HTTP: the part of Langfuse's public API that the real SDK
(langfuse 5.x) uses for tracing, scores and prompt management, so tests run the SDK unchanged.

Routes (anything else is a 404):

- POST /api/public/otel/v1/traces: OTLP/HTTP protobuf (gzip or not); decoded into spans.
- POST /api/public/scores: a JSON list of scores (how SDK 5 sends `create_score`); 202.
- POST /api/public/ingestion: the legacy JSON event batch (score-create events and others);
  207 with one success per event, as Langfuse answers.
- GET /api/public/v2/prompts/{name}?label=...|version=...: a stored prompt version, or 404.
- POST /api/public/v2/prompts: stores a new version (next number), moves its labels to it.
- POST /api/public/v2/datasets (upsert by name), GET /api/public/v2/datasets/{name},
  POST /api/public/dataset-items (upsert by id), GET /api/public/dataset-items?datasetName=...
  (paged), GET /api/public/projects: what datasets and experiments (`run_experiment`) use.
- Reading back (`langfuse.api`, cursor-paged): GET /api/public/v3/scores
  (the scores accepted, by id, last write wins; ?name=), GET /api/public/v2/observations (the
  spans accepted, with their trace's tags; ?name=&userId=&traceId=&type=, and by start time
  and root: ?fromStartTime=&toStartTime=&isRootObservation=) and
  GET /api/public/experiments (the experiments the spans name, with metadata and run scores).
- DELETE /api/public/traces/{id} and DELETE /api/public/traces {"traceIds": [...]}: the traces
  are gone from the observations listed (the spans stay in the record, `deleted_traces()`).

Every request is recorded (method, path, query, headers, raw body). Requests without Basic
authorization get a 401, like Langfuse. With `hang` set, requests are recorded and then never
answered until `release()` or `stop()` (Langfuse stuck); after `refuse()` nothing listens on
the port (connection refused, Langfuse down) until `restore()` listens on it again.

PYTEST_DONT_REWRITE: test modules import this plugin before pytest_plugins registers it, which
would make pytest warn that it cannot rewrite it; it has no assertions to rewrite.
"""

import gzip
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
from langfuse import Langfuse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

logger = logging.getLogger(__name__)

OTEL_PATH = "/api/public/otel/v1/traces"
SCORES_PATH = "/api/public/scores"
INGESTION_PATH = "/api/public/ingestion"
PROMPTS_PATH = "/api/public/v2/prompts"
DATASETS_PATH = "/api/public/v2/datasets"
DATASET_ITEMS_PATH = "/api/public/dataset-items"
PROJECTS_PATH = "/api/public/projects"
SCORES_V3_PATH = "/api/public/v3/scores"
OBSERVATIONS_PATH = "/api/public/v2/observations"
EXPERIMENTS_PATH = "/api/public/experiments"
TRACES_PATH = "/api/public/traces"
PROJECT_ID = "project-test"
SECRET_KEY = "sk-lf-test-secret"


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the receiver saw it; header names are lower-case, body is raw bytes."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def content(self) -> bytes:
        """The body, gunzipped when it was sent with Content-Encoding: gzip."""
        if self.headers.get("content-encoding") == "gzip":
            return gzip.decompress(self.body)
        return self.body

    @property
    def authorized(self) -> bool:
        """Whether it carried Basic credentials (the receiver answers 401 otherwise)."""
        return self.headers.get("authorization", "").startswith("Basic ")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.content or b"null")


@dataclass(frozen=True, slots=True)
class ExportedSpan:
    """A span decoded from an OTLP export; ids in lower-case hex, attributes as Python values."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    scope: str
    attributes: dict[str, Any]
    start_time_ns: int = 0


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(v) for v in value.array_value.values)
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def decode_otlp(data: bytes) -> list[ExportedSpan]:
    """The spans of an OTLP ExportTraceServiceRequest (protobuf, uncompressed)."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(data)
    spans = []
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attributes = {kv.key: _value(kv.value) for kv in span.attributes}
                spans.append(
                    ExportedSpan(
                        span.name,
                        span.trace_id.hex(),
                        span.span_id.hex(),
                        span.parent_span_id.hex(),
                        scope_spans.scope.name,
                        attributes,
                        span.start_time_unix_nano,
                    )
                )
    return spans


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _iso_ns(nanoseconds: int) -> str:
    when = datetime.fromtimestamp(nanoseconds / 1e9, UTC) if nanoseconds else datetime.now(UTC)
    return when.isoformat().replace("+00:00", "Z")


def _by_start(rows: list[dict[str, Any]], query: dict[str, str]) -> list[dict[str, Any]]:
    """Observations filtered by fromStartTime, toStartTime (ISO) and isRootObservation."""

    def parse(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    if "fromStartTime" in query:
        rows = [r for r in rows if parse(r["startTime"]) >= parse(query["fromStartTime"])]
    if "toStartTime" in query:
        rows = [r for r in rows if parse(r["startTime"]) < parse(query["toStartTime"])]
    if "isRootObservation" in query:
        root = query["isRootObservation"] == "true"
        rows = [r for r in rows if r["isRootObservation"] == root]
    return rows


class FakeLangfuse:
    """The receiver, its prompt versions and its record; a context manager or start()/stop()."""

    def __init__(self, *, hang: bool = False) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        # name -> versions in order (version n at index n - 1), as Prompt_Chat/Prompt_Text JSON.
        self._prompts: dict[str, list[dict[str, Any]]] = {}
        # Datasets by name, and their items by id (as the API returns them).
        self._datasets: dict[str, dict[str, Any]] = {}
        self._dataset_items: dict[str, dict[str, Any]] = {}
        # Traces deleted through DELETE /api/public/traces[/{id}]: no longer listed.
        self._deleted_traces: set[str] = set()
        self._answer = threading.Event()
        self.hang = hang
        self._httpd = self._listen(0)
        self._port = int(self._httpd.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def hang(self) -> bool:
        """Whether new requests are recorded but never answered."""
        return not self._answer.is_set()

    @hang.setter
    def hang(self, value: bool) -> None:
        if value:
            self._answer.clear()
        else:
            self._answer.set()

    def release(self) -> None:
        """Stop hanging: requests waiting now are dropped (connection closed, no answer) and
        new ones are answered normally."""
        self.hang = False

    @property
    def port(self) -> int:
        """The port it listens on."""
        return self._port

    @property
    def base_url(self) -> str:
        """What the Langfuse SDK takes as base_url."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request so far (a copy), in arrival order."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        """The requests to a path (exact, or a prefix when it ends with "/")."""
        return [
            r
            for r in self.requests
            if (r.path == path or (path.endswith("/") and r.path.startswith(path)))
            and (method is None or r.method == method)
        ]

    def spans(self) -> list[ExportedSpan]:
        """Every span accepted over OTLP so far."""
        exports = [r for r in self.requests_to(OTEL_PATH, "POST") if r.authorized]
        return [span for request in exports for span in decode_otlp(request.content)]

    def scores(self) -> list[dict[str, Any]]:
        """Every score accepted: POST /api/public/scores items and score-create event bodies."""
        scores: list[dict[str, Any]] = []
        for request in self.requests_to(SCORES_PATH, "POST"):
            body = request.json()
            if request.authorized and isinstance(body, list):
                scores.extend(body)
        for request in self.requests_to(INGESTION_PATH, "POST"):
            if not request.authorized:
                continue
            for event in request.json().get("batch", []):
                if event.get("type") == "score-create":
                    scores.append(event["body"])
        return scores

    def scores_v3(self) -> list[dict[str, Any]]:
        """The accepted scores as GET /api/public/v3/scores returns them (one per id)."""
        by_id: dict[str, dict[str, Any]] = {}
        for body in self.scores():
            score_id = body.get("id") or uuid.uuid4().hex
            if body.get("datasetRunId"):
                subject = {"kind": "experiment", "id": body["datasetRunId"]}
            else:
                subject = {"kind": "trace", "id": body.get("traceId")}
            kind = body.get("dataType") or "NUMERIC"
            value = bool(body["value"]) if kind == "BOOLEAN" else body["value"]
            by_id[score_id] = {
                "id": score_id, "projectId": PROJECT_ID, "name": body["name"], "value": value,
                "dataType": kind, "source": "API", "timestamp": _now(),
                "environment": body.get("environment") or "default", "createdAt": _now(),
                "updatedAt": _now(), "comment": body.get("comment"), "subject": subject,
            }  # fmt: skip
        return list(by_id.values())

    def observations(self) -> list[dict[str, Any]]:
        """The accepted spans as GET /api/public/v2/observations returns them (the trace's
        tags, set on any of its spans, on each)."""
        deleted = self.deleted_traces()
        spans = [span for span in self.spans() if span.trace_id not in deleted]
        tags: dict[str, list[str]] = {}
        for span in spans:
            tags.setdefault(span.trace_id, [])
            for tag in span.attributes.get("langfuse.trace.tags") or ():
                if tag not in tags[span.trace_id]:
                    tags[span.trace_id].append(tag)
        return [
            {
                "id": span.span_id,
                "traceId": span.trace_id,
                "startTime": _iso_ns(span.start_time_ns),
                "projectId": PROJECT_ID,
                "name": span.name,
                "type": str(span.attributes.get("langfuse.observation.type", "span")).upper(),
                "parentObservationId": span.parent_span_id or None,
                # Langfuse's logical roots: no parent, or marked so by the SDK (a span started
                # in a given trace context has a remote parent).
                "isRootObservation": not span.parent_span_id
                or bool(span.attributes.get("langfuse.internal.as_root"))
                or bool(span.attributes.get("langfuse.internal.is_app_root")),
                "userId": span.attributes.get("user.id"),
                "tags": tags[span.trace_id],
            }
            for span in spans
        ]

    def experiments(self) -> list[dict[str, Any]]:
        """The experiments the accepted spans name, as GET /api/public/experiments returns
        them with fields=core,metadata,scores."""
        found: dict[str, dict[str, Any]] = {}
        items: dict[str, set[str]] = {}
        for span in self.spans():
            experiment_id = span.attributes.get("langfuse.experiment.id")
            if not experiment_id:
                continue
            metadata = span.attributes.get("langfuse.experiment.metadata")
            found.setdefault(experiment_id, {
                "id": experiment_id, "name": span.attributes.get("langfuse.experiment.name"),
                "startTime": _now(), "endTime": _now(),
                "datasetId": span.attributes.get("langfuse.experiment.dataset.id"),
                "metadata": json.loads(metadata) if metadata else None,
            })  # fmt: skip
            items.setdefault(experiment_id, set()).add(
                str(span.attributes.get("langfuse.experiment.item.id"))
            )
        scores = [s for s in self.scores_v3() if s["subject"]["kind"] == "experiment"]
        for experiment_id, experiment in found.items():
            experiment["itemCount"] = len(items[experiment_id])
            experiment["scores"] = [s for s in scores if s["subject"]["id"] == experiment_id]
        return list(found.values())

    def deleted_traces(self) -> set[str]:
        """Ids of the traces deleted through the API."""
        with self._lock:
            return set(self._deleted_traces)

    def delete_traces(self, trace_ids: list[str]) -> None:
        """DELETE /api/public/traces[/{id}]: the traces' observations are no longer listed."""
        with self._lock:
            self._deleted_traces.update(trace_ids)

    def datasets(self) -> dict[str, dict[str, Any]]:
        """The stored datasets by name (copies)."""
        with self._lock:
            copied: dict[str, dict[str, Any]] = json.loads(json.dumps(self._datasets))
        return copied

    def dataset_items(self, dataset: str) -> list[dict[str, Any]]:
        """The stored items of a dataset (copies), in the order they were first created."""
        with self._lock:
            items = [i for i in self._dataset_items.values() if i["datasetName"] == dataset]
            copied: list[dict[str, Any]] = json.loads(json.dumps(items))
        return copied

    def upsert_dataset(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /api/public/v2/datasets: create, or return the dataset of that name."""
        with self._lock:
            dataset = self._datasets.setdefault(
                body["name"],
                {
                    "id": f"dataset-{uuid.uuid4().hex[:8]}",
                    "name": body["name"],
                    "description": body.get("description"),
                    "metadata": body.get("metadata"),
                    "projectId": PROJECT_ID,
                    "createdAt": _now(),
                    "updatedAt": _now(),
                },
            )
            return dict(dataset)

    def upsert_dataset_item(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """POST /api/public/dataset-items: upsert by id; None when the dataset is unknown."""
        with self._lock:
            dataset = self._datasets.get(body["datasetName"])
            if dataset is None:
                return None
            item_id = body.get("id") or uuid.uuid4().hex
            old = self._dataset_items.get(item_id, {})
            item = {
                "id": item_id,
                "status": body.get("status") or old.get("status") or "ACTIVE",
                "input": body.get("input"),
                "expectedOutput": body.get("expectedOutput"),
                "metadata": body.get("metadata"),
                "sourceTraceId": body.get("sourceTraceId"),
                "sourceObservationId": body.get("sourceObservationId"),
                "datasetId": dataset["id"],
                "datasetName": dataset["name"],
                "createdAt": old.get("createdAt") or _now(),
                "updatedAt": _now(),
                "mediaReferences": [],
            }
            self._dataset_items[item_id] = item
            return dict(item)

    def prompt_versions(self, name: str) -> list[dict[str, Any]]:
        """The stored versions of a prompt (copies), oldest first."""
        with self._lock:
            copied: list[dict[str, Any]] = json.loads(json.dumps(self._prompts.get(name, [])))
        return copied

    def add_prompt(
        self,
        name: str,
        prompt: list[dict[str, str]] | str,
        *,
        config: dict[str, Any] | None = None,
        labels: list[str] | tuple[str, ...] = ("production",),
        type: str | None = None,
        tags: list[str] | None = None,
        commit_message: str | None = None,
    ) -> dict[str, Any]:
        """Store a new version as POST /api/public/v2/prompts does; returns it."""
        kind = type or ("text" if isinstance(prompt, str) else "chat")
        wanted = [*dict.fromkeys([*labels, "latest"])]
        with self._lock:
            versions = self._prompts.setdefault(name, [])
            for older in versions:
                older["labels"] = [label for label in older["labels"] if label not in wanted]
            version = {
                "type": kind,
                "name": name,
                "version": len(versions) + 1,
                "prompt": prompt,
                "config": config or {},
                "labels": wanted,
                "tags": list(tags or (versions[-1]["tags"] if versions else [])),
                "commitMessage": commit_message,
                "resolutionGraph": None,
                "createdAt": _now(),
                "updatedAt": _now(),
            }
            versions.append(version)
            created: dict[str, Any] = json.loads(json.dumps(version))
        return created

    def find_prompt(
        self, name: str, *, label: str | None = None, version: int | None = None
    ) -> dict[str, Any] | None:
        """The version GET would return: by version, else by label (default "production")."""
        with self._lock:
            versions = self._prompts.get(name, [])
            if version is not None:
                found = versions[version - 1] if 0 < version <= len(versions) else None
            else:
                wanted = label or "production"
                found = next((v for v in versions if wanted in v["labels"]), None)
            return None if found is None else json.loads(json.dumps(found))

    def _listen(self, port: int) -> "_HTTPServer":
        httpd = _HTTPServer(("127.0.0.1", port), _Handler)
        httpd.fake = self
        return httpd

    def start(self) -> "FakeLangfuse":
        """Serve in a daemon thread."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def refuse(self) -> None:
        """Stop listening: new connections to the port are refused (requests already being
        handled still finish)."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def restore(self) -> None:
        """Listen on the same port again after refuse()."""
        if self._thread is None:
            self._httpd = self._listen(self._port)
            self.start()

    def outage(self, kind: Literal["hang", "refused"]) -> None:
        """Make Langfuse unreachable: requests that are never answered, or refused connections."""
        if kind == "hang":
            self.hang = True
        else:
            self.refuse()

    def recover(self) -> None:
        """End an outage: listen and answer again, on the same port."""
        self.release()
        self.restore()

    def stop(self) -> None:
        """Stop serving; hanging requests are dropped, and the port is closed (refused)."""
        self._answer.set()
        self.refuse()

    def __enter__(self) -> "FakeLangfuse":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _wait_if_hanging(self) -> bool:
        """Block while hanging; True when the request must then be dropped unanswered."""
        if self._answer.is_set():
            return False
        self._answer.wait()
        return True


class _HTTPServer(ThreadingHTTPServer):
    # Exporters, score consumers and prompt fetches may all connect at once.
    request_queue_size = 128
    fake: FakeLangfuse


Route = Callable[["_Handler", RecordedRequest], None]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without this, Nagle and delayed ACKs add ~40 ms.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug(format, *args)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        fake = self.server.fake
        url = urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = RecordedRequest(method, url.path, dict(parse_qsl(url.query)), headers, body)
        fake._record(request)
        if fake._wait_if_hanging():
            self.close_connection = True
            return
        if not request.authorized:
            self._send_json(401, {"message": "Unauthorized"})
            return
        try:
            self._route(request)
        except Exception as exc:  # a malformed body: tell the client, keep serving
            logger.exception("fake Langfuse: %s %s failed", method, url.path)
            self._send_json(400, {"message": f"fake Langfuse: {exc}"})

    def _route(self, request: RecordedRequest) -> None:
        path, method = request.path, request.method
        if method == "POST" and path == OTEL_PATH:
            decode_otlp(request.content)  # reject what Langfuse could not parse
            data = ExportTraceServiceResponse().SerializeToString()
            self._send(200, "application/x-protobuf", data)
        elif method == "POST" and path == SCORES_PATH:
            body = request.json()
            if not isinstance(body, list):
                raise ValueError("POST /api/public/scores takes a JSON list")
            self._send_json(202, {"message": "Accepted"})
        elif method == "POST" and path == INGESTION_PATH:
            batch = request.json().get("batch", [])
            successes = [{"id": event.get("id"), "status": 201} for event in batch]
            self._send_json(207, {"successes": successes, "errors": []})
        elif path.startswith((DATASETS_PATH, DATASET_ITEMS_PATH, PROJECTS_PATH)):
            self._datasets_route(request)
        elif method == "GET" and path in (SCORES_V3_PATH, OBSERVATIONS_PATH, EXPERIMENTS_PATH):
            self._read_route(request)
        elif method == "DELETE" and path.startswith(TRACES_PATH):
            one = unquote(path[len(TRACES_PATH) + 1 :])
            self.server.fake.delete_traces([one] if one else request.json()["traceIds"])
            self._send_json(200, {"message": "Traces deleted"})
        elif method == "GET" and path.startswith(PROMPTS_PATH + "/"):
            self._get_prompt(request)
        elif method == "POST" and path == PROMPTS_PATH:
            body = request.json()
            created = self.server.fake.add_prompt(
                body["name"],
                body["prompt"],
                config=body.get("config"),
                labels=body.get("labels") or [],
                type=body.get("type"),
                tags=body.get("tags"),
                commit_message=body.get("commitMessage"),
            )
            self._send_json(201, created)
        else:
            self._send_json(404, {"message": f"no route {method} {path}"})

    def _datasets_route(self, request: RecordedRequest) -> None:
        fake, path, method = self.server.fake, request.path, request.method
        if method == "GET" and path == PROJECTS_PATH:
            organization = {"id": "org-test", "name": "test"}
            project = {"id": PROJECT_ID, "name": "test", "organization": organization}
            self._send_json(200, {"data": [project | {"metadata": {}}]})
        elif method == "POST" and path == DATASETS_PATH:
            self._send_json(200, fake.upsert_dataset(request.json()))
        elif method == "GET" and path.startswith(DATASETS_PATH + "/"):
            found = fake.datasets().get(unquote(path[len(DATASETS_PATH) + 1 :]))
            self._send_json(*((200, found) if found else (404, {"message": "Dataset not found"})))
        elif method == "POST" and path == DATASET_ITEMS_PATH:
            item = fake.upsert_dataset_item(request.json())
            self._send_json(*((200, item) if item else (404, {"message": "Dataset not found"})))
        elif method == "GET" and path == DATASET_ITEMS_PATH:
            items = fake.dataset_items(request.query.get("datasetName", ""))
            page, limit = int(request.query.get("page", 1)), int(request.query.get("limit", 50))
            pages = max(1, -(-len(items) // limit))
            meta = {"page": page, "limit": limit, "totalItems": len(items), "totalPages": pages}
            data = items[(page - 1) * limit : page * limit]
            self._send_json(200, {"data": data, "meta": meta})
        else:
            self._send_json(404, {"message": f"no route {method} {path}"})

    def _read_route(self, request: RecordedRequest) -> None:
        """The cursor-paged lists, filtered by the query's fields (the cursor is an offset)."""
        fake, query = self.server.fake, request.query
        if request.path == SCORES_V3_PATH:
            rows, filters = fake.scores_v3(), {"name": "name"}
        elif request.path == OBSERVATIONS_PATH:
            rows = fake.observations()
            filters = {"name": "name", "userId": "userId", "traceId": "traceId", "type": "type"}
            rows = _by_start(rows, query)
        else:
            rows, filters = fake.experiments(), {"name": "name", "id": "id"}
        for param, key in filters.items():
            if param in query:
                rows = [r for r in rows if str(r.get(key)) in query[param].split(",")]
        start, limit = int(query.get("cursor") or 0), int(query.get("limit") or 50)
        more = start + limit < len(rows)
        meta = {"limit": limit} | ({"cursor": str(start + limit)} if more else {})
        self._send_json(200, {"data": rows[start : start + limit], "meta": meta})

    def _get_prompt(self, request: RecordedRequest) -> None:
        name = unquote(request.path[len(PROMPTS_PATH) + 1 :])
        version = request.query.get("version")
        found = self.server.fake.find_prompt(
            name,
            label=request.query.get("label"),
            version=int(version) if version else None,
        )
        if found is None:
            self._send_json(404, {"error": "LangfuseNotFoundError", "message": "Prompt not found"})
        else:
            self._send_json(200, found)

    def _send_json(self, status: int, body: Any) -> None:
        self._send(status, "application/json", json.dumps(body).encode())

    def _send(self, status: int, content_type: str, data: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up first (its timeout): there is nobody to tell.
            self.close_connection = True


def unique_public_key() -> str:
    """A public key no other client of this process uses (the SDK keeps one set of background
    workers per public key, so a shared key would share exporters between tests)."""
    return f"pk-lf-test-{uuid.uuid4().hex[:16]}"


LangfuseFactory = Callable[..., Langfuse]


@pytest.fixture
def langfuse_server() -> Iterator[FakeLangfuse]:
    """A started FakeLangfuse, stopped after the test."""
    with FakeLangfuse() as server:
        yield server


@pytest.fixture
def make_langfuse(
    langfuse_server: FakeLangfuse, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LangfuseFactory]:
    """make(base_url=..., span_exporter=..., **kwargs): a real Langfuse client with a unique
    public key, its own TracerProvider (nothing global) and a one-second timeout, talking to
    the receiver unless another base_url is given. Shut down after the test without waiting
    more than 1.5 s, whatever state the receiver is in."""
    for name in list(os.environ):
        if name.startswith(("LANGFUSE_", "OTEL_")):
            monkeypatch.delenv(name)
    made: list[tuple[Langfuse, TracerProvider]] = []

    def make(
        base_url: str | None = None, span_exporter: SpanExporter | None = None, **kwargs: Any
    ) -> Langfuse:
        provider = TracerProvider()
        options: dict[str, Any] = {"timeout": 1, "flush_interval": 0.1} | kwargs
        client = Langfuse(
            public_key=unique_public_key(),
            secret_key=SECRET_KEY,
            base_url=base_url or langfuse_server.base_url,
            span_exporter=span_exporter,
            tracer_provider=provider,
            **options,
        )
        made.append((client, provider))
        return client

    yield make

    def close(client: Langfuse, provider: TracerProvider) -> None:
        with suppress(Exception):
            client.shutdown()
            provider.shutdown()

    closers = [threading.Thread(target=close, args=pair, daemon=True) for pair in made]
    for thread in closers:
        thread.start()
    deadline = time.monotonic() + 1.5
    for thread in closers:
        # Against an unreachable receiver a shutdown may still be retrying: leave it behind.
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
