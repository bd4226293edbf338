"""Where the nights are kept: one node's folder, or a fleet's PostgreSQL database, behind one interface.

A *run* is one gate session on one node, kept as pytest-benchmark saves a
run (``machine_info``, ``commit_info``, ``datetime``, ``benchmarks`` with
their ``stats`` and pplgate's ``extra_info``) with one key more, ``pplgate``:
the run's own id and its accuracy results, one record per case, device and
precision (what the gate's summary says of it: perplexity and its ±,
expected value, tolerance, verdict, pins, runtime).  A skipped or failed test
is kept with its verdict and reason, never as a perplexity.

- ``FolderStore`` is pytest-benchmark's file storage (``.benchmarks`` by
  default), as it was: its run files are the history, and a run pplgate
  records there is one more file in its format, so ``pytest-benchmark
  compare`` reads it too.  pplgate's own records (acceptances, runs kept for
  a server that could not be reached) live in its hidden ``.pplgate/``.
- ``pplgate.postgres.PostgresStore`` holds a fleet (``postgresql://`` URL,
  or libpq's environment).

``open_store`` makes either from what ``--storage`` / ``--gate-history``
says.  Both give the same runs to the same judging code (``pplgate.history``).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

from pplgate.errors import PplgateError
from pplgate.fileio import write_json_atomic
from pplgate.redact import bare_address

# A run's pplgate key: {"run_id": ..., "accuracy": [...]}.
KEY = "pplgate"
# pplgate's own files in a folder store: hidden, and two levels down, so pytest-benchmark's "*/*.json" never reads them.
OWN = ".pplgate"
SCHEMES = ("postgresql://", "postgres://")


@dataclass(frozen=True)
class StoredRun:
    """One run as a store keeps it."""

    name: str  # its number in the store, oldest first: 0007 (pytest-benchmark's run number in a folder)
    data: dict  # pytest-benchmark's JSON with the pplgate key
    where: str  # a file, or the store and run id: what a message names

    @property
    def run_id(self) -> str:
        own = self.data.get(KEY)
        return str(own.get("run_id")) if isinstance(own, dict) and own.get("run_id") else self.where


@dataclass(frozen=True)
class Acceptance:
    """A person's word that a change is the new level: later nights are judged against it."""

    kind: str  # "throughput" or "accuracy"
    test: str  # tiny-cpu-fp32
    node: str  # the machine whose series it is
    since: str  # the run (its number in the store) from which the level is accepted
    who: str
    at: str  # ISO date
    why: str

    def record(self) -> dict:
        return {
            "kind": self.kind,
            "test": self.test,
            "node": self.node,
            "since": self.since,
            "who": self.who,
            "at": self.at,
            "why": self.why,
        }


class UnreadableStore(PplgateError):
    pass


def new_run(machine_info: dict, commit_info: dict, benchmarks: list[dict], accuracy: list[dict]) -> dict:
    """A run to record: pytest-benchmark's layout, a fresh run id, the time now (UTC)."""
    return {
        "machine_info": machine_info,
        "commit_info": commit_info,
        "datetime": dt.datetime.now(dt.timezone.utc).isoformat(),
        "benchmarks": benchmarks,
        KEY: {"run_id": uuid.uuid4().hex, "accuracy": accuracy},
    }


def is_database(spec: str | Path) -> bool:
    text = str(spec).strip()
    return text.lower().startswith(SCHEMES) or text.lower() == "postgresql:"


def open_store(spec: str | Path):
    """A folder (a path, or pytest-benchmark's ``file://PATH``) or a PostgreSQL database (``postgresql://...``;
    ``postgresql:`` alone takes every setting from libpq's environment: PGHOST, PGSERVICE, ~/.pgpass)."""
    text = str(spec)
    if is_database(text):
        from pplgate.postgres import PostgresStore

        return PostgresStore(text)
    return FolderStore(folder_of(text))


