"""Step 4, clarify: is the query ambiguous against what was found? Then one question with
2-4 options, and the caller runs the chain again with the option picked."""

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from app.chain.llm_step import LLMStep
from app.chain.types import Language, Passage
from app.chain.variables import prompt_variables

_ASK = re.compile(r"ASK:\s*(?P<question>[^\n]+)(?P<options>(?:\n-[^\n]*)+)")


@dataclass(frozen=True, slots=True)
class Clarification:
    """None when the query is clear; otherwise the question and its options."""

    question: str | None
    options: list[str] = field(default_factory=list)


def parse_clarification(text: str) -> Clarification:
    """Read "CLEAR" or "ASK: question" with "- option" lines (2 to 4 distinct options)."""
    match = _ASK.fullmatch(text.strip())
    if match is None:
        return Clarification(None)
    options: list[str] = []
    for line in match.group("options").splitlines():
        option = line.lstrip("- ").strip()
        if option and option.casefold() not in (o.casefold() for o in options):
            options.append(option)
    if not 2 <= len(options) <= 4:
        return Clarification(None)
    return Clarification(match.group("question").strip(), options)


class Clarifier(LLMStep):
    """Asks back only when the excerpts answer differently for cases the query leaves open."""

    prompt_name = "clarify"

    async def __call__(
        self, query: str, passages: Sequence[Passage], language: Language, skip: str | None
    ) -> Clarification:
        """The clarifying question, or Clarification(None); `skip` says why not to ask."""
        with self.tracer.step("clarify", {"query": query}) as span:
            variables = prompt_variables(query=query, language=language, passages=passages)
            if not skip and len(variables["choices"]) < 2:
                skip = "fewer than two options to offer"
            if skip:
                span.update(output="CLEAR", metadata={"skipped": skip})
                return Clarification(None)
            generated = await self.generate(**variables)
            result = parse_clarification(generated.completion.text)
            span.update(output={"question": result.question, "options": result.options})
            return result
