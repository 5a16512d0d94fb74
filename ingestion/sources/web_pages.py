"""What the crawler needs to know of URLs and pages: normal forms, scope, links, sitemaps."""

import gzip
import io
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import parse_qsl, urldefrag, urlencode, urljoin, urlsplit, urlunsplit

from lxml import etree, html  # type: ignore[import-untyped]

from ingestion.readers import is_supported

# Query parameters that only say where a visitor came from: not part of a page's identity.
_TRACKING = re.compile(
    r"^(utm_[a-z_]*|gclid|dclid|fbclid|yclid|msclkid|mc_cid|mc_eid|_ga|_gl|_hsenc|_hsmi|"
    r"ref_src|igshid|spm)$",
    re.IGNORECASE,
)
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Links to these are never documents: not worth a request to find out.
_NOT_DOCUMENTS = frozenset({
    ".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg", ".ico", ".bmp", ".tif", ".tiff", ".css",
    ".js", ".mjs", ".json", ".xml", ".rss", ".atom", ".zip", ".gz", ".tgz", ".bz2", ".xz", ".7z",
    ".rar", ".tar", ".mp3", ".mp4", ".m4a", ".avi", ".mov", ".mkv", ".webm", ".ogg", ".wav",
    ".woff", ".woff2", ".ttf", ".otf", ".eot", ".exe", ".dmg", ".msi", ".apk", ".iso", ".bin",
    ".csv", ".xls", ".xlsx", ".ppt", ".pptx", ".doc", ".odt", ".epub",
})  # fmt: skip
_CONTENT_TYPES = {
    "text/html": ".html",
    "application/xhtml+xml": ".html",
    "application/pdf": ".pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "text/markdown": ".md",
    "text/x-markdown": ".md",
    "text/plain": ".txt",
}
_MAX_SITEMAP_BYTES = 50 * 1024 * 1024  # the sitemap protocol's own limit, uncompressed
_SITEMAP_NS = "{http://www.sitemaps.org/schemas/sitemap/0.9}"


def clean(url: str) -> str:
    """The URL to fetch: no fragment, no tracking parameters (the rest as written)."""
    url, _ = urldefrag(url)
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in pairs if not _TRACKING.match(k)]
    query = urlencode(kept) if len(kept) != len(pairs) else parts.query
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", query, ""))


def normalize(url: str) -> str:
    """A page's identity: lower-case scheme and host, no default port, no fragment or tracking
    parameters, the rest of the query sorted, no trailing slash (except the root)."""
    parts = urlsplit(clean(url))
    scheme = parts.scheme.lower()
    path = parts.path or "/"
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/") or "/"
    query = urlencode(sorted(parse_qsl(parts.query, keep_blank_values=True)))
    return urlunsplit((scheme, origin_netloc(url), path, query, ""))


def origin_netloc(url: str) -> str:
    """Host and (non-default) port of a URL, lower-case, without user information."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is not None and port != _DEFAULT_PORTS.get(parts.scheme.lower()):
        return f"{host}:{port}"
    return host


@dataclass(frozen=True, slots=True)
class Scope:
    """The part of a site a crawl covers: one scheme and host, and a path prefix."""

    scheme: str
    netloc: str
    prefix: str

    @classmethod
    def of(cls, start_url: str) -> "Scope":
        """The scope of a start URL: its folder ("/docs/x.html" and "/docs/" cover "/docs/";
        "/docs" covers "/docs" and below)."""
        parts = urlsplit(start_url)
        path = parts.path or "/"
        if not path.endswith("/") and "." in PurePosixPath(path).name:
            path = path.rsplit("/", 1)[0] + "/"
        return cls(parts.scheme.lower(), origin_netloc(start_url), path.rstrip("/"))

    @property
    def origin(self) -> str:
        """scheme://host[:port]"""
        return f"{self.scheme}://{self.netloc}"

    def covers(self, url: str) -> bool:
        """True for an http(s) URL of the same site under the prefix."""
        parts = urlsplit(url)
        if parts.scheme.lower() != self.scheme or origin_netloc(url) != self.netloc:
            return False
        path = parts.path or "/"
        return not self.prefix or path == self.prefix or path.startswith(self.prefix + "/")


