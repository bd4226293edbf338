"""``python -m pplgate`` (also the installed ``pplgate`` command): the vendor's run_onnx.py flags, a Final report, and
the subcommands.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path

from pplgate.argtypes import (
    block_size,
    device,
    max_blocks,
    non_negative_int,
    output_file,
    percent,
    positive_int,
    precision,
    relative_error,
    target,
)
from pplgate.errors import PplgateError
from pplgate.fileio import WriteFailed, write_json_atomic
from pplgate.golden import refuse_over_cases
from pplgate.method import BLOCK_SIZE, DEFAULT_DATASET, DEFAULT_TOKENIZER, GROUPINGS, VENDOR_MODEL_URL, Method
from pplgate.options import RunSettings, RuntimeOptions, add_global_options
from pplgate.redact import printable
from pplgate.target import DEVICES, PRECISIONS, Target
from pplgate.verdicts import DEFAULT_THRESHOLD


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Appends the default where the help does not say it already (the shared options write theirs)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if "(default:" in (action.help or "") or action.required:
            return action.help or ""
        if action.default is None and action.option_strings:
            return f"{action.help} (default: none)"
        return super()._get_help_string(action) or ""


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=description, formatter_class=_Help)


def _add_target(p: argparse.ArgumentParser, which: str) -> None:
    """What is evaluated, on what, and how the split becomes blocks: the same for a run and for localize."""
    add_global_options(p.add_argument)
    p.add_argument(
        "--device", type=device, default="cpu", help=f"{which} {', '.join(DEVICES)}, optionally :N for card N"
    )
    p.add_argument("--precision", type=precision, default="fp32", help=f"{which} {', '.join(PRECISIONS)}")
    p.add_argument(
        "--grouping",
        choices=GROUPINGS,
        default="vendor",
        help="vendor: blocks cut within each 1,000-row batch, each batch's remainder dropped (the vendor's "
        "run_onnx.py); contiguous: the whole split concatenated, one remainder dropped",
    )
    p.add_argument(
        "--block-size",
        type=block_size,
        default=BLOCK_SIZE,
        help="tokens per block; checked against what the model takes before any block is scored",
    )


def _sources(args: argparse.Namespace):
    from pplgate.sourcefolder import Sources

    return Sources(
        args.pplgate_model,
        args.pplgate_dataset,
        args.pplgate_tokenizer,
        args.pplgate_model_dir,
        args.pplgate_cache_dir,
        args.pplgate_sources,
    )


def _target(args: argparse.Namespace) -> Target:
    return Target(args.device, args.precision)


def _settings(args: argparse.Namespace, progress: bool = True) -> RunSettings:
    options = RuntimeOptions(args.pplgate_intra_op_threads, dict(args.pplgate_provider_option))
    return RunSettings(args.pplgate_batch_size, args.pplgate_scoring, options, progress)


def build_parser() -> argparse.ArgumentParser:
    p = _parser(
        "python -m pplgate",
        "Perplexity of a GPT-2 ONNX model on wikitext-2-raw-v1 (test), the vendor's way. "
        "Also: 'python -m pplgate plot' draws the history of saved benchmark runs; "
        "'python -m pplgate diff A B' compares two runs saved with --save-losses; "
        "'python -m pplgate localize' finds the first node where a run departs from a reference; "
        "'python -m pplgate fetch DIR' writes the model, data and tokenizer into one folder for a node without "
        "network (then --sources DIR); "
        "'python -m pplgate history' judges each saved benchmark run against the ones before it; "
        "'python -m pplgate convert MODEL --precision fp16 -o OUT.onnx' writes the graph the gate runs for that "
        "precision.",
    )
    _add_target(p, "one of")
    p.add_argument("--max-blocks", type=max_blocks, default=None, help="evaluate only the first N blocks (smoke runs)")
    p.add_argument(
        "--report-json", type=Path, default=None, help="also write the Final report to this file, once it is printed"
    )
    p.add_argument(
        "--save-losses",
        type=Path,
        default=None,
        metavar="PATH",
        help="write per-token losses, ids and blocks (compressed numpy) for 'python -m pplgate diff'",
    )
    p.add_argument(
        "--reference",
        type=target,
        nargs="?",
        const="cpu-fp32",
        default=None,
        metavar="DEVICE-PRECISION",
        help="also run this session on the same blocks and report KL divergence, top-1 agreement and the perplexity "
        "ratio (cpu-fp32 if no value)",
    )
    p.add_argument(
        "--measure-forward", action="store_true", help="also time the bare model on the same blocks (forward_seconds)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


HISTORY_ENV = "PPLGATE_HISTORY"


def _add_storage(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "--storage",
        default=None if required else (os.environ.get(HISTORY_ENV) or ".benchmarks"),
        required=required,
        metavar="STORE",
        help="the history: pytest-benchmark's storage folder (or file://FOLDER, as --benchmark-storage takes it), or a "
        "PostgreSQL database (postgresql://..., or postgresql: for libpq's environment)"
        + ("" if required else f" (default: ${HISTORY_ENV} when set, else .benchmarks)"),
    )


def build_plot_parser() -> argparse.ArgumentParser:
    p = _parser(
        "python -m pplgate plot",
        "Plot perplexity and tokens/s across runs saved by pytest-benchmark (--benchmark-autosave).",
    )
    _add_storage(p)
    p.add_argument("-o", "--output", type=Path, default=Path("pplgate-history.png"), help="the PNG to write")
    return p


def plot_main(argv: list[str]) -> int:
    from pplgate.history import plot_history

    args = build_plot_parser().parse_args(argv)

    def work() -> None:
        refuse_over_cases(args.output, "--output")
        aside = plot_history(args.storage, args.output)
        _emit(args.output)
        for run in aside:
            _emit(printable(run.line()))

    return _exit_status(work)


def build_history_parser() -> argparse.ArgumentParser:
    p = _parser(
        "python -m pplgate history",
        "Per test, every run saved by pytest-benchmark (--benchmark-autosave) with its tokens/s, perplexity and "
        "verdicts "
        "against the runs saved before it: slowdowns beyond the threshold and the noise, runs under load, perplexity "
        "drift.",
    )
    _add_storage(p)
    # A string default goes through percent() as a typed value would: the help shows 10, the code gets 0.1.
    p.add_argument(
        "--threshold",
        type=percent,
        default=f"{DEFAULT_THRESHOLD * 100:g}",
        metavar="PCT",
        help="the slowdown, in percent, that counts when beyond the noise too",
    )
    p.add_argument(
        "--markdown",
        type=output_file,
        default=None,
        metavar="FILE",
        help="also write the tables as markdown, e.g. $GITHUB_STEP_SUMMARY (appended to when it exists)",
    )
    p.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="PNG",
        help="also draw perplexity and tokens/s per saved run; the markdown links it",
    )
    p.add_argument(
        "--html",
        type=output_file,
        default=None,
        metavar="FILE",
        help="also write the whole history as one self-contained page: the last night, the changes, two plots a "
        "series (no network needed to open it)",
    )
    p.add_argument(
        "--fail-on-regression",
        action="store_true",
        help="exit 1 when the newest run of a test is slower beyond the threshold and the noise",
    )
    p.add_argument("--test", default=None, help="only this test's series: tiny-cpu-fp32 (default: every test)")
    p.add_argument("--machine", default=None, help="only this machine's series (default: every machine)")
    p.add_argument(
        "--last",
        type=non_negative_int,
        default=30,
        metavar="N",
        help="show each series' last N runs, judged against the whole history (0: every run)",
    )
    return p


def history_main(argv: list[str]) -> int:
    if argv and argv[0] in HISTORY_COMMANDS:
        return HISTORY_COMMANDS[argv[0]](argv[1:])
    from pplgate.history import (
        accepted_levels,
        accuracy_history,
        as_store,
        judged,
        no_cycle_collection,
        plot_history,
        plot_reference,
        render_accuracy,
        render_markdown,
        render_table,
    )

    args = build_history_parser().parse_args(argv)
    regressions: list[str] = []

    def work() -> None:
        for option, path in (("--plot", args.plot), ("--markdown", args.markdown), ("--html", args.html)):
            if path is not None:
                refuse_over_cases(path, option)
        with as_store(args.storage) as store, no_cycle_collection():
            found = judged(store, args.threshold, args.test, args.machine, args.last)
            acceptances = store.acceptances()
            accuracy = accuracy_history(store, accepted_levels(acceptances), args.test, args.machine, args.last)
            rows = found.rows
            _emit(render_table(rows), end="")
            _emit(render_accuracy(accuracy), end="")
            for a in acceptances:
                _emit(
                    printable(
                        f"accepted: {a.kind} of {a.test} on {a.node} from run {a.since}, by {a.who} on {a.at}: {a.why}"
                    )
                )
            for aside in found.set_aside:
                _emit(printable(aside.line()))
            if args.plot is not None:
                plot_history(store, args.plot, args.threshold)
            if args.html is not None:
                from pplgate.page import write_page

                every = judged(store, args.threshold, args.test, args.machine)
                levels = accepted_levels(acceptances)
                page = accuracy_history(store, levels, args.test, args.machine)
                write_page(args.html, every, page, store.label, args.threshold)
                _emit(f"wrote {args.html}")
        if args.markdown is not None:
            text = render_markdown(rows, *plot_reference(args.markdown, args.plot), set_aside=found.set_aside)
            text += render_accuracy(accuracy, markdown=True)
            with open(args.markdown, "a", encoding="utf-8") as out:  # GitHub's step summary is appended to
                out.write(text)
        regressions.extend(runs[-1].verdict.sentence for runs in found.rows.values() if runs[-1].verdict.regression)
        for sentence in regressions:
            _emit(f"regression: {sentence}")
        for key, runs in accuracy.items():
            if runs[-1].moved:
                _emit(printable(f"moved: {key}: perplexity {runs[-1].moved}"))

    status = _exit_status(work)
    if status == 0 and regressions and args.fail_on_regression:
        return 1
    return status


def _store_parser(command: str, description: str) -> argparse.ArgumentParser:
    p = _parser(f"python -m pplgate history {command}", description)
    _add_storage(p, required=command in ("import", "push"))
    return p


def history_import_main(argv: list[str]) -> int:
    from pplgate.store import open_store
    from pplgate.transfer import import_folder

    p = _store_parser("import", "Load a node's folder of saved runs into a store; run twice, it adds nothing twice.")
    p.add_argument("folder", type=Path, help="pytest-benchmark's storage folder of the node (.benchmarks)")
    args = p.parse_args(argv)

    def work() -> None:
        if not args.folder.is_dir():
            raise PplgateError(f"{args.folder} is not a folder: pass the folder pytest-benchmark saved the runs in.")
        with open_store(args.storage) as store:
            moved = import_folder(args.folder, store)
            _report_moved(moved, f"into {store.label}")

    return _exit_status(work)


def history_export_main(argv: list[str]) -> int:
    from pplgate.store import open_store
    from pplgate.transfer import export_store

    p = _store_parser("export", "Write every run of a store into a folder, as pytest-benchmark's file storage.")
    p.add_argument("folder", type=Path, help="the folder to write the runs into (a folder per machine)")
    args = p.parse_args(argv)

    def work() -> None:
        with open_store(args.storage) as store:
            moved = export_store(store, args.folder)
            _report_moved(moved, f"into {args.folder}")

    return _exit_status(work)


def history_push_main(argv: list[str]) -> int:
    from pplgate.store import open_store
    from pplgate.transfer import push_kept

    p = _store_parser("push", "Send the runs this node kept while its store could not be reached, once each.")
    p.add_argument(
        "--from",
        dest="local",
        type=Path,
        default=Path(".benchmarks"),
        metavar="FOLDER",
        help="the node's folder that kept them: pytest-benchmark's storage (default: .benchmarks)",
    )
    args = p.parse_args(argv)

    def work() -> None:
        with open_store(args.storage) as store:
            moved = push_kept(args.local, store)
            _report_moved(moved, f"to {store.label}")

    return _exit_status(work)


def history_accept_main(argv: list[str]) -> int:
    from pplgate.history import accept

    p = _store_parser(
        "accept",
        "Accept a change as the new level: from the run named, a series' nights are judged against it (who, when and "
        "why are kept in the store).",
    )
    p.add_argument("test", help="the test, as the history names it: tiny-cpu-fp32")
    p.add_argument("--machine", required=True, help="the machine whose series it is, as the history names it")
    p.add_argument("--since", required=True, metavar="RUN", help="the run from which the level is accepted: 0061")
    p.add_argument("--why", required=True, help="why the new level is right: kept with the acceptance")
    p.add_argument("--who", default=None, help="who accepts it (default: this user)")
    p.add_argument(
        "--kind",
        choices=("throughput", "accuracy"),
        default="throughput",
        help="tokens/s, or the perplexity on the same model and blocks (default: throughput)",
    )
    args = p.parse_args(argv)

    def work() -> None:
        _emit(printable(accept(args.storage, args.kind, args.test, args.machine, args.since, args.why, args.who)))

    return _exit_status(work)


def _report_moved(moved, where: str) -> None:
    _emit(f"{len(moved.added)} runs {where}, {moved.already} there already")
    for run, why in moved.set_aside:
        _emit(printable(f"set aside {run}: {why}; not moved"))


HISTORY_COMMANDS = {
    "import": history_import_main,
    "export": history_export_main,
    "push": history_push_main,
    "accept": history_accept_main,
}


def build_diff_parser() -> argparse.ArgumentParser:
    p = _parser(
        "python -m pplgate diff",
        "Compare two runs' per-token losses (written with --save-losses): the paired difference and the worst tokens.",
    )
    p.add_argument("a", type=Path, help="losses of run A")
    p.add_argument("b", type=Path, help="losses of run B, on the same tokens")
    p.add_argument("--tokenizer", default=None, help="to show the tokens' text (default: the tokenizer A was run with)")
    p.add_argument("--top", type=positive_int, default=10, help="how many of the most different tokens to show")
    return p


def diff_main(argv: list[str]) -> int:
    from pplgate.data import load_tokenizer
    from pplgate.diff import render
    from pplgate.lossfile import load_losses

    args = build_diff_parser().parse_args(argv)

    def work() -> None:
        a, b = load_losses(args.a), load_losses(args.b)
        _emit(render(a, b, load_tokenizer(args.tokenizer or a.meta["tokenizer"]).decode, count=args.top))

    return _exit_status(work)


def build_localize_parser() -> argparse.ArgumentParser:
    p = _parser(
        "python -m pplgate localize",
        "Where a run departs from a reference, node by node: every intermediate tensor of both sides on the same "
        "blocks, "
        "compared by name in topological order (max abs error, relative L2 error, cosine), and the first divergence.",
    )
    _add_target(p, "the run's: one of")
    p.add_argument(
        "--reference",
        type=target,
        default="cpu-fp32",
        metavar="DEVICE-PRECISION",
        help="the session to compare against",
    )
    p.add_argument(
        "--reference-model",
        default=None,
        metavar="SOURCE",
        help="compare against another ONNX file of the same architecture (an older export, a converted or quantized "
        "model) at --reference; default: the same model",
    )
    p.add_argument("--blocks", type=positive_int, default=1, help="how many of the first blocks to feed")
    # A relative error, as a golden file's rel_tol is (history's --threshold is a percentage).
    p.add_argument(
        "--tolerance",
        dest="threshold",
        type=relative_error,
        default=None,
        metavar="REL_L2",
        help="relative L2 error above which a tensor can be the first divergence (default: 1e-4 for fp32 against "
        "fp32, 5e-2 where fp16 is involved)",
    )
    p.add_argument(
        "--report-json",
        type=Path,
        default=None,
        metavar="PATH",
        help="write first_divergence and every tensor's errors as JSON",
    )
    p.add_argument(
        "--plot", type=Path, default=None, metavar="PATH", help="write a PNG of relative error against graph depth"
    )
    return p


def localize_main(argv: list[str]) -> int:
    from pplgate.localize import plot, render
    from pplgate.pipeline import localize_run

    args = build_localize_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="pplgate: %(message)s")

    def work() -> None:
        loc = localize_run(
            _sources(args),
            _target(args),
            args.reference,
            Method(args.grouping, args.block_size, args.blocks),
            args.reference_model,
            args.threshold,
            _settings(args).options,
        )
        _emit(render(loc))
        _write(args.report_json, "--report-json", lambda path, fix: write_json_atomic(path, loc.report(), fix))
        _write(args.plot, "--plot", lambda path, fix: plot(loc, path))

    return _exit_status(work)


def build_fetch_parser() -> argparse.ArgumentParser:
    p = _parser(
        "python -m pplgate fetch",
        "Write a case's model, dataset split and tokenizer into one folder, with SHA256SUMS, on a machine with "
        "network; "
        "copy it to a node without network and pass --sources DIR (or set pplgate_sources in pytest.ini, or "
        "$PPLGATE_SOURCES) there.",
    )
    p.add_argument(
        "folder",
        type=Path,
        metavar="DIR",
        help="the folder to write (created if missing; what it holds already is replaced item by item)",
    )
    p.add_argument(
        "--case",
        type=Path,
        default=None,
        metavar="GOLDEN_FILE",
        help="take the sources of this golden file (e.g. golden/gpt2-small.json); the options below override them "
        "(default: the vendor's, as for a run)",
    )
    add_global_options(p.add_argument, names=("model", "dataset", "tokenizer"), unset="the case's")
    add_global_options(p.add_argument, names=("cache-dir",))
    p.add_argument("--no-progress", action="store_true", help="no progress bar or lines")
    return p


def fetch_main(argv: list[str]) -> int:
    from pplgate.fetch import fetch
    from pplgate.golden import load_case

    args = build_fetch_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="pplgate: %(message)s")

    def work() -> None:
        if args.case is not None and not args.case.exists():
            cases = sorted(p.name for p in args.case.parent.glob("*.json")) if args.case.parent.is_dir() else []
            known = f": one of {', '.join(str(args.case.parent / n) for n in cases)}" if cases else ""
            raise PplgateError(f"--case {args.case}: no such golden file; pass the path of a case file{known}.")
        case = (
            load_case(args.case).sources
            if args.case is not None
            else {"model": VENDOR_MODEL_URL, "dataset": DEFAULT_DATASET, "tokenizer": DEFAULT_TOKENIZER}
        )
        lines = fetch(
            args.folder,
            args.pplgate_model or case["model"],
            args.pplgate_dataset or case["dataset"],
            args.pplgate_tokenizer or case["tokenizer"],
            args.pplgate_cache_dir,
            progress=not args.no_progress,
        )
        _emit("\n".join(lines))
        _emit(
            f"On the node: python -m pytest --gate-sources={args.folder} ...   or   python -m pplgate --sources "
            f"{args.folder} ..."
        )

    return _exit_status(work)


def build_convert_parser() -> argparse.ArgumentParser:
    p = _parser(
        "python -m pplgate convert",
        "Write the graph the gate runs for a device and precision: the same conversion, from the same cache, so that "
        "what was gated is what gets deployed.",
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="the ONNX model as given to --model: a path, an https URL, hf://<repo>/<file> or builtin:tiny",
    )
    p.add_argument("--precision", type=precision, default="fp16", help=f"one of {', '.join(PRECISIONS)}")
    p.add_argument(
        "--device",
        type=device,
        default="cpu",
        help=f"the device it is for, one of {', '.join(DEVICES)}: every converting provider runs the same fp16 graph; "
        f"gcu runs its own fp16 mode on the fp32 model",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="OUT.onnx",
        help="the file to write (weights over 2 GB go beside it, in the file the model names)",
    )
    add_global_options(p.add_argument, names=("model-dir", "cache-dir"))
    return p


def convert_main(argv: list[str]) -> int:
    from pplgate.convert import write_session_model

    args = build_convert_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="pplgate: %(message)s")
    return _exit_status(
        lambda: _emit(
            write_session_model(args.model, _target(args), args.output, args.pplgate_model_dir, args.pplgate_cache_dir)
        )
    )


def _write(path: Path | None, option: str, write) -> None:
    """``write(path, fix)`` where an option asked for a file; a failure is one sentence, the printed result kept."""
    if path is None:
        return
    refuse_over_cases(path, option)
    try:
        write(path, f"the result printed above is complete; pass {option} a file path in a writable folder with room")
    except WriteFailed as err:
        raise PplgateError(f"{option}: {err}") from None


def _exit_status(work) -> int:
    """Runs ``work``: 0, or its fault as one sentence and 1, or 130 for Ctrl-C."""
    if sys.stdout is None:  # started with standard output closed (>&-): every printed result would vanish
        print(
            "pplgate: error: standard output is closed, so the result would be lost: run with it open, or redirected "
            "to a file.",
            file=sys.stderr,
        )
        return 1
    try:
        work()
    except PplgateError as err:
        print(f"pplgate: error: {printable(str(err))}", file=sys.stderr)
        return 1
    except OSError as err:
        # A file fault no step foresaw: still one sentence, with the file.
        where = f" {err.filename}" if err.filename else ""
        print(
            f"pplgate: error: cannot use{printable(where)} ({err.strerror or type(err).__name__}): check that the "
            f"path exists, "
            "is the kind of file or folder asked for, and is readable (writable for outputs and caches).",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("pplgate: interrupted: no report was written.", file=sys.stderr)
        return 130
    return 0


def _emit(text: object, end: str = "\n") -> None:
    """A result onto standard output, flushed: one that cannot be written (a full disk, /dev/full, a closed pipe) is
    named, never lost in silence.
    """
    try:
        sys.stdout.write(f"{text}{end}")
        sys.stdout.flush()
    except OSError as err:
        where = _stdout_name()
        # What is left in the buffer would fail again at exit: standard output goes to /dev/null from here.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise PplgateError(
            f"cannot write the result to standard output ({where}: {err.strerror or type(err).__name__}), so it is "
            f"lost: "
            "redirect it to a file with room (or use --report-json where the command has it) and run again."
        ) from None


def _stdout_name() -> str:
    """What standard output is: a path where the system says (/dev/full, a file), else its description."""
    try:
        return printable(os.readlink("/proc/self/fd/1"))
    except OSError:
        return "standard output"


def run_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    # Say when a model is downloaded, built or converted: those take minutes.
    logging.basicConfig(level=logging.INFO, format="pplgate: %(message)s")

    def work() -> None:
        from pplgate.lossfile import save_losses
        from pplgate.pipeline import run

        for option, path in (("--report-json", args.report_json), ("--save-losses", args.save_losses)):
            if path is not None:
                refuse_over_cases(path, option)  # before the run: minutes of it would be spent for nothing
        report, evaluation = run(
            _sources(args),
            _target(args),
            Method(args.grouping, args.block_size, args.max_blocks),
            _settings(args, progress=not args.no_progress),
            args.measure_forward,
            args.reference,
        )
        # The result first: a file that cannot be written must not lose it.
        try:
            _emit("Final report:\n" + json.dumps(report, indent=2))
        finally:  # an output that cannot be written must not lose the files asked for either
            _write(args.report_json, "--report-json", lambda path, fix: write_json_atomic(path, report, fix))
            _write(
                args.save_losses,
                "--save-losses",
                lambda path, fix: save_losses(path, evaluation.token_losses, evaluation.layout, report, fix),
            )

    return _exit_status(work)


# The subcommands, by their first word; anything else is a run.
COMMANDS = {
    "convert": convert_main,
    "diff": diff_main,
    "fetch": fetch_main,
    "history": history_main,
    "localize": localize_main,
    "plot": plot_main,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = COMMANDS.get(argv[0]) if argv else None
    return command(argv[1:]) if command is not None else run_main(argv)
