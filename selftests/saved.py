"""Saved runs as pytest-benchmark writes them, with pplgate's extra_info: known values for the verdicts and the history."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

from pplgate.history import timings_of_run

TOKENS = 4096
STEADY = [0.50, 0.51, 0.50, 0.49, 0.50]  # five saved runs: enough for a verdict


def saved_run(seconds: float, spread: float = 0.01, perplexity: float = 1234.5, onnxruntime: str = "1.31.1", loaded: bool = False,
              node: str = "node-a", threads: int = 0) -> dict:
    """One run as pytest-benchmark saves it, with pplgate's extra_info."""
    return {
        "machine_info": {"node": node},
        "commit_info": {"id": "abcdef0123456789", "dirty": False},
        "benchmarks": [{
            "name": "test_throughput[tiny-cpu-fp32]",
            "stats": {"median": seconds, "mean": seconds, "stddev": seconds * spread, "rounds": 3},
            "extra_info": {"test": "tiny-cpu-fp32", "tokens": TOKENS, "tokens_per_second": TOKENS / seconds, "perplexity": perplexity,
                           "batch_size": 1, "intra_op_threads": threads, "provider_options": {}, "blocks": 4, "scoring": "graph",
                           "onnxruntime": onnxruntime, "onnxruntime_distribution": "onnxruntime", "providers": ["CPUExecutionProvider"],
                           "driver": None, "model_sha256": "m" * 64, "blocks_sha256": "b" * 64,
                           "method": {"grouping": "vendor", "block_size": 1024},
                           "conditions": {"under_load": loaded, "others_cpu_share": 0.5 if loaded else 0.01}},
        }],
    }


def timings(runs: list[dict]):
    return [t for i, data in enumerate(runs) for t in timings_of_run(f"{i + 1:04d}", data)]


def noisy(n: int, noise: float, seed: int = 0, scale: float = 1.0) -> list[dict]:
    rng = random.Random(seed)
    return [saved_run(0.5 * scale * (1 + rng.gauss(0, noise))) for _ in range(n)]


def write_storage(folder: Path, runs: list[dict]) -> Path:
    """``runs`` in pytest-benchmark's file storage, under this machine's folder, one night apart."""
    from pytest_benchmark.utils import get_machine_id

    machine = folder / get_machine_id()  # where pytest-benchmark looks for this machine's runs
    machine.mkdir(parents=True)
    for i, data in enumerate(runs, 1):
        data.setdefault("datetime", f"2026-11-{i:02d}T02:00:00")
        (machine / f"{i:04d}_abcdef01_20261127_000000.json").write_text(json.dumps(data))
    return folder


def corrupt(run: dict, path: list, value) -> dict:
    """``run`` with the field at ``path`` (keys and list indexes) set to ``value``."""
    run = json.loads(json.dumps(run))
    node = run
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return run


def accuracy(perplexity: float | None, verdict: str = "pass", expected: float = 1234.5, test: str = "tiny-cpu-fp32",
             onnxruntime: str = "1.31.1", model: str = "m" * 64, reason: str | None = None) -> dict:
    """One accuracy result as the gate records it (pytest_pplgate.recording.accuracy_record)."""
    return {"id": test, "test": f"tests/test_perplexity.py::test_perplexity[{test}]", "case": "tiny", "device": "cpu",
            "precision": "fp32", "verdict": verdict, "perplexity": perplexity, "perplexity_stderr": None if perplexity is None else 0.5,
            "expected": expected, "rel_tol": 1e-5, "model_sha256": model, "blocks_sha256": "b" * 64, "onnxruntime": onnxruntime,
            "onnxruntime_distribution": "onnxruntime", "providers": ["CPUExecutionProvider"], "driver": None, "provider_options": {},
            "computed_as": "IEEE fp32", "node": "node-a", "reason": reason}


def with_accuracy(run: dict, *records: dict, run_id: str | None = None) -> dict:
    """``run`` with pplgate's key: its run id and accuracy results."""
    import uuid

    return {**run, "pplgate": {"run_id": run_id or uuid.uuid4().hex, "accuracy": list(records)}}


TESTS = ("tiny-cpu-fp32", "tiny-cpu-fp16")
NODES = ("node-a", "node-b")


def eventful(seed: int, n: int = 240) -> list[dict]:
    """``n`` nights of two tests on two machines: noise, lasting steps up and down, runs under load, a second setting,
    perplexities that move and come back, a new model, skipped results."""
    rng = random.Random(seed)
    level = {(t, m): 0.5 for t in TESTS for m in NODES}
    ppl = {(t, m): 1234.5 for t in TESTS for m in NODES}
    runs = []
    for _ in range(n):
        test, node = rng.choice(TESTS), rng.choice(NODES)
        if rng.random() < 0.04:
            level[test, node] *= rng.choice((1.25, 0.8))
        if rng.random() < 0.05:
            ppl[test, node] = rng.choice((1234.5, 1234.6, 1234.7))
        loaded = rng.random() < 0.05
        run = saved_run(
            level[test, node] * (1 + rng.gauss(0, 0.01)) * (1.5 if loaded else 1.0),
            perplexity=ppl[test, node],
            onnxruntime=rng.choice(("1.31.1", "1.31.1", "1.31.1", "1.32.0")),
            loaded=loaded,
            node=node,
            threads=0 if rng.random() < 0.9 else 1,
        )
        run = retest(run, test)
        model = "m" * 64 if rng.random() < 0.97 else "n" * 64
        result = accuracy(None if rng.random() < 0.05 else ppl[test, node], test=test, model=model)
        run["datetime"] = (dt.datetime(2026, 1, 1, 2) + dt.timedelta(days=len(runs))).isoformat()
        runs.append(with_accuracy(run, result))
    return runs


def retest(run: dict, test: str) -> dict:
    """``run`` with its benchmark of ``test``."""
    run["benchmarks"][0]["name"] = f"test_throughput[{test}]"
    run["benchmarks"][0]["extra_info"]["test"] = test
    return run
