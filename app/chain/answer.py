"""Step 5, answer: a grounded answer whose citation markers may only name retrieved passages."""

import re
from collections.abc import Sequence
from dataclasses import dataclass

from app.chain.llm_step import LLMStep
from app.chain.types import Language, Passage, SourceRef
from app.chain.variables import prompt_variables
from app.llm.base import OnDelta

_CITATION = re.compile(r"\[(\d+)\]")


@dataclass(frozen=True, slots=True)
class Answer:
    """The answer's text and the documents it cites, in order of first citation."""

    text: str
    sources: list[SourceRef]
    complete: bool


def cited_sources(text: str, passages: Sequence[Passage]) -> list[SourceRef]:
    """The passages an answer cites, by their numbers, in order of first citation."""
    by_number = {p.n: p for p in passages}
    cited: list[SourceRef] = []
    for match in _CITATION.finditer(text):
        passage = by_number.get(int(match.group(1)))
        if passage is not None and all(s.n != passage.n for s in cited):
            cited.append(SourceRef.of(passage))
    return cited


class Answerer(LLMStep):
    """Writes the answer from the passages, streaming it to the caller when asked."""

    prompt_name = "answer"

    async def __call__(
        self,
        query: str,
        passages: Sequence[Passage],
        language: Language,
        on_delta: OnDelta | None = None,
    ) -> Answer:
        """The answer; its citations are restricted to the passages' numbers by the regex."""
        with self.tracer.step("answer", {"query": query, "passages": len(passages)}) as span:
            generated = await self.generate(
                on_delta, **prompt_variables(query=query, language=language, passages=passages)
            )
            text = generated.completion.text.strip()
            sources = cited_sources(text, passages) or [SourceRef.of(p) for p in passages]
            span.update(output={"text": text, "sources": [s.doc_id for s in sources]})
            return Answer(text, sources, complete=generated.valid)
