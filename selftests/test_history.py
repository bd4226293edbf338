"""``python -m pplgate history`` and ``plot``: every saved run judged against those before it, tables, markdown, plots."""

from __future__ import annotations

import json

import pytest

from pplgate.history import draw_history, judged_rows, read_history, render_markdown
from pplgate.verdicts import Verdict
from saved import STEADY, TOKENS, corrupt, noisy, saved_run, write_storage


def test_markdown_of_a_seven_run_history(tmp_path):
    runs = [saved_run(s) for s in STEADY] + [saved_run(0.51, perplexity=1234.6, onnxruntime="1.31.2"), saved_run(0.70)]
    storage = write_storage(tmp_path / "bench", runs)
    text = render_markdown(judged_rows(storage), None)
    lines = text.splitlines()
    assert lines[:8] == [
        "## pplgate throughput history", "", "### tiny-cpu-fp32", "",
        "| run | date | machine | commit | tokens/s | timed-blocks perplexity | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        "| 0001 | 2026-11-01 02:00 | node-a | abcdef01 | 8,192 ± 82 | 1234.5 | first run |",
        "| 0002 | 2026-11-02 02:00 | node-a | abcdef01 | 8,031 ± 80 | 1234.5 | baseline (1 of 5) |",
    ]
    assert lines[11] == "| 0006 | 2026-11-06 02:00 | node-a | abcdef01 | 8,031 ± 80 | 1234.6 | within noise (-2% ± 1%); perplexity +8.1e-05 |"
    # Back at the level of the same model and blocks: no longer flagged.
    assert lines[12].startswith("| 0007 | 2026-11-07 02:00 | node-a | abcdef01 | 5,851 ± 59 | 1234.5 | slower (-29% ± 2%) |")
    assert "Newest: tiny-cpu-fp32: slower: -29% ± 2% tokens/s against the median of 6 runs" in text


def test_history_command_fails_on_a_regression_only_when_asked(tmp_path, cli):
    storage = write_storage(tmp_path / "bench", [saved_run(s) for s in STEADY] + [saved_run(0.70)])
    plain = cli("history", "--storage", storage)
    assert plain.code == 0 and "regression: tiny-cpu-fp32: slower: -29%" in plain.out
    strict = cli("history", "--storage", storage, "--fail-on-regression", "--markdown", tmp_path / "summary.md")
    assert strict.code == 1 and (tmp_path / "summary.md").read_text().startswith("## pplgate throughput history")
    calm = write_storage(tmp_path / "calm", [saved_run(s) for s in STEADY] + [saved_run(0.50)])
    assert cli("history", "--storage", calm, "--fail-on-regression").code == 0


def test_history_reads_pytest_benchmarks_own_spelling_of_the_storage(tmp_path, cli, monkeypatch):
    write_storage(tmp_path / "bench", [saved_run(s) for s in STEADY])
    monkeypatch.chdir(tmp_path)
    ran = cli("history", "--storage", "file://./bench")
    assert ran.code == 0, ran.err
    assert ran.out.splitlines()[1].split() == ["run", "date", "machine", "commit", "tokens/s", "timed-blocks", "perplexity", "verdict"]
    assert "node-a" in ran.out.splitlines()[2]


def test_the_markdown_links_the_plot_from_where_it_is_read(tmp_path, cli, monkeypatch):
    write_storage(tmp_path / "bench", [saved_run(s) for s in STEADY])
    (tmp_path / "docs").mkdir()
    (tmp_path / "plots").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    command = ["history", "--storage", "bench", "--plot", "plots/h.png"]
    assert cli(*command, "--markdown", "docs/summary.md").code == 0
    assert "![perplexity and tokens/s per saved run](../plots/h.png)" in (tmp_path / "docs" / "summary.md").read_text()
    # A GitHub step summary is shown on its own page: no runner file can be linked there.
    step = tmp_path / "step_summary"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    assert cli(*command, "--markdown", step).code == 0
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
    assert main.kinds == [Verdict.FIRST_RUN, Verdict.BASELINE, Verdict.BASELINE, Verdict.BASELINE, Verdict.BASELINE, Verdict.UNDER_LOAD, Verdict.SLOWER]
    assert main.tokens_per_second[0] == pytest.approx(TOKENS / 0.5)  # the median round, as the table gives it
    top, _ = draw_history(history, "t").axes
    labels = [t.get_text() for t in top.get_legend().get_texts()]
    assert "tiny-cpu-fp32 (node-a, intra_op_threads=0): under load, not judged" in labels
    assert "tiny-cpu-fp32 (node-a, intra_op_threads=0): slower" in labels
    judged_line = top.get_lines()[0]
    # Drawn by date; the run under load (the sixth night) is off the line.
    assert [d.day for d in judged_line.get_xdata()] == [1, 2, 3, 4, 5, 7]
    assert "tiny-cpu-fp32 (node-a, intra_op_threads=0): baseline, ±10% band" in labels
    baseline = next(line for line in top.get_lines() if line.get_linestyle() == "--")
    # The seventh night was judged against the median of the five steady ones: 4096 / 0.5 tokens/s.
    assert baseline.get_ydata()[-1] == pytest.approx(TOKENS / 0.5)


