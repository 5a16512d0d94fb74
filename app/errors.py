"""Domain errors of the answer side; KBError covers the knowledge base."""


class AppError(Exception):
    """Base class for errors of the answer chain and its clients."""


class LLMError(AppError):
    """The language model could not produce an answer."""


class LLMTimeoutError(LLMError):
    """The language model did not answer within the configured time."""


class LLMUnavailableError(LLMError):
    """The language model server cannot be reached or keeps failing (after retries/fallback)."""


class LLMResponseError(LLMError):
    """The language model server answered with something unusable (4xx, malformed body)."""


class PromptError(AppError):
    """A prompt file (or a Langfuse override) is malformed; the message names it."""
