"""A history's last nights, judged from the few runs pplgate.window picks, are what judging every night gives."""

from __future__ import annotations

import random

import pytest

from pplgate.history import accepted_levels, accuracy_history, judged
from pplgate.store import Acceptance, FolderStore
from pplgate.verdicts import Verdict
from pplgate.window import last_of_each
from saved import NODES, TESTS, eventful, saved_run, write_storage

@pytest.fixture(params=[0, 1, 2, 3])
def store(request, tmp_path) -> FolderStore:
    rng = random.Random(100 + request.param)
    store = FolderStore(write_storage(tmp_path / "bench", eventful(request.param)))
    for kind in ("throughput", "accuracy", "throughput"):
        since = f"{rng.randrange(60, 200):04d}"
        store.accept(Acceptance(kind, rng.choice(TESTS), rng.choice(NODES), since, "qa", "2026-12-01", "new driver"))
    return store


def shown_rows(rows: dict) -> dict:
    return {
        test: [(r.timing.run, r.verdict.verdict, r.verdict.sentence, r.drift and r.drift.sentence) for r in runs]
        for test, runs in rows.items()
    }


@pytest.mark.parametrize("shown", [1, 4, 25])
def test_the_last_nights_are_judged_as_judging_every_night_judges_them(store, shown):
    every = judged(store).rows
    assert shown_rows(judged(store, shown=shown).rows) == shown_rows({t: runs[-shown:] for t, runs in every.items()})
    kinds = {r.verdict.verdict for runs in every.values() for r in runs}
    # The history is eventful enough to be a test: changes, held changes, load and new series all occur.
    assert {Verdict.UNDER_LOAD, Verdict.FIRST_RUN, Verdict.WITHIN_NOISE} <= kinds and {Verdict.SLOWER, Verdict.FASTER} & kinds
    assert any(r.verdict.since for runs in every.values() for r in runs)


@pytest.mark.parametrize("shown", [1, 4, 25])
def test_the_last_accuracy_results_are_followed_as_following_every_one_does(store, shown):
    accepted = accepted_levels(store.acceptances())
    every = accuracy_history(store, accepted)
    window = accuracy_history(store, accepted, shown=shown)
    assert list(window) == list(every)
    for key, rows in every.items():
        assert [(r.run.name, r.moved) for r in window[key]] == [(r.run.name, r.moved) for r in rows[-shown:]]
    assert any(r.moved for rows in every.values() for r in rows)


def test_each_series_shows_its_own_last_entries():
    assert last_of_each(["a", "b", "a", "a", "b"], 2) == {"a": 2, "b": 1}
    assert last_of_each(["a", "b", "a"], 5) == {"a": 0, "b": 1}


def test_the_run_an_acceptance_starts_from_is_read_even_when_nothing_else_would(tmp_path):
    """Run 2 starts an accepted perplexity level on node-a, taken under load and without a perplexity: no baseline,
    level or newest run holds it, yet the level from run 3 on (of any machine) depends on it."""
    runs = [
        saved_run(0.5, perplexity=100.0),
        saved_run(0.9, perplexity=None, loaded=True),
        saved_run(0.5, perplexity=101.0, node="node-b"),
        saved_run(0.5, perplexity=101.0),
        saved_run(0.5, perplexity=102.0, node="node-b"),
    ]
    store = FolderStore(write_storage(tmp_path / "bench", runs))
    store.accept(Acceptance("accuracy", "tiny-cpu-fp32", "node-a", "0002", "qa", "2026-12-01", "a new model export"))
    last = judged(store, shown=1).rows["tiny-cpu-fp32"]
    assert shown_rows({"t": last}) == shown_rows({"t": judged(store).rows["tiny-cpu-fp32"][-1:]})
    assert "(the level since run 0003)" in last[0].drift.sentence
