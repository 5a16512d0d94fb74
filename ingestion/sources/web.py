"""A web site as a source: its sitemap (or same-site links), robots.txt, a request rate,
canonical URLs as document ids, and conditional requests so unchanged pages are not fetched.

Pages are found from the sitemap when the site has one, else by following links from the
start URL. A crawl needs each page's links, but an unchanged page answers 304 without a body,
so the links of every page are kept in a small state (a JSON file beside the data when
state_path is given, else in memory for the source's lifetime) together with its validators.
A conditional request is sent only when the collection still holds the version the state
recorded (`known`), so a lost collection or a lost state costs downloads, never documents.
Bodies fetched while listing are spooled to a temporary folder for `read`.
"""

import asyncio
import builtins
import hashlib
import logging
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from urllib.robotparser import RobotFileParser

import httpx

from ingestion.sources.base import SourceDocument, SourceError
from ingestion.sources.web_pages import (
    PageLinks,
    Scope,
    clean,
    document_name,
    normalize,
    page_links,
    parse_sitemap,
    suffix_for,
    worth_fetching,
)
from ingestion.sources.web_state import CrawledPage, load_state, save_state

log = logging.getLogger(__name__)

DEFAULT_USER_AGENT = "kb-assistant-crawler/0.1"
_MAX_SITEMAPS = 50


