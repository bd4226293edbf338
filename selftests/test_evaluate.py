"""The evaluation loop: batching, scoring paths, precision and numerics."""

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from pplgate.blocks import Blocks
from pplgate.devices import parse_device
from pplgate.errors import PplgateError
from pplgate.evaluate import evaluate
from pplgate.metric import host_token_losses, perplexity
from pplgate.runtime import open_session

CPU = parse_device("cpu")
N_BLOCKS = 10  # batch sizes 3 and 4 then end on a partial batch


@pytest.fixture(scope="module")
def graph_session(tiny_model):
    return open_session(tiny_model, CPU, "fp32", "graph")


@pytest.fixture(scope="module")
def batch1(graph_session, blocks):
    return evaluate(graph_session, blocks.head(N_BLOCKS), 1, progress=False)


@pytest.mark.parametrize("batch_size", [3, 4])
def test_batch_size_does_not_change_the_perplexity(graph_session, blocks, batch1, batch_size):
    other = evaluate(graph_session, blocks.head(N_BLOCKS), batch_size, progress=False)
    assert other.blocks == N_BLOCKS
    assert other.perplexity == pytest.approx(batch1.perplexity, rel=1e-6)


def test_graph_scoring_equals_float64_host_scoring(tiny_model, graph_session, block_matrix):
    host = open_session(tiny_model, CPU, "fp32", "host")
    ids = block_matrix[:2]
    logits = host.forward(ids)
    # In float64 a few positions at a time: the whole of it would be 1.6 GB.
    exact = np.concatenate([host_token_losses(logits[:, r : r + 129], ids[:, r : r + 129], dtype=np.float64) for r in range(0, ids.shape[1] - 1, 128)], axis=1)
    in_graph = graph_session.token_losses(block_matrix[:2])
    vendor = host.token_losses(block_matrix[:2])
    assert perplexity(in_graph.mean(axis=1)) == pytest.approx(perplexity(exact.mean(axis=1)), rel=1e-6)
    assert perplexity(vendor.mean(axis=1)) == pytest.approx(perplexity(exact.mean(axis=1)), rel=1e-6)


def test_counts_and_timings_of_an_evaluation(batch1):
    assert batch1.token_losses.shape == (N_BLOCKS * 1023,)
    assert batch1.scored_tokens == N_BLOCKS * 1023
    assert batch1.eval_seconds > 0
    assert batch1.tokens_per_second == pytest.approx(N_BLOCKS * 1024 / batch1.eval_seconds)
    assert batch1.perplexity == pytest.approx(math.exp(batch1.token_losses.astype(np.float64).mean()), rel=1e-9)


def test_fp16_on_cpu_runs_and_stays_close_to_fp32(tiny_model, blocks, batch1):
    session = open_session(tiny_model, CPU, "fp16", "graph")
    assert session.model_path.name.endswith(".fp16.onnx")
    # The boundary stays as the vendor's: int64 ids in, float32 scoring.
    assert session.iface.input_dtypes["input_ids"] == np.int64
    fp16 = evaluate(session, blocks.head(N_BLOCKS), 1, progress=False)
    assert fp16.perplexity != batch1.perplexity
    assert fp16.perplexity == pytest.approx(batch1.perplexity, rel=0.01)


def test_fp16_conversion_is_cached(tiny_model):
    first = open_session(tiny_model, CPU, "fp16").model_path
    mtime = first.stat().st_mtime_ns
    assert open_session(tiny_model, CPU, "fp16").model_path.stat().st_mtime_ns == mtime


class _NaNAt:
    """A session whose block ``bad`` yields NaN losses."""

    device, precision = CPU, "fp32"

    def __init__(self, bad: int):
        self.bad, self.seen = bad, 0

    def token_losses(self, ids):
        out = np.ones((ids.shape[0], ids.shape[1] - 1), dtype=np.float32)
        for row in range(ids.shape[0]):
            if self.seen + row == self.bad + 1:  # +1: the warm-up batch came first
                out[row, 5] = np.nan
        self.seen += ids.shape[0]
        return out


def test_nan_losses_fail_with_the_block_index(blocks):
    with pytest.raises(PplgateError, match=r"block 3 has 1 NaN or infinite token losses"):
        evaluate(_NaNAt(3), blocks.head(6), 1, progress=False)


