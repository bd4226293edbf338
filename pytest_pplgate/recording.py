"""What a gate run keeps in its history: its accuracy results and throughput benchmarks, as one run.

- With ``--gate-history=STORE`` the run is recorded there (a folder, or a
  PostgreSQL database), once, at the end of the session.  A store that cannot
  take it (a server down, a refused login, no room, a connection lost
  mid-write) never changes a verdict and never loses the night: the run is
  kept in the node's folder (pytest-benchmark's storage), a line says so,
  and ``pplgate history push`` (or the next run that reaches the store) sends
  it, once.
- Without it, a run pytest-benchmark saves (``--benchmark-autosave``) carries
  the accuracy results in its own file, and a run that saves no benchmark
  (every throughput test deselected) is written there by pplgate, so the
  night is not lost either.

Light at import: the stores are imported when a run is recorded.
"""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from pytest_pplgate.summary import GateSummary


class Recorder:
    def __init__(self, config: pytest.Config, summary: GateSummary, history: str | None, benchmarks: list):
        self.config = config
        self.summary = summary
        self.history = history
        self.benchmarks = benchmarks  # the gate session's: the throughput fixture adds each as it is judged
        self.run_id = ""
        self.saved_by_benchmark = False
        self.said: list[tuple[str, bool]] = []  # (line, red) for the terminal summary

    def _run_id(self) -> str:
        if not self.run_id:
            import uuid

            self.run_id = uuid.uuid4().hex
        return self.run_id

    # pytest-benchmark's own file of this run carries the accuracy results too.
    @pytest.hookimpl(optionalhook=True)
    def pytest_benchmark_update_json(self, config: pytest.Config, benchmarks, output_json: dict) -> None:
        from pplgate.store import KEY

        output_json[KEY] = {"run_id": self._run_id(), "accuracy": self.accuracy()}
        bench = getattr(config, "_benchmarksession", None)
        if bench is not None and (bench.save or bench.autosave):
            self.saved_by_benchmark = True

    def accuracy(self) -> list[dict]:
        """One record per selected accuracy test: what the summary says of it."""
        return [accuracy_record(nodeid, o) for nodeid, o in self.summary.all_outcomes().items()]

    def _benchmark_folder(self) -> Path | None:
        """pytest-benchmark's file storage, where it saves runs (None when it saves elsewhere, or is not loaded)."""
        bench = getattr(self.config, "_benchmarksession", None)
        storage = getattr(bench, "storage", None)
        path = getattr(storage, "path", None)
        return Path(path) if path is not None else None

    def _machine_id(self) -> str:
        from pytest_benchmark.utils import get_machine_id

        return get_machine_id()

    def _run(self) -> dict:
        from pplgate.report import commit_info, machine_info
        from pplgate.store import new_run

        data = new_run(machine_info(), commit_info(str(self.config.rootpath)), self.benchmarks, self.accuracy())
        data["pplgate"]["run_id"] = self._run_id()
        return data

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(self.config, "workerinput") or self.config.option.collectonly:
            return  # the controller records the whole run
        if not (self.summary.selected or self.summary.throughput_selected):
            return  # no gate test ran: nothing to keep
        bench = getattr(self.config, "_benchmarksession", None)
        saving = bench is not None and (bench.save or bench.autosave)
        if self.history is None:
            folder = self._benchmark_folder()
            if saving and not self.saved_by_benchmark and folder is not None:
                self._save_folder(folder)  # no benchmark ran, so pytest-benchmark saved nothing: the night is kept
            return
        from pplgate.store import FolderStore, is_database, open_store

        if not is_database(self.history):
            store = open_store(self.history)
            assert isinstance(store, FolderStore)
            folder = self._benchmark_folder()
            same = folder is not None and store.folder.resolve() == folder.resolve()
            if not (same and self.saved_by_benchmark):
                self._save_folder(store.folder)
            return
        self._save_database(self.history)

    def _save_folder(self, folder: Path) -> None:
        from pplgate.errors import PplgateError
        from pplgate.store import FolderStore

        try:
            where = FolderStore(folder).save(self._run(), self._machine_id())
        except PplgateError as err:
            self.said.append((f"pplgate: error: the run could not be recorded: {err}", True))
            return
        self.said.append((f"pplgate: recorded this run in {where}", False))

    def _save_database(self, history: str) -> None:
        from pplgate.errors import PplgateError
        from pplgate.postgres import StoreUnreachable
        from pplgate.store import keep_pending, open_store, pending_runs

        data = self._run()
        local = self._benchmark_folder() or Path(".benchmarks")
        try:
            with open_store(history) as store:
                where = store.save(data)
                sent = 0
                for path, kept in pending_runs(local):  # what earlier runs could not send, once
                    store.save(kept)
                    path.unlink()
                    sent += 1
        except (StoreUnreachable, PplgateError) as err:
            try:
                kept_at = keep_pending(local, data)
            except PplgateError as lost:
                self.said.append((f"pplgate: error: the run could not be recorded ({err}), nor kept ({lost})", True))
                return
            self.said.append(
                (
                    f"pplgate: this run was not recorded in the history ({err}); it is kept in {kept_at}: send it with "
                    f"'python -m pplgate history push --storage {_shown(history)} --from {local}' once the store "
                    "takes it (the next run that reaches it sends it too). The verdicts above stand.",
                    True,
                )
            )
            return
        self.said.append(
            (f"pplgate: recorded this run in {where}" + (f", and {sent} kept before" if sent else ""), False)
        )

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter) -> None:
        for line, red in self.said:
            terminalreporter.write_line(line, red=red)


def _shown(spec: str) -> str:
    """The store as a command names it: its password masked (give it again, or keep it in ~/.pgpass)."""
    import shlex

    from pplgate.redact import redact_url

    return shlex.quote(redact_url(spec) if "://" in spec else spec)


def accuracy_record(nodeid: str, o) -> dict:
    """An accuracy test's outcome as the history keeps it; a skip or an error keeps its reason, never a number."""
    report = o.report or {}
    target = o.target or ""
    case = o.id[: -len(target) - 1] if target and o.id.endswith("-" + target) else o.id
    device, _, precision = target.rpartition("-")
    return {
        "id": o.id,
        "test": nodeid,
        "case": case,
        "device": report.get("device") or device,
        "precision": report.get("precision") or precision,
        "verdict": o.verdict.value,
        "perplexity": o.perplexity,
        "perplexity_stderr": o.perplexity_stderr,
        "expected": o.expected,
        "rel_tol": o.rel_tol,
        "model_sha256": report.get("model_sha256") or o.model_sha256,
        "blocks_sha256": report.get("blocks_sha256"),
        "onnxruntime": report.get("onnxruntime"),
        "onnxruntime_distribution": report.get("onnxruntime_distribution"),
        "providers": report.get("providers"),
        "driver": report.get("driver"),
        "provider_options": report.get("provider_options"),
        "computed_as": report.get("computed_as"),
        "node": platform.node(),
        "reason": o.reason,
    }
