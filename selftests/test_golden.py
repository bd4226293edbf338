"""Golden files: read strictly (a bad key is named, never a default), resolved by target, recorded whole or not at all."""

from __future__ import annotations

import json
import math
import os
import sys

import pytest

from pplgate.errors import GoldenError, PplgateError
from pplgate.golden import Tolerance, golden_record, load_case
from pplgate.target import Target


def entry_case(expected: dict, **top) -> str:
    return json.dumps({"case": "bad", "sources": {"model": "builtin:tiny", "dataset": "d", "tokenizer": "t"},
                       "method": {"max_blocks": 1}, "expected": expected, **top})


BROKEN = {
    "not json": ("{not json", "is not valid JSON (Expecting property name enclosed in double quotes at line 1, column 2): fix it, or restore it with git checkout."),
    "a number as text": (entry_case({"cpu-fp32": {"perplexity": "29.3", "rel_tol": 0.01}}), 'key expected.cpu-fp32.perplexity must be a number, not "29.3"'),
    "missing key": ('{"case": "bad", "sources": {"model": "builtin:tiny", "dataset": "d"}, "expected": {}}', "key sources.tokenizer is missing"),
    "duplicate key": ('{"case": "bad", "case": "bad", "sources": {"model": "builtin:tiny", "dataset": "d", "tokenizer": "t"}, "expected": {}}',
                      "holds key 'case' twice in one object, and only the last would count: keep one."),
    "duplicate entry": ('{"case": "bad", "sources": {"model": "builtin:tiny", "dataset": "d", "tokenizer": "t"}, '
                        '"expected": {"cpu-fp32": {"perplexity": 5.0, "rel_tol": 0.1}, "cpu-fp32": {"perplexity": 9.0, "rel_tol": 0.1}}}',
                        "holds key 'cpu-fp32' twice in one object"),
    "unknown top key": (entry_case({}, tolerances="prose"), "key tolerances is not one pplgate reads: use case, description, sources, method, notes, expected."),
    "misspelt method key": (json.dumps({"case": "bad", "sources": {"model": "builtin:tiny", "dataset": "d", "tokenizer": "t"},
                                        "method": {"grouping_": "contiguous"}, "expected": {}}),
                            "key method.grouping_ is not one pplgate reads: use config, split, grouping, rows_per_batch, block_size, max_blocks, "
                            "and put explanations under notes."),
    "unknown entry key": (entry_case({"cpu-fp32": {"perplexity": 5.0, "rel_tol": 0.1, "tolerance": 0.2}}), "key expected.cpu-fp32.tolerance is not one pplgate reads"),
    "unknown device": (entry_case({"tpu-fp32": {"perplexity": 5.0, "rel_tol": 0.1}}), "key expected.tpu-fp32 is not <device>-<precision> of known names"),
    "upper-case precision": (entry_case({"cpu-FP16": {"perplexity": 5.0, "rel_tol": 0.1}}), "key expected.cpu-FP16 is not <device>-<precision> of known names"),
    "card index": (entry_case({"gpu:1-fp16": {"perplexity": 5.0, "rel_tol": 0.1}}), "key expected.gpu:1-fp16 is not <device>-<precision> of known names"),
    "value beside rule": (entry_case({"cpu-fp32": {"perplexity": 5.0, "relative_to": "gpu-fp32", "rel_tol": 0.1}}),
                          "key expected.cpu-fp32 holds perplexity and relative_to: give exactly one of perplexity"),
    "infinite limit": (entry_case({"cpu-fp32": {"perplexity": 5.0, "rel_tol": 0.1, "limits": {"reference": "cpu-fp32", "kl_mean_max": float("inf")}}}),
                       "key expected.cpu-fp32.limits.kl_mean_max is inf, not a finite number"),
    "unknown limit": (entry_case({"cpu-fp32": {"perplexity": 2.0, "rel_tol": 0.1, "limits": {"reference": "cpu-fp32", "kl_average_max": 1}}}),
                      "key expected.cpu-fp32.limits.kl_average_max is not a known limit"),
    "NaN tolerance": (entry_case({"cpu-fp32": {"perplexity": 5.0, "rel_tol": float("nan")}}), "key expected.cpu-fp32.rel_tol is nan, not a fraction in [0, 1)"),
    # A Python with the 4,300-digit limit (3.11, and security releases from 3.8.14 on) refuses to read it,
    # older ones read an int no float holds: one sentence either way.
    "5,000-digit number": (entry_case({"cpu-fp32": {"perplexity": "HUGE", "rel_tol": 0.1}}).replace('"HUGE"', "1" + "0" * 4999),
                           "number" if hasattr(sys, "get_int_max_str_digits") else "key expected.cpu-fp32.perplexity is a 5000-digit number, beyond any float"),
    "unknown rule target": (entry_case({"cpu-fp16": {"relative_to": "cpu-fp64", "rel_tol": 0.1}}),
                            "key expected.cpu-fp16.relative_to = 'cpu-fp64' is not <device>-<precision> of known names"),
    "cpu fp16 as evidence": (entry_case({"cpu-fp16": {"perplexity": 10.0, "rel_tol": 0.01}, "gpu-fp16": {"relative_to": "cpu-fp16", "rel_tol": 0.01}}),
                             "expected.gpu-fp16 is relative to cpu-fp16, which the CPU provider computes mostly in fp32: "
                             "it is no evidence for gpu-fp16; make gpu-fp16 relative to cpu-fp32, or record it on its device."),
    # As found: a misspelt pin unpinned the fp16 conversion; prose of any type loaded; limits with no bound checked nothing.
    "misspelt pin": (entry_case({"cpu-fp16": {"perplexity": 5.0, "rel_tol": 0.1, "model": {"sha256": "a" * 64, "convertd_sha256": "b" * 64}}}),
                     "key expected.cpu-fp16.model.convertd_sha256 is not one pplgate reads: use sha256, bytes, converted_sha256"),
    "description not text": (entry_case({}, description=5), "key description must be a string, not 5"),
    "notes a number": (entry_case({}, notes=5), "key notes must be an object or a string, not 5"),
    "why not text": (entry_case({"cpu-fp32": {"perplexity": 5.0, "rel_tol": 0.1, "why": 3}}), "key expected.cpu-fp32.why must be a string, not 3"),
    "limits without a bound": (entry_case({"cpu-fp32": {"perplexity": 5.0, "rel_tol": 0.1, "limits": {"reference": "cpu-fp32"}}}),
                               "key expected.cpu-fp32.limits names a reference and no bound, so it would check nothing"),
    "min above max": (entry_case({"cpu-fp32": {"perplexity": 5.0, "rel_tol": 0.1,
                                               "limits": {"reference": "cpu-fp32", "perplexity_ratio_min": 1.02, "perplexity_ratio_max": 1.01}}}),
                      "key expected.cpu-fp32.limits.perplexity_ratio_min is 1.02, above perplexity_ratio_max 1.01: no run could pass"),
    "name unlike the file": (entry_case({}).replace('"case": "bad"', '"case": "other"'),
                             "key case is 'other', but the file is named bad.json: name the file other.json or the case 'bad'."),
}


