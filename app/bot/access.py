"""Who may read and who owns which collection: the collections file (YAML or TOML).

```yaml
collections:
  - name: handbook
    title: Employee handbook
    language: en            # BM25 stemmer of the collection (en, ru)
    readers: everyone       # or {users: [111, 222], groups: [-1001234567890],
                            #     members_of: [-1001234567890]}
    owners: [111]           # may upload and delete documents
    experts: {chat: -1009876543210, users: [333]}   # answer escalated questions (optional)
    sources: [{kind: folder, path: /docs/handbook}]  # synced by `ingestion sync --all`
groups:                     # a group chat bound to one collection
  -1001234567890: handbook
```

In a group chat everyone in it sees the answer, so a group reads only what the group itself
is allowed (its id among the readers' groups or members_of, or "everyone"), whoever asks. In a
private chat the user's own rights count: listed, or a current member of a `members_of` group
(asked of Telegram with getChatMember, cached for a bounded time). Owners read what they own;
admins (BOT_ADMINS) read and own all.

The file is read again when it changes (checked every few seconds when access is asked) and
on SIGHUP; a file with an error leaves the rules in force and the log names the problem.
"""

import asyncio
import logging
import signal
import time
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from aiogram import Bot
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from app.bot.membership import Membership
from ingestion.sources.config import SourceConfig
from kb.embedder import BM25_LANGUAGES
from kb.errors import ConfigurationError
from kb.store import validate_knowledge_base_name

log = logging.getLogger(__name__)


class Readers(BaseModel):
    """Who may read a collection."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    everyone: bool = False
    users: frozenset[int] = frozenset()
    groups: frozenset[int] = frozenset()
    # Telegram groups whose current members may read (and the group chats themselves).
    members_of: frozenset[int] = frozenset()


class Experts(BaseModel):
    """Who answers a collection's escalated questions: a group chat (everyone in it), and/or
    users in their private chats with the bot."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chat: int | None = None
    users: frozenset[int] = frozenset()

    @model_validator(mode="after")
    def _somewhere(self) -> "Experts":
        if self.chat is None and not self.users:
            raise ValueError("experts need a chat, users, or both")
        return self

    @property
    def chats(self) -> list[int]:
        """Where a card goes: the group, else each user's private chat."""
        return [self.chat] if self.chat is not None else sorted(self.users)

    def includes(self, user_id: int, chat_id: int) -> bool:
        """Whether a message by this user in this chat comes from an expert."""
        return chat_id == self.chat or user_id in self.users


