"""Prompts: one file per LLM step in `prompts/`, Jinja2 templates with YAML front matter that
holds the output regex and the generation parameters.

The files are the source of truth in the repository. Langfuse prompt management may override
a prompt by name and label; overrides are fetched in the background (never on a user's
request), checked like a file, and a bad or missing one leaves the file in force.
"""

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml
from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from langfuse import Langfuse
from langfuse.api import NotFoundError
from langfuse.model import ChatPromptClient, PromptClient

from app.errors import PromptError
from app.llm.base import GenerationParams, Message, Role

log = logging.getLogger(__name__)

# A line of its own starts each message of a prompt file: [system], [user] or [assistant].
_ROLE_LINE = re.compile(r"^\[(system|user|assistant)\][ \t]*$", re.MULTILINE)
_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.DOTALL)
# Templates may come from Langfuse, so they render in a sandbox.
_JINJA = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined,
    autoescape=False,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=False,
)


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    """A prompt ready for an LLM call."""

    name: str
    version: str
    messages: tuple[Message, ...]
    regex: str
    params: GenerationParams
    # The Langfuse prompt it came from (links generations to prompt versions), or None.
    langfuse_prompt: PromptClient | None


@dataclass(frozen=True)
class Prompt:
    """One step's prompt: message templates, output regex template, generation parameters."""

    name: str
    version: str
    messages: tuple[tuple[Role, str], ...]
    regex: str
    params: GenerationParams
    langfuse_prompt: PromptClient | None = None
    _compiled: tuple[tuple[Role, Template], ...] = field(init=False, repr=False)
    _regex: Template = field(init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            compiled = tuple((role, _JINJA.from_string(text)) for role, text in self.messages)
            regex = _JINJA.from_string(self.regex)
        except TemplateError as exc:
            where = f"prompt {self.name!r} v{self.version}"
            raise PromptError(f"{where}: bad template: {exc}") from None
        object.__setattr__(self, "_compiled", compiled)
        object.__setattr__(self, "_regex", regex)

    def render(self, **variables: Any) -> RenderedPrompt:
        """Fill in the templates; the regex template may use the same variables."""
        try:
            messages = tuple(
                Message(role, template.render(**variables).strip())
                for role, template in self._compiled
            )
            regex = self._regex.render(**variables).strip()
        except TemplateError as exc:
            raise PromptError(f"prompt {self.name!r} v{self.version}: {exc}") from None
        return RenderedPrompt(
            self.name, self.version, messages, regex, self.params, self.langfuse_prompt
        )

    def to_langfuse(self) -> tuple[list[dict[str, str]], dict[str, Any]]:
        """The chat messages and config that `prompts push` uploads."""
        messages = [{"role": role, "content": text} for role, text in self.messages]
        params = {
            "temperature": self.params.temperature,
            "max_tokens": self.params.max_tokens,
            "top_p": self.params.top_p,
            "stop": list(self.params.stop),
        }
        return messages, {"regex": self.regex, "params": params}


def _params(raw: Any, where: str) -> GenerationParams:
    if raw is None:
        return GenerationParams()
    if not isinstance(raw, Mapping):
        raise PromptError(f"{where}: params must be a mapping")
    known = {"temperature", "max_tokens", "top_p", "stop"}
    unknown = set(raw) - known
    if unknown:
        raise PromptError(f"{where}: unknown params {sorted(unknown)}")
    try:
        return GenerationParams(
            temperature=float(raw.get("temperature", 0.0)),
            max_tokens=int(raw.get("max_tokens", 256)),
            top_p=float(raw.get("top_p", 1.0)),
            stop=tuple(str(s) for s in raw.get("stop") or ()),
        )
    except (TypeError, ValueError) as exc:
        raise PromptError(f"{where}: bad params: {exc}") from None


def _check_regex(template: str, where: str) -> None:
    # Render with placeholder request parts so the static shape can be checked up front.
    try:
        sample = _JINJA.from_string(template).render(
            citations="1|2",
            letters="A-Za-z",
            language="English",
            options="a|b",
            refusal_regex="No\\.",
            words="|Да",
            quotes="A\\. \\[1\\]|B\\. \\[2\\]",
            refuse=True,
        )
        re.compile(sample)
    except (TemplateError, re.error) as exc:
        raise PromptError(f"{where}: bad regex: {exc}") from None


def parse_prompt(text: str, name: str, version: str = "file") -> Prompt:
    """A prompt from a file's text: front matter (regex, params), then [role] sections."""
    match = _FRONT_MATTER.match(text)
    if match is None:
        raise PromptError(f"prompt {name!r}: missing front matter between --- lines")
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        raise PromptError(f"prompt {name!r}: bad front matter: {exc}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("regex"), str):
        raise PromptError(f"prompt {name!r}: front matter needs a regex string")
    body = text[match.end() :]
    parts = _ROLE_LINE.split(body)
    if parts[0].strip():
        raise PromptError(f"prompt {name!r}: text before the first [role] line")
    sections = zip(parts[1::2], parts[2::2], strict=True)
    messages = tuple((cast(Role, role), content) for role, content in sections)
    if not messages:
        raise PromptError(f"prompt {name!r}: no [system]/[user] sections")
    _check_regex(meta["regex"], f"prompt {name!r}")
    params = _params(meta.get("params"), f"prompt {name!r}")
    return Prompt(name, version, messages, meta["regex"], params)


def load_prompt_files(directory: Path) -> dict[str, Prompt]:
    """Every `*.md` prompt file of a folder, by name (the file's stem)."""
    prompts: dict[str, Prompt] = {}
    for path in sorted(directory.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        prompts[path.stem] = parse_prompt(text, path.stem, version=f"file-{digest}")
    return prompts


def from_langfuse(client: PromptClient) -> Prompt:
    """A Langfuse chat prompt as a Prompt (checked like a file)."""
    where = f"Langfuse prompt {client.name!r} v{client.version}"
    if not isinstance(client, ChatPromptClient):
        raise PromptError(f"{where}: must be a chat prompt")
    config = client.config or {}
    if not isinstance(config, Mapping) or not isinstance(config.get("regex"), str):
        raise PromptError(f"{where}: config needs a regex string")
    _check_regex(config["regex"], where)
    messages: list[tuple[Role, str]] = []
    for message in client.prompt:
        role, content = message.get("role"), message.get("content")
        if role not in ("system", "user", "assistant") or not isinstance(content, str):
            raise PromptError(f"{where}: messages need a role and text content")
        messages.append((role, content))
    params = _params(config.get("params"), where)
    version = str(client.version)
    return Prompt(client.name, version, tuple(messages), config["regex"], params, client)


class PromptStore:
    """The prompts in force: the files, overridden by Langfuse versions when they are valid."""

    def __init__(
        self,
        files: Mapping[str, Prompt],
        langfuse: Langfuse | None = None,
        *,
        label: str = "production",
        refresh_s: float = 60.0,
        fetch_timeout_s: float = 2.0,
    ) -> None:
        self._files = dict(files)
        self._current = dict(files)
        self._langfuse = langfuse
        self._label = label
        self._refresh_s = refresh_s
        self._timeout = max(1, round(fetch_timeout_s))
        self._task: asyncio.Task[None] | None = None

    def get(self, name: str) -> Prompt:
        """The prompt in force for a step (no I/O)."""
        try:
            return self._current[name]
        except KeyError:
            raise PromptError(f"no prompt named {name!r} (prompts/{name}.md)") from None

    @property
    def files(self) -> Mapping[str, Prompt]:
        """The prompts as the files define them."""
        return self._files

    async def refresh(self) -> None:
        """Look up Langfuse overrides once, off the event loop; keep the files on any error."""
        if self._langfuse is None:
            return
        names = list(self._files)
        fetched = await asyncio.gather(*(asyncio.to_thread(self._fetch, n) for n in names))
        for name, (reached, prompt) in zip(names, fetched, strict=True):
            if reached:
                self._current[name] = prompt or self._files[name]

    def _fetch(self, name: str) -> tuple[bool, Prompt | None]:
        """(Langfuse answered, its valid override or None for "use the file"). When Langfuse
        could not be asked, what is in force stays: a network blip must not flip production
        back to the files."""
        assert self._langfuse is not None
        try:
            client = self._langfuse.get_prompt(
                name,
                label=self._label,
                type="chat",
                cache_ttl_seconds=0,
                max_retries=0,
                fetch_timeout_seconds=self._timeout,
            )
            return True, from_langfuse(client)
        except PromptError as exc:
            log.warning("%s; using prompts/%s.md", exc, name)
        except NotFoundError:
            log.debug("no Langfuse prompt %s@%s; using the file", name, self._label)
        except Exception as exc:  # network or server trouble: keep what is in force
            log.info("Langfuse prompt %s unavailable (%s); keeping the current one", name, exc)
            return False, None
        return True, None

    async def start(self) -> None:
        """Fetch overrides now, then again every refresh_s in the background."""
        if self._langfuse is None or self._task is not None:
            return
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="prompt-refresh")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            await self.refresh()

    async def aclose(self) -> None:
        """Stop the background refresh."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
