"""GPT-2-architecture ONNX models with seeded random weights, built without torch.

The real GPT-2 weights are not reachable from CI, so the suite builds its own
models of the same architecture and checks the ONNX path against an independent
numpy forward pass of the same weights.
"""

from pplgate.testmodel.config import PRESETS, GPT2Config, init_weights
from pplgate.testmodel.graph import build_model, write_model
from pplgate.testmodel.reference import (
    cached_reference_perplexity,
    load_weights,
    reference_perplexity,
    reference_token_losses,
)

__all__ = [
    "PRESETS",
    "GPT2Config",
    "build_model",
    "cached_reference_perplexity",
    "init_weights",
    "load_weights",
    "reference_perplexity",
    "reference_token_losses",
    "write_model",
]
