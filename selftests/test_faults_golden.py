"""Broken or loose golden files: each is its own failing tests naming the key, collection never aborts, the other cases run."""

from __future__ import annotations

import json
import sys

import pytest

pytest_plugins = ["pytester"]

GOOD = {"cpu-fp32": {"computed": "numpy-reference", "rel_tol": 1e-5}}


def entry_case(expected: dict, **top) -> str:
    return json.dumps({"case": "bad", "sources": {"model": "builtin:tiny", "dataset": "d", "tokenizer": "t"},
                       "method": {"max_blocks": 1}, "expected": expected, **top})


BROKEN = {
    "duplicate key": ('{"case": "bad", "case": "bad", "sources": {"model": "builtin:tiny", "dataset": "d", "tokenizer": "t"}, "expected": {}}',
                      "holds key 'case' twice in one object, and only the last would count: keep one."),
    "duplicate entry": ('{"case": "bad", "sources": {"model": "builtin:tiny", "dataset": "d", "tokenizer": "t"}, '
                        '"expected": {"cpu-fp32": {"perplexity": 5.0, "rel_tol": 0.1}, "cpu-fp32": {"perplexity": 9.0, "rel_tol": 0.1}}}',
                        "holds key 'cpu-fp32' twice in one object"),
    "unknown top key": (entry_case({}, tolerances="prose"), "key tolerances is not one pplgate reads: use case, description, sources, method, notes, expected."),
    "misspelt method key": (json.dumps({"case": "bad", "sources": {"model": "builtin:tiny", "dataset": "d", "tokenizer": "t"},
                                        "method": {"grouping_": "contiguous"}, "expected": {}}),
                            "key method.grouping_ is not one pplgate reads: use config, split, grouping, rows_per_batch, block_size, max_blocks, and put explanations under notes."),
    "unknown entry key": (entry_case({"cpu-fp32": {"perplexity": 5.0, "rel_tol": 0.1, "tolerance": 0.2}}), "key expected.cpu-fp32.tolerance is not one pplgate reads"),
    "unknown device": (entry_case({"tpu-fp32": {"perplexity": 5.0, "rel_tol": 0.1}}), "key expected.tpu-fp32 is not <device>-<precision> of known names"),
    "upper-case precision": (entry_case({"cpu-FP16": {"perplexity": 5.0, "rel_tol": 0.1}}), "key expected.cpu-FP16 is not <device>-<precision> of known names"),
    "value beside rule": (entry_case({"cpu-fp32": {"perplexity": 5.0, "relative_to": "gpu-fp32", "rel_tol": 0.1}}),
                          "key expected.cpu-fp32 holds perplexity and relative_to: give exactly one of perplexity"),
    "infinite limit": (entry_case({"cpu-fp32": {"perplexity": 5.0, "rel_tol": 0.1, "limits": {"reference": "cpu-fp32", "kl_mean_max": float("inf")}}}),
                       "key expected.cpu-fp32.limits.kl_mean_max is inf, not a finite number"),
    "NaN tolerance": (entry_case({"cpu-fp32": {"perplexity": 5.0, "rel_tol": float("nan")}}), "key expected.cpu-fp32.rel_tol is nan, not a fraction in [0, 1)"),
    # A Python with the 4,300-digit limit (3.11, and security releases from 3.8.14 on) refuses to read it,
    # older ones read an int no float holds: one sentence either way.
    "5,000-digit number": (entry_case({"cpu-fp32": {"perplexity": "HUGE", "rel_tol": 0.1}}).replace('"HUGE"', "1" + "0" * 4999),
                           "*number*" if hasattr(sys, "get_int_max_str_digits") else "key expected.cpu-fp32.perplexity is a 5000-digit number, beyond any float"),
    "unknown rule target": (entry_case({"cpu-fp16": {"relative_to": "cpu-fp64", "rel_tol": 0.1}}),
                            "key expected.cpu-fp16.relative_to = 'cpu-fp64' is not <device>-<precision> of known names"),
}


def test_each_broken_golden_file_fails_its_own_tests(scratch_gate):
    """Every kind at once, in one gate run (one run per kind cost half a minute of CI): each file its own errors, the good case runs."""
    scratch_gate.case(GOOD, name="good", max_blocks=1)
    files = {kind: scratch_gate.golden / f"bad{i:02d}.json" for i, kind in enumerate(BROKEN)}
    for kind, path in files.items():
        path.write_text(BROKEN[kind][0].replace('"case": "bad"', f'"case": "{path.stem}"'))
    result = scratch_gate.run()
    result.assert_outcomes(passed=1, skipped=1, errors=2 * len(BROKEN))  # each bad file on cpu and on gcu (whose provider is missing)
    for kind, path in files.items():
        result.stdout.fnmatch_lines([f"*{path}*{BROKEN[kind][1]}*"])


@pytest.mark.parametrize("kind", ["invalid UTF-8", "symlink loop", "folder named like a case", "unreadable"])
def test_unreadable_golden_files_fail_their_own_tests(scratch_gate, kind):
    import os

    scratch_gate.case(GOOD, name="good", max_blocks=1)
    bad = scratch_gate.golden / "bad.json"
    if kind == "invalid UTF-8":
        bad.write_bytes(b'{"case": "bad\xff\xfe"}')
        sentence = "is not UTF-8 text (byte 13): restore it with git checkout, or save it as UTF-8."
    elif kind == "symlink loop":
        bad.symlink_to(bad)
        sentence = "cannot be read (Too many levels of symbolic links)"
    elif kind == "folder named like a case":
        bad.mkdir()
        sentence = "cannot be read (Is a directory)"
    else:
        if os.geteuid() == 0:
            pytest.skip("root reads every file")
        bad.write_text("{}")
        bad.chmod(0)
        sentence = "cannot be read (Permission denied)"
    result = scratch_gate.run()
    assert result.ret == 1  # failures, not a usage error or an aborted collection
    result.assert_outcomes(passed=1, skipped=1, errors=2)
    result.stdout.fnmatch_lines([f"*golden file {bad} {sentence}*"])


def test_a_case_of_rules_only_says_which_entry_to_record_first(scratch_gate):
    """The README's gpt2-hub example as written: every entry a rule relative to cpu-fp32, which is not recorded yet."""
    scratch_gate.ini(devices="cpu", precisions="fp16")
    scratch_gate.case({"gpu-fp32": {"relative_to": "cpu-fp32", "rel_tol": 0.0002}, "cpu-fp16": {"relative_to": "cpu-fp32", "rel_tol": 0.01}},
                      max_blocks=1)
    result = scratch_gate.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*expected.cpu-fp16 is a rule relative to cpu-fp32, which holds no value yet: record cpu-fp32 first, on a node that has its device, "
        f"with: {sys.executable} -m pytest 'test_gate.py::test_perplexity?mini-cpu-fp32?' --gate-update-golden*",
    ])
    assert "Traceback" not in result.stdout.str() and "GoldenError" not in result.stdout.str()


def test_precisions_and_devices_are_normalized_or_refused(scratch_gate):
    scratch_gate.case(GOOD, max_blocks=1)
    ids = scratch_gate.run("--collect-only", "-q", "--gate-precisions=FP32", "--gate-devices=CPU").outlines
    assert "test_gate.py::test_perplexity[mini-cpu-fp32]" in ids
    result = scratch_gate.run("--collect-only", "-q", "--gate-precisions=fp8")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--gate-precisions: unknown precision 'fp8': use one of fp32, fp16, tf32.*"])
