"""Throughput: pytest-benchmark records per (case, device, precision); each run is judged against the saved ones."""

from pplgate.conditions import Watch
from pplgate.evaluate import evaluate


def test_throughput(benchmark, gate, gate_target, gate_model, gate_blocks, throughput_regression):
    settings = gate.settings
    blocks = gate_blocks.head(settings.bench_blocks)
    benchmark.group = gate_target.case.name
    watch = Watch(gpu=gate_target.target.device.kind.memory == "cuda")
    # Warm-up rounds grow the session's memory arena; then each round is one
    # evaluation of the same blocks, timed whole.
    result = benchmark.pedantic(
        evaluate,
        args=(gate_model, blocks, settings.run.batch_size),
        kwargs={"warmup": 0, "progress": False},
        rounds=settings.bench_rounds,
        warmup_rounds=1,
        iterations=1,
    )
    throughput_regression.check(benchmark, result, watch.stop())
