"""`python -m app eval --prompt-label`: one variant served to every item of a run, and the
run's record of which variant of each prompt it measured."""

from collections.abc import Mapping, Sequence

from app.ab.variants import LABEL
from app.errors import PromptError
from app.prompts import PromptStore


async def pin_variant(prompts: PromptStore, specs: Sequence[str] | None) -> None:
    """Serve [NAME=]LABEL to the run (every prompt that has LABEL, or the named one; the
    default label without specs), fetching it from Langfuse first; PromptError when no
    prompt has a label asked for (a typo would otherwise measure the default)."""
    wanted: list[tuple[str | None, str]] = []
    for spec in specs or [prompts.label]:
        name, sep, label = spec.rpartition("=")
        if not LABEL.fullmatch(label) or (sep and not name):
            raise PromptError(f"--prompt-label {spec!r}: expected LABEL or NAME=LABEL")
        prompts.pin(label, [name] if sep else None)
        wanted.append((name or None, label))
    await prompts.refresh()
    for only, label in wanted:
        names = [only] if only else list(prompts.files)
        if not any(prompts.variant_for(n, None) == label for n in names):
            where = f"prompts/{only or 'NAME'}.{label}.md"
            raise PromptError(
                f"no prompt has the variant {label!r} (no {where}, no Langfuse version "
                f"labelled {label!r})"
            )


def prompt_metadata(prompts: PromptStore) -> dict[str, str]:
    """What a run measured: the variant label(s) and each prompt's served label and version,
    as strings (Langfuse experiment metadata and the eval summary)."""
    served = {name: prompts.choose(name, None) for name in sorted(prompts.files)}
    labels = sorted({label for label, _ in served.values()} - {prompts.label})
    return {
        "prompt_label": ",".join(labels) or prompts.label,
        "prompt_variants": format_variants({n: label for n, (label, _) in served.items()}),
        "prompt_versions": format_variants({n: p.version for n, (_, p) in served.items()}),
    }


def format_variants(variants: Mapping[str, str]) -> str:
    """Like "answer=prod-b,clarify=production" (metadata values are strings)."""
    return ",".join(f"{name}={value}" for name, value in sorted(variants.items()))


def parse_variants_text(text: str) -> dict[str, str]:
    """The mapping format_variants wrote (unparseable parts are skipped)."""
    pairs = (part.partition("=") for part in text.split(",") if part)
    return {name: value for name, sep, value in pairs if sep and name and value}