def test_perplexity_overflow_is_inf_as_the_vendor_reports():
    assert perplexity(np.array([800.0])) == math.inf
    assert perplexity(np.array([1.0, 3.0])) == pytest.approx(math.exp(2.0))


def _hf_style(tiny_model, tmp_path):
    """The tiny model as optimum exports look: position_ids fed, present.* outputs."""
    model = onnx.load(str(tiny_model))
    g = model.graph
    for node in g.node:
        if node.op_type == "Gather" and node.input[0] == "wpe":
            node.input[1] = "position_ids"
    g.input.append(helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "sequence"]))
    first_qkv = next(n.output[0] for n in g.node if n.op_type == "Add" and n.input[1] == "h.0.attn.c_attn.bias")
    g.output.append(helper.make_tensor_value_info(first_qkv, TensorProto.FLOAT, None))
    g.output[-1].name = first_qkv
    path = tmp_path / "hf_style.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("scoring", ["graph", "host"])
def test_hf_style_graph_gives_the_same_losses(tiny_model, graph_session, block_matrix, tmp_path, scoring):
    session = open_session(_hf_style(tiny_model, tmp_path), CPU, "fp32", scoring)
    assert "position_ids" in session.iface.inputs
    np.testing.assert_allclose(session.token_losses(block_matrix[:2]), graph_session.token_losses(block_matrix[:2]), rtol=1e-5)


@pytest.fixture(scope="module")
def with_short_block(blocks):
    """Six whole blocks, then a short one of 100 ids, as a small last batch of rows gives."""
    head = blocks.head(6)
    return Blocks(np.concatenate([head.ids, blocks.block(7)[:100]]), np.append(head.lengths, 100))


def test_batch_sizes_1_to_5_give_the_same_perplexity(graph_session, with_short_block):
    runs = [evaluate(graph_session, with_short_block, b, progress=False) for b in range(1, 6)]
    for run in runs:
        assert run.scored_tokens == 6 * 1023 + 99
        assert run.perplexity == pytest.approx(runs[0].perplexity, rel=1e-6)


def test_a_short_block_weighs_as_one_block(graph_session, with_short_block):
    # The vendor scores the short block in a batch of its own: its mean loss counts once, like any block's.
    ev = evaluate(graph_session, with_short_block, 4, progress=False)
    whole = graph_session.token_losses(with_short_block.matrix(0, 6)).astype(np.float64).mean(axis=1)
    short = graph_session.token_losses(with_short_block.block(6)[None, :]).astype(np.float64).mean()
    assert ev.perplexity == pytest.approx(math.exp(np.append(whole, short).mean()), rel=1e-6)
    assert ev.perplexity != pytest.approx(math.exp(ev.token_losses.astype(np.float64).mean()), rel=1e-6)


@pytest.mark.parametrize("mask", [-1e9, float(np.finfo(np.float32).min), -math.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_graph_scoring_equals_host_scoring_on_masked_logits(mask, dtype):
    """A masked vocabulary (padded, banned tokens) at every chunk's first index: the scorer's chunks must not cancel there."""
    import onnxruntime as ort

    from pplgate.scoring import LABELS, LOGITS, TOKEN_LOSSES, chunk_count, scoring_model

    vocab = 50257
    step = vocab // chunk_count(vocab)
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((2, 65, vocab)) * 3).astype(dtype)
    with np.errstate(over="ignore"):  # -1e9 is -inf in float16
        logits[..., ::step] = mask  # 0, 1733, 3466, ...
    ids = rng.integers(1, step, (2, 65))  # targets whose logits are finite
    scorer = ort.InferenceSession(scoring_model(vocab, dtype).SerializeToString(), providers=["CPUExecutionProvider"])
    labels = np.zeros_like(ids)
    labels[:, :-1] = ids[:, 1:]
    in_graph = scorer.run([TOKEN_LOSSES], {LOGITS: logits, LABELS: labels})[0][:, :-1]
    exact = host_token_losses(logits, ids, dtype=np.float64)
    assert np.isfinite(in_graph).all()
    assert perplexity(in_graph.mean(axis=1)) == pytest.approx(perplexity(exact.mean(axis=1)), rel=1e-6)
    np.testing.assert_allclose(in_graph, exact, rtol=1e-5)