def test_sixty_nights_fit_a_fixed_width_with_dates_that_never_overlap(tmp_path):
    """As found: 60 nights drew an 8,200-pixel-wide image with overlapping labels and no baseline."""
    import datetime as dt

    runs = noisy(60, 0.01)
    for i, run in enumerate(runs):
        run["datetime"] = (dt.datetime(2026, 9, 1, 2) + dt.timedelta(days=i)).isoformat()
    fig = draw_history(read_history(write_storage(tmp_path / "bench", runs)), "t")
    assert fig.get_size_inches()[0] * fig.dpi == 1200
    fig.canvas.draw()
    _, bottom = fig.axes
    boxes = [label.get_window_extent() for label in bottom.get_xticklabels() if label.get_text()]
    assert len(boxes) >= 3 and not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:]))


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


def test_a_saved_run_that_cannot_be_read_is_named_and_set_aside(tmp_path, cli):
    """35 hostile storage files once gave tracebacks in history, its plot and the gate: each is now named and never judged."""
    runs = [saved_run(s) for s in STEADY] + [corrupt(saved_run(0.9), path, value) for path, value, _ in HOSTILE.values()] + [saved_run(0.5)]
    storage = write_storage(tmp_path / "bench", runs)
    machine = next(storage.iterdir())
    (machine / "9001_x_20261201_000000.json").write_text("{not json")
    (machine / "9002_x_20261201_000000.json").write_text('{"datetime": ' + "9" * 5000 + "}")
    (machine / "9003_x_20261201_000000.json").write_text("[" * 100000 + "]" * 100000)
    (machine / "9004_x_20261201_000000.json").write_bytes(b"\xff\xfe")
    result = cli("history", "--storage", storage, "--plot", tmp_path / "h.png", "--markdown", tmp_path / "h.md")
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    aside = [line for line in result.out.splitlines() if line.startswith("set aside ")]
    assert len(aside) == len(HOSTILE) + 4
    for i, (_, _, reason) in enumerate(HOSTILE.values(), len(STEADY) + 1):
        line = next(a for a in aside if f"{i:04d}_abcdef01" in a)
        assert reason in line and line.endswith("not judged and not a baseline: remove it or restore it"), (reason, line)
    # 5,000 digits: not JSON to Python >= 3.11 (its int limit), an integer datetime to older ones; set aside either way.
    assert any("9002_x" in a for a in aside) and any("9003_x" in a and "nested deeper" in a for a in aside)
    table = [line.split()[0] for line in result.out.splitlines()[2:] if line.startswith("  0")]
    assert table == ["0001", "0002", "0003", "0004", "0005", f"{len(runs):04d}"], "only the readable runs are judged"
    assert "within noise" in result.out.splitlines()[2 + len(STEADY)]
    assert (tmp_path / "h.png").stat().st_size > 0 and "set aside" in (tmp_path / "h.md").read_text()


def test_a_plot_without_saved_runs_is_one_sentence(tmp_path, cli):
    assert cli("plot", "--storage", tmp_path).error == (f"pplgate: error: no saved benchmark runs under {tmp_path}: run the gate with --benchmark-autosave (or --gate-history) "
                                                        "first, or pass --storage with the folder or database the runs were saved in.")


def test_the_newest_run_is_the_last_saved_whatever_its_date(tmp_path, cli):
    """As found: a run saved with a future date (a node with a wrong clock) was taken for the newest, and the -50% run
    saved after it passed --fail-on-regression."""
    runs = [saved_run(s) for s in STEADY] + [saved_run(0.5), saved_run(1.0)]
    runs[5]["datetime"] = "2030-01-01T02:00:00"
    ran = cli("history", "--storage", write_storage(tmp_path / "bench", runs), "--fail-on-regression")
    assert ran.code == 1
    rows = [line.split()[0] for line in ran.out.splitlines() if line.startswith("  0")]
    assert rows[-2:] == ["0006", "0007"] and "slower (-50%" in ran.out.splitlines()[-2]


def test_an_empty_markdown_path_names_the_option(tmp_path, cli):
    """As found: ``--markdown "$GITHUB_STEP_SUMMARY"`` with the variable unset said "cannot use . (Is a directory)"."""
    ran = cli("history", "--storage", write_storage(tmp_path / "bench", [saved_run(0.5)]), "--markdown", "")
    assert ran.code == 2
    assert ("argument --markdown: the value is empty (an unset variable such as $GITHUB_STEP_SUMMARY outside GitHub Actions?): "
            "pass a file path, or leave the option out") in ran.err


def test_an_empty_file_storage_is_refused(cli):
    """As found: ``--storage file://`` read the current folder recursively, .venv included."""
    assert cli("history", "--storage", "file://").error == (
        "pplgate: error: --storage 'file://' names no folder: pass the folder pytest-benchmark saved its runs in "
        "(--benchmark-storage's, .benchmarks by default), or a postgresql:// database.")


