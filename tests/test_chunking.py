"""Chunking: within the budget, nothing lost, headings and pages respected, overlap only inside a
section; checked with a word counter and with the real model's tokenizer."""

import itertools
import re
from collections.abc import Callable

import pytest

from ingestion.chunking import TextChunk, chunk_document
from ingestion.readers.base import ParsedDocument, Section
from kb.embedder import DenseEmbedder

Counter = Callable[[str], int]
_SENTENCE = re.compile(r"[^.!?]+[.!?]")


def words(text: str) -> int:
    return len(text.split())


@pytest.fixture(params=["words", pytest.param("tokenizer", marks=pytest.mark.slow)])
def count(request: pytest.FixtureRequest) -> Counter:
    if request.param == "words":
        return words
    embedder: DenseEmbedder = request.getfixturevalue("dense_embedder")
    return embedder.count_tokens


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.findall(text)]


def section(name: str, paragraphs: int, page: int | None = None) -> Section:
    """Paragraphs of two sentences, each sentence unique and tagged with its section."""
    text = "\n\n".join(
        f"{name} fact {i} says the service restarts nightly. "
        f"{name} note {i} adds that backups run first."
        for i in range(paragraphs)
    )
    return Section((name,) if page is None else ("Manual",), text, page)


def handbook() -> ParsedDocument:
    long_paragraph = " ".join(f"Long {i} sentence keeps going for a while here." for i in range(40))
    return ParsedDocument(
        "Handbook",
        [
            Section((), "Preface before any heading."),
            section("Alpha", 9),
            Section(("Alpha", "Beta"), long_paragraph),
            section("Gamma", 2),
            section("Delta", 12),
        ],
    )


def chunk_sentences(chunk: TextChunk) -> list[str]:
    return sentences(chunk.text)


@pytest.mark.parametrize("budget", [40, 120])
def test_chunks_fit_the_budget_and_lose_no_text(count: Counter, budget: int) -> None:
    doc = handbook()
    chunks = chunk_document(doc, count, max_tokens=budget, overlap_tokens=12)

    assert len(chunks) > 3
    for chunk in chunks:
        assert 0 < count(chunk.text) <= budget, chunk.text
    chunked = "\n".join(c.text for c in chunks)
    for sec in doc.sections:
        for sentence in sentences(sec.text):
            assert sentence in chunked


def test_each_chunk_has_the_heading_path_where_it_starts(count: Counter) -> None:
    doc = handbook()
    owner = {s: sec.heading_path for sec in doc.sections for s in sentences(sec.text)}
    chunks = chunk_document(doc, count, max_tokens=60, overlap_tokens=12)

    for chunk in chunks:
        first = chunk_sentences(chunk)[0]
        assert owner[first] == chunk.heading_path, chunk.text
    # Sections come in reading order, and every section starts some chunk or is merged.
    index = {sec.heading_path: i for i, sec in enumerate(doc.sections)}
    positions = [index[c.heading_path] for c in chunks]
    assert positions == sorted(positions)
    assert {("Alpha", "Beta"), ("Gamma",), ("Delta",)} <= {c.heading_path for c in chunks}


def test_overlap_repeats_last_sentence_within_a_section_only() -> None:
    doc = ParsedDocument("T", [section("Alpha", 8), section("Beta", 8)])
    chunks = chunk_document(doc, words, max_tokens=40, overlap_tokens=10)

    within = across = 0
    for previous, current in itertools.pairwise(chunks):
        first = chunk_sentences(current)[0]
        if previous.heading_path == current.heading_path:
            within += 1
            assert first == chunk_sentences(previous)[-1]
        else:
            across += 1
            assert first not in previous.text
            assert first.startswith(current.heading_path[0])
    assert within >= 4
    assert across == 1


def test_no_overlap_without_overlap_budget() -> None:
    doc = ParsedDocument("T", [section("Alpha", 8)])
    chunks = chunk_document(doc, words, max_tokens=40, overlap_tokens=0)
    all_sentences = [s for c in chunks for s in chunk_sentences(c)]
    assert len(all_sentences) == len(set(all_sentences)) == 16


def test_chunks_never_span_pages() -> None:
    # A PDF: two short pages under the same bookmark would fit in one chunk together.
    doc = ParsedDocument(
        "Manual",
        [
            Section(("Manual",), "Page one text. It ends here.", page=1),
            Section(("Manual",), "Page two text.", page=2),
            section("x", 8, page=3),
        ],
    )
    chunks = chunk_document(doc, words, max_tokens=40, overlap_tokens=10)

    assert [c.page for c in chunks[:2]] == [1, 2]
    assert chunks[0].text == "Page one text. It ends here."
    assert chunks[1].text == "Page two text."
    page3 = [c for c in chunks if c.page == 3]
    assert len(page3) > 1
    assert all("Page" not in c.text for c in page3)


def test_small_neighbouring_sections_share_a_chunk() -> None:
    doc = ParsedDocument(
        "FAQ",
        [
            Section(("FAQ", "Wifi"), "The password is on the fridge."),
            Section(("FAQ", "Printer"), "Use the one on floor two."),
            Section(("FAQ", "Parking"), "Park behind the building."),
        ],
    )
    [chunk] = chunk_document(doc, words, max_tokens=100, overlap_tokens=10)

    assert chunk.heading_path == ("FAQ", "Wifi")
    text = chunk.text
    assert text.index("The password") < text.index("Printer") < text.index("Use the one")
    assert text.index("Use the one") < text.index("Parking") < text.index("Park behind")


def test_a_big_section_starts_its_own_chunk() -> None:
    doc = ParsedDocument("T", [section("Alpha", 3), section("Beta", 3)])
    chunks = chunk_document(doc, words, max_tokens=100, overlap_tokens=10)
    assert [c.heading_path for c in chunks] == [("Alpha",), ("Beta",)]


def test_giant_paragraph_without_punctuation_is_split(count: Counter) -> None:
    tokens = [f"w{i}" for i in range(600)]
    doc = ParsedDocument("T", [Section(("Log",), " ".join(tokens))])
    chunks = chunk_document(doc, count, max_tokens=50, overlap_tokens=10)

    assert len(chunks) > 4
    seen: list[str] = []
    for chunk in chunks:
        assert count(chunk.text) <= 50
        assert chunk.heading_path == ("Log",)
        seen.extend(chunk.text.split())
    assert set(seen) == set(tokens)
    # In reading order: each chunk starts after where the previous one started.
    starts = [int(c.text.split()[0][1:]) for c in chunks]
    assert starts == sorted(starts)


@pytest.mark.slow
def test_unbroken_token_run_is_cut_by_characters(dense_embedder: DenseEmbedder) -> None:
    # No whitespace at all (a CSV line, minified code), yet many word pieces.
    blob = ",".join(f"field{i}" for i in range(800))
    doc = ParsedDocument("T", [Section((), blob)])
    chunks = chunk_document(doc, dense_embedder.count_tokens, max_tokens=64, overlap_tokens=8)

    assert len(chunks) > 10
    assert all(dense_embedder.count_tokens(c.text) <= 64 for c in chunks)
    assert "".join(c.text.replace(" ", "").replace("\n", "") for c in chunks) == blob


def test_empty_document_gives_no_chunks() -> None:
    assert chunk_document(ParsedDocument("T", [Section((), "  \n\n ")]), words) == []
