"""The retrieval evaluation sets under bench/: well-formed queries whose relevant documents
exist, and a Russian corpus that really is Russian UTF-8 text."""

import json
import re
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RU_SET = REPO / "bench" / "ru-manpages"
PARAPHRASE_SET = REPO / "bench" / "debian-faq-paraphrases"
# The shared Debian FAQ corpus, beside the repository (as bench/chain_overhead.py finds it).
SHARED_CORPUS = REPO.parent / "shared" / "bench" / "debian-faq-en" / "corpus"

CYRILLIC = re.compile("[\u0400-\u04ff]")


def load_queries(path: Path) -> list[dict[str, Any]]:
    """Every line of a queries.jsonl file, parsed; fails on a line that is not a JSON object."""
    queries: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        item = json.loads(line)
        assert isinstance(item, dict), f"{path.name}:{number} is not a JSON object"
        queries.append(item)
    return queries


def check_queries(queries: list[dict[str, Any]], corpus: Path, minimum: int) -> None:
    """Enough queries, unique ids, a non-empty query and relevant ids that are corpus files."""
    assert len(queries) >= minimum
    ids = [item["id"] for item in queries]
    assert len(ids) == len(set(ids)), "query ids are not unique"
    for item in queries:
        assert set(item) == {"id", "query", "relevant"}, item["id"]
        assert isinstance(item["query"], str), item["id"]
        assert item["query"].strip(), item["id"]
        relevant = item["relevant"]
        assert isinstance(relevant, list), item["id"]
        assert relevant, item["id"]
        assert len(relevant) == len(set(relevant)), item["id"]
        for doc_id in relevant:
            assert (corpus / doc_id).is_file(), f"{item['id']}: {doc_id} is not in {corpus}"


def letter_counts(text: str) -> tuple[int, int]:
    """How many Cyrillic letters a text has, and how many letters of any script."""
    letters = [char for char in text if char.isalpha()]
    return sum(1 for char in letters if CYRILLIC.match(char)), len(letters)


def test_russian_queries() -> None:
    queries = load_queries(RU_SET / "queries.jsonl")
    check_queries(queries, RU_SET / "corpus", minimum=70)
    for item in queries:
        assert CYRILLIC.search(item["query"]), f"{item['id']} has no Cyrillic letter"


def test_russian_corpus_is_cyrillic_utf8() -> None:
    files = sorted((RU_SET / "corpus").glob("*.txt"))
    assert len(files) >= 150
    total_letters = 0
    total_cyrillic = 0
    for path in files:
        cyrillic, letters = letter_counts(path.read_bytes().decode("utf-8"))
        # A character table or an API page has many Latin names beside its Russian prose.
        assert cyrillic >= 0.3 * letters, f"{path.name} is not mostly Russian"
        total_cyrillic += cyrillic
        total_letters += letters
    assert total_cyrillic >= 0.5 * total_letters


def test_paraphrase_queries() -> None:
    queries = load_queries(PARAPHRASE_SET / "queries.jsonl")
    check_queries(queries, SHARED_CORPUS, minimum=40)
