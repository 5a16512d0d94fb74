"""How likely a given reply is on llama.cpp, for several prompts: each prompt is evaluated
(reusing what it shares with the previous one), then the reply's tokens in one batch that
keeps the logits of every position, and the log-probabilities of the reply's tokens add up."""

from collections.abc import Sequence

import llama_cpp
import numpy as np
import numpy.typing as npt

from app.errors import LLMError

# Tokens per llama_decode call: the context's default batch size.
_BATCH = 512


def _log_softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    shifted = logits.astype(np.float64) - float(logits.max())
    result: npt.NDArray[np.float64] = shifted - np.log(np.exp(shifted).sum())
    return result


def _logits(llm: llama_cpp.Llama, index: int) -> npt.NDArray[np.float32]:
    """The logits after the index-th output of the last decode (-1: its last)."""
    row = llama_cpp.llama_get_logits_ith(llm.ctx, index)
    return np.ctypeslib.as_array(row, shape=(llm.n_vocab(),))


def _decode_all(llm: llama_cpp.Llama, tokens: Sequence[int], n_past: int) -> None:
    """Evaluate tokens from position n_past, keeping the logits of every position (the i-th
    token's are _logits(llm, i))."""
    batch = llama_cpp.llama_batch_init(len(tokens), 0, 1)
    try:
        batch.n_tokens = len(tokens)
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = n_past + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 1
        if llama_cpp.llama_decode(llm.ctx, batch) != 0:
            raise LLMError("llama.cpp could not evaluate the reply")
    finally:
        llama_cpp.llama_batch_free(batch)


def _shared(llm: llama_cpp.Llama, ids: Sequence[int]) -> int:
    """How many leading tokens of ids are evaluated already (at least one is left to do, so
    that the prompt's last logits are fresh)."""
    done = llm.input_ids[: llm.n_tokens]
    limit = min(len(done), len(ids) - 1)
    mismatch = np.flatnonzero(done[:limit] != np.asarray(ids[:limit]))
    return int(mismatch[0]) if mismatch.size else limit


def reply_log_probs(
    llm: llama_cpp.Llama, prompts: Sequence[Sequence[int]], reply: Sequence[int]
) -> list[float]:
    """The log-probability of the reply's tokens after each prompt's, summed per prompt."""
    llm.reset()  # type: ignore[no-untyped-call]
    totals: list[float] = []
    for ids in prompts:
        llm.n_tokens = _shared(llm, ids)
        llm.eval(ids[llm.n_tokens :])
        total = float(_log_softmax(_logits(llm, -1))[reply[0]])
        # The reply's own tokens (but the last) give the logits of the next ones.
        rest = list(reply[:-1])
        for start in range(0, len(rest), _BATCH):
            chunk = rest[start : start + _BATCH]
            _decode_all(llm, chunk, llm.n_tokens + start)
            for i in range(len(chunk)):
                total += float(_log_softmax(_logits(llm, i))[reply[start + i + 1]])
        totals.append(total)
    return totals