def suffix_for(content_type: str, url: str) -> str | None:
    """The reader suffix of a response by its media type (or the URL's, for a generic type);
    None when no reader reads it."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media in _CONTENT_TYPES:
        return _CONTENT_TYPES[media]
    name = PurePosixPath(urlsplit(url).path).name
    if media in ("", "application/octet-stream", "binary/octet-stream") and is_supported(name):
        return PurePosixPath(name).suffix.lower()
    return None


def document_name(url: str, suffix: str) -> str:
    """A file name for the reader: the URL's last segment with the right suffix."""
    stem = PurePosixPath(urlsplit(url).path).name or "index"
    return stem if stem.lower().endswith(suffix) else f"{stem}{suffix}"


def worth_fetching(url: str) -> bool:
    """False for links that are plainly not documents (images, scripts, archives)."""
    return PurePosixPath(urlsplit(url).path).suffix.lower() not in _NOT_DOCUMENTS


@dataclass(frozen=True, slots=True)
class PageLinks:
    """What the crawler takes from an HTML page."""

    links: tuple[str, ...]
    canonical: str | None
    index: bool  # False: <meta name="robots" content="noindex">
    follow: bool  # False: nofollow


def page_links(body: bytes, url: str) -> PageLinks:
    """Links (absolute, cleaned, in page order, each once), the canonical URL and the robots
    meta directives of an HTML page fetched from url."""
    try:
        root = html.document_fromstring(body)
    except (etree.ParserError, ValueError):
        return PageLinks((), None, index=True, follow=True)
    base = url
    for href in root.xpath("//base/@href")[:1]:
        base = urljoin(url, str(href).strip())
    robots = " ".join(
        str(c).lower()
        for c in root.xpath("//meta[translate(@name,'ROBTS','robts')='robots']/@content")
    )
    canonical = None
    for link in root.xpath("//link[@href]"):
        if "canonical" in str(link.get("rel", "")).lower().split():
            canonical = clean(urljoin(base, str(link.get("href")).strip()))
            break
    seen: dict[str, None] = {}
    for anchor in root.xpath("//a[@href]"):
        if "nofollow" in str(anchor.get("rel", "")).lower().split():
            continue
        target = urljoin(base, str(anchor.get("href")).strip())
        if urlsplit(target).scheme.lower() in ("http", "https"):
            seen.setdefault(clean(target), None)
    return PageLinks(
        tuple(seen), canonical, index="noindex" not in robots, follow="nofollow" not in robots
    )


@dataclass(frozen=True, slots=True)
class Sitemap:
    """One sitemap file: page URLs (a urlset) or further sitemaps (a sitemap index)."""

    pages: tuple[str, ...]
    sitemaps: tuple[str, ...]


def parse_sitemap(body: bytes) -> Sitemap:
    """Parse a sitemap or sitemap index (gzipped or not); ValueError when it is not one."""
    if body[:2] == b"\x1f\x8b":
        with gzip.GzipFile(fileobj=io.BytesIO(body)) as unzipped:
            body = unzipped.read(_MAX_SITEMAP_BYTES + 1)
        if len(body) > _MAX_SITEMAP_BYTES:
            raise ValueError("sitemap is over 50 MB uncompressed")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        root = etree.fromstring(body, parser)
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"sitemap is not valid XML: {exc}") from None
    tag = etree.QName(root).localname
    if tag not in ("urlset", "sitemapindex"):
        raise ValueError(f"not a sitemap (root element <{tag}>)")
    locs = [
        str(loc.text).strip()
        for loc in root.iter(f"{_SITEMAP_NS}loc", "loc")
        if loc.text and loc.text.strip()
    ]
    if tag == "urlset":
        return Sitemap(tuple(locs), ())
    return Sitemap((), tuple(locs))
