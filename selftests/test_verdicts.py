"""Verdicts from saved runs with known values: a step beyond the noise is flagged, noise alone is not."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from pplgate.history import draw_history, judged_rows, read_history, render_markdown, timings_of_run
from pplgate.verdicts import drift, throughput_verdict

pytest_plugins = ["pytester"]

TOKENS = 4096


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


def test_a_20_percent_step_under_3_percent_noise_is_flagged():
    history = timings(noisy(8, 0.03))
    (current,) = timings([saved_run(0.5 / 0.8)])  # tokens/s 20% lower
    verdict = throughput_verdict(current, history)
    assert verdict.kind == "slower" and verdict.regression
    assert verdict.change == pytest.approx(-0.2, abs=0.03) and 0.01 < verdict.uncertainty < 0.06
    assert verdict.sentence.startswith("tiny-cpu-fp32: slower: -2") and "against the median of 8 runs" in verdict.sentence


@pytest.mark.parametrize("seed", range(20))
def test_5_percent_noise_without_a_step_is_not(seed):
    runs = noisy(11, 0.05, seed)
    verdict = throughput_verdict(timings(runs[-1:])[0], timings(runs[:-1]))
    assert verdict.kind == "within noise", verdict.sentence


def test_a_first_run_has_nothing_to_compare():
    verdict = throughput_verdict(timings([saved_run(0.5)])[0], [])
    assert (verdict.kind, verdict.sentence) == ("first run", "tiny-cpu-fp32: first run on this machine with these settings: nothing to compare")


def test_other_machines_other_settings_and_loaded_runs_are_not_a_baseline():
    history = timings([saved_run(0.25, node="node-b"), saved_run(0.25, threads=1)])
    assert throughput_verdict(timings([saved_run(0.5)])[0], history).kind == "first run"
    loaded = throughput_verdict(timings([saved_run(0.5)])[0], history + timings([saved_run(0.25, loaded=True)] * 5))
    assert loaded.kind == "baseline" and loaded.baseline_runs == 0


def test_a_new_series_names_the_setting_that_differs_from_the_newest_saved_run():
    history = timings([saved_run(0.5)] * 6)
    verdict = throughput_verdict(timings([saved_run(0.5, threads=1)])[0], history)
    assert verdict.kind == "first run"
    assert verdict.sentence == ("tiny-cpu-fp32: first run with these settings, a new series: "
                                "the saved runs of this test on this machine differ in intra_op_threads 0 (run 0006) -> 1")


def test_a_first_run_on_another_machine_names_the_machines_saved():
    verdict = throughput_verdict(timings([saved_run(0.5, node="node-c")])[0], timings([saved_run(0.5, node="node-b")] * 6))
    assert verdict.sentence == ("tiny-cpu-fp32: first run on this machine (node-c): the saved runs of this test are from node-b, "
                                "never compared across machines")


@pytest.mark.parametrize("saved", [1, 2, 4])
def test_nothing_is_judged_until_five_runs_are_saved(saved):
    """Not even a halving: one run's rounds do not say how far the next run lands."""
    verdict = throughput_verdict(timings([saved_run(1.0)])[0], timings([saved_run(0.5)] * saved))
    assert verdict.kind == "baseline" and not verdict.regression and verdict.change is None
    assert verdict.sentence.startswith(f"tiny-cpu-fp32: baseline: {saved} of 5 runs saved with these settings on this machine")
    assert throughput_verdict(timings([saved_run(1.0)])[0], timings([saved_run(0.5)] * 5)).kind == "slower"


def test_a_run_under_load_is_not_judged():
    verdict = throughput_verdict(timings([saved_run(5.0, loaded=True)])[0], timings(noisy(5, 0.01)))
    assert verdict.kind == "under load" and not verdict.regression
    assert "taken under load (other processes took 50% of the CPU): not judged, and not a baseline" in verdict.sentence


def test_the_verdict_names_a_runtime_change():
    history = timings([saved_run(0.5, onnxruntime="1.30.0") for _ in range(5)])
    verdict = throughput_verdict(timings([saved_run(0.7)])[0], history)
    assert verdict.kind == "slower" and verdict.changed == {"onnxruntime": ["1.30.0", "1.31.1"]}
    assert verdict.sentence.endswith("since the last of them: onnxruntime 1.30.0 -> 1.31.1")


