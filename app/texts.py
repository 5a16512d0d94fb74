"""What the chain says to users itself (not LLM output), in the question's language."""

_TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "not_found": (
            "I could not find this in the knowledge base. Try rephrasing the question with "
            "other words, or ask the team that owns this topic."
        ),
        "llm_failed": (
            "Sorry, I could not write an answer just now: the language model is unavailable. "
            "Please try again in a minute."
        ),
        "llm_failed_sources": "These documents may help meanwhile:",
        "kb_failed": "Sorry, the knowledge base is unavailable just now. Please try again later.",
        # What the answer step says when the excerpts do not answer the question (the only
        # answer allowed without a citation); the chain then reports "not found".
        "refusal": "The knowledge base does not say.",
        # The embedded model's clarifying question (it cannot write one of its own).
        "clarify_question": "Which of these do you mean?",
    },
    "ru": {
        "not_found": (
            "Я не нашёл ответа в базе знаний. Попробуйте переформулировать вопрос другими "
            "словами или обратитесь к команде, которая отвечает за эту тему."
        ),
        "llm_failed": (
            "Извините, сейчас не получилось составить ответ: языковая модель недоступна. "
            "Попробуйте ещё раз через минуту."
        ),
        "llm_failed_sources": "Пока что могут помочь эти документы:",
        "kb_failed": "Извините, база знаний сейчас недоступна. Попробуйте позже.",
        "refusal": "В базе знаний об этом не сказано.",
        "clarify_question": "Что из этого вы имеете в виду?",
    },
}


def text(key: str, language: str) -> str:
    """A fixed message in the given language (English when there is none)."""
    return _TEXTS.get(language, _TEXTS["en"]).get(key) or _TEXTS["en"][key]
