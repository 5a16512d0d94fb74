"""`python -m app prompts push`: the prompt files as new Langfuse versions; a variant file
(`answer.prod-b.md`) becomes a version of its prompt with its own label."""

import logging
from collections.abc import Mapping
from typing import Any

from langfuse import Langfuse
from langfuse.api import NotFoundError
from langfuse.model import ChatPromptClient

from app.prompts import Prompt

log = logging.getLogger(__name__)


def _current(langfuse: Langfuse, name: str, label: str) -> ChatPromptClient | None:
    try:
        client = langfuse.get_prompt(
            name, label=label, type="chat", cache_ttl_seconds=0, max_retries=0
        )
    except NotFoundError:  # never pushed (other errors stop the push: no duplicate versions)
        log.debug("no current %s@%s", name, label)
        return None
    return client if isinstance(client, ChatPromptClient) else None


def push_prompts(
    langfuse: Langfuse, files: Mapping[str, Prompt], default_label: str, force: bool = False
) -> list[str]:
    """Create a version of each prompt whose text or config differs from the labelled one
    (the default files with default_label, variant files with their own); returns one line per
    file saying what was done."""
    lines = []
    for prompt in files.values():
        name, label = prompt.name, prompt.label or default_label
        messages, config = prompt.to_langfuse()
        current = _current(langfuse, name, label)
        if (
            not force
            and current is not None
            and [{"role": m.get("role"), "content": m.get("content")} for m in current.prompt]
            == messages
            and current.config == config
        ):
            lines.append(f"unchanged {name} (version {current.version} is {label})")
            continue
        chat: list[Any] = list(messages)
        created = langfuse.create_prompt(
            name=name, prompt=chat, type="chat", config=config, labels=[label]
        )
        lines.append(f"pushed    {name} as version {created.version} ({label})")
    return lines
