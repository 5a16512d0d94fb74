"""A fake Confluence (Cloud or Data Center) over real HTTP: the REST v1 calls the source uses,
answered in the documented JSON shapes, with paging, versions, attachments, restrictions,
authentication and injected faults.

Cloud lives under /wiki, takes basic auth (e-mail and API token), names users by accountId and
pages with an opaque cursor; Data Center lives under a context path (/confluence), takes a
personal access token (Bearer), names users by username and pages with start/limit.
"""

import base64
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import pytest

from tests.fakes.threaded import ServerThread

logger = logging.getLogger(__name__)

EMAIL, API_TOKEN, PAT = "bot@example.com", "cloud-token-123", "dc-pat-456"


@dataclass(slots=True)
class FakeAttachment:
    """A file attached to a page."""

    id: str
    title: str
    data: bytes
    media_type: str
    version: int = 1


@dataclass(slots=True)
class FakePage:
    """A page in a space."""

    id: str
    space: str
    title: str
    body: str
    parent: str | None = None
    version: int = 1
    users: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    attachments: list[FakeAttachment] = field(default_factory=list)


class FakeConfluence:
    """Spaces of pages served on 127.0.0.1 (a free port); edit them between listings."""

    def __init__(self, flavor: Literal["cloud", "datacenter"], max_limit: int = 2) -> None:
        self.flavor = flavor
        self.context = "/wiki" if flavor == "cloud" else "/confluence"
        # Results per page of a listing, whatever limit the client asks (forces paging).
        self.max_limit = max_limit
        self.spaces: set[str] = set()
        self.pages: dict[str, FakePage] = {}
        self.requests: list[str] = []
        self._faults: dict[str, int] = {}
        self._lock = threading.Lock()
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        self._serving = ServerThread(self._httpd)

    @property
    def base_url(self) -> str:
        """The site as an administrator would give it (Cloud: without /wiki)."""
        root = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        return root if self.flavor == "cloud" else root + self.context

    def page(self, space: str, page_id: str, title: str, body: str, **kwargs: Any) -> FakePage:
        """Create a page (version 1)."""
        with self._lock:
            self.spaces.add(space)
            self.pages[page_id] = FakePage(page_id, space, title, body, **kwargs)
            return self.pages[page_id]

    def edit(self, page_id: str, *, title: str | None = None, body: str | None = None) -> None:
        """Change a page: a new version."""
        with self._lock:
            page = self.pages[page_id]
            page.title = title if title is not None else page.title
            page.body = body if body is not None else page.body
            page.version += 1

    def remove(self, page_id: str) -> None:
        """Delete a page (it leaves the listing)."""
        with self._lock:
            del self.pages[page_id]

    def fail(self, fragment: str, status: int) -> None:
        """Answer status to every request whose path contains fragment ("" for all)."""
        with self._lock:
            self._faults[fragment] = status

    def clear_faults(self) -> None:
        """Answer normally again."""
        with self._lock:
            self._faults.clear()

    def count(self, fragment: str) -> int:
        """Requests whose path (with query) contains fragment."""
        with self._lock:
            return sum(1 for r in self.requests if fragment in r)

    def start(self) -> "FakeConfluence":
        """Serve in a daemon thread."""
        self._serving.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._serving.stop()

    # --- the API -------------------------------------------------------------------------

    def authorized(self, header: str | None) -> bool:
        if self.flavor == "cloud":
            expected = base64.b64encode(f"{EMAIL}:{API_TOKEN}".encode()).decode()
            return header == f"Basic {expected}"
        return header == f"Bearer {PAT}"

    def answer(self, target: str, authorization: str | None) -> tuple[int, str, bytes]:
        with self._lock:
            self.requests.append(target)
            fault = next((s for f, s in self._faults.items() if f in target), None)
        if fault is not None:
            return _json(fault, {"statusCode": fault, "message": "injected"})
        if not self.authorized(authorization):
            return _json(401, {"statusCode": 401, "message": "Unauthorized"})
        parts = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        path = parts.path.removeprefix(self.context)
        segments = [unquote(s) for s in path.split("/") if s]
        with self._lock:
            return self._route(segments, query)

    def _route(self, segments: list[str], query: dict[str, str]) -> tuple[int, str, bytes]:
        match segments:
            case ["rest", "api", "space", key] if key in self.spaces:
                return _json(200, {"id": abs(hash(key)) % 10**6, "key": key, "name": key})
            case ["rest", "api", "content"]:
                pages = [p for p in self.pages.values() if p.space == query.get("spaceKey")]
                expand = query.get("expand", "")
                return self._paged(["rest", "api", "content"], query,
                                   [self._content(p, expand) for p in pages])  # fmt: skip
            case ["rest", "api", "content", page_id] if page_id in self.pages:
                page = self._content(self.pages[page_id], query.get("expand", ""))
                page["body"] = {"storage": {"value": self.pages[page_id].body,
                                            "representation": "storage"}}  # fmt: skip
                return _json(200, page)
            case ["rest", "api", "content", page_id, "child", "attachment"] if (
                page_id in self.pages
            ):
                files = [self._attachment(self.pages[page_id], a)
                         for a in self.pages[page_id].attachments]  # fmt: skip
                return self._paged(segments, query, files)
            case ["download", "attachments", page_id, name] if page_id in self.pages:
                for attachment in self.pages[page_id].attachments:
                    if attachment.title == name:
                        return 200, attachment.media_type, attachment.data
        return _json(404, {"statusCode": 404, "message": "No content found"})

    def _paged(
        self, segments: list[str], query: dict[str, str], items: list[dict[str, Any]]
    ) -> tuple[int, str, bytes]:
        limit = min(int(query.get("limit", 25)), self.max_limit)
        if self.flavor == "cloud" and "cursor" in query:
            start = int(base64.b64decode(query["cursor"]).decode())
        else:
            start = int(query.get("start", 0))
        batch = items[start : start + limit]
        links: dict[str, str] = {"base": self.base_url_with_context(), "context": self.context}
        if start + limit < len(items):
            following = {k: v for k, v in query.items() if k not in ("start", "cursor")}
            if self.flavor == "cloud":
                following["cursor"] = base64.b64encode(str(start + limit).encode()).decode()
            else:
                following["start"] = str(start + limit)
            links["next"] = "/" + "/".join(segments) + "?" + urlencode(following)
        body = {"results": batch, "start": start, "limit": limit, "size": len(batch),
                "_links": links}  # fmt: skip
        return _json(200, body)

    def base_url_with_context(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{self.context}"

    def _content(self, page: FakePage, expand: str) -> dict[str, Any]:
        ancestors: list[dict[str, str]] = []
        parent = page.parent
        while parent is not None and parent in self.pages:
            ancestors.insert(0, {"id": parent, "type": "page", "title": self.pages[parent].title})
            parent = self.pages[parent].parent
        webui = (
            f"/spaces/{page.space}/pages/{page.id}/{quote(page.title)}"
            if self.flavor == "cloud"
            else f"/display/{page.space}/{quote(page.title)}"
        )
        content: dict[str, Any] = {
            "id": page.id,
            "type": "page",
            "status": "current",
            "title": page.title,
            "version": {
                "number": page.version,
                "when": "2024-05-01T10:00:00.000Z",
                "by": {"displayName": "Ann Author"},
            },
            "ancestors": ancestors,
            "_links": {
                "webui": webui,
                "self": f"{self.base_url_with_context()}/rest/api/content/{page.id}",
            },
        }
        if "restrictions.read.restrictions.user" in expand:
            key = "accountId" if self.flavor == "cloud" else "username"
            users = [{"type": "known", key: u, "displayName": u} for u in page.users]
            groups = [{"type": "group", "name": g} for g in page.groups]
            content["restrictions"] = {"read": {"operation": "read", "restrictions": {
                "user": {"results": users, "start": 0, "limit": 200, "size": len(users)},
                "group": {"results": groups, "start": 0, "limit": 200, "size": len(groups)},
            }}}  # fmt: skip
        return content

    def _attachment(self, page: FakePage, attachment: FakeAttachment) -> dict[str, Any]:
        download = (
            f"/download/attachments/{page.id}/{quote(attachment.title)}"
            f"?version={attachment.version}&api=v2"
        )
        return {
            "id": attachment.id,
            "type": "attachment",
            "title": attachment.title,
            "version": {"number": attachment.version},
            "extensions": {"mediaType": attachment.media_type, "fileSize": len(attachment.data)},
            "_links": {"download": download},
        }


def _json(status: int, body: dict[str, Any]) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(body).encode()


class _HTTPServer(ThreadingHTTPServer):
    request_queue_size = 64
    fake: FakeConfluence


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug(format, *args)

    def do_GET(self) -> None:
        status, content_type, body = self.server.fake.answer(
            self.path, self.headers.get("Authorization")
        )
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(params=["cloud", "datacenter"])
def fake_confluence(request: pytest.FixtureRequest) -> Iterator[FakeConfluence]:
    """A started FakeConfluence of each flavor, stopped after the test."""
    fake = FakeConfluence(request.param).start()
    yield fake
    fake.stop()