def test_perplexity_drift_with_a_changed_runtime():
    history = timings([saved_run(0.5, perplexity=1234.5, onnxruntime="1.30.0")])
    moved = drift(timings([saved_run(0.5, perplexity=1234.5 * (1 + 2e-6))])[0], history)
    assert moved.change == pytest.approx(2e-6)
    assert moved.sentence == ("tiny-cpu-fp32: perplexity 1234.502469 moved +2e-06 relative from 1234.5 (run 0001) on the same model, blocks and method; "
                              "what differs: onnxruntime 1.30.0 -> 1.31.1")


def test_perplexity_drift_without_a_changed_runtime_says_so():
    moved = drift(timings([saved_run(0.5, perplexity=1001.0)])[0], timings([saved_run(0.5, perplexity=1000.0)]))
    assert moved.sentence.endswith("what differs: nothing recorded differs (the same runtime, provider and machine)")


def test_an_identical_perplexity_says_nothing():
    assert drift(timings([saved_run(0.5)])[0], timings([saved_run(0.6)])) is None


def write_storage(folder: Path, runs: list[dict]) -> Path:
    from pytest_benchmark.utils import get_machine_id

    machine = folder / get_machine_id()  # where pytest-benchmark looks for this machine's runs
    machine.mkdir(parents=True)
    for i, data in enumerate(runs, 1):
        data.setdefault("datetime", f"2026-11-{i:02d}T02:00:00")
        (machine / f"{i:04d}_abcdef01_20261127_000000.json").write_text(json.dumps(data))
    return folder


STEADY = [0.50, 0.51, 0.50, 0.49, 0.50]  # five saved runs: enough for a verdict


def test_markdown_of_a_seven_run_history(tmp_path):
    runs = [saved_run(s) for s in STEADY] + [saved_run(0.51, perplexity=1234.6, onnxruntime="1.31.2"), saved_run(0.70)]
    storage = write_storage(tmp_path / "bench", runs)
    text = render_markdown(judged_rows(storage), None)
    lines = text.splitlines()
    assert lines[:8] == [
        "## pplgate throughput history", "", "### tiny-cpu-fp32", "",
        "| run | date | machine | commit | tokens/s | perplexity | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        "| 0001 | 2026-11-01 02:00 | node-a | abcdef01 | 8,192 ± 82 | 1234.5 | first run |",
        "| 0002 | 2026-11-02 02:00 | node-a | abcdef01 | 8,031 ± 80 | 1234.5 | baseline (1 of 5) |",
    ]
    assert lines[11] == "| 0006 | 2026-11-06 02:00 | node-a | abcdef01 | 8,031 ± 80 | 1234.6 | within noise (-2% ± 1%); perplexity +8.1e-05 |"
    assert lines[12].startswith("| 0007 | 2026-11-07 02:00 | node-a | abcdef01 | 5,851 ± 59 | 1234.5 | slower (-29% ± 2%); perplexity -8.1e-05 |")
    assert "Newest: tiny-cpu-fp32: slower: -29% ± 2% tokens/s against the median of 6 runs" in text


def test_history_command_fails_on_a_regression_only_when_asked(tmp_path):
    storage = write_storage(tmp_path / "bench", [saved_run(s) for s in STEADY] + [saved_run(0.70)])
    command = [sys.executable, "-m", "pplgate", "history", "--storage", str(storage)]
    plain = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0 and "regression: tiny-cpu-fp32: slower: -29%" in plain.stdout
    strict = subprocess.run(command + ["--fail-on-regression", "--markdown", str(tmp_path / "summary.md")], capture_output=True, text=True, timeout=120)
    assert strict.returncode == 1 and (tmp_path / "summary.md").read_text().startswith("## pplgate throughput history")
    calm = write_storage(tmp_path / "calm", [saved_run(s) for s in STEADY] + [saved_run(0.50)])
    assert subprocess.run(command[:-1] + [str(calm), "--fail-on-regression"], capture_output=True, text=True, timeout=120).returncode == 0


