"""Throughput: pytest-benchmark records per (case, device, precision), comparable across runs."""

import onnxruntime as ort

from pplgate.evaluate import evaluate


def test_throughput(benchmark, gate, gate_target, gate_session, gate_blocks):
    settings = gate.settings
    blocks = gate_blocks.head(settings.bench_blocks)
    batch_size = settings.batch_size
    benchmark.group = gate_target.case.name
    # Warm-up rounds grow the session's memory arena; then each round is one
    # evaluation of the same blocks, timed whole.
    result = benchmark.pedantic(
        evaluate,
        args=(gate_session, blocks, batch_size),
        kwargs={"warmup": 0, "progress": False},
        rounds=settings.bench_rounds,
        warmup_rounds=1,
        iterations=1,
    )
    tokens = blocks.ids.size
    mean = benchmark.stats.stats.mean if benchmark.stats else result.eval_seconds
    benchmark.extra_info.update({
        "case": gate_target.case.name,
        "device": gate_target.device.spec,
        "precision": gate_target.precision,
        "blocks": len(blocks),
        "batch_size": batch_size,
        "tokens_per_second": tokens / mean,
        "seconds_per_block": mean / len(blocks),
        "perplexity": result.perplexity,
        "scoring": gate_session.scoring,
        "onnxruntime": ort.__version__,
        "providers": gate_session.providers,
        "provider_options": gate_session.requested_provider_options,
        "intra_op_threads": gate_session.options.intra_op_threads,
    })
