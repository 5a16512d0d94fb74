"""A faster encoder for single queries on CPU: the model's transformer run by ONNX Runtime.

A query is one short text, where PyTorch spends most of its time in per-operator overhead;
ONNX Runtime runs the same graph in about a third of the time. The graph is exported from the
loaded model at start-up (no download), tokenisation is the model's own, and the result is
checked against PyTorch on probe texts: any model this cannot reproduce exactly (another
pooling, extra layers, an export failure) keeps the PyTorch path.
"""

import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_POOLINGS = ("mean", "cls")
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_PROBES = (
    "How do I reset my password?",
    "Сколько дней отпуска положено сотруднику?",
    # Longer than the export input: the graph's sequence length must really be dynamic.
    " ".join(["The quick brown fox jumps over the lazy dog near the river bank."] * 12),
)
# Largest difference from PyTorch accepted on a normalised vector (float32 reorderings).
_TOLERANCE = 1e-4


class OnnxQueryEncoder:
    """Embeds one text with ONNX Runtime exactly as the SentenceTransformer would."""

    def __init__(self, model: Any, session: Any, inputs: list[str], pooling: str) -> None:
        self._model = model
        self._session = session
        self._inputs = inputs
        self._pooling = pooling

    @classmethod
    def build(cls, model: Any, threads: int) -> "OnnxQueryEncoder | None":
        """The encoder for this model, or None when it cannot reproduce the model exactly."""
        modules = list(model)
        names = [type(m).__name__ for m in modules]
        if names[:2] != ["Transformer", "Pooling"] or any(n != "Normalize" for n in names[2:]):
            return None
        pooling = modules[1].get_config_dict()
        if pooling.get("pooling_mode") not in _POOLINGS or not pooling.get("include_prompt", True):
            return None
        try:
            encoder = cls._export(
                model, modules[0].auto_model, str(pooling["pooling_mode"]), threads
            )
        except ImportError:
            return None
        except Exception:  # export support varies by architecture: PyTorch stays in charge
            log.warning("ONNX export of the query encoder failed; using PyTorch", exc_info=True)
            return None
        difference = max(
            float(np.abs(encoder.embed(text) - model.encode(text, normalize_embeddings=True)).max())
            for text in _PROBES
        )
        if difference > _TOLERANCE:
            log.warning("ONNX query encoder differs from PyTorch by %s; using PyTorch", difference)
            return None
        return encoder

    @classmethod
    def _export(
        cls, model: Any, transformer: Any, pooling: str, threads: int
    ) -> "OnnxQueryEncoder":
        import onnxruntime as ort
        import torch

        features = model.preprocess(["export"])
        inputs = [name for name in _INPUTS if name in features]

        class _Graph(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.transformer = transformer

            def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
                hidden: torch.Tensor = self.transformer(
                    **dict(zip(inputs, tensors, strict=True))
                ).last_hidden_state
                return hidden

        axes = {name: {0: "batch", 1: "tokens"} for name in [*inputs, "hidden"]}
        with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
            # The tracer folds shape checks that are constant for one unpadded input (ours).
            warnings.simplefilter("ignore")
            path = Path(folder) / "query.onnx"
            with torch.inference_mode():
                torch.onnx.export(
                    _Graph().eval(),
                    tuple(features[name] for name in inputs),
                    str(path),
                    input_names=inputs,
                    output_names=["hidden"],
                    dynamic_axes=axes,
                    dynamo=False,
                )
            graph = path.read_bytes()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        return cls(model, session, inputs, pooling)

    def embed(self, text: str) -> np.ndarray[Any, np.dtype[np.float32]]:
        """The normalised embedding of one text."""
        features = self._model.preprocess([text])
        feeds = {name: features[name].numpy().astype(np.int64) for name in self._inputs}
        hidden = self._session.run(None, feeds)[0][0]
        if self._pooling == "cls":
            vector = hidden[0]
        else:
            mask = feeds["attention_mask"][0].astype(np.float32)[:, None]
            vector = (hidden * mask).sum(axis=0) / max(float(mask.sum()), 1e-9)
        vector = vector.astype(np.float32)
        norm = float(np.linalg.norm(vector))
        result: np.ndarray[Any, np.dtype[np.float32]] = vector / norm if norm > 0 else vector
        return result
