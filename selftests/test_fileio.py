"""Files shared by processes: never half-written, never a device replaced, leftovers of the dead removed, locks that say who holds them."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

import pytest

import pplgate.fileio
from pplgate.fileio import WriteFailed, locked, make_folder, read_json_dict, write_atomic


def dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True).stdout)


def test_an_interrupted_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "golden.json"
    path.write_text('{"old": true}')

    def half_then_ctrl_c(f):
        f.write(b'{"new": ')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, half_then_ctrl_c)
    assert path.read_text() == '{"old": true}'
    assert os.listdir(tmp_path) == ["golden.json"]


def test_a_pipe_is_never_replaced_by_a_file(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(WriteFailed, match=r"it is not a regular file but a device, pipe or socket"):
        write_atomic(fifo, lambda f: f.write(b"{}"))
    assert fifo.is_fifo()


def test_a_folder_in_the_files_place_is_named(tmp_path):
    with pytest.raises(WriteFailed) as info:
        write_atomic(tmp_path, lambda f: f.write(b"{}"), fix="pass another path")
    assert str(info.value) == f"cannot write {tmp_path} (it is a folder): pass another path."
    (tmp_path / "afile").write_text("")
    with pytest.raises(WriteFailed, match=r"cannot make the folder .*afile/sub \(Not a directory\): choose a path in a writable folder with room\."):
        make_folder(tmp_path / "afile" / "sub")


def test_temporary_files_of_a_killed_writer_are_removed_by_the_next(tmp_path):
    left = tmp_path / f".r.json.{dead_pid()}.deadbeef.tmp"
    left.write_text("half")
    alive = tmp_path / f".r.json.{os.getppid()}.cafef00d.tmp"  # a live process's: not ours to remove
    alive.write_text("busy")
    write_atomic(tmp_path / "r.json", lambda f: f.write(b"{}"))
    assert not left.exists() and alive.exists()


def test_leftover_cleanup_removes_only_pplgates_own_names(tmp_path):
    dead = dead_pid()
    ours = tmp_path / f".r.json.{dead}.deadbeef.tmp"
    others = [tmp_path / f".r.json.{dead}", tmp_path / f".r.json.{dead}.backup", tmp_path / f".r.json.{dead}.deadbeef.tmp.keep"]
    folder = tmp_path / f".r.json.{dead}.notours"  # a folder of another name, holding a file
    folder.mkdir()
    (folder / "x").write_text("x")
    for path in [ours, *others]:
        path.write_text("x")
    write_atomic(tmp_path / "r.json", lambda f: f.write(b"{}"))
    assert not ours.exists()
    assert all(p.exists() for p in others) and (folder / "x").exists()


def test_a_long_lock_wait_names_the_holder(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(pplgate.fileio, "QUIET_WAIT_S", 0.2)
    target = tmp_path / "model.onnx"
    holding = threading.Event()

    def hold():
        with locked(target):
            holding.set()
            time.sleep(0.6)

    thread = threading.Thread(target=hold)
    thread.start()
    holding.wait(5)
    with caplog.at_level(logging.INFO, logger="pplgate"), locked(target):
        pass
    thread.join()
    assert f"waiting for {target}, which process {os.getpid()} is making" in caplog.text


def test_a_json_object_or_nothing(tmp_path):
    path = tmp_path / "x.json"
    assert read_json_dict(path) == {}
    for text, read in (('{"a": 1}', {"a": 1}), ("[1]", {}), ("{not json", {}), ("[" * 100000, {})):
        path.write_text(text)
        assert read_json_dict(path) == read
