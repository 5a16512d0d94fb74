"""Experts' answers become knowledge: a question and the answer a person wrote for it are
stored as a small Markdown document in the collection, through the ingestion pipeline (so it
is chunked, embedded and searched like any other document), with its author and date."""

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from ingestion.pipeline import FileReport, Ingestor, SourceFile

_SLUG = re.compile(r"[^\w]+", re.UNICODE)
_SLUG_WORDS = 8
_HEADINGS = {
    "en": ("Question", "Answer", "Answered by {author} on {date}."),
    "ru": ("Вопрос", "Ответ", "Ответ дан: {author}, {date}."),
}


@dataclass(frozen=True, slots=True)
class SavedAnswer:
    """What was stored, and where."""

    collection: str
    doc_id: str
    report: FileReport


def qa_document(
    question: str, answer: str, author: str, when: datetime, language: str = "en"
) -> tuple[str, str]:
    """(doc_id, Markdown text) of a question answered by a person. The question is the title,
    so search finds it by the way people ask; the id is stable for the same question."""
    question = " ".join(question.split())
    words = _SLUG.sub(" ", question.lower()).split()[:_SLUG_WORDS]
    digest = hashlib.sha256(question.lower().encode()).hexdigest()[:8]
    doc_id = f"qa/{'-'.join(words) or 'question'}-{digest}.md"
    q_label, a_label, signed = _HEADINGS.get(language, _HEADINGS["en"])
    text = (
        f"# {question}\n\n"
        f"## {q_label}\n\n{question}\n\n"
        f"## {a_label}\n\n{answer.strip()}\n\n"
        f"{signed.format(author=author, date=f'{when:%Y-%m-%d}')}\n"
    )
    return doc_id, text


async def save_answer(
    ingestor: Ingestor,
    collection: str,
    question: str,
    answer: str,
    *,
    author: str,
    language: str = "en",
    when: datetime | None = None,
) -> SavedAnswer:
    """Ingest the Q&A document into the collection (a new answer to the same question
    replaces the old one)."""
    doc_id, text = qa_document(question, answer, author, when or datetime.now(UTC), language)
    source = SourceFile(doc_id, f"expert:{author}", data=text.encode("utf-8"))
    report = await ingestor.ingest([source], collection, force=True)
    return SavedAnswer(collection, doc_id, report.files[0])