def test_a_median_no_model_could_run_in_is_set_aside_and_named_by_the_plot(tmp_path, cli):
    """As found: a saved run with a 1e-300 s median was judged and squashed the plot, which named no set-aside run."""
    runs = [saved_run(s) for s in STEADY] + [corrupt(saved_run(0.5), ["benchmarks", 0, "stats", "median"], 1e-300), saved_run(0.5)]
    storage = write_storage(tmp_path / "bench", runs)
    for command in (["history"], ["plot", "--output", str(tmp_path / "p.png")]):
        ran = cli(*command, "--storage", storage)
        assert ran.code == 0
        assert any(line.startswith("set aside ") and "0006_abcdef01" in line and "stats.median is 1e-300 s, shorter than any model "
                   "runs a block in; not judged and not a baseline" in line for line in ran.out.splitlines()), ran.out


def test_an_accepted_change_is_the_new_level_and_says_who_when_and_why(tmp_path, cli):
    runs = [saved_run(s) for s in STEADY] + [saved_run(0.625) for _ in range(7)]
    storage = write_storage(tmp_path / "bench", runs)
    before = cli("history", "--storage", storage, "--fail-on-regression")
    assert before.code == 1 and "slower (-20% ± 1%) since run 0006" in before.out
    ran = cli("history", "accept", "tiny-cpu-fp32", "--machine", "node-a", "--since", "6", "--why", "the new driver's scheduler",
              "--who", "alice", "--storage", storage)
    assert ran.out.startswith("accepted: throughput of tiny-cpu-fp32 on node-a from run 0006 on, by alice"), ran.out
    after = cli("history", "--storage", storage, "--fail-on-regression")
    assert after.code == 0, after.out
    assert any(line.startswith("accepted: throughput of tiny-cpu-fp32 on node-a from run 0006, by alice on ") and
               line.endswith(": the new driver's scheduler") for line in after.out.splitlines())
    assert "within noise" in after.out.splitlines()[13]  # the sixth run of the new level
    assert cli("history", "accept", "tiny-cpu-fp32", "--machine", "node-a", "--since", "99", "--why", "x", "--storage", storage).error == (
        f"pplgate: error: run 99 is not a throughput run of tiny-cpu-fp32 on node-a in {storage} (its last: 0008, 0009, 0010, 0011, 0012): "
        "name the first run of the new level.")
    assert cli("history", "accept", "tiny-cpu-fp32", "--machine", "node-b", "--since", "6", "--why", "x", "--storage", storage).error == (
        f"pplgate: error: {storage} holds no throughput run of tiny-cpu-fp32 on machine node-b: name the test and the machine as "
        "'python -m pplgate history' shows them.")


def test_the_table_shows_the_last_nights_judged_against_all(tmp_path, cli):
    storage = write_storage(tmp_path / "bench", [saved_run(s) for s in STEADY * 4])
    shown = [line.split()[0] for line in cli("history", "--storage", storage, "--last", "3").out.splitlines() if line.startswith("  0")]
    assert shown == ["0018", "0019", "0020"]
    assert len([line for line in cli("history", "--storage", storage, "--last", "0").out.splitlines() if line.startswith("  0")]) == 20


def test_the_accuracy_history_marks_a_move_until_it_is_back_or_recorded_again(tmp_path, cli):
    from saved import accuracy, with_accuracy

    values = [(1234.5, 1234.5), (1234.5, 1234.5), (1234.6, 1234.5), (1234.6, 1234.5), (1234.6, 1234.6), (1234.6, 1234.6)]
    runs = [with_accuracy(saved_run(0.5, onnxruntime="1.31.2" if i >= 2 else "1.31.1"),
                          accuracy(p, expected=e, onnxruntime="1.31.2" if i >= 2 else "1.31.1")) for i, (p, e) in enumerate(values)]
    runs.append(with_accuracy(saved_run(0.5), accuracy(None, verdict="skip", reason="TopsInferenceExecutionProvider is not in this onnxruntime")))
    out = cli("history", "--storage", write_storage(tmp_path / "bench", runs)).out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("    0")}
    assert rows["0003"].endswith("+8.1e-05 from 1234.5 (run 0001) since run 0003: onnxruntime 1.31.1 -> 1.31.2")
    assert rows["0004"].endswith("since run 0003: onnxruntime 1.31.1 -> 1.31.2")
    assert rows["0005"].endswith("pass")  # the golden value recorded again: the new level
    assert "skip: TopsInferenceExecutionProvider is not in this onnxruntime" in rows["0007"] and " - " in rows["0007"]


def test_the_history_of_one_test_on_one_machine(tmp_path, cli):
    runs = [saved_run(s, node=node) for s in STEADY for node in ("node-a", "node-b")]
    storage = write_storage(tmp_path / "bench", runs)
    out = cli("history", "--storage", storage, "--test", "tiny-cpu-fp32", "--machine", "node-b").out
    assert {line.split()[3] for line in out.splitlines() if line.startswith("  0")} == {"node-b"}
    assert cli("history", "--storage", storage, "--machine", "node-c").error == (
        f"pplgate: error: the runs under {storage} hold no pplgate throughput benchmarks on machine node-c: name the test and the "
        "machine as 'python -m pplgate history' shows them.")
