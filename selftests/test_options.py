"""Options declared once: where a value comes from, one rule for relative paths, help that shows the default."""

from __future__ import annotations

import argparse
from pathlib import Path

from pplgate.options import BY_NAME, OPTIONS, add_global_options, resolve
from pplgate.target import Precision


def test_an_option_wins_over_the_ini_key_which_wins_over_the_environment():
    sources = BY_NAME["sources"]
    env = {"PPLGATE_SOURCES": "/from/env"}
    assert resolve(sources, Path("/given"), "/from/ini", Path("/root"), env) == Path("/given")
    assert resolve(sources, None, "/from/ini", Path("/root"), env) == Path("/from/ini")
    assert resolve(sources, None, "", Path("/root"), env) == Path("/from/env")
    assert resolve(sources, None, "", Path("/root"), {}) is None


def test_a_relative_path_in_pytest_ini_is_from_the_rootdir():
    assert resolve(BY_NAME["model-dir"], None, "models", Path("/root")) == Path("/root/models")
    assert resolve(BY_NAME["sources"], None, "../data", Path("/root/proj")) == Path("/root/proj/../data")
    # A source is a path only when written as one: else a hub id or an address, as it is.
    assert resolve(BY_NAME["dataset"], None, "./data/wikitext", Path("/root")) == "/root/data/wikitext"
    assert resolve(BY_NAME["dataset"], None, "Salesforce/wikitext", Path("/root")) == "Salesforce/wikitext"


def test_the_gate_leaves_a_source_to_each_case_unless_told():
    assert resolve(BY_NAME["model"], None, "", Path("/root"), {}, in_gate=True) is None
    assert resolve(BY_NAME["model"], None, "", Path("/root"), {}).startswith("https://topsmodel")


def test_an_empty_option_or_ini_value_means_the_default():
    devices = BY_NAME["devices"]
    assert [d.spec for d in resolve(devices, (), "", None)] == ["cpu", "gpu", "gcu"]
    assert resolve(BY_NAME["precisions"], None, "  ", None) == tuple(Precision)
    assert resolve(BY_NAME["intra-op-threads"], 0, None, None) == 0  # a zero is a value, not an absence


def test_every_help_ends_with_its_default_and_the_gate_has_every_option():
    cli, gate = argparse.ArgumentParser(), argparse.ArgumentParser()
    add_global_options(cli.add_argument)
    add_global_options(gate.add_argument, prefix="gate-")
    for action in cli._actions[1:] + gate._actions[1:]:
        assert "(default: " in action.help and action.help.endswith(")"), action.help
    assert {a.option_strings[0] for a in gate._actions[1:]} == {f"--gate-{o.name}" for o in OPTIONS}
    assert "--gate-strict" not in {s for a in cli._actions for s in a.option_strings}
    assert "(default: pytest.ini's pplgate_sources, else $PPLGATE_SOURCES when set, else none)" in next(
        a.help for a in gate._actions if "--gate-sources" in a.option_strings)