def folder_of(spec: str) -> Path:
    """pytest-benchmark's storage as a folder: a path, or its own spelling ``file://PATH``."""
    if not spec.strip() or spec.strip() == "file://":
        raise PplgateError(
            f"--storage {spec!r} names no folder: pass the folder pytest-benchmark saved its runs in "
            "(--benchmark-storage's, .benchmarks by default), or a postgresql:// database."
        )
    if spec.startswith("file://"):
        return Path(spec[len("file://") :])
    if "://" in spec:
        raise PplgateError(
            f"--storage {bare_address(spec)}: a store is a folder (a path, or file://FOLDER) or a PostgreSQL database "
            "(postgresql://...); pass one of those."
        )
    return Path(spec)


class FolderStore:
    """pytest-benchmark's file storage: ``<folder>/<machine id>/<NNNN>_<...>.json``, one run a file."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.label = str(self.folder)

    def __enter__(self) -> FolderStore:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def is_empty(self) -> bool:
        return not self.run_files()

    def run_files(self) -> list[Path]:
        """Every run file, in the order the runs were saved (pytest-benchmark's run number, never their dates)."""
        files = [p for p in self.folder.rglob("*.json") if not _own(p, self.folder)]
        return sorted(files, key=saved_order)

    def runs(self) -> tuple[list[StoredRun], list[tuple[str, str]]]:
        """Every run, oldest first, and (file, reason) for each that cannot be read."""
        from pplgate.history import load_run
        from pplgate.timings import UnreadableRun

        runs, aside = [], []
        for path in self.run_files():
            try:
                runs.append(StoredRun(path.stem.split("_")[0], load_run(path), str(path)))
            except UnreadableRun as err:
                aside.append((str(path), str(err)))
        return runs, aside

    def save(self, data: dict, machine_id: str) -> str:
        """One run as a file of its own, numbered after the last one under ``machine_id`` (pytest-benchmark's
        folder name for this machine); the file's path."""
        folder = self.folder / machine_id
        numbers = [saved_order(p)[0] for p in folder.glob("*.json")] if folder.is_dir() else []
        number = max([n for n in numbers if n < 10**9], default=0) + 1
        commit = str((data.get("commit_info") or {}).get("id") or "unversioned")[:8]
        stamp = str(data.get("datetime", ""))[:19].replace("-", "").replace(":", "").replace("T", "_")
        path = folder / f"{number:04d}_{commit}_{stamp}_pplgate.json"
        write_json_atomic(path, data, fix=f"pass --gate-history a folder this user can write ({self.folder})")
        return str(path)

    def has_run(self, run_id: str) -> bool:
        runs, _ = self.runs()
        return any(r.run_id == run_id for r in runs)

    # Acceptances: one file each, under .pplgate/acceptances/.
    def acceptances(self) -> list[Acceptance]:
        folder = self.folder / OWN / "acceptances"
        found = []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                found.append(Acceptance(**json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError, TypeError) as err:
                raise UnreadableStore(
                    f"acceptance {path} cannot be read ({err}): remove it, or restore it from a backup."
                ) from None
        return found

    def accept(self, acceptance: Acceptance) -> str:
        path = self.folder / OWN / "acceptances" / f"{acceptance.at.replace(':', '')}_{uuid.uuid4().hex[:8]}.json"
        write_json_atomic(path, acceptance.record(), fix=f"make {self.folder} writable")
        return str(path)


def _own(path: Path, folder: Path) -> bool:
    return OWN in path.relative_to(folder).parts


def saved_order(path: Path | str) -> tuple[int, str]:
    """Where a saved run stands in its storage: pytest-benchmark's run number (0001_...), the order it was saved in.

    Never its date: a node with a wrong clock would make its run "the newest".
    """
    number = Path(str(path)).name.split("_")[0]
    return (int(number) if number.isdigit() else 10**9, str(path))


# Runs that could not reach their store: kept in the node's folder store, sent by 'pplgate history push'.
def pending_folder(local: Path) -> Path:
    return Path(local) / OWN / "pending"


def keep_pending(local: Path, data: dict) -> Path:
    path = pending_folder(local) / f"{data[KEY]['run_id']}.json"
    write_json_atomic(path, data, fix=f"make {local} writable")
    return path


def pending_runs(local: Path) -> list[tuple[Path, dict]]:
    folder = pending_folder(local)
    kept = []
    for path in sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns) if folder.is_dir() else []:
        try:
            kept.append((path, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError) as err:
            raise UnreadableStore(f"kept run {path} cannot be read ({err}): remove it.") from None
    return kept
