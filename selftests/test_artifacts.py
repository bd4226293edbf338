"""Files pplgate makes once: reused while current, remade when changed, restamped when only touched."""

from __future__ import annotations

import json
import logging
import os

from pplgate.artifacts import Artifact
from pplgate.digest import sha256_of


def maker(path, content: bytes, calls: list):
    def make() -> str:
        calls.append(1)
        path.write_bytes(content)
        return sha256_of(path)

    return make


def test_made_once_then_reused(tmp_path):
    path, calls = tmp_path / "a.bin", []
    artifact = Artifact(path, "the source", {"version": 1})
    assert not artifact.current()
    artifact.ensure(maker(path, b"one", calls))
    assert artifact.current() and calls == [1]
    artifact.ensure(maker(path, b"two", calls))
    assert path.read_bytes() == b"one" and calls == [1]
    assert json.loads((tmp_path / "a.bin.json").read_text())["made_from"] == "the source"


def test_made_again_when_its_inputs_or_its_bytes_change(tmp_path, caplog):
    path, calls = tmp_path / "a.bin", []
    Artifact(path, "the source", {"version": 1}).ensure(maker(path, b"one", calls))
    with caplog.at_level(logging.INFO, logger="pplgate"):
        Artifact(path, "the source", {"version": 2}).ensure(maker(path, b"two", calls))
        assert path.read_bytes() == b"two"
        path.write_bytes(b"tampered")
        Artifact(path, "the source", {"version": 2}).ensure(maker(path, b"three", calls))
        Artifact(path, "another source", {"version": 2}).ensure(maker(path, b"four", calls))
    assert path.read_bytes() == b"four" and len(calls) == 4
    assert f"{path} was not made from the source as it is now: making it again" in caplog.text
    assert f"{path} is not the file made from the source (changed or truncated since): making it again" in caplog.text
    assert f"{path} was made from the source, not another source: making it again" in caplog.text


def test_the_same_bytes_under_another_inode_are_restamped_not_remade(tmp_path):
    path, calls = tmp_path / "a.bin", []
    Artifact(path, "s").ensure(maker(path, b"one", calls))
    copy = tmp_path / "copy"
    copy.write_bytes(path.read_bytes())
    os.replace(copy, path)  # copied back: a new inode, the same bytes
    assert not Artifact(path, "s").current()
    Artifact(path, "s").ensure(maker(path, b"two", calls))
    assert path.read_bytes() == b"one" and calls == [1] and Artifact(path, "s").current()
