"""Verdicts as pure functions: throughput against saved runs with known values, accuracy against golden entries."""

from __future__ import annotations

import pytest

from pplgate.golden import BlocksPin, Limits, ModelPin, Resolved
from pplgate.target import Target
from pplgate.verdicts import (Verdict, drift, judge_limits, judge_missing, judge_nothing_timed, judge_perplexity, judge_pins, judge_timed,
                              throughput_failure, throughput_verdict)
from saved import STEADY, noisy, saved_run, timings


def test_a_20_percent_step_under_3_percent_noise_is_flagged():
    history = timings(noisy(8, 0.03))
    (current,) = timings([saved_run(0.5 / 0.8)])  # tokens/s 20% lower
    verdict = throughput_verdict(current, history)
    assert verdict.verdict is Verdict.SLOWER and verdict.regression
    assert verdict.change == pytest.approx(-0.2, abs=0.03) and 0.01 < verdict.uncertainty < 0.06
    assert verdict.sentence.startswith("tiny-cpu-fp32: slower: -2") and "against the median of 8 runs" in verdict.sentence


@pytest.mark.parametrize("seed", range(20))
def test_5_percent_noise_without_a_step_is_not(seed):
    runs = noisy(11, 0.05, seed)
    verdict = throughput_verdict(timings(runs[-1:])[0], timings(runs[:-1]))
    assert verdict.verdict is Verdict.WITHIN_NOISE, verdict.sentence


def test_a_first_run_has_nothing_to_compare():
    verdict = throughput_verdict(timings([saved_run(0.5)])[0], [])
    assert (verdict.verdict, verdict.sentence) == (Verdict.FIRST_RUN, "tiny-cpu-fp32: first run on this machine with these settings: nothing to compare")


def test_other_machines_other_settings_and_loaded_runs_are_not_a_baseline():
    history = timings([saved_run(0.25, node="node-b"), saved_run(0.25, threads=1)])
    assert throughput_verdict(timings([saved_run(0.5)])[0], history).verdict is Verdict.FIRST_RUN
    loaded = throughput_verdict(timings([saved_run(0.5)])[0], history + timings([saved_run(0.25, loaded=True)] * 5))
    assert loaded.verdict is Verdict.BASELINE and loaded.baseline_runs == 0


def test_a_new_series_names_the_setting_that_differs_from_the_newest_saved_run():
    history = timings([saved_run(0.5)] * 6)
    verdict = throughput_verdict(timings([saved_run(0.5, threads=1)])[0], history)
    assert verdict.verdict is Verdict.FIRST_RUN
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
    assert verdict.verdict is Verdict.BASELINE and not verdict.regression and verdict.change is None
    assert verdict.sentence.startswith(f"tiny-cpu-fp32: baseline: {saved} of 5 runs saved with these settings on this machine")
    assert throughput_verdict(timings([saved_run(1.0)])[0], timings([saved_run(0.5)] * 5)).verdict is Verdict.SLOWER


def test_a_run_under_load_is_not_judged():
    verdict = throughput_verdict(timings([saved_run(5.0, loaded=True)])[0], timings(noisy(5, 0.01)))
    assert verdict.verdict is Verdict.UNDER_LOAD and not verdict.regression
    assert "taken under load (other processes took 50% of the CPU): not judged, and not a baseline" in verdict.sentence


def test_the_verdict_names_a_runtime_change():
    history = timings([saved_run(0.5, onnxruntime="1.30.0") for _ in range(5)])
    verdict = throughput_verdict(timings([saved_run(0.7)])[0], history)
    assert verdict.verdict is Verdict.SLOWER and verdict.changed == {"onnxruntime": ["1.30.0", "1.31.1"]}
    assert verdict.sentence.endswith("since the last of them: onnxruntime 1.30.0 -> 1.31.1")


def test_perplexity_drift_with_a_changed_runtime():
    history = timings([saved_run(0.5, perplexity=1234.5, onnxruntime="1.30.0")])
    moved = drift(timings([saved_run(0.5, perplexity=1234.5 * (1 + 2e-6))])[0], history)
    assert moved.change == pytest.approx(2e-6)
    assert moved.sentence == ("tiny-cpu-fp32: perplexity 1234.502469 moved +2e-06 relative from 1234.5 (the level since run 0001) on the same model, blocks and method; "
                              "what differs: onnxruntime 1.30.0 -> 1.31.1")


