"""Step 3, relevance: does the retrieved context answer the query at all?

On an LLM server the model says YES or NO (prompts/relevance.md). The embedded base model's
YES or NO says next to nothing (measured: the same verdict, by about the same likelihood,
for questions the samples answer and for ones they do not), so there the step asks it a
question it can answer: how much likelier does each excerpt make the user's question, as
the question that excerpt answers (prompts/question.md)? The gain, in mean log-probability
per token of the question, is large for an excerpt that answers it and small otherwise."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from app.chain.llm_step import LIKELIHOOD_PROMPT, LLMStep
from app.chain.types import Language, Passage
from app.chain.variables import prompt_variables
from app.llm.base import LLMClient
from app.prompts import PromptStore
from app.settings import ChainSettings
from app.tracing import Tracer


@dataclass(frozen=True, slots=True)
class Relevance:
    """The verdict and why; on the embedded model also each passage's gain (by number)."""

    relevant: bool
    reason: str
    gains: Mapping[int, float] = field(default_factory=dict)


class RelevanceJudge(LLMStep):
    """A one-word constrained verdict, or the question's likelihood on the embedded model;
    nothing retrieved, or only weak hits, needs no LLM."""

    prompt_name = "relevance"

    def __init__(
        self, llm: LLMClient, prompts: PromptStore, tracer: Tracer, settings: ChainSettings
    ) -> None:
        super().__init__(llm, prompts, tracer)
        self.min_score = settings.min_score
        self.min_gain = settings.question_gain
        if self.can_score:
            prompts.get(LIKELIHOOD_PROMPT)  # fail at start when the file is missing

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
            elif self.can_score:
                verdict = await self._by_likelihood(query, passages, language)
            else:
                generated = await self.generate(
                    **prompt_variables(query=query, language=language, passages=passages)
                )
                text = generated.completion.text.strip().upper()
                # An unparseable verdict lets the grounded answer step decide.
                relevant = not text.startswith("NO")
                verdict = Relevance(relevant, f"LLM: {text or '(empty)'}")
            span.update(output={"relevant": verdict.relevant, "reason": verdict.reason})
            if verdict.gains:
                span.update(metadata={"gains": dict(verdict.gains)})
            return verdict

    async def _by_likelihood(
        self, query: str, passages: Sequence[Passage], language: Language
    ) -> Relevance:
        """Each passage's gain: the question's likelihood with it minus without any."""
        contexts = [
            prompt_variables(query=query, language=language, passages=chosen)
            for chosen in [(), *((p,) for p in passages)]
        ]
        scores = await self.reply_likelihoods(LIKELIHOOD_PROMPT, query, contexts)
        gains = {p.n: round(s - scores[0], 3) for p, s in zip(passages, scores[1:], strict=True)}
        top = max(gains.values())
        relevant = top >= self.min_gain
        sign = ">=" if relevant else "<"
        return Relevance(relevant, f"question gain {top:.2f} {sign} {self.min_gain}", gains)
