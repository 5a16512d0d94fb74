"""One log line per question: its trace id (to open it in Langfuse), outcome and latency. The
question's text only with LOG_QUESTIONS on (and then masked like every log line under
PII_MASK); the asker's id never (the trace keeps it, under the traces' retention)."""

import logging

from app.chain.types import ChainResult

log = logging.getLogger("app.questions")


class QuestionLog:
    """The chain's result hook that writes the line."""

    def __init__(self, with_text: bool = False) -> None:
        self.with_text = with_text

    def __call__(self, result: ChainResult) -> None:
        """Log one finished question."""
        total = result.timings.get("total", 0.0)
        extra = {
            "trace_id": result.trace_id,
            "outcome": result.kind.value,
            "latency_ms": total,
            "steps_ms": {k: v for k, v in result.timings.items() if k != "total"},
            "cached": bool(getattr(result, "cached", False)),
        }
        if self.with_text:
            log.info(
                "question trace=%s outcome=%s ms=%.0f query=%r",
                result.trace_id,
                result.kind.value,
                total,
                result.query,
                extra=extra,
            )
        else:
            log.info(
                "question trace=%s outcome=%s ms=%.0f",
                result.trace_id,
                result.kind.value,
                total,
                extra=extra,
            )
