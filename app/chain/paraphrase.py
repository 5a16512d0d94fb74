"""Step 1, paraphrase: the latest message as a standalone query, using the chat's last turns."""

from collections.abc import Sequence
from dataclasses import dataclass

from app.chain.llm_step import LLMStep
from app.chain.types import Language, Turn
from app.chain.variables import prompt_variables


@dataclass(frozen=True, slots=True)
class Paraphrased:
    """The query to search with, and whether the LLM rewrote the message."""

    query: str
    rewritten: bool


class Paraphraser(LLMStep):
    """Rewrites follow-ups ("and for contractors?") into questions that stand alone."""

    prompt_name = "paraphrase"

    async def __call__(
        self, message: str, history: Sequence[Turn], language: Language
    ) -> Paraphrased:
        """The standalone query; the message itself when there is no history."""
        turns = [{"role": t.role, "text": t.text} for t in history]
        with self.tracer.step("paraphrase", {"message": message, "history": turns}) as span:
            if not history:
                span.update(output=message, metadata={"skipped": "no history"})
                return Paraphrased(message, rewritten=False)
            generated = await self.generate(
                **prompt_variables(query=message, language=language, history=history)
            )
            query = generated.completion.text.strip() if generated.valid else ""
            result = Paraphrased(query, rewritten=True) if query else Paraphrased(message, False)
            span.update(output=result.query)
            return result
