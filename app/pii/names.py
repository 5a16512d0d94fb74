"""Person names: natasha's Russian NER (slovnet; its model and navec embeddings ship inside the
package, nothing is downloaded), as a Presidio recognizer. A span is kept when pymorphy3's
dictionary knows one of its words as a first name, surname or patronymic, or when it is two
or more capitalised Latin words (a foreign name in Russian text): the NER alone also takes
a capitalised word at the start of a line ("Драйвер", "Строчные") for a person."""

import re
import threading

import pymorphy3
from natasha import NewsEmbedding, NewsNERTagger
from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from threadpoolctl import ThreadpoolController

# Names are capitalised: a text with no Cyrillic capital has none for natasha to find.
_CYRILLIC_CAPITAL = re.compile(r"[А-ЯЁ]")
_SCORE = 0.85
_WORDS = re.compile(r"[А-ЯЁа-яёA-Za-z]+")
_LATIN_NAME = re.compile(r"[A-Z][a-z]+\.?(?:\s+[A-Z][a-z]*\.?)+")
_NAME_TAGS = frozenset({"Name", "Surn", "Patr"})


class NatashaNameRecognizer(EntityRecognizer):
    """PER spans of natasha's NER (slovnet news model) as PERSON results."""

    def __init__(self, supported_language: str = "ru") -> None:
        self._tagger: NewsNERTagger | None = None
        self._morph: pymorphy3.MorphAnalyzer | None = None
        # slovnet's small matrix products are 10x slower with a multi-threaded BLAS on a busy
        # machine; one tagging at a time, on one BLAS thread.
        self._lock = threading.Lock()
        self._blas = ThreadpoolController()
        super().__init__(
            supported_entities=["PERSON"],
            supported_language=supported_language,
            name="NatashaNameRecognizer",
        )

    def load(self) -> None:
        """Read the bundled embeddings and NER model (about 2 s, once)."""
        self._tagger = NewsNERTagger(NewsEmbedding())
        self._morph = pymorphy3.MorphAnalyzer()

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """One PERSON result per PER span natasha finds."""
        if "PERSON" not in entities or not _CYRILLIC_CAPITAL.search(text):
            return []
        assert self._tagger is not None
        with self._lock, self._blas.limit(limits=1, user_api="blas"):
            markup = self._tagger(text)
        return [
            RecognizerResult("PERSON", span.start, span.stop, _SCORE)
            for span in markup.spans
            if span.type == "PER" and self._is_name(text[span.start : span.stop])
        ]

    def _is_name(self, span: str) -> bool:
        """A word of it is a known name (its likeliest reading, or any reading as a first name
        or patronymic), or it is a run of capitalised Latin words."""
        if _LATIN_NAME.fullmatch(span.strip()):
            return True
        assert self._morph is not None
        for word in _WORDS.findall(span):
            parses = self._morph.parse(word)
            if parses and _NAME_TAGS & parses[0].tag.grammemes:
                return True
            if any({"Name", "Patr"} & p.tag.grammemes for p in parses):
                return True
        return False
