"""The crawl state: each page's validators and links, kept between crawls (a JSON file)."""

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ingestion.sources.base import SourceDocument

log = logging.getLogger(__name__)

_FORMAT = 1


@dataclass(slots=True)
class CrawledPage:
    """A fetched page as the state keeps it, by the URL it was fetched from."""

    doc_id: str
    name: str
    version: str
    url: str
    content_hash: str
    links: list[str] = field(default_factory=list)
    etag: str | None = None
    modified: str | None = None
    index: bool = True

    def document(self) -> SourceDocument:
        """The page as the source lists it."""
        return SourceDocument(
            doc_id=self.doc_id,
            name=self.name,
            version=self.version,
            url=self.url,
            content_hash=self.content_hash,
        )


def load_state(path: Path | None, start_url: str) -> dict[str, CrawledPage]:
    """The pages of the last crawl from start_url; empty when there is none (or it is from
    another start URL, an older format, or unreadable: it only saves downloads)."""
    if path is None or not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("format") != _FORMAT or raw.get("start_url") != start_url:
            return {}
        return {url: CrawledPage(**entry) for url, entry in raw["pages"].items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("crawl state %s is unreadable, starting afresh: %s", path, exc)
        return {}


def save_state(path: Path, start_url: str, pages: dict[str, CrawledPage]) -> None:
    """Write the state whole (a crash leaves the previous one)."""
    data = {
        "format": _FORMAT,
        "start_url": start_url,
        "pages": {url: asdict(page) for url, page in pages.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data), encoding="utf-8")
    os.replace(partial, path)