def test_history_reads_pytest_benchmarks_own_spelling_of_the_storage(tmp_path):
    write_storage(tmp_path / "bench", [saved_run(s) for s in STEADY])
    result = subprocess.run([sys.executable, "-m", "pplgate", "history", "--storage", "file://./bench"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].split() == ["run", "date", "machine", "commit", "tokens/s", "perplexity", "verdict"]
    assert "node-a" in result.stdout.splitlines()[2]


def test_the_markdown_links_the_plot_from_where_it_is_read(tmp_path, monkeypatch):
    write_storage(tmp_path / "bench", [saved_run(s) for s in STEADY])
    (tmp_path / "docs").mkdir()
    command = [sys.executable, "-m", "pplgate", "history", "--storage", "bench", "--plot", "plots/h.png"]
    (tmp_path / "plots").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}
    subprocess.run(command + ["--markdown", "docs/summary.md"], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env, check=True)
    assert "![perplexity and tokens/s per saved run](../plots/h.png)" in (tmp_path / "docs" / "summary.md").read_text()
    # A GitHub step summary is shown on its own page: no runner file can be linked there.
    step = tmp_path / "step_summary"
    subprocess.run(command + ["--markdown", str(step)], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                   env=dict(env, GITHUB_STEP_SUMMARY=str(step)), check=True)
    text = step.read_text()
    assert "![" not in text
    assert f"The plot was written to {tmp_path / 'plots' / 'h.png'} on the runner; a step summary cannot show a runner's file: upload it as an artifact to see it." in text


def test_the_plot_draws_a_line_per_series_with_load_and_verdicts_marked(tmp_path):
    runs = [saved_run(s) for s in STEADY] + [saved_run(0.5, loaded=True), saved_run(0.70)] + [saved_run(0.25, threads=1), saved_run(0.5, node="node-b")]
    history = read_history(write_storage(tmp_path / "bench", runs))
    assert list(history.series) == ["tiny-cpu-fp32 (node-a, intra_op_threads=0)", "tiny-cpu-fp32 (node-a, intra_op_threads=1)",
                                    "tiny-cpu-fp32 (node-b, intra_op_threads=0)"]
    main = history.series["tiny-cpu-fp32 (node-a, intra_op_threads=0)"]
    assert main.runs == [0, 1, 2, 3, 4, 5, 6]
    assert main.kinds == ["first run", "baseline", "baseline", "baseline", "baseline", "under load", "slower"]
    assert main.tokens_per_second[0] == pytest.approx(TOKENS / 0.5)  # the median round, as the table gives it
    top, _ = draw_history(history, "t").axes
    labels = [t.get_text() for t in top.get_legend().get_texts()]
    assert "tiny-cpu-fp32 (node-a, intra_op_threads=0): under load, not judged" in labels
    assert "tiny-cpu-fp32 (node-a, intra_op_threads=0): slower" in labels
    judged_line = top.get_lines()[0]
    assert list(judged_line.get_xdata()) == [0, 1, 2, 3, 4, 6]  # the run under load is off the line


def corrupt(run: dict, path: list, value) -> dict:
    """``run`` with the field at ``path`` (keys and list indexes) set to ``value``."""
    run = json.loads(json.dumps(run))
    node = run
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return run


