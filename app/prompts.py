"""Prompts: one file per LLM step in `prompts/`, Jinja2 templates with YAML front matter that
holds the output regex and the generation parameters.

The files are the source of truth in the repository. Langfuse prompt management may override
a prompt by name and label; overrides are fetched in the background (never on a user's
request), checked like a file, and a bad or missing one leaves the file in force.

A prompt may have variants (app.ab.variants): `prompts/<name>.<label>.md` beside the default
file and/or Langfuse versions with that label. Each user gets one variant per prompt.
"""

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml
from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from langfuse import Langfuse
from langfuse.api import NotFoundError
from langfuse.model import ChatPromptClient, PromptClient

from app.ab.variants import LABEL, Variants, assign, tag
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
    # The variant a file or Langfuse version is (None: the default file).
    label: str | None = None
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


def parse_prompt(text: str, name: str, version: str = "file", label: str | None = None) -> Prompt:
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
    return Prompt(name, version, messages, meta["regex"], params, label=label)


def load_prompt_files(directory: Path) -> dict[str, Prompt]:
    """Every `*.md` prompt file of a folder by its stem: `answer.md` is the prompt "answer",
    `answer.prod-b.md` its variant labelled "prod-b" (key "answer.prod-b")."""
    prompts: dict[str, Prompt] = {}
    for path in sorted(directory.glob("*.md")):
        name, dot, label = path.stem.partition(".")
        if dot and not LABEL.fullmatch(label):
            raise PromptError(f"{path.name}: {label!r} is not a label (a-z, 0-9, '.', '_', '-')")
        text = path.read_text(encoding="utf-8")
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        version = f"file-{digest}"
        prompts[path.stem] = parse_prompt(text, name, version=version, label=label or None)
    return prompts


def from_langfuse(client: PromptClient, label: str | None = None) -> Prompt:
    """A Langfuse chat prompt (fetched by label) as a Prompt (checked like a file)."""
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
    return Prompt(client.name, version, tuple(messages), config["regex"], params, client, label)


