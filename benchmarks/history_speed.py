"""How fast the fleet's history is: recording one run, and ``pplgate history`` over many, in PostgreSQL.

    .venv/bin/python benchmarks/history_speed.py --server postgresql://postgres@/postgres?host=/tmp/pg
    .venv/bin/python benchmarks/history_speed.py --server "$PPLGATE_TEST_POSTGRES" --runs 100000

Makes a database of its own on the server (dropped at the end), records
``--record`` runs one at a time as the gate does (the median time of one), then
fills it to ``--runs`` runs (8 machines, 3 tests, each run one throughput
benchmark and one accuracy result, loaded with COPY) and times ``pplgate
history`` over them, end to end, best of 3, and what the gate reads of them
before judging a run.  A measurement, never a pass or fail.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import statistics
import sys
import time
import uuid

from pplgate.cli import main as pplgate
from pplgate.history import saved_history
from pplgate.postgres import ACCURACY_COLUMNS, BENCH_COLUMNS, PostgresStore, _bench_values, _columns

TESTS = ("gpt2-small-gcu-fp16", "gpt2-small-gcu-fp32", "gpt2-small-cpu-fp32")
NODES = [f"node-{i}" for i in range(8)]


def run(node: str, test: str, seconds: float, n: int) -> dict:
    """One night as the gate records it: one throughput benchmark, one accuracy result."""
    extra = {
        "test": test,
        "tokens": 8192,
        "perplexity": 29.372,
        "batch_size": 1,
        "intra_op_threads": 0,
        "provider_options": {},
        "blocks": 8,
        "scoring": "graph",
        "onnxruntime": "1.9.1",
        "onnxruntime_distribution": "onnxruntime",
        "providers": ["CPUExecutionProvider"],
        "driver": None,
        "model_sha256": "m" * 64,
        "blocks_sha256": "b" * 64,
        "method": {"grouping": "vendor", "block_size": 1024},
        "conditions": {"under_load": False, "others_cpu_share": 0.01},
    }
    return {
        "machine_info": {"node": node},
        "commit_info": {"id": f"{n:040x}", "dirty": False},
        "datetime": f"2026-{1 + n % 12:02d}-{1 + n % 28:02d}T02:00:00",
        "benchmarks": [
            {
                "name": f"test_throughput[{test}]",
                "stats": {"median": seconds, "mean": seconds, "stddev": seconds * 0.01, "rounds": 3},
                "extra_info": extra,
            }
        ],
        "pplgate": {
            "run_id": uuid.uuid4().hex,
            "accuracy": [
                {
                    "id": test,
                    "verdict": "pass",
                    "perplexity": 29.372,
                    "expected": 29.372,
                    "model_sha256": "m" * 64,
                    "blocks_sha256": "b" * 64,
                    "onnxruntime": "1.9.1",
                }
            ],
        },
    }


def fill(store: PostgresStore, count: int) -> None:
    """``count`` runs, in the store's own tables, with COPY: what months of nights of a fleet leave."""
    rng = random.Random(0)
    conn = store.connect()
    start = conn.execute("SELECT coalesce(max(seq), 0) FROM pplgate_runs").fetchone()[0]
    runs = [run(NODES[i % 8], TESTS[i % 3], 0.5 * (1 + rng.gauss(0, 0.01)), start + i + 1) for i in range(count)]
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy("COPY pplgate_runs (seq, run_id, node, datetime, commit_id, head) FROM STDIN") as copy:
            for i, data in enumerate(runs, start + 1):
                head = {k: v for k, v in data.items() if k != "benchmarks"}
                copy.write_row(
                    (
                        i,
                        data["pplgate"]["run_id"],
                        data["machine_info"]["node"],
                        data["datetime"],
                        data["commit_info"]["id"],
                        json.dumps(head),
                    )
                )
        bench_names = ", ".join(name for name, _ in BENCH_COLUMNS)
        with cur.copy(f"COPY pplgate_benchmarks (run_seq, position, bench, {bench_names}) FROM STDIN") as copy:
            for i, data in enumerate(runs, start + 1):
                bench = data["benchmarks"][0]
                copy.write_row((i, 0, json.dumps(bench), *_bench_values(bench)))
        accuracy_names = ", ".join(name for name, _ in ACCURACY_COLUMNS)
        with cur.copy(f"COPY pplgate_accuracy (run_seq, position, record, {accuracy_names}) FROM STDIN") as copy:
            for i, data in enumerate(runs, start + 1):
                r = data["pplgate"]["accuracy"][0]
                copy.write_row((i, 0, json.dumps(r), *_columns(ACCURACY_COLUMNS, r)))
        cur.execute("SELECT setval('pplgate_runs_seq_seq', %s)", (start + count,))
        cur.execute("ANALYZE")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True, help="a libpq URL of a server this may create a database on")
    parser.add_argument("--runs", type=int, default=100_000, help="runs in the history (default: %(default)s)")
    parser.add_argument("--record", type=int, default=50, help="runs recorded one at a time (default: %(default)s)")
    args = parser.parse_args()
    import psycopg

    name = f"pplgate_speed_{uuid.uuid4().hex[:8]}"
    base, _, query = args.server.partition("?")
    url = f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    with psycopg.connect(args.server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with PostgresStore(url) as store:
            times, whole = [], []
            for i in range(args.record):
                data = run(NODES[i % 8], TESTS[i % 3], 0.5, i)
                started = time.perf_counter()
                store.save(data)
                times.append(time.perf_counter() - started)
            for i in range(args.record):  # as the gate records: connecting, checking the schema, saving
                data = run(NODES[i % 8], TESTS[i % 3], 0.5, args.record + i)
                started = time.perf_counter()
                with PostgresStore(url) as fresh:
                    fresh.save(data)
                whole.append(time.perf_counter() - started)
            print(
                f"recording one run: {statistics.median(times) * 1000:.1f} ms, connection and schema check included "
                f"{statistics.median(whole) * 1000:.1f} ms (medians of {args.record})",
                flush=True,
            )
            started = time.perf_counter()
            fill(store, args.runs - 2 * args.record)
            print(f"filled to {args.runs:,} runs in {time.perf_counter() - started:.1f} s", flush=True)
        for what, extra in (
            ("every series", []),
            ("one series (--test --machine)", ["--test", TESTS[0], "--machine", NODES[0]]),
        ):
            best = []
            for _ in range(3):
                out = io.StringIO()
                started = time.perf_counter()
                with contextlib.redirect_stdout(out):
                    status = pplgate(["history", "--storage", url, *extra])
                best.append(time.perf_counter() - started)
                assert status == 0, out.getvalue()[-2000:]
            print(
                f"'pplgate history' over {args.runs:,} runs, {what}: {min(best):.2f} s (best of 3; "
                f"{', '.join(f'{b:.2f}' for b in best)})",
                flush=True,
            )
        with PostgresStore(url) as store:
            best = []
            for _ in range(3):
                started = time.perf_counter()
                saved_history(store)
                best.append(time.perf_counter() - started)
            print(f"the gate reading what its verdicts look back at: {min(best):.2f} s (best of 3)", flush=True)
    finally:
        with psycopg.connect(args.server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