class _Pacer:
    """At most one request start per interval, across the whole source."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self._lock:
            now = time.monotonic()
            if self._next > now:
                await asyncio.sleep(self._next - now)
            self._next = max(now, self._next) + self.interval


class _Fetched:
    """A response: status, final URL, headers, and the body when it was read."""

    def __init__(self, response: httpx.Response, body: bytes) -> None:
        self.status = response.status_code
        self.url = str(response.url)
        self.headers = response.headers
        self.body = body


class WebSource:
    """The pages (and linked PDF/DOCX files) of one site under a start URL."""

    def __init__(
        self,
        start_url: str,
        *,
        rate_per_s: float = 2.0,
        max_pages: int = 1000,
        user_agent: str = DEFAULT_USER_AGENT,
        timeout_s: float = 20.0,
        max_bytes: int = 50 * 1024 * 1024,
        state_path: Path | None = None,
    ) -> None:
        if not start_url.lower().startswith(("http://", "https://")):
            raise ValueError(f"not an http(s) URL: {start_url!r}")
        if rate_per_s <= 0 or max_pages < 1:
            raise ValueError("rate_per_s must be positive and max_pages at least 1")
        self.start_url = clean(start_url)
        self.scope = Scope.of(self.start_url)
        self.max_pages = max_pages
        self.user_agent = user_agent
        self.max_bytes = max_bytes
        self.state_path = state_path
        # Pages that failed or were cut off in the last listing, by URL, for the report.
        self.problems: list[str] = []
        # Requests answered 304 Not Modified in the last listing.
        self.not_modified = 0
        self._rate_interval = 1.0 / rate_per_s
        self._pacer = _Pacer(self._rate_interval)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=True,
            headers={"User-Agent": user_agent},
        )
        self._state = load_state(state_path, self.start_url)
        self._bodies: dict[str, Path] = {}
        self._fetch_urls: dict[str, str] = {}
        self._spool: Path | None = None

    @property
    def label(self) -> str:
        """The source as reports name it."""
        return f"web {self.scope.origin}{self.scope.prefix or '/'}"

    async def list(self, known: Mapping[str, str]) -> list[SourceDocument]:
        """Every page in scope now; unchanged ones are confirmed by a 304 and not downloaded."""
        self.problems = []
        self.not_modified = 0
        robots = await self._robots()
        if not robots.can_fetch(self.user_agent, self.start_url):
            raise SourceError(f"{self.label}: robots.txt disallows {self.start_url}")
        delay = robots.crawl_delay(self.user_agent)
        self._pacer.interval = max(self._rate_interval, float(delay or 0))
        from_sitemap = await self._sitemap_pages(robots)
        queue = deque(from_sitemap or [self.start_url])
        seen = {normalize(url) for url in queue}
        pages: dict[str, CrawledPage] = {}
        documents: dict[str, SourceDocument] = {}
        while queue and len(documents) < self.max_pages:
            url = queue.popleft()
            if not robots.can_fetch(self.user_agent, url):
                continue
            page = await self._visit(url, known, required=not from_sitemap and not pages)
            if page is None:
                continue
            pages[url] = page
            if page.index and page.doc_id not in documents:
                documents[page.doc_id] = page.document()
            for link in page.links if from_sitemap is None else ():
                key = normalize(link)
                if key not in seen and self.scope.covers(link) and worth_fetching(link):
                    seen.add(key)
                    queue.append(link)
        if queue:
            self.problems.append(
                f"{self.label}: stopped at {self.max_pages} pages; {len(queue)} more not listed"
            )
        if not documents:
            raise SourceError(f"{self.label}: no documents found")
        self._state = pages
        if self.state_path is not None:
            await asyncio.to_thread(save_state, self.state_path, self.start_url, pages)
        return list(documents.values())

    async def read(self, document: SourceDocument) -> bytes:
        """The page's bytes: as fetched while listing, or fetched now."""
        spooled = self._bodies.get(document.doc_id)
        if spooled is not None:
            return await asyncio.to_thread(spooled.read_bytes)
        url = self._fetch_urls.get(document.doc_id) or document.url or document.doc_id
        try:
            fetched = await self._fetch(url, {})
        except SourceError as exc:
            raise SourceError(f"{document.doc_id}: {exc}") from None
        if fetched.status != 200:
            raise SourceError(f"{document.doc_id}: HTTP {fetched.status}")
        return fetched.body

    async def aclose(self) -> None:
        """Close connections and drop the spooled bodies."""
        await self._client.aclose()
        if self._spool is not None:
            await asyncio.to_thread(shutil.rmtree, self._spool, True)
            self._spool = None
        self._bodies.clear()

    async def _robots(self) -> RobotFileParser:
        url = f"{self.scope.origin}/robots.txt"
        robots = RobotFileParser(url)
        fetched = await self._fetch(url, {}, what="robots.txt")
        if fetched.status in (401, 403):
            raise SourceError(f"{self.label}: robots.txt answered HTTP {fetched.status}")
        if fetched.status >= 500:
            raise SourceError(f"{self.label}: robots.txt answered HTTP {fetched.status}")
        if fetched.status >= 400:
            robots.parse([])  # no robots.txt: everything is allowed
        else:
            robots.parse(fetched.body.decode("utf-8", "replace").splitlines())
        return robots

    async def _sitemap_pages(self, robots: RobotFileParser) -> builtins.list[str] | None:
        """Page URLs in scope from the sitemap(s); None when the site has no sitemap (or none
        of its URLs is in scope). A declared sitemap that fails fails the listing."""
        declared = list(robots.site_maps() or [])
        todo = deque(declared or [f"{self.scope.origin}/sitemap.xml"])
        found: dict[str, str] = {}
        fetched_count = 0
        while todo:
            url = todo.popleft()
            fetched_count += 1
            if fetched_count > _MAX_SITEMAPS:
                raise SourceError(f"{self.label}: more than {_MAX_SITEMAPS} sitemaps")
            fetched = await self._fetch(url, {}, what="sitemap")
            guessed = not declared and fetched_count == 1
            if guessed and fetched.status in (404, 410):
                return None
            if fetched.status != 200:
                raise SourceError(f"{self.label}: sitemap {url} answered HTTP {fetched.status}")
            if guessed and "html" in fetched.headers.get("content-type", ""):
                return None  # a site that answers every path with a page has no sitemap
            try:
                sitemap = parse_sitemap(fetched.body)
            except ValueError as exc:
                raise SourceError(f"{self.label}: sitemap {url}: {exc}") from None
            for page in sitemap.pages:
                if self.scope.covers(page):
                    found.setdefault(normalize(page), clean(page))
            todo.extend(sitemap.sitemaps)
        return list(found.values()) or None

    async def _visit(
        self, url: str, known: Mapping[str, str], *, required: bool
    ) -> CrawledPage | None:
        """Fetch one page (conditionally when the collection holds what the state recorded).
        None when it is gone, out of scope, not a document, or failed (then reported, and its
        last state kept so that the sync deletes nothing)."""
        old = self._state.get(url)
        headers: dict[str, str] = {}
        if old is not None and (not old.index or known.get(old.doc_id) == old.version):
            if old.etag:
                headers["If-None-Match"] = old.etag
            elif old.modified:
                headers["If-Modified-Since"] = old.modified
        try:
            fetched = await self._fetch(url, headers)
        except SourceError as exc:
            return self._failed(url, old, str(exc), required)
        if fetched.status == 304 and old is not None and headers:
            self.not_modified += 1
            return old
        if fetched.status in (404, 410) and not required:
            return None
        if fetched.status != 200:
            return self._failed(url, old, f"HTTP {fetched.status}", required)
        suffix = suffix_for(fetched.headers.get("content-type", ""), fetched.url)
        if not self.scope.covers(fetched.url) or suffix is None:
            if required:
                raise SourceError(f"{self.label}: {url} is not a page that can be read")
            return None
        return await self._page(fetched, suffix)

    async def _page(self, fetched: _Fetched, suffix: str) -> CrawledPage:
        body = fetched.body
        links = (
            page_links(body, fetched.url) if suffix == ".html" else PageLinks((), None, True, True)
        )
        canonical = links.canonical
        if canonical is None or not self.scope.covers(canonical):
            canonical = clean(fetched.url)
        doc_id = normalize(canonical)
        digest = hashlib.sha256(body).hexdigest()
        etag = fetched.headers.get("etag")
        modified = fetched.headers.get("last-modified")
        version = f"etag:{etag}" if etag else f"modified:{modified}" if modified else ""
        page = CrawledPage(
            doc_id=doc_id,
            name=document_name(canonical, suffix),
            version=version or f"sha256:{digest}",
            url=canonical,
            content_hash=digest,
            links=list(links.links) if links.follow else [],
            etag=etag,
            modified=modified,
            index=links.index,
        )
        if page.index:
            self._bodies[doc_id] = await asyncio.to_thread(self._spool_body, doc_id, body)
            self._fetch_urls[doc_id] = fetched.url
        return page

    def _failed(
        self, url: str, old: CrawledPage | None, reason: str, required: bool
    ) -> CrawledPage | None:
        if required:
            raise SourceError(f"{self.label}: {url}: {reason}")
        kept = " (the last synced version is kept)" if old is not None else ""
        self.problems.append(f"{url}: {reason}{kept}")
        log.warning("crawl %s: %s%s", url, reason, kept)
        return old

    async def _fetch(self, url: str, headers: Mapping[str, str], what: str = "") -> _Fetched:
        """GET with the rate limit and the size limit; SourceError when the site cannot be
        reached or the body is too large."""
        await self._pacer.wait()
        try:
            async with self._client.stream("GET", url, headers=dict(headers)) as response:
                body = bytearray()
                if response.status_code == 200:
                    async for piece in response.aiter_bytes():
                        body += piece
                        if len(body) > self.max_bytes:
                            limit = self.max_bytes / (1024 * 1024)
                            raise SourceError(f"{url}: over the {limit:.0f} MB limit")
                return _Fetched(response, bytes(body))
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            name = f"{what} " if what else ""
            reason = type(exc).__name__
            raise SourceError(
                f"{self.label}: {name}{url} could not be fetched ({reason})"
            ) from None

    def _spool_body(self, doc_id: str, body: bytes) -> Path:
        if self._spool is None:
            self._spool = Path(tempfile.mkdtemp(prefix="kb-crawl-"))
        path = self._spool / hashlib.sha256(doc_id.encode()).hexdigest()
        path.write_bytes(body)
        return path