class CollectionConfig(BaseModel):
    """One knowledge base as the collections file declares it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    title: str = ""
    language: str = "en"
    readers: Readers = Field(default_factory=Readers)
    owners: frozenset[int] = frozenset()
    # Where questions employees escalate go (None: the "Ask an expert" button is not shown).
    experts: Experts | None = None
    # Where `python -m ingestion sync --all` takes its documents from (folder, web, confluence).
    sources: tuple[SourceConfig, ...] = ()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return validate_knowledge_base_name(value)

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
class Rules:
    """One version of the collections file, indexed: the rules that need no Telegram call."""

    collections: Mapping[str, CollectionConfig]
    group_bindings: Mapping[int, str]
    admins: frozenset[int]

    @classmethod
    def build(cls, config: CollectionsFile, admins: Iterable[int]) -> "Rules":
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

    def listed_reader(
        self, config: CollectionConfig, user_id: int, chat_id: int, kind: ChatKind
    ) -> bool:
        """Readable without asking Telegram: a group by its id (a members_of group reads as
        a whole: everyone in it is a member), a user by id, ownership or admin rights."""
        readers = config.readers
        if readers.everyone:
            return True
        if kind == "group":
            return chat_id in readers.groups or chat_id in readers.members_of
        return user_id in readers.users or user_id in config.owners or user_id in self.admins


class Access:
    """The rules in force and the membership checks some of them need. Handlers keep this one
    object; the rules behind it are swapped when the collections file changes."""

    def __init__(
        self,
        rules: Rules,
        path: Path | None = None,
        *,
        reload_s: float = 5.0,
        membership: Membership | None = None,
    ) -> None:
        self._rules = rules
        self.path = path
        self.reload_s = reload_s
        self.membership = membership or Membership()
        self._signature = _signature(path)
        self._checked = time.monotonic()
        self._reload_requested = False

    @classmethod
    def build(cls, config: CollectionsFile, admins: Iterable[int]) -> "Access":
        """Fixed rules (no file behind them)."""
        return cls(Rules.build(config, admins))

    @property
    def current(self) -> Rules:
        """The rules in force (the file is looked at again when due)."""
        self._maybe_reload()
        return self._rules

    @property
    def collections(self) -> Mapping[str, CollectionConfig]:
        """The collections by name, in file order."""
        return self.current.collections

    async def readable(
        self, user_id: int, chat_id: int, kind: ChatKind, bot: Bot | None = None
    ) -> list[CollectionConfig]:
        """The collections whose text may be shown in this chat, in file order; members_of
        rules are checked with the bot (no bot: they grant nothing)."""
        rules = self.current
        found = []
        for config in rules.collections.values():
            if rules.listed_reader(config, user_id, chat_id, kind) or (
                kind == "private"
                and config.readers.members_of
                and bot is not None
                and await self.membership.any_of(bot, config.readers.members_of, user_id)
            ):
                found.append(config)
        return found

    def owned(self, user_id: int) -> list[CollectionConfig]:
        """The collections this user may upload to and delete from."""
        return [c for c in self.collections.values() if self.owns(user_id, c.name)]

    def owns(self, user_id: int, name: str) -> bool:
        """Whether the user owns the collection (admins own all)."""
        rules = self.current
        config = rules.collections.get(name)
        return config is not None and (user_id in rules.admins or user_id in config.owners)

    def bound_collection(self, chat_id: int) -> str | None:
        """The collection a group chat is bound to, if any."""
        return self.current.group_bindings.get(chat_id)

    def request_reload(self) -> None:
        """Read the file again on the next access (safe to call from a signal handler)."""
        self._reload_requested = True

    def reload_on_sighup(self) -> None:
        """SIGHUP reloads the file at once, and logs the outcome (call with the loop running;
        a no-op where signals are not supported)."""
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload)
        except (NotImplementedError, AttributeError, RuntimeError):
            log.info("SIGHUP is not available here; the collections file reloads on change")

    def reload(self) -> bool:
        """Read the file now; True when its rules are now in force. A broken file keeps the
        rules in force and logs where the problem is."""
        if self.path is None:
            return False
        self._signature = _signature(self.path)
        try:
            rules = _read(self.path, self._rules.admins)
        except ConfigurationError as exc:
            log.error("collections file not reloaded, the previous rules stay in force: %s", exc)
            return False
        self._rules = rules
        log.info("collections file %s reloaded: %d collections", self.path, len(rules.collections))
        return True

    def _maybe_reload(self) -> None:
        if self.path is None:
            return
        now = time.monotonic()
        if not self._reload_requested and now - self._checked < self.reload_s:
            return
        self._checked = now
        if self._reload_requested or _signature(self.path) != self._signature:
            self._reload_requested = False
            self.reload()


def _signature(path: Path | None) -> tuple[int, int, int] | None:
    """What changes when the file is written or replaced."""
    if path is None:
        return None
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


def load_collections(
    path: Path,
    admins: Iterable[int],
    *,
    reload_s: float = 5.0,
    membership_ttl_s: float = 300.0,
) -> Access:
    """Read and check the collections file (.yaml/.yml or .toml); ConfigurationError names the
    file and the problem. The Access returned follows later changes of the file."""
    rules = _read(path, frozenset(admins))
    return Access(rules, path, reload_s=reload_s, membership=Membership(membership_ttl_s))


def _read(path: Path, admins: frozenset[int]) -> Rules:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"COLLECTIONS_FILE {path}: {exc.strerror}") from None
    raw: Any = None
    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
        if isinstance(raw, dict) and isinstance(raw.get("groups"), dict):
            raw["groups"] = {int(k): v for k, v in raw["groups"].items()}
        config = CollectionsFile.model_validate(raw or {})
    except (yaml.YAMLError, tomllib.TOMLDecodeError, ValueError) as exc:
        detail = _errors(exc, raw) if isinstance(exc, ValidationError) else str(exc)
        raise ConfigurationError(f"COLLECTIONS_FILE {path}: {detail}") from None
    rules = Rules.build(config, admins)
    _warn_public(path, rules)
    return rules


def _warn_public(path: Path, rules: Rules) -> None:
    """A collection anyone who finds the bot may read is allowed, but never by accident."""
    public = [name for name, config in rules.collections.items() if config.readers.everyone]
    if public:
        log.warning(
            "COLLECTIONS_FILE %s: %s readable by everyone: any Telegram user who finds the bot "
            "can read them; for employees only use readers: {members_of: [GROUP_ID]}",
            path,
            ", ".join(repr(name) for name in public),
        )


def _errors(exc: ValidationError, raw: Any) -> str:
    """Each problem at its field, a collection named as well as numbered."""
    return "; ".join(f"{_where(err['loc'], raw)}: {err['msg']}" for err in exc.errors())


def _where(loc: tuple[int | str, ...], raw: Any) -> str:
    where = ".".join(str(p) for p in loc)
    if len(loc) > 1 and loc[0] == "collections" and isinstance(loc[1], int):
        try:
            name = raw["collections"][loc[1]]["name"]
        except (KeyError, IndexError, TypeError):
            return where
        where += f" (collection {name!r})"
    return where
