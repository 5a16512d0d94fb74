"""Step 4, clarify: is the query ambiguous against what was found? Then one question with
2-4 options, and the caller runs the chain again with the option picked.

The embedded base model cannot write a clarifying question (asked to, it repeated pieces of
the documents), so there the step decides from the relevance step's gains alone: no question
when one document clearly dominates; otherwise a fixed question offering the documents that
answer about equally well."""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from app import texts
from app.chain.llm_step import LLMStep
from app.chain.types import Language, Passage
from app.chain.variables import prompt_variables
from app.llm.base import LLMClient
from app.prompts import PromptStore
from app.settings import ChainSettings
from app.tracing import Tracer

# A document competes for a clarifying question only with a search score this close to the
# best one's (as a share of it).
_SCORE_SHARE = 0.75
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


def by_gains(
    passages: Sequence[Passage],
    gains: Mapping[int, float],
    language: Language,
    min_gain: float,
    margin: float,
) -> tuple[Clarification, str]:
    """The embedded model's clarification, and why: the titles of the passages that both
    signals rank close to the best one (a gain of at least min_gain and within margin of
    the best, a search score within _SCORE_SHARE of the best), when there are two or more.
    The gains alone are noisy: a travel policy gained as much as the leave policy for "How
    many vacation days do I get?", while search ranked it far below."""
    best_gain = max(gains.values(), default=0.0)
    best_score = max((p.score for p in passages), default=0.0)
    close = [
        p
        for p in passages
        if gains.get(p.n, 0.0) >= max(min_gain, best_gain - margin)
        and p.score >= best_score - abs(best_score) * (1 - _SCORE_SHARE)
    ]
    titles: list[str] = []
    for passage in sorted(close, key=lambda p: -gains[p.n]):
        if passage.title.casefold() not in map(str.casefold, titles):
            titles.append(passage.title)
    if len(titles) < 2:
        return Clarification(None), "one document dominates"
    question = texts.text("clarify_question", language.code)
    return Clarification(question, titles[:4]), f"{len(titles)} documents answer about as well"


class Clarifier(LLMStep):
    """Asks back only when the excerpts answer differently for cases the query leaves open."""

    prompt_name = "clarify"

    def __init__(
        self, llm: LLMClient, prompts: PromptStore, tracer: Tracer, settings: ChainSettings
    ) -> None:
        super().__init__(llm, prompts, tracer)
        self.min_gain = settings.question_gain
        self.margin = settings.question_gain_margin

    async def __call__(
        self,
        query: str,
        passages: Sequence[Passage],
        language: Language,
        skip: str | None,
        gains: Mapping[int, float] | None = None,
    ) -> Clarification:
        """The clarifying question, or Clarification(None); `skip` says why not to ask;
        `gains` are the relevance step's (the embedded model's) per passage."""
        with self.tracer.step("clarify", {"query": query}) as span:
            variables = prompt_variables(query=query, language=language, passages=passages)
            if not skip and len(variables["choices"]) < 2 and not self.can_score:
                skip = "fewer than two options to offer"
            if not skip and self.can_score:
                result, why = by_gains(passages, gains or {}, language, self.min_gain, self.margin)
                span.update(
                    output={"question": result.question, "options": result.options},
                    metadata={"by": "gains", "why": why},
                )
                return result
            if skip:
                span.update(output="CLEAR", metadata={"skipped": skip})
                return Clarification(None)
            generated = await self.generate(**variables)
            result = parse_clarification(generated.completion.text)
            span.update(output={"question": result.question, "options": result.options})
            return result
