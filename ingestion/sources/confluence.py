"""Confluence spaces as a source: pages (storage format through the HTML reader) and their
attachments, incremental by version, with each page's read restrictions as its access.

Both flavors speak the REST API v1 content resource, which Cloud (under /wiki, basic auth with
an e-mail and an API token) and Data Center (under the context path, a personal access token)
document alike:

- GET {api}/space/{key}: the space exists and is visible;
- GET {api}/content?spaceKey=&type=page&status=current&expand=version,ancestors,
  restrictions.read.restrictions.user,restrictions.read.restrictions.group: the listing,
  paged by following `_links.next` (start/limit on Data Center, a cursor on Cloud);
- GET {api}/content/{id}?expand=body.storage,version: one page's body, read only when its
  version changed;
- GET {api}/content/{id}/child/attachment?expand=version: a page's attachments, downloaded
  from their `_links.download`.

A page's read restriction (users and groups) is its access; a page without one inherits the
nearest restricted ancestor's (Confluence applies every ancestor's restriction: only the
nearest is kept, a known simplification). The access is part of the version, so a change of
permissions alone rewrites the page's chunks.
"""

import builtins
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

import httpx

from ingestion.readers import is_supported
from ingestion.sources.base import SourceDocument, SourceError
from ingestion.sources.storage_html import storage_to_html

log = logging.getLogger(__name__)

Flavor = Literal["cloud", "datacenter"]
_PREFIX = "confluence:"
_LIST_EXPAND = (
    "version,ancestors,restrictions.read.restrictions.user,restrictions.read.restrictions.group"
)
_MAX_PAGES_OF_RESULTS = 10_000
_REASONS = {
    401: "unauthorized: check the credentials",
    403: "forbidden: the account may not read it",
    404: "not found",
}

Access = dict[str, list[str]]


