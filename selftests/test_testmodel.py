"""The built model against its independent numpy forward pass."""

import numpy as np
import onnx
import pytest

from pplgate.devices import parse_device
from pplgate.runtime import open_session
from pplgate.testmodel import PRESETS, build_model, load_weights, reference_token_losses

CPU = parse_device("cpu")


@pytest.fixture(scope="module")
def reference(tiny_model):
    return load_weights(tiny_model)


@pytest.mark.parametrize("scoring", ["graph", "host"])
def test_onnx_token_losses_match_numpy_reference(tiny_model, reference, block_matrix, scoring):
    cfg, weights = reference
    session = open_session(tiny_model, CPU, "fp32", scoring)
    obtained = session.token_losses(block_matrix[:2])  # [2, 1023]
    for row, block in zip(obtained, block_matrix[:2]):
        expected = reference_token_losses(cfg, weights, block)
        np.testing.assert_allclose(row, expected, rtol=1e-4)


def test_token_losses_differ_enough_to_expose_an_off_by_one(tiny_model, reference, block_matrix):
    cfg, weights = reference
    losses = reference_token_losses(cfg, weights, block_matrix[0])
    # Scoring position t against id t (no shift) instead of t+1 must move the
    # mean loss by far more than float32 rounding does.
    assert losses.std() > 1.0
    z = open_session(tiny_model, CPU, "fp32", "host").forward(block_matrix[:1])[0].astype(np.float64)
    lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
    unshifted = (lse - z[np.arange(1024), block_matrix[0]])[:-1]
    assert abs(unshifted.mean() - losses.mean()) > 0.1


def test_graph_interface_is_the_vendors(tiny_model):
    model = onnx.load(str(tiny_model))
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in model.graph.output] == ["logits"]
    assert model.opset_import[0].version == 13
    dims = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence", 50257]


def test_gpt2_small_preset_has_gpt2_small_shape():
    cfg = PRESETS["gpt2-small"]
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.vocab_size, cfg.n_positions) == (12, 12, 768, 50257, 1024)


def test_weights_are_seeded():
    import dataclasses

    cfg = PRESETS["tiny"]
    weights = [{t.name: t.raw_data for t in build_model(c).graph.initializer} for c in (cfg, cfg, dataclasses.replace(cfg, seed=1))]
    assert weights[0] == weights[1]
    assert weights[0]["wte"] != weights[2]["wte"]