def test_perplexity_drift_without_a_changed_runtime_says_so():
    moved = drift(timings([saved_run(0.5, perplexity=1001.0)])[0], timings([saved_run(0.5, perplexity=1000.0)]))
    assert moved.sentence.endswith("what differs: nothing recorded differs (the same runtime, provider and machine)")


def test_an_identical_perplexity_says_nothing():
    assert drift(timings([saved_run(0.5)])[0], timings([saved_run(0.6)])) is None


# Accuracy: the judgments the perplexity_regression fixture records and fails with.

CPU_FP32 = Target.parse("cpu-fp32")
REPORT = {"perplexity": 30.0, "blocks": 2, "scored_tokens": 2046, "blocks_sha256": "b" * 64, "model_sha256": "m" * 64, "model_bytes": 10,
          "converted_model_sha256": None, "model": "builtin:tiny"}


def resolved(**pins) -> Resolved:
    return Resolved(29.372, 2e-4, CPU_FP32, None, **pins)


def test_within_its_tolerance_a_perplexity_passes():
    judgment = judge_perplexity("mini", CPU_FP32, 29.375, 29.372, 2e-4, "g.json [expected.cpu-fp32]", "RECORD", "LOCALIZE")
    assert (judgment.verdict, judgment.sentence, judgment.expected, judgment.rel_tol) == (Verdict.PASS, "", 29.372, 2e-4)


def test_outside_it_the_table_and_the_commands_say_why():
    judgment = judge_perplexity("mini", Target.parse("gcu:1-fp16"), 30.0, 29.372, 2e-4, "g.json [expected.gcu-fp16]", "RECORD", "LOCALIZE")
    assert judgment.verdict is Verdict.FAIL and judgment.failed
    assert judgment.sentence.splitlines() == [
        "perplexity of mini on gcu:1-fp16 is outside its tolerance",
        "            obtained  expected  difference         tolerance",
        "perplexity  30        29.372    +0.628 (+2.1381%)  ±0.0200% (±0.005874)",
        "device gcu:1, precision fp16, golden g.json [expected.gcu-fp16]",
        "If the change is intended, record the obtained value with:",
        "  RECORD",
        "LOCALIZE",
    ]


@pytest.mark.parametrize("obtained", [float("inf"), float("nan")])
def test_a_non_finite_perplexity_never_passes(obtained):
    assert judge_perplexity("mini", CPU_FP32, obtained, 29.372, 0.5, "w", "c", "h").verdict is Verdict.FAIL


def test_no_entry_says_how_to_record_one():
    judgment = judge_missing("golden/mini.json", CPU_FP32, 30.0, "RECORD")
    assert judgment.verdict is Verdict.NO_GOLDEN and judgment.failed
    assert judgment.sentence == "golden/mini.json has no expected perplexity for cpu-fp32 (obtained 30): record it with\n  RECORD"


def test_other_blocks_are_named_before_any_perplexity():
    pinned = resolved(blocks=BlocksPin(2, 2046, "a" * 64))
    judgment = judge_pins("mini-cpu-fp32", pinned, REPORT, "g.json [expected.cpu-fp32]", "RECORD")
    assert judgment.verdict is Verdict.FAIL
    assert judgment.sentence.startswith(
        "the blocks of mini-cpu-fp32 differ from those the value in g.json [expected.cpu-fp32] was recorded on "
        f"(recorded: 2 blocks, 2046 scored tokens, sha256 {'a' * 12}; now: 2 blocks, 2046 scored tokens, sha256 {'b' * 12}), "
        "so the data, the tokenizer or the grouping changed, not the model")


def test_another_model_is_named_with_both_hashes():
    judgment = judge_pins("mini-cpu-fp32", resolved(model=ModelPin("o" * 64, 9)), REPORT, "g.json [expected.cpu-fp32]", "RECORD")
    assert judgment.sentence == (f"the model of mini-cpu-fp32 is not the one the value in g.json [expected.cpu-fp32] was measured on "
                                 f"(recorded sha256 {'o' * 64}, 9 bytes; now {'m' * 64}, 10 bytes, builtin:tiny): "
                                 "point --model at the original, or re-record with\n  RECORD")
    assert judge_pins("mini-cpu-fp32", resolved(model=ModelPin("m" * 64, 10)), REPORT, "w", "c") is None