class ConfluenceSource:
    """The current pages (and their attachments) of one or more Confluence spaces."""

    def __init__(
        self,
        base_url: str,
        space_keys: Sequence[str],
        *,
        flavor: Flavor,
        email: str | None = None,
        api_token: str | None = None,
        pat: str | None = None,
        attachments: bool = True,
        page_size: int = 50,
        timeout_s: float = 30.0,
    ) -> None:
        if not base_url.lower().startswith(("http://", "https://")):
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        if not space_keys:
            raise ValueError("at least one space key is needed")
        base = base_url.rstrip("/")
        headers = {"Accept": "application/json"}
        auth: httpx.Auth | None = None
        if flavor == "cloud":
            if not (email and api_token):
                raise ValueError("Confluence Cloud needs an e-mail and an API token")
            self.site = base if base.endswith("/wiki") else f"{base}/wiki"
            auth = httpx.BasicAuth(email, api_token)
        elif flavor == "datacenter":
            if not pat:
                raise ValueError("Confluence Data Center needs a personal access token")
            self.site = base
            headers["Authorization"] = f"Bearer {pat}"
        else:
            raise ValueError(f"unknown Confluence flavor {flavor!r} (cloud or datacenter)")
        self.flavor = flavor
        self.space_keys = list(space_keys)
        self.attachments = attachments
        self.page_size = page_size
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s), headers=headers, auth=auth, follow_redirects=True
        )
        # Requests for page bodies and attachment files made by read(), for reports.
        self.bodies_read = 0

    @property
    def label(self) -> str:
        """The source as reports name it."""
        return f"confluence {self.site} {','.join(self.space_keys)}"

    async def list(self, known: Mapping[str, str]) -> list[SourceDocument]:
        """Every current page (and supported attachment) of the spaces, with its version."""
        documents: list[SourceDocument] = []
        for key in self.space_keys:
            await self._get_json(f"/rest/api/space/{key}", f"space {key}")
            pages = await self._all(
                "/rest/api/content",
                {"spaceKey": key, "type": "page", "status": "current", "expand": _LIST_EXPAND},
                f"space {key}",
            )
            if not pages:
                raise SourceError(f"{self.label}: space {key} lists no pages")
            restricted = {str(p["id"]): _read_restriction(p) for p in pages}
            for page in pages:
                access = _effective(page, restricted)
                documents.append(self._page_document(key, page, access))
                if self.attachments:
                    documents.extend(await self._attachment_documents(key, page, access))
        return documents

    async def read(self, document: SourceDocument) -> bytes:
        """A page as HTML (its storage format rendered), or an attachment's bytes."""
        content_id = document.doc_id.removeprefix(_PREFIX)
        what = f"{document.doc_id} ({document.title or document.name})"
        self.bodies_read += 1
        if content_id.startswith("att"):
            if not document.url:
                raise SourceError(f"{what}: no download link")
            response = await self._request(document.url, what)
            return response.content
        page = await self._get_json(
            f"/rest/api/content/{content_id}", what, {"expand": "body.storage,version"}
        )
        try:
            storage = str(page["body"]["storage"]["value"])
            title = str(page.get("title") or document.title or "")
        except (KeyError, TypeError):
            raise SourceError(f"{what}: the answer has no storage-format body") from None
        return storage_to_html(title, storage, document.url)

    async def aclose(self) -> None:
        """Close connections."""
        await self._client.aclose()

    def _page_document(self, space: str, page: Mapping[str, Any], access: Access) -> SourceDocument:
        version = page.get("version") or {}
        title = str(page.get("title") or page["id"])
        metadata = {"space": space, "confluence_version": str(version.get("number", ""))}
        if version.get("when"):
            metadata["modified"] = str(version["when"])
        author = (version.get("by") or {}).get("displayName")
        if author:
            metadata["author"] = str(author)
        return SourceDocument(
            doc_id=f"{_PREFIX}{page['id']}",
            name=_file_name(title) + ".html",
            version=_version(version.get("number"), access),
            url=self._absolute((page.get("_links") or {}).get("webui")),
            title=title,
            metadata=metadata,
            access=access,
        )

    async def _attachment_documents(
        self, space: str, page: Mapping[str, Any], access: Access
    ) -> builtins.list[SourceDocument]:
        found = await self._all(
            f"/rest/api/content/{page['id']}/child/attachment",
            {"expand": "version"},
            f"space {space}, page {page['id']} ({page.get('title', '')}) attachments",
        )
        documents = []
        for attachment in found:
            name = str(attachment.get("title") or "")
            download = (attachment.get("_links") or {}).get("download")
            if not is_supported(name) or not download:
                continue
            number = (attachment.get("version") or {}).get("number")
            documents.append(
                SourceDocument(
                    doc_id=f"{_PREFIX}{attachment['id']}",
                    name=name,
                    version=_version(number, access),
                    url=self._absolute(download),
                    title=name,
                    metadata={"space": space, "page": str(page.get("title") or page["id"])},
                    access=access,
                )
            )
        return documents

    async def _all(
        self, path: str, params: Mapping[str, str], what: str
    ) -> builtins.list[dict[str, Any]]:
        """Every result of a paged listing, following `_links.next`."""
        query = {**params, "limit": str(self.page_size)}
        url: str | None = f"{self.site}{path}?{urlencode(query)}"
        results: builtins.list[dict[str, Any]] = []
        for _ in range(_MAX_PAGES_OF_RESULTS):
            if url is None:
                return results
            body = await self._json(url, what)
            batch = body.get("results")
            if not isinstance(batch, list):
                raise SourceError(f"{self.label}: {what}: the answer has no results")
            results.extend(r for r in batch if isinstance(r, dict) and "id" in r)
            url = self._absolute((body.get("_links") or {}).get("next"))
        raise SourceError(f"{self.label}: {what}: too many pages of results")

    async def _get_json(
        self, path: str, what: str, params: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        query = f"?{urlencode(params)}" if params else ""
        return await self._json(f"{self.site}{path}{query}", what)

    async def _json(self, url: str, what: str) -> dict[str, Any]:
        response = await self._request(url, what)
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SourceError(f"{self.label}: {what}: the answer is not JSON") from None
        if not isinstance(body, dict):
            raise SourceError(f"{self.label}: {what}: unexpected answer")
        return body

    async def _request(self, url: str, what: str) -> httpx.Response:
        try:
            response = await self._client.get(url)
        except httpx.HTTPError as exc:
            reason = f"could not be reached ({type(exc).__name__})"
            raise SourceError(f"{self.label}: {what}: {reason}") from None
        if response.status_code != 200:
            code = response.status_code
            reason = _REASONS.get(code, "server error" if code >= 500 else "refused")
            raise SourceError(f"{self.label}: {what}: HTTP {code} ({reason})")
        return response

    def _absolute(self, link: object) -> str | None:
        """A link of the API (relative to the site, with or without its context path)."""
        if not isinstance(link, str) or not link:
            return None
        if link.startswith(("http://", "https://")):
            return link
        context = urlsplit(self.site).path
        if context and link.startswith(context + "/"):
            link = link[len(context) :]
        return f"{self.site}{link}"


def _read_restriction(content: Mapping[str, Any]) -> Access:
    """The users and groups a page's own read restriction names (empty: not restricted)."""
    read = ((content.get("restrictions") or {}).get("read") or {}).get("restrictions") or {}
    users = [
        str(u.get("accountId") or u.get("username") or u.get("userKey"))
        for u in (read.get("user") or {}).get("results") or []
        if isinstance(u, dict) and (u.get("accountId") or u.get("username") or u.get("userKey"))
    ]
    groups = [
        str(g.get("name") or g.get("id"))
        for g in (read.get("group") or {}).get("results") or []
        if isinstance(g, dict) and (g.get("name") or g.get("id"))
    ]
    if not users and not groups:
        return {}
    return {"users": sorted(users), "groups": sorted(groups)}


def _effective(page: Mapping[str, Any], restricted: Mapping[str, Access]) -> Access:
    own = restricted.get(str(page["id"])) or {}
    if own:
        return own
    ancestors = [a for a in page.get("ancestors") or [] if isinstance(a, dict) and "id" in a]
    for ancestor in reversed(ancestors):  # nearest first
        inherited = restricted.get(str(ancestor["id"])) or _read_restriction(ancestor)
        if inherited:
            return inherited
    return {}


def _version(number: object, access: Access) -> str:
    version = str(number) if number is not None else "?"
    if access:
        digest = hashlib.sha256(json.dumps(access, sort_keys=True).encode()).hexdigest()
        version += f"+access:{digest[:12]}"
    return version


def _file_name(title: str) -> str:
    cleaned = "".join("-" if ch in '/\\:*?"<>|' or not ch.isprintable() else ch for ch in title)
    return cleaned.strip(" .")[:120] or "page"