BENCH = ["benchmarks", 0]
HOSTILE = {
    "median text": (BENCH + ["stats", "median"], "fast", "stats.median is \"fast\", not a number"),
    "median zero": (BENCH + ["stats", "median"], 0, "stats.median is 0.0, not a finite number above 0"),
    "median negative": (BENCH + ["stats", "median"], -0.5, "stats.median is -0.5"),
    "median huge": (BENCH + ["stats", "median"], 10**400, "stats.median is a 401-digit number or so, beyond any float"),
    "median a list": (BENCH + ["stats", "median"], [1], "stats.median is a list, not a number"),
    "stats a list": (BENCH + ["stats"], [], "stats is a list, not an object"),
    "stddev text": (BENCH + ["stats", "stddev"], "x", "stats.stddev is \"x\", not a number"),
    "rounds float": (BENCH + ["stats", "rounds"], 2.5, "stats.rounds is 2.5, not an integer"),
    "tokens text": (BENCH + ["extra_info", "tokens"], "4096", "extra_info.tokens is \"4096\", not an integer"),
    "tokens zero": (BENCH + ["extra_info", "tokens"], 0, "extra_info.tokens is 0.0, not a finite number above 0"),
    "perplexity zero": (BENCH + ["extra_info", "perplexity"], 0, "extra_info.perplexity is 0.0, not a finite number above 0"),
    "perplexity text": (BENCH + ["extra_info", "perplexity"], "29.4", "extra_info.perplexity is \"29.4\", not a number"),
    "conditions a list": (BENCH + ["extra_info", "conditions"], [], "extra_info.conditions is a list, not an object"),
    "share text": (BENCH + ["extra_info", "conditions", "others_cpu_share"], "half", "others_cpu_share is \"half\", not a number"),
    "sha a number": (BENCH + ["extra_info", "model_sha256"], 5, "extra_info.model_sha256 is 5, not text"),
    "datetime an int": (["datetime"], 20261101, "datetime is 20261101, not text"),
    "machine_info a list": (["machine_info"], ["node-a"], "machine_info is a list, not an object"),
    "benchmarks an object": (["benchmarks"], {}, "benchmarks is an object, not a list"),
    "benchmark a list": (BENCH, [], "a benchmark is a list, not an object"),
}


def test_a_saved_run_that_cannot_be_read_is_named_and_set_aside(tmp_path):
    """35 hostile storage files once gave tracebacks in history, its plot and the gate: each is now named and never judged."""
    runs = [saved_run(s) for s in STEADY] + [corrupt(saved_run(0.9), path, value) for path, value, _ in HOSTILE.values()] + [saved_run(0.5)]
    storage = write_storage(tmp_path / "bench", runs)
    machine = next(storage.iterdir())
    (machine / "9001_x_20261201_000000.json").write_text("{not json")
    (machine / "9002_x_20261201_000000.json").write_text('{"datetime": ' + "9" * 5000 + "}")
    (machine / "9003_x_20261201_000000.json").write_text("[" * 100000 + "]" * 100000)
    (machine / "9004_x_20261201_000000.json").write_bytes(b"\xff\xfe")
    result = subprocess.run([sys.executable, "-m", "pplgate", "history", "--storage", str(storage), "--plot", str(tmp_path / "h.png"),
                             "--markdown", str(tmp_path / "h.md")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    aside = [line for line in result.stdout.splitlines() if line.startswith("set aside ")]
    assert len(aside) == len(HOSTILE) + 4
    for i, (_, _, reason) in enumerate(HOSTILE.values(), len(STEADY) + 1):
        line = next(a for a in aside if f"{i:04d}_abcdef01" in a)
        assert reason in line and line.endswith("not judged and not a baseline: remove it or restore it"), (reason, line)
    # 5,000 digits: not JSON to Python >= 3.11 (its int limit), an integer datetime to older ones; set aside either way.
    assert any("9002_x" in a for a in aside) and any("9003_x" in a and "nested deeper" in a for a in aside)
    table = [line.split()[0] for line in result.stdout.splitlines()[2:] if line.startswith("  0")]
    assert table == ["0001", "0002", "0003", "0004", "0005", f"{len(runs):04d}"], "only the readable runs are judged"
    assert "within noise" in result.stdout.splitlines()[2 + len(STEADY)]
    assert (tmp_path / "h.png").stat().st_size > 0 and "set aside" in (tmp_path / "h.md").read_text()


def test_the_gate_sets_a_hostile_saved_run_aside_with_a_warning(pytester, tmp_path):
    """The throughput fixture reads pytest-benchmark's storage too: a run it cannot read is a warning, not an error."""
    storage = write_storage(tmp_path / "bench", [saved_run(s) for s in STEADY] + [corrupt(saved_run(0.5), BENCH + ["stats", "median"], "fast")])
    pytester.makeconftest('pytest_plugins = ["pytest_pplgate.plugin"]')
    pytester.makepyfile(test_history="def test_reads(gate_history):\n    assert len(gate_history) == 5\n")
    result = pytester.runpytest_subprocess(f"--benchmark-storage=file://{storage}", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*pplgate: set aside *0006_abcdef01_20261127_000000.json: tiny-cpu-fp32: stats.median is \"fast\", not a number*"])