class PromptStore:
    """The prompts in force: the files, overridden by Langfuse versions when they are valid;
    per prompt and label, the default label's for users outside any A/B."""

    def __init__(
        self,
        files: Mapping[str, Prompt],
        langfuse: Langfuse | None = None,
        *,
        label: str = "production",
        variants: Variants | None = None,
        refresh_s: float = 60.0,
        fetch_timeout_s: float = 2.0,
    ) -> None:
        self._files = {k: p for k, p in files.items() if p.label is None}
        # What each (name, label) is when Langfuse has no valid version of it.
        self._by_label = {(p.name, p.label or label): p for p in files.values()}
        for key, prompt in files.items():
            if prompt.name not in self._files:
                raise PromptError(f"prompt file {key}.md has no default {prompt.name}.md")
        self._current = dict(self._by_label)
        self._langfuse = langfuse
        self._label = label
        self._variants = dict(variants or {})
        self._pinned: dict[str, str] = {}
        self._refresh_s = refresh_s
        self._timeout = max(1, round(fetch_timeout_s))
        self._task: asyncio.Task[None] | None = None
        unknown = sorted(set(self._variants) - set(self._files))
        if unknown:
            raise PromptError(f"PROMPT_VARIANTS names no prompt file: {', '.join(unknown)}")
        if langfuse is None:
            # Without Langfuse a variant can only be a file: a missing one is a typo.
            missing = [
                f"{name}.{v.label}.md"
                for name, variants_ in self._variants.items()
                for v in variants_
                if v.weight > 0 and (name, v.label) not in self._by_label
            ]
            if missing:
                raise PromptError(f"PROMPT_VARIANTS: no prompt file {', '.join(missing)}")

    @property
    def label(self) -> str:
        """The default label (LANGFUSE_PROMPT_LABEL): what users outside an A/B get."""
        return self._label

    def choose(self, name: str, user_id: str | None = None) -> tuple[str, Prompt]:
        """(label, prompt) for a step and a user (no I/O): a pinned label, else the user's
        variant when the prompt is under A/B, else the default; a variant that is not
        available (no file, no valid Langfuse version) falls back to the default."""
        if name not in self._files:
            raise PromptError(f"no prompt named {name!r} (prompts/{name}.md)")
        wanted = self._pinned.get(name)
        if wanted is None and user_id is not None and name in self._variants:
            wanted = assign(name, user_id, self._variants[name])
        if wanted is not None and (name, wanted) in self._current:
            return wanted, self._current[(name, wanted)]
        return self._label, self._current[(name, self._label)]

    def get(self, name: str, user_id: str | None = None) -> Prompt:
        """The prompt in force for a step, for this user's variant (no I/O)."""
        return self.choose(name, user_id)[1]

    def variant_for(self, name: str, user_id: str | None) -> str:
        """The label of the prompt a user gets for a step."""
        return self.choose(name, user_id)[0]

    def versions_for(self, user_id: str | None) -> dict[str, str]:
        """Each prompt's version as this user gets it (answer caches key on these)."""
        return {name: self.choose(name, user_id)[1].version for name in self._files}

    def tags_for(self, user_id: str | None) -> list[str]:
        """Trace tags naming the variant of each prompt under A/B (or pinned) for a user."""
        names = sorted(set(self._variants) | set(self._pinned))
        return [tag(name, self.variant_for(name, user_id)) for name in names]

    def pin(self, label: str, names: Collection[str] | None = None) -> list[str]:
        """Serve one label to everyone (an eval of a variant); returns the prompts that have
        it (the others keep their default). Call refresh() after to fetch it from Langfuse."""
        for name in names if names is not None else self._files:
            if name not in self._files:
                raise PromptError(f"no prompt named {name!r} (prompts/{name}.md)")
            self._pinned[name] = label
        return self.pinned()

    def pinned(self) -> list[str]:
        """The pinned prompts that are served with their pinned label."""
        return sorted(n for n, label in self._pinned.items() if (n, label) in self._current)

    @property
    def files(self) -> Mapping[str, Prompt]:
        """The default prompts as the files define them."""
        return self._files

    def _in_use(self) -> list[tuple[str, str]]:
        """Every (name, label) that may be served: defaults, A/B variants, pinned labels."""
        keys = {(name, self._label) for name in self._files}
        keys |= {(n, v.label) for n, variants in self._variants.items() for v in variants}
        keys |= set(self._pinned.items())
        return sorted(keys)

    async def refresh(self) -> None:
        """Look up Langfuse overrides of every label in use once, off the event loop; keep
        the files on any error."""
        if self._langfuse is None:
            return
        keys = self._in_use()
        fetched = await asyncio.gather(*(asyncio.to_thread(self._fetch, *k) for k in keys))
        for key, (reached, prompt) in zip(keys, fetched, strict=True):
            if not reached:
                continue
            found = prompt or self._by_label.get(key)
            if found is not None:
                self._current[key] = found
            elif key[1] != self._label:
                self._current.pop(key, None)  # a variant withdrawn: its users get the default

    def _fetch(self, name: str, label: str) -> tuple[bool, Prompt | None]:
        """(Langfuse answered, its valid override or None for "use the file"). When Langfuse
        could not be asked, what is in force stays: a network blip must not flip production
        back to the files."""
        assert self._langfuse is not None
        where = f"prompts/{name}.md" if label == self._label else f"the file or default of {name}"
        try:
            client = self._langfuse.get_prompt(
                name,
                label=label,
                type="chat",
                cache_ttl_seconds=0,
                max_retries=0,
                fetch_timeout_seconds=self._timeout,
            )
            return True, from_langfuse(client, label)
        except PromptError as exc:
            log.warning("%s; using %s", exc, where)
        except NotFoundError:
            log.debug("no Langfuse prompt %s@%s; using %s", name, label, where)
        except Exception as exc:  # network or server trouble: keep what is in force
            log.info("Langfuse prompt %s unavailable (%s); keeping the current one", name, exc)
            return False, None
        return True, None

    async def start(self) -> None:
        """Fetch overrides now, then again every refresh_s in the background."""
        if self._langfuse is None or self._task is not None:
            return
        await self.refresh()
        for name, variants in self._variants.items():
            for variant in variants:
                if variant.weight > 0 and (name, variant.label) not in self._current:
                    log.warning(
                        "PROMPT_VARIANTS: %s has no variant %s (no file %s.%s.md, no Langfuse "
                        "label): its users get the default",
                        name,
                        variant.label,
                        name,
                        variant.label,
                    )
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
