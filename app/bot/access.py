"""Who may read and who owns which collection: the collections file (YAML or TOML).

```yaml
collections:
  - name: handbook
    title: Employee handbook
    language: en            # BM25 stemmer of the collection (en, ru)
    readers: everyone       # or {users: [111, 222], groups: [-1001234567890]}
    owners: [111]           # may upload and delete documents
groups:                     # a group chat bound to one collection
  -1001234567890: handbook
```

In a group chat everyone in it sees the answer, so a group reads only what the group itself
is allowed (its id among the readers, or "everyone"), whoever asks. In a private chat the
user's own rights count. Owners read what they own; admins (BOT_ADMINS) read and own all.
"""

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kb.embedder import BM25_LANGUAGES
from kb.errors import ConfigurationError
from kb.store import validate_collection_name


class Readers(BaseModel):
    """Who may read a collection."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    everyone: bool = False
    users: frozenset[int] = frozenset()
    groups: frozenset[int] = frozenset()


class CollectionConfig(BaseModel):
    """One knowledge base as the collections file declares it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    title: str = ""
    language: str = "en"
    readers: Readers = Field(default_factory=Readers)
    owners: frozenset[int] = frozenset()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return validate_collection_name(value)

    @field_validator("language")
    @classmethod
    def _language(cls, value: str) -> str:
        if value not in BM25_LANGUAGES:
            raise ValueError(f"language must be one of {sorted(BM25_LANGUAGES)}")
        return value

    @field_validator("readers", mode="before")
    @classmethod
    def _everyone(cls, value: Any) -> Any:
        if value == "everyone":
            return {"everyone": True}
        if value in (None, "nobody"):
            return {}
        return value

    @property
    def label(self) -> str:
        """What users see: the title, or the name."""
        return self.title or self.name


class CollectionsFile(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    collections: tuple[CollectionConfig, ...] = ()
    groups: Mapping[int, str] = Field(default_factory=dict)


ChatKind = Literal["private", "group"]


@dataclass(frozen=True)
class Access:
    """Answers "may this chat read / may this user own" from the collections file."""

    collections: Mapping[str, CollectionConfig]
    group_bindings: Mapping[int, str]
    admins: frozenset[int]

    @classmethod
    def build(cls, config: CollectionsFile, admins: Iterable[int]) -> "Access":
        """Check the file's cross-references and index it."""
        by_name = {c.name: c for c in config.collections}
        if len(by_name) != len(config.collections):
            raise ConfigurationError("collections file: a collection name appears twice")
        for group, name in config.groups.items():
            if name not in by_name:
                raise ConfigurationError(
                    f"collections file: group {group} bound to unknown {name!r}"
                )
        return cls(by_name, dict(config.groups), frozenset(admins))

    def readable(self, user_id: int, chat_id: int, kind: ChatKind) -> list[CollectionConfig]:
        """The collections whose text may be shown in this chat, in file order."""
        if kind == "group":
            return [c for c in self.collections.values() if self._group_reads(c, chat_id)]
        return [c for c in self.collections.values() if self._user_reads(c, user_id)]

    def owned(self, user_id: int) -> list[CollectionConfig]:
        """The collections this user may upload to and delete from."""
        return [c for c in self.collections.values() if self.owns(user_id, c.name)]

    def owns(self, user_id: int, name: str) -> bool:
        """Whether the user owns the collection (admins own all)."""
        config = self.collections.get(name)
        return config is not None and (user_id in self.admins or user_id in config.owners)

    def bound_collection(self, chat_id: int) -> str | None:
        """The collection a group chat is bound to, if any."""
        return self.group_bindings.get(chat_id)

    def _user_reads(self, config: CollectionConfig, user_id: int) -> bool:
        readers = config.readers
        return (
            readers.everyone
            or user_id in readers.users
            or user_id in config.owners
            or user_id in self.admins
        )

    def _group_reads(self, config: CollectionConfig, chat_id: int) -> bool:
        return config.readers.everyone or chat_id in config.readers.groups


def load_collections(path: Path, admins: Iterable[int]) -> Access:
    """Read and check the collections file (.yaml/.yml or .toml); ConfigurationError names the
    file and the problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"COLLECTIONS_FILE {path}: {exc.strerror}") from None
    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
        if isinstance(raw, dict) and isinstance(raw.get("groups"), dict):
            raw["groups"] = {int(k): v for k, v in raw["groups"].items()}
        config = CollectionsFile.model_validate(raw or {})
    except (yaml.YAMLError, tomllib.TOMLDecodeError, ValueError) as exc:
        detail = _errors(exc) if isinstance(exc, ValidationError) else str(exc)
        raise ConfigurationError(f"COLLECTIONS_FILE {path}: {detail}") from None
    return Access.build(config, admins)


def _errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
    )
