"""What the scorer's chunks are for: its mean loss against float64, chunked and in one pass over the vocabulary.

    .venv/bin/python benchmarks/scoring_bias.py

One block (1,024 positions x 50,257 logits) of Gaussian logits around -60
for each spread, random labels; the relative difference of each way's mean
loss from float64's.  A measurement, never a pass or fail.
"""

from __future__ import annotations

import sys

import numpy as np
import onnxruntime as ort

from pplgate.scoring import LABELS, LOGITS, TOKEN_LOSSES, labels_of, scoring_model

VOCAB, POSITIONS = 50257, 1024


def float64_losses(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)  # [1, T, V]
    top = x.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(x - top).sum(axis=-1)) + top[..., 0]  # [1, T]
    return lse - np.take_along_axis(x, labels[..., None], axis=-1)[..., 0]


def main() -> int:
    rng = np.random.default_rng(0)
    sessions = {
        name: ort.InferenceSession(
            scoring_model(VOCAB, np.float32, chunked=chunked).SerializeToString(), providers=["CPUExecutionProvider"]
        )
        for name, chunked in (("29 chunks", True), ("one pass", False))
    }
    print(f"onnxruntime {ort.__version__}: the mean loss's relative difference from float64, one block")
    for spread in (1.0, 3.0, 5.0):
        logits = (rng.standard_normal((1, POSITIONS, VOCAB)) * spread - 60).astype(np.float32)
        labels = labels_of(rng.integers(0, VOCAB, (1, POSITIONS)))
        exact = float64_losses(logits, labels)[:, :-1].mean()
        shown = []
        for name, session in sessions.items():
            losses = session.run([TOKEN_LOSSES], {LOGITS: logits, LABELS: labels})[0][:, :-1]
            shown.append(f"{name} {(losses.astype(np.float64).mean() - exact) / exact:+.2e}")
        print(f"spread {spread:g} (mean loss {exact:.2f} nats): " + ", ".join(shown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
