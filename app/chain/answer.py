"""Step 5, answer: a grounded answer whose citation markers may only name retrieved passages.

Two modes (CHAIN_ANSWER_MODE): "generate" lets the model write the answer; "quote" lets it
only copy sentences of the passages (app/chain/quote.py). Either may refuse, without a
citation, when the passages do not answer the question."""

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from app.chain.llm_step import LIKELIHOOD_PROMPT, LLMStep
from app.chain.quote import run_regex, sentences
from app.chain.types import Language, Passage, SourceRef
from app.chain.variables import prompt_variables
from app.llm.base import LLMClient, OnDelta
from app.prompts import PromptStore
from app.tracing import Tracer

AnswerMode = Literal["generate", "quote"]
_CITATION = re.compile(r"\[(\d+)\]")


@dataclass(frozen=True, slots=True)
class Answer:
    """The answer's text and the documents it cites, in order of first citation; refused
    when the model said the passages do not answer the question."""

    text: str
    sources: list[SourceRef]
    complete: bool
    refused: bool = False


def resolve_answer_mode(mode: str, llm: LLMClient) -> AnswerMode:
    """ "auto" is quote on in-process llama.cpp (a client that serves one request at a time:
    the small embedded model) and generate on a server; the other values stand."""
    if mode == "auto":
        return "generate" if llm.parallel else "quote"
    if mode not in ("generate", "quote"):
        raise ValueError(f"unknown answer mode {mode!r} (CHAIN_ANSWER_MODE)")
    return "quote" if mode == "quote" else "generate"


def cited_sources(text: str, passages: Sequence[Passage]) -> list[SourceRef]:
    """The passages an answer cites, by their numbers, in order of first citation."""
    by_number = {p.n: p for p in passages}
    cited: list[SourceRef] = []
    for match in _CITATION.finditer(text):
        passage = by_number.get(int(match.group(1)))
        if passage is not None and all(s.n != passage.n for s in cited):
            cited.append(SourceRef.of(passage))
    return cited


def _last_citation_end(text: str) -> int:
    """Where the last citation ends (0 without one): a quote cut short by max_tokens is
    trimmed there, so that no half sentence is shown."""
    ends = [m.end() for m in _CITATION.finditer(text)]
    return ends[-1] if ends else 0


class Answerer(LLMStep):
    """Writes the answer from the passages, streaming it to the caller when asked."""

    prompt_name = "answer"

    def __init__(
        self, llm: LLMClient, prompts: PromptStore, tracer: Tracer, mode: AnswerMode = "generate"
    ) -> None:
        super().__init__(llm, prompts, tracer)
        self.mode = mode
        self.prompt_name = "answer_quote" if mode == "quote" else "answer"
        # Fail at start, not on a user's question, when the prompt file is missing.
        prompts.get(self.prompt_name)

    async def __call__(
        self,
        query: str,
        passages: Sequence[Passage],
        language: Language,
        on_delta: OnDelta | None = None,
        gains: Mapping[int, float] | None = None,
    ) -> Answer:
        """The answer; its citations are restricted to the passages' numbers by the regex.
        `gains` (the embedded model's relevance, per passage) lead a quote to its passage."""
        step_input = {"query": query, "passages": len(passages), "mode": self.mode}
        with self.tracer.step("answer", step_input) as span:
            variables = prompt_variables(query=query, language=language, passages=passages)
            if self.mode == "quote" and gains and self.can_score:
                variables = await self._focus(variables, query, passages, language, gains)
            generated = await self.generate(on_delta, **variables)
            text = generated.completion.text.strip()
            if self.mode == "quote" and not generated.valid:
                text = text[: _last_citation_end(text)]
            refused = text in ("", variables["refusal"])
            sources = [] if refused else cited_sources(text, passages)
            span.update(
                output={"text": text, "sources": [s.doc_id for s in sources]},
                metadata={"refused": refused},
            )
            if not sources and not refused:
                sources = [SourceRef.of(p) for p in passages]
            return Answer(text, sources, complete=generated.valid, refused=refused)

    async def _focus(
        self,
        variables: dict[str, Any],
        query: str,
        passages: Sequence[Passage],
        language: Language,
        gains: Mapping[int, float],
    ) -> dict[str, Any]:
        """Quote the passage with the best gain, from its sentence that makes the question
        likeliest: left to itself, the small model starts every answer with the same few
        words whatever the question (its favourite first token picks the sentence). No
        refusal: the gains have decided that already, and the model's own choice between
        refusing and quoting came down to whether the sentence began with "The"."""
        best = max(passages, key=lambda p: gains.get(p.n, float("-inf")))
        found = sentences(best.text)
        if not found:
            return variables
        contexts = [
            prompt_variables(
                query=query, language=language, passages=(dataclasses.replace(best, text=s),)
            )
            for s in found
        ]
        scores = await self.reply_likelihoods(LIKELIHOOD_PROMPT, query, contexts)
        start = max(range(len(found)), key=scores.__getitem__)
        focused = prompt_variables(query=query, language=language, passages=(best,))
        return focused | {"quotes": run_regex(best, start), "refuse": False}
