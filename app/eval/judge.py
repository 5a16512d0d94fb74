"""The optional judge: an OpenAI-compatible model grades an answer's correctness and
faithfulness with a regex-constrained verdict, through the chain's own LLM step machinery."""

import logging
import re
from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.chain.llm_step import LLMStep
from app.chain.types import Passage
from app.errors import LLMError
from app.eval.golden import GoldenItem
from app.eval.metrics import ItemResult
from app.llm.base import LLMClient
from app.llm.openai_compat import OpenAICompatClient
from app.prompts import PromptStore, load_prompt_files
from app.tracing import Tracer
from kb.errors import ConfigurationError

log = logging.getLogger(__name__)
PROMPTS = Path(__file__).resolve().parent / "prompts"
_VERDICT = re.compile(r"correct: (yes|partly|no)\nfaithful: (yes|no)")
_CORRECT = {"yes": 1.0, "partly": 0.5, "no": 0.0}


class JudgeSettings(BaseSettings):
    """The judge's endpoint (EVAL_JUDGE_*): any OpenAI-compatible server and model."""

    model_config = SettingsConfigDict(
        env_prefix="EVAL_JUDGE_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    base_url: str | None = None
    model: str = ""
    api_key: SecretStr | None = None
    timeout_s: float = 60.0

    def client(self) -> LLMClient:
        """A client for the endpoint; ConfigurationError when it is not configured."""
        if not self.base_url or not self.model:
            raise ConfigurationError("--judge needs EVAL_JUDGE_BASE_URL and EVAL_JUDGE_MODEL")
        key = self.api_key.get_secret_value() if self.api_key else None
        return OpenAICompatClient(
            base_url=self.base_url, model=self.model, api_key=key, timeout_s=self.timeout_s
        )


class Judge(LLMStep):
    """Grades answered items; a failed or unreadable verdict leaves them ungraded."""

    prompt_name = "judge"

    def __init__(self, llm: LLMClient, tracer: Tracer) -> None:
        super().__init__(llm, PromptStore(load_prompt_files(PROMPTS)), tracer)

    async def __call__(
        self, item: GoldenItem, row: ItemResult, passages: tuple[Passage, ...]
    ) -> None:
        """Fill in the row's judge_correct (0, 0.5, 1) and judge_faithful (0, 1)."""
        cited = [p for p in passages if p.doc_id in row.cited] or list(passages)
        try:
            generated = await self.generate(
                question=item.question, facts=list(item.facts), passages=cited, answer=row.text
            )
        except LLMError as exc:
            log.warning("judge failed on %s: %s", item.id, exc)
            return
        verdict = _VERDICT.fullmatch(generated.completion.text.strip())
        if verdict is not None:
            row.judge_correct = _CORRECT[verdict.group(1)]
            row.judge_faithful = 1.0 if verdict.group(2) == "yes" else 0.0