def test_another_fp16_conversion_of_the_same_model_is_named():
    report = {**REPORT, "converted_model_sha256": "n" * 64}
    judgment = judge_pins("mini-cpu-fp16", resolved(model=ModelPin("m" * 64, 10, "c" * 64)), report, "w", "RECORD")
    assert judgment.sentence.startswith("the fp16 conversion of mini-cpu-fp16 is not the one the value in w was measured on")


def test_limits_against_a_reference_session():
    limits = Limits(CPU_FP32, 4, (("kl_mean", "max", 1e-3), ("top1_agreement", "min", 99.0)))
    assert judge_limits("mini-cpu-fp16", limits, {"kl_mean": 1e-4, "top1_agreement": 99.5}, "w", "h").verdict is Verdict.PASS
    judgment = judge_limits("mini-cpu-fp16", limits, {"kl_mean": 2e-3, "top1_agreement": float("nan")}, "g.json [limits]", "LOCALIZE")
    assert judgment.sentence.splitlines() == [
        "mini-cpu-fp16 against cpu-fp32 on 4 blocks breaks its limits",
        "                obtained  limit",
        "kl_mean         0.002     max 0.001",
        "top1_agreement  nan       min 99",
        "limits: g.json [limits]",
        "LOCALIZE",
    ]


# Throughput: what was timed, and what fails a throughput test.

def test_what_was_timed_computed_what_the_accuracy_path_did():
    assert judge_timed("t", 2, 1.0, 1.0 + 1e-7).verdict is Verdict.PASS
    judgment = judge_timed("mini-cpu-fp32", 2, 1.0010005, 1.0)
    assert judgment.verdict is Verdict.FAIL and judgment.sentence.startswith(
        "mini-cpu-fp32: the timed run's perplexity of its 2 blocks is 1.0010005, the accuracy path's on the same blocks 1.0 (+0.001 relative, tolerance 1e-06)")


def test_nothing_timed_never_passes():
    assert judge_nothing_timed("t", strict=False).verdict is Verdict.SKIP
    strict = judge_nothing_timed("t", strict=True)
    assert strict.verdict is Verdict.FAIL and strict.sentence.endswith("(--gate-strict)")


def test_a_slowdown_or_a_drift_fails_only_when_asked():
    slower = throughput_verdict(timings([saved_run(1.0)])[0], timings([saved_run(0.5)] * 5))
    moved = drift(timings([saved_run(0.5, perplexity=1.0)])[0], timings([saved_run(0.5, perplexity=2.0)]))
    assert throughput_failure(slower, None, None, False) is None
    assert throughput_failure(slower, None, 0.1, False).endswith("; --gate-throughput-fail=10%")
    assert throughput_failure(slower, moved, None, True).endswith("; --gate-drift-fail")
    assert slower.record()["kind"] == "slower"


def test_a_lasting_slowdown_stays_slower_until_a_person_accepts_it():
    """As found: a lasting 25% slowdown was flagged on 4 nights, then called "within noise" once it entered the
    10-run median.  Judged against the level before it, it stays flagged, saying since when, until accepted."""
    from pplgate.verdicts import replay

    runs = [saved_run(s) for s in STEADY * 2] + [saved_run(0.625) for _ in range(20)]
    _, judged = replay(timings(runs))
    late = [j.verdict for j in judged[10:]]
    assert all(v.verdict is Verdict.SLOWER for v in late)
    assert late[0].since is None and all(v.since == "0011" for v in late[1:])
    assert "slower since run 0011 (commit abcdef01): accept the new level with 'python -m pplgate history accept'" in late[-1].sentence
    _, accepted = replay(timings(runs), accepted={"throughput": {("tiny-cpu-fp32", "node-a"): 11}})
    after = [j.verdict.verdict for j in accepted[10:]]
    assert after[:5] == [Verdict.BASELINE] * 5 and set(after[5:]) == {Verdict.WITHIN_NOISE}


def test_a_moved_perplexity_stays_flagged_until_accepted():
    from pplgate.verdicts import replay

    runs = [saved_run(0.5, perplexity=1234.5)] * 2 + [saved_run(0.5, perplexity=1234.6)] * 3
    _, judged = replay(timings(runs))
    assert [j.drift is not None for j in judged] == [False, False, True, True, True]
    _, accepted = replay(timings(runs), accepted={"accuracy": {("tiny-cpu-fp32", "node-a"): 4}})
    assert [j.drift is not None for j in accepted] == [False, False, True, False, False]