@pytest.mark.parametrize("kind", BROKEN)
def test_a_broken_golden_file_is_one_sentence_naming_the_file_and_the_key(kind, tmp_path):
    text, sentence = BROKEN[kind]
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(GoldenError) as info:
        load_case(path)
    assert str(info.value).startswith(f"golden file {path}") and sentence in str(info.value), str(info.value)


@pytest.mark.parametrize("kind", ["invalid UTF-8", "symlink loop", "folder named like a case", "unreadable"])
def test_an_unreadable_golden_file_is_one_sentence(tmp_path, kind):
    bad = tmp_path / "bad.json"
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
    with pytest.raises(GoldenError, match="^golden file " + str(bad).replace(".", r"\.") + " " + sentence.replace("(", r"\(").replace(")", r"\)")):
        load_case(bad)


def test_entries_resolve_by_target_whatever_the_card(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(entry_case({"cpu-fp32": {"perplexity": 5.0, "rel_tol": 0.1},
                                "gpu-fp16": {"relative_to": "cpu-fp32", "rel_tol": 0.01, "limits": {"reference": "cpu-fp32", "kl_mean_max": 0.1}}})
                    .replace('"case": "bad"', '"case": "c"'))
    case = load_case(path)
    resolved = case.resolve(Target.parse("gpu:3-fp16"))
    assert (resolved.perplexity, resolved.rel_tol, resolved.key.key, resolved.via.key) == (5.0, 0.01, "gpu-fp16", "cpu-fp32")
    assert case.entry(Target.parse("gpu:1-fp16")).limits.reference == Target.parse("cpu-fp32")
    assert case.resolve(Target.parse("gcu-fp16")) is None


def test_a_rule_whose_entry_is_not_recorded_says_which_to_record_first(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(entry_case({"cpu-fp16": {"relative_to": "cpu-fp32", "rel_tol": 0.01}}).replace('"case": "bad"', '"case": "c"'))
    with pytest.raises(GoldenError) as info:
        load_case(path).resolve(Target.parse("cpu-fp16"), lambda t: f"RECORD {t.key}")
    assert str(info.value) == (f"golden file {path}: expected.cpu-fp16 is a rule relative to cpu-fp32, which holds no value yet: "
                               "record cpu-fp32 first, on a node that has its device, with: RECORD cpu-fp32")


def test_a_metric_bounded_on_both_sides_keeps_both(tmp_path):
    """As found: ``kl_mean_max`` then ``kl_mean_min`` kept only the min, and a KL far above its max passed."""
    from pplgate.verdicts import Verdict, judge_limits

    path = tmp_path / "c.json"
    path.write_text(entry_case({"cpu-fp16": {"perplexity": 5.0, "rel_tol": 0.1, "limits": {
        "reference": "cpu-fp32", "kl_mean_max": 0.01, "kl_mean_min": 0.0, "perplexity_ratio_min": 0.99, "perplexity_ratio_max": 1.01}}})
                    .replace('"case": "bad"', '"case": "c"'))
    limits = load_case(path).entry(Target.parse("cpu-fp16")).limits
    assert limits.bounds == (("kl_mean", "max", 0.01), ("kl_mean", "min", 0.0), ("perplexity_ratio", "min", 0.99), ("perplexity_ratio", "max", 1.01))
    summary = {"kl_mean": 5.0, "perplexity_ratio": 1.5}
    judged = judge_limits("c-cpu-fp16", limits, summary, "c.json", "")
    assert judged.verdict is Verdict.FAIL
    assert [(m, side) for m, _, side, _ in limits.violations(summary)] == [("kl_mean", "max"), ("perplexity_ratio", "max")]


def test_recording_writes_through_a_linked_golden_file_and_keeps_its_text(tmp_path):
    """As found: --gate-update-golden replaced a symlinked golden file with a regular one (the shared target kept no
    value), and wrote every other entry's non-ASCII text as \\uXXXX."""
    shared = tmp_path / "shared" / "case.json"
    shared.parent.mkdir()
    shared.write_text(json.dumps({"case": "case", "description": "Größe – 29,4 ± 0,1",
                                  "expected": {"cpu-fp32": {"perplexity": 3.0, "rel_tol": 0.1, "why": "gemessen über Nacht"}}},
                                 ensure_ascii=False, indent=2), encoding="utf-8")
    link = tmp_path / "golden" / "case.json"
    link.parent.mkdir()
    link.symlink_to(shared)
    golden_record(link, Target.parse("cpu-fp16"), REPORT, {"source": "test"})
    assert link.is_symlink() and os.readlink(link) == str(shared)
    text = shared.read_text(encoding="utf-8")
    assert "Größe – 29,4 ± 0,1" in text and "gemessen über Nacht" in text and "\\u" not in text
    assert json.loads(text)["expected"]["cpu-fp16"]["perplexity"] == 3.1


REPORT = {"perplexity": 3.1, "blocks": 1, "scored_tokens": 1023, "blocks_sha256": "0" * 64, "model_sha256": "a" * 64, "model_bytes": 1}


def test_recording_writes_one_entry_with_its_pins_and_keeps_the_rest(tmp_path):
    path = tmp_path / "case.json"
    path.write_text(json.dumps({"case": "case", "expected": {"cpu-fp32": {"perplexity": 3.0, "rel_tol": 0.1, "why": "kept"}}}))
    golden_record(path, Target.parse("gpu:1-tf32"), REPORT, {"source": "test"})
    data = json.loads(path.read_text())
    assert data["expected"]["cpu-fp32"] == {"perplexity": 3.0, "rel_tol": 0.1, "why": "kept"}
    assert data["expected"]["gpu-tf32"] == {"perplexity": 3.1, "rel_tol": 0.01, "why": "default tf32 tolerance of pplgate",
                                            "blocks": {"count": 1, "scored_tokens": 1023, "sha256": "0" * 64},
                                            "model": {"sha256": "a" * 64, "bytes": 1}, "provenance": {"source": "test"}}


def test_a_recording_that_fails_keeps_the_file(tmp_path):
    path = tmp_path / "case.json"
    before = json.dumps({"case": "c", "expected": {"cpu-fp32": {"perplexity": 3.0, "rel_tol": 0.1}}})
    path.write_text(before)
    with pytest.raises(TypeError):  # a provenance json cannot write
        golden_record(path, Target.parse("cpu-fp16"), REPORT, {"when": object()})
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["case.json"]


def test_a_non_finite_perplexity_is_never_recorded(tmp_path):
    path = tmp_path / "c.json"
    text = json.dumps({"case": "c", "sources": {"model": "builtin:tiny", "dataset": "d", "tokenizer": "t"}, "expected": {}})
    path.write_text(text)
    with pytest.raises(PplgateError, match=r"the obtained perplexity for cpu-fp32 is inf, which is never recorded"):
        golden_record(path, Target.parse("cpu-fp32"), {"perplexity": float("inf")}, {})
    assert path.read_text() == text


@pytest.mark.parametrize("obtained", [math.inf, math.nan])
def test_an_infinite_or_nan_perplexity_never_passes(obtained):
    assert not Tolerance(obtained, 29.372, 0.5).passed


def test_the_shipped_cases_load(tmp_path):
    from pathlib import Path

    golden = Path(__file__).resolve().parents[1] / "golden"
    cases = {p.stem: load_case(p) for p in golden.glob("*.json")}
    assert {name: case.name for name, case in cases.items()} == {"gpt2-small": "gpt2-small", "tiny": "tiny"}
    assert cases["gpt2-small"].resolve(Target.parse("gcu-fp16")).perplexity == 29.383
