"""Runs moved between stores: a node's folder imported into the fleet's database, the database exported back to a
folder (nothing locked in), and the runs a node kept while its store was unreachable pushed to it, each once."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from pplgate.store import KEY, FolderStore, StoredRun, pending_runs
from pplgate.timings import UnreadableRun


@dataclass
class Moved:
    added: list[str] = field(default_factory=list)  # where each run landed
    already: int = 0  # runs the target held before: never twice
    set_aside: list[tuple[str, str]] = field(default_factory=list)  # (run, why) that cannot be read: not moved


def run_id_of(data: dict) -> str:
    """A run's id: pplgate's own, or (a run pytest-benchmark saved alone) the sha256 of its content, so that importing
    the same file twice finds it there."""
    own = data.get(KEY)
    if isinstance(own, dict) and isinstance(own.get("run_id"), str) and own["run_id"]:
        return own["run_id"]
    return "sha256:" + hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def with_id(data: dict) -> dict:
    own = data.get(KEY)
    kept = own if isinstance(own, dict) else {}
    return {**data, KEY: {"accuracy": [], **kept, "run_id": run_id_of(data)}}


def check_run(run: StoredRun) -> str | None:
    """Why a run cannot be moved (a benchmark of pplgate's that is not what pplgate writes), or None."""
    from pplgate.history import timings_of_run

    try:
        timings_of_run(run.name, run.data)
    except UnreadableRun as err:
        return str(err)
    accuracy = run.data.get(KEY, {}).get("accuracy") if isinstance(run.data.get(KEY), dict) else []
    if not isinstance(accuracy, list) or not all(isinstance(r, dict) and r.get("id") for r in accuracy):
        return "its pplgate.accuracy is not a list of results with an id"
    return None


def import_folder(folder: Path, store) -> Moved:
    """Every readable run of ``folder`` into ``store``, oldest first; a run already there (by id) is not added again."""
    moved = Moved()
    runs, unread = FolderStore(folder).runs()
    moved.set_aside.extend(unread)
    for run in runs:
        why = check_run(run)
        if why is not None:
            moved.set_aside.append((run.where, why))
            continue
        data = with_id(run.data)
        if store.has_run(data[KEY]["run_id"]):
            moved.already += 1
            continue
        moved.added.append(store.save(data))
    return moved


def export_store(store, folder: Path) -> Moved:
    """Every run of ``store`` as a file in ``folder`` (pytest-benchmark's layout, a folder per machine); runs the
    folder holds already (by id) are not written again."""
    moved = Moved()
    target = FolderStore(folder)
    held = {r.run_id for r in target.runs()[0]} if folder.is_dir() else set()
    runs, unread = store.runs()
    moved.set_aside.extend(unread)
    for run in runs:
        data = with_id(run.data)
        if data[KEY]["run_id"] in held:
            moved.already += 1
            continue
        node = str((data.get("machine_info") or {}).get("node") or "unknown")
        moved.added.append(target.save(data, _folder_name(node)))
    return moved


def push_kept(local: Path, store) -> Moved:
    """The runs ``local`` kept while the store could not be reached, sent once each, then removed from ``local``."""
    moved = Moved()
    for path, data in pending_runs(local):
        if store.has_run(run_id_of(data)):
            moved.already += 1
        else:
            moved.added.append(store.save(with_id(data)))
        path.unlink()
    return moved


def _folder_name(node: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in node).strip(".")
    return safe or "unknown"
