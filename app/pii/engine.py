"""The Presidio analyzer, built once: no spaCy model, only a word splitter so that context
words ("ИНН", "паспорт", "phone") can raise the score of a match."""

import re
from typing import Any

from presidio_analyzer import AnalyzerEngine, RecognizerRegistry, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts, NoOpNlpEngine
from spacy.tokens import Doc

from app.pii.names import NatashaNameRecognizer
from app.pii.recognizers import LABELS, build_recognizers

LANGUAGES = ("ru", "en")
# A match below this score (a passport number or account with no context word) is ignored.
SCORE_THRESHOLD = 0.5
_WORD = re.compile(r"[^\W_]+(?:/[^\W_]+)?")
_CYRILLIC = re.compile(r"[а-яёА-ЯЁ]")


class WordNlpEngine(NoOpNlpEngine):
    """Presidio's no-op engine (loads nothing) that still splits words, lower-cased as their
    "lemmas", for the context enhancer; stems in the context lists cover inflections."""

    def process_text(self, text: str, language: str) -> NlpArtifacts:
        """Tokens and lower-cased words; no entities, no model."""
        matches = list(_WORD.finditer(text))
        words = [m.group() for m in matches]
        return NlpArtifacts(
            entities=[],
            tokens=Doc(self._vocab, words=words),
            tokens_indices=[m.start() for m in matches],
            lemmas=[w.lower() for w in words],
            nlp_engine=self,
            language=language,
            scores=[],
        )


def build_analyzer() -> AnalyzerEngine:
    """The analyzer with every recognizer for Russian and English, models loaded."""
    registry = RecognizerRegistry(supported_languages=list(LANGUAGES))
    for language in LANGUAGES:
        for recognizer in build_recognizers(language):
            registry.add_recognizer(recognizer)
    registry.add_recognizer(NatashaNameRecognizer("ru"))
    engine = WordNlpEngine(models=[{"lang_code": code, "model_name": "none"} for code in LANGUAGES])
    engine.load()
    return AnalyzerEngine(
        registry=registry,
        nlp_engine=engine,
        supported_languages=list(LANGUAGES),
        default_score_threshold=SCORE_THRESHOLD,
    )


def language_of(text: str) -> str:
    """ru when the text has Cyrillic letters (natasha then looks for names), else en."""
    return "ru" if _CYRILLIC.search(text) else "en"


def analyze(analyzer: AnalyzerEngine, text: str, **options: Any) -> list[RecognizerResult]:
    """The personal data found in one text (every entity type this package knows)."""
    language = language_of(text)
    entities = [e for e in LABELS if language == "ru" or e != "PERSON"]  # natasha: ru only
    results: list[RecognizerResult] = analyzer.analyze(
        text=text, language=language, entities=entities, **options
    )
    return results
