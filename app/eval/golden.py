"""Golden sets: one JSON object a line, or a Langfuse dataset with the same items."""

import json
from pathlib import Path
from typing import Any, Literal

from langfuse import Langfuse
from langfuse.api import DatasetItem, DatasetStatus
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.chain.types import Turn
from app.errors import AppError

Kind = Literal["answer", "not_found", "clarify"]


class GoldenError(AppError):
    """A golden set that cannot be read; the message names the file and line."""


class HistoryTurn(BaseModel):
    """One earlier message of the conversation the question continues."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["user", "assistant"]
    text: str


class GoldenItem(BaseModel):
    """A question, where to look, and what a good result is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    question: str = Field(min_length=1)
    history: tuple[HistoryTurn, ...] = ()
    collections: tuple[str, ...] = Field(min_length=1)
    kind: Kind
    # Documents (ids as ingested) that hold the answer; empty for "not_found".
    documents: tuple[str, ...] = ()
    # Short strings or numbers a good answer contains (for "clarify": the options).
    facts: tuple[str, ...] = ()

    @field_validator("facts", mode="before")
    @classmethod
    def _facts_as_text(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return tuple(str(v) for v in value)
        return value

    def turns(self) -> tuple[Turn, ...]:
        """The history as the chain takes it."""
        return tuple(Turn(t.role, t.text) for t in self.history)


def read_golden(path: Path) -> list[GoldenItem]:
    """The items of a JSONL file; GoldenError names the first bad line or a repeated id."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise GoldenError(f"cannot read golden set {path}: {exc}") from None
    items: list[GoldenItem] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            items.append(GoldenItem.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise GoldenError(f"{path}:{number}: {exc}") from None
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise GoldenError(f"{path}: item id {item.id!r} appears twice")
        seen.add(item.id)
    if not items:
        raise GoldenError(f"{path}: no items")
    return items


def dataset_item_id(dataset: str, item_id: str) -> str:
    """The Langfuse id of a golden item: ids are unique per project, not per dataset."""
    return f"{dataset}:{item_id}"


def upsert_dataset(langfuse: Langfuse, name: str, items: list[GoldenItem]) -> None:
    """Create the dataset if needed and upsert every item by its id (blocking I/O)."""
    langfuse.create_dataset(name=name, description="golden set for python -m app eval")
    for item in items:
        data = item.model_dump(mode="json")
        langfuse.create_dataset_item(
            dataset_name=name,
            id=dataset_item_id(name, item.id),
            input={k: data[k] for k in ("question", "history", "collections")},
            expected_output={k: data[k] for k in ("kind", "documents", "facts")},
            metadata={"golden_id": item.id},
        )


def from_dataset_item(item: DatasetItem) -> GoldenItem:
    """A golden item back from its Langfuse dataset item."""
    metadata = item.metadata if isinstance(item.metadata, dict) else {}
    fields = {"id": metadata.get("golden_id") or item.id}
    for part in (item.input, item.expected_output):
        if not isinstance(part, dict):
            raise GoldenError(f"dataset item {item.id}: input and expected output must be objects")
        fields |= part
    try:
        return GoldenItem.model_validate(fields)
    except ValidationError as exc:
        raise GoldenError(f"dataset item {item.id}: {exc}") from None


def dataset_items(langfuse: Langfuse, name: str) -> list[DatasetItem]:
    """The active items of a Langfuse dataset (blocking I/O)."""
    return [i for i in langfuse.get_dataset(name).items if i.status == DatasetStatus.ACTIVE]
