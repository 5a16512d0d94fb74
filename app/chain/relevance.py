"""Step 3, relevance: does the retrieved context answer the query at all?"""

from collections.abc import Sequence
from dataclasses import dataclass

from app.chain.llm_step import LLMStep
from app.chain.types import Language, Passage
from app.chain.variables import prompt_variables
from app.llm.base import LLMClient
from app.prompts import PromptStore
from app.tracing import Tracer


@dataclass(frozen=True, slots=True)
class Relevance:
    """The verdict and why."""

    relevant: bool
    reason: str


class RelevanceJudge(LLMStep):
    """A one-word constrained verdict; nothing retrieved, or only weak hits, needs no LLM."""

    prompt_name = "relevance"

    def __init__(
        self, llm: LLMClient, prompts: PromptStore, tracer: Tracer, min_score: float
    ) -> None:
        super().__init__(llm, prompts, tracer)
        self.min_score = min_score

    async def __call__(
        self, query: str, passages: Sequence[Passage], language: Language
    ) -> Relevance:
        """Whether the passages answer the query."""
        best = max((p.score for p in passages), default=0.0)
        with self.tracer.step("relevance", {"query": query, "best_score": best}) as span:
            if not passages:
                verdict = Relevance(False, "nothing retrieved")
            elif best < self.min_score:
                verdict = Relevance(False, f"best score {best:.3f} < {self.min_score}")
            else:
                generated = await self.generate(
                    **prompt_variables(query=query, language=language, passages=passages)
                )
                text = generated.completion.text.strip().upper()
                # An unparseable verdict lets the grounded answer step decide.
                relevant = not text.startswith("NO")
                verdict = Relevance(relevant, f"LLM: {text or '(empty)'}")
            span.update(output={"relevant": verdict.relevant, "reason": verdict.reason})
            return verdict
