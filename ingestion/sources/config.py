"""Sources as the collections file declares them, and the sources built from them.

```yaml
collections:
  - name: handbook
    sources:
      - kind: folder
        path: /docs/handbook            # relative paths: from the collections file's folder
      - kind: web
        url: https://intranet.example.com/handbook/
        rate_per_s: 2                   # requests per second
        max_pages: 1000
      - kind: confluence
        url: https://example.atlassian.net
        flavor: cloud                   # or datacenter
        spaces: [HR, IT]
        email: kb-bot@example.com       # Cloud: the account the API token belongs to
        token_env: CONFLUENCE_TOKEN     # the variable holding the token, never the token
```

The bot reads the same file with its own, stricter model (app/bot/access.py), which uses
these classes for `sources:`; ingestion reads only the names, languages and sources, so it
needs nothing of the bot's.
"""

import hashlib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ingestion.sources.base import Source
from ingestion.sources.confluence import ConfluenceSource
from ingestion.sources.folder import FolderSource
from ingestion.sources.web import WebSource
from kb.errors import ConfigurationError

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class FolderSourceConfig(BaseModel):
    """Every file under a folder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["folder"]
    path: Path


class WebSourceConfig(BaseModel):
    """The pages of a site under a start URL (sitemap or same-site links, robots.txt)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["web"]
    url: str
    rate_per_s: float = Field(default=2.0, gt=0)
    max_pages: int = Field(default=1000, ge=1)


class ConfluenceSourceConfig(BaseModel):
    """Spaces of a Confluence site (Cloud or Data Center)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["confluence"]
    url: str
    flavor: Literal["cloud", "datacenter"]
    spaces: tuple[str, ...] = Field(min_length=1)
    # Cloud: the account's e-mail, with an API token; Data Center: a personal access token.
    email: str | None = None
    # The environment variable that holds the token: secrets are never written in the file.
    token_env: str
    attachments: bool = True

    @field_validator("token_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not _ENV_NAME.fullmatch(value):
            raise ValueError("token_env is the NAME of an environment variable, not the token")
        return value


SourceConfig = Annotated[
    FolderSourceConfig | WebSourceConfig | ConfluenceSourceConfig, Field(discriminator="kind")
]


class _Collection(BaseModel):
    # The bot's fields (readers, owners...) are its business; the bot checks them.
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    language: str = "en"
    sources: tuple[SourceConfig, ...] = ()


class _File(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    collections: tuple[_Collection, ...] = ()


@dataclass(frozen=True, slots=True)
class DeclaredSource:
    """One source of one collection, as declared."""

    collection: str
    language: str
    config: FolderSourceConfig | WebSourceConfig | ConfluenceSourceConfig


def load_sources(path: Path) -> list[DeclaredSource]:
    """Every source the collections file declares, in file order; ConfigurationError names the
    file and the problem. Relative folder paths are taken from the file's own folder."""
    try:
        text = path.read_text(encoding="utf-8")
        raw: Any = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
        parsed = _File.model_validate(raw or {})
    except OSError as exc:
        raise ConfigurationError(f"COLLECTIONS_FILE {path}: {exc.strerror}") from None
    except ValidationError as exc:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigurationError(f"COLLECTIONS_FILE {path}: {detail}") from None
    except (yaml.YAMLError, tomllib.TOMLDecodeError, ValueError) as exc:
        raise ConfigurationError(f"COLLECTIONS_FILE {path}: {exc}") from None
    declared = []
    for collection in parsed.collections:
        for config in collection.sources:
            resolved = config
            if isinstance(config, FolderSourceConfig) and not config.path.is_absolute():
                resolved = config.model_copy(update={"path": path.parent / config.path})
            declared.append(DeclaredSource(collection.name, collection.language, resolved))
    return declared


def build_source(
    config: FolderSourceConfig | WebSourceConfig | ConfluenceSourceConfig,
    *,
    state_dir: Path,
    environ: Mapping[str, str] | None = None,
) -> Source:
    """The source a declaration describes; ConfigurationError when it cannot be built (a
    token variable that is not set, a bad URL). A web source keeps its crawl state (validators
    and links) under state_dir."""
    env = os.environ if environ is None else environ
    try:
        if isinstance(config, FolderSourceConfig):
            return FolderSource(config.path)
        if isinstance(config, WebSourceConfig):
            key = hashlib.sha256(config.url.encode()).hexdigest()[:16]
            return WebSource(
                config.url,
                rate_per_s=config.rate_per_s,
                max_pages=config.max_pages,
                state_path=state_dir / f"web-{key}.json",
            )
        token = env.get(config.token_env, "")
        if not token:
            raise ValueError(f"the variable {config.token_env} (token_env) is not set")
        cloud = config.flavor == "cloud"
        return ConfluenceSource(
            config.url,
            config.spaces,
            flavor=config.flavor,
            email=config.email,
            api_token=token if cloud else None,
            pat=None if cloud else token,
            attachments=config.attachments,
        )
    except ValueError as exc:
        raise ConfigurationError(f"{config.kind} source {_where(config)}: {exc}") from None


def _where(config: FolderSourceConfig | WebSourceConfig | ConfluenceSourceConfig) -> str:
    return str(config.path) if isinstance(config, FolderSourceConfig) else config.url
