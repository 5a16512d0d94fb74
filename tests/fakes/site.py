"""A small web site over real HTTP for the crawler: pages, robots.txt and a sitemap that a test
changes between crawls, ETag / Last-Modified validators answered with 304, and faults.

Every request is recorded with its conditional headers and the status it got, so a test can
count what was downloaded and what was answered 304.
"""

import hashlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.fakes.threaded import ServerThread

logger = logging.getLogger(__name__)

HTML = "text/html; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Hit:
    """One request: its path, its conditional headers, and the status it was answered."""

    path: str
    if_none_match: str | None
    if_modified_since: str | None
    status: int


@dataclass(frozen=True, slots=True)
class Resource:
    """What the site serves at a path."""

    body: bytes
    content_type: str = HTML
    # Which validators the response carries: an ETag, a Last-Modified date, both or none.
    etag: bool = True
    last_modified: bool = False
    modified_at: float = 1_700_000_000.0


class FakeSite:
    """A site on 127.0.0.1 (a free port): set pages, robots.txt and faults while it runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._resources: dict[str, Resource] = {}
        self._faults: dict[str, int] = {}
        self._redirects: dict[str, str] = {}
        self.hits: list[Hit] = []
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.site = self
        self._serving = ServerThread(self._httpd)

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT (no trailing slash)."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def page(self, path: str, title: str, body_html: str, **kwargs: Any) -> None:
        """Serve an HTML page with a title and body markup (head extras via head=...)."""
        head = kwargs.pop("head", "")
        markup = (
            f"<!doctype html><html><head><title>{title}</title>{head}</head>"
            f"<body>{body_html}</body></html>"
        )
        self.put(path, markup.encode(), **kwargs)

    def put(self, path: str, body: bytes, content_type: str = HTML, **kwargs: Any) -> None:
        """Serve bytes at a path (replacing what was there)."""
        with self._lock:
            self._resources[path] = Resource(body, content_type, **kwargs)

    def remove(self, path: str) -> None:
        """Answer 404 at a path from now on."""
        with self._lock:
            self._resources.pop(path, None)

    def fail(self, path: str, status: int) -> None:
        """Answer this status at a path (or "*" for every path) until cleared."""
        with self._lock:
            self._faults[path] = status

    def redirect(self, path: str, target: str) -> None:
        """Answer 301 to target at a path."""
        with self._lock:
            self._redirects[path] = target

    def clear_faults(self) -> None:
        """Serve normally again."""
        with self._lock:
            self._faults.clear()

    def sitemap(self, paths: list[str], at: str = "/sitemap.xml") -> None:
        """Serve a sitemap listing these paths as absolute URLs."""
        urls = "".join(f"<url><loc>{self.url}{p}</loc></url>" for p in paths)
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{urls}</urlset>'
        )
        self.put(at, xml.encode(), "application/xml")

    def statuses(self, path: str) -> list[int]:
        """The statuses a path was answered with, in order."""
        with self._lock:
            return [hit.status for hit in self.hits if hit.path == path]

    def count(self, status: int, since: int = 0) -> int:
        """Requests answered with status (from hit number `since` on)."""
        with self._lock:
            return sum(1 for hit in self.hits[since:] if hit.status == status)

    def start(self) -> "FakeSite":
        """Serve in a daemon thread."""
        self._serving.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port."""
        self._serving.stop()

    def _answer(
        self, path: str, if_none_match: str | None, if_modified_since: str | None
    ) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            fault = self._faults.get(path, self._faults.get("*"))
            resource = self._resources.get(path)
            target = self._redirects.get(path)
        if fault is not None:
            return fault, {"Content-Type": "text/plain"}, b"fault"
        if target is not None:
            return 301, {"Location": target}, b""
        if resource is None:
            return 404, {"Content-Type": "text/plain"}, b"not found"
        headers = {"Content-Type": resource.content_type}
        etag = '"' + hashlib.sha256(resource.body).hexdigest()[:16] + '"'
        modified = formatdate(resource.modified_at, usegmt=True)
        if resource.etag:
            headers["ETag"] = etag
        if resource.last_modified:
            headers["Last-Modified"] = modified
        if resource.etag and if_none_match == etag:
            return 304, headers, b""
        if resource.last_modified and not resource.etag and if_modified_since == modified:
            return 304, headers, b""
        return 200, headers, resource.body


class _HTTPServer(ThreadingHTTPServer):
    request_queue_size = 64
    site: FakeSite


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug(format, *args)

    def do_GET(self) -> None:
        site = self.server.site
        path = self.path.split("?", 1)[0]
        if_none_match = self.headers.get("If-None-Match")
        if_modified_since = self.headers.get("If-Modified-Since")
        status, headers, body = site._answer(path, if_none_match, if_modified_since)
        with site._lock:
            site.hits.append(Hit(self.path, if_none_match, if_modified_since, status))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if status != 304:
            self.wfile.write(body)


@pytest.fixture
def fake_site() -> Iterator[FakeSite]:
    """A started FakeSite, stopped after the test."""
    site = FakeSite().start()
    yield site
    site.stop()
