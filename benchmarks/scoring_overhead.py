"""What scoring costs: pplgate's whole evaluation against a bare ``session.run`` of the same model.

    .venv/bin/python benchmarks/scoring_overhead.py
    .venv/bin/python benchmarks/scoring_overhead.py --model path/to/model.onnx --device gpu --batch-sizes 1 4

Prints, for each batch size, the best of ``--pairs`` alternating pairs, in
seconds per block, of pplgate's ``evaluate`` as the CLI runs it (its
``eval_seconds``) and of a bare loop (the model's own session, ``session.run``
of the logits and nothing else, over the same batches), and their ratio
(1.00x: scoring costs nothing); pplgate twice: with the scorer appended to
the model's graph (its default), and with the scorer as a second session fed
the logits in place (the fallback for a read-only model folder, and what
pplgate did before).  Then the scorer's own cost
per block (its nodes as a session of their own over one block's logits); the
appended scorer's share of onnxruntime's profile of the scored graph (its
nodes' kernel time: a figure the machine's drift does not move, as it moves
wall-clock ratios of separate runs); and the memory peak of each way of
scoring, each measured in a process of its own: ``bare``, ``graph`` (the scorer appended, pplgate's default), ``pair``
(the scorer as a second session fed the logits in place: the fallback for a
read-only model folder, and what pplgate did before) and ``host`` (the
vendor's numpy).  A measurement, never a pass or fail: speed on a shared
machine drifts by more than the effect, which is why the sides take turns
and the best of each is kept.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pplgate.blocks import Blocks
from pplgate.data import load_tokens
from pplgate.evaluate import evaluate
from pplgate.fileio import default_model_dir, user_cache_dir
from pplgate.models import resolve_model
from pplgate.runtime import LMSession, open_session
from pplgate.target import Target

WAYS = ("bare", "graph", "pair", "host")
NAMES = {"graph": "pplgate (scorer appended)", "pair": "pplgate (scorer as a second session)"}


def _blocks(args: argparse.Namespace) -> Blocks:
    tokens = load_tokens(args.dataset, args.tokenizer, user_cache_dir(), progress=False)
    return tokens.blocks().head(args.blocks)


def _session(model: Path, target: Target, way: str) -> LMSession:
    # pair: as where the scored graph cannot be written beside the model, the scorer in a session of its own.
    scoring = "host" if way in ("bare", "host") else "graph"
    return open_session(model, target, scoring, vocab=50257, append=way != "pair")


def _bare_seconds(session: LMSession, blocks: Blocks, batch_size: int) -> float:
    """Seconds per block of the model's own session.run: the logits made and fetched, nothing scored."""
    on_host = session.device.kind.memory == "cpu"
    start = time.perf_counter()
    for batch in blocks.batches(batch_size):
        ids = blocks.matrix(batch.start, batch.stop)
        if on_host:
            session.session.run([session.iface.logits], session.feeds(ids))
        else:
            session.forward_in_place(ids)  # on a GPU the logits stay on the card, as pplgate's do
    return (time.perf_counter() - start) / len(blocks)


def _ratio(model: Path, target: Target, blocks: Blocks, batch_size: int, way: str, pairs: int) -> dict:
    """Seconds per block, the best of ``pairs`` alternating pairs, of pplgate scoring ``way`` and the bare model.

    Only the two sessions compared are alive: a third's threads and arena would take from both.
    """
    scored, bare = _session(model, target, way), _session(model, target, "bare")

    def ours() -> float:
        return evaluate(scored, blocks, batch_size, warmup=0, progress=False).eval_seconds / len(blocks)

    ours(), _bare_seconds(bare, blocks, batch_size)  # arenas grown, caches warm
    mine, theirs = [], []
    for i in range(pairs):
        # Alternating who goes first: neither side always inherits the other's warm caches.
        if i % 2:
            mine.append(ours())
            theirs.append(_bare_seconds(bare, blocks, batch_size))
        else:
            theirs.append(_bare_seconds(bare, blocks, batch_size))
            mine.append(ours())
    return {
        "way": way,
        "batch_size": batch_size,
        "pplgate_s": min(mine),
        "bare_s": min(theirs),
        "ratio": min(mine) / min(theirs),
    }


def _scorer_seconds(model: Path, target: Target, blocks: Blocks, repeats: int = 7) -> float:
    """The scorer's nodes alone over one block's logits [1, T, V]: the median of ``repeats`` runs."""
    from pplgate.scoring import LABELS, LOGITS, TOKEN_LOSSES, labels_of

    pair = _session(model, target, "pair")
    assert pair.scorer is not None
    ids = blocks.matrix(0, 1)
    logits = np.ascontiguousarray(pair.forward(ids))
    feeds = {LOGITS: logits, LABELS: labels_of(ids)}
    pair.scorer.run([TOKEN_LOSSES], feeds)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        pair.scorer.run([TOKEN_LOSSES], feeds)
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds))


def _profiled(model: Path, target: Target, blocks: Blocks, batch_size: int) -> dict:
    """The appended scorer's own share of the scored graph's runs, from onnxruntime's profile of its nodes: a figure
    that the machine's drift does not move, as wall-clock ratios of separate runs do."""
    import json

    import onnxruntime as ort

    from pplgate.scored import scored_path
    from pplgate.scoring import TOKEN_LOSSES

    session = _session(model, target, "graph")
    options = ort.SessionOptions()
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as folder:
        options.profile_file_prefix = str(Path(folder) / "scored")
        profiled = ort.InferenceSession(
            str(scored_path(session.model_path)),
            options,
            providers=[(target.device.kind.provider, target.provider_options())],  # use_tf32=0 for fp32 on CUDA
        )
        # Whole batches only, 8 runs of them at least: a batch of another shape grows the arena again.
        whole = [b for b in blocks.batches(batch_size) if b.stop - b.start == batch_size] or blocks.batches(batch_size)
        runs = whole * -(-8 // len(whole))
        for batch in runs[:2]:  # the first runs grow the arena: not runs like the others
            profiled.run([TOKEN_LOSSES], session.feeds(blocks.matrix(batch.start, batch.stop)))
        for batch in runs:
            profiled.run([TOKEN_LOSSES], session.feeds(blocks.matrix(batch.start, batch.stop)))
        events = json.loads(Path(profiled.end_profiling()).read_text())
    windows = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])[2:]
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    totals, scorers = [], []
    for run in windows:
        inside = [e for e in kernels if run["ts"] <= e["ts"] <= run["ts"] + run["dur"]]
        totals.append(sum(e["dur"] for e in inside))
        scorers.append(sum(e["dur"] for e in inside if e["name"].startswith("pplgate.scoring/")))
    share = float(np.median([sc / total for sc, total in zip(scorers, totals)]))
    return {
        "batch_size": batch_size,
        "scorer_ms_per_block": float(np.median(scorers)) / 1000 / batch_size,
        "scorer_share": share,
        "ratio": 1 / (1 - share),
    }


def _peak(model: Path, target: Target, blocks: Blocks, batch_size: int, way: str) -> int:
    """This process's memory peak in bytes after the blocks ran ``way``."""
    session = _session(model, target, way)
    if way == "bare":
        _bare_seconds(session, blocks, batch_size)
    else:
        evaluate(session, blocks, batch_size, warmup=0, progress=False)
    # VmHWM, not ru_maxrss: a child process's ru_maxrss starts at its parent's peak, which outlives exec.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # kB
    raise SystemExit("no VmHWM in /proc/self/status: the memory peaks are measured on Linux only")


def _peak_in_own_process(argv: list[str], way: str, batch_size: int) -> int:
    out = subprocess.run(
        [sys.executable, __file__, *argv, "--peak-of", way, "--batch-sizes", str(batch_size)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(out.strip().splitlines()[-1])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin:gpt2-small", help="default: %(default)s")
    parser.add_argument("--dataset", default="../shared/data/wikitext", help="default: %(default)s")
    parser.add_argument("--tokenizer", default="../shared/data/gpt2", help="default: %(default)s")
    parser.add_argument("--device", default="cpu", help="a target, as --device takes it (default: %(default)s)")
    parser.add_argument("--precision", default="fp32", help="default: %(default)s")
    parser.add_argument("--blocks", type=int, default=6, help="blocks a side, each time (default: %(default)s)")
    parser.add_argument("--pairs", type=int, default=5, help="alternating pairs (default: %(default)s)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4], help="default: %(default)s")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--peak-of", choices=WAYS, help=argparse.SUPPRESS
    )  # one memory measurement, for _peak_in_own_process
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    target = Target.parse(f"{args.device}-{args.precision}")
    model = resolve_model(args.model, default_model_dir(), progress=False)
    blocks = _blocks(args)
    if args.peak_of:
        print(_peak(model, target, blocks, args.batch_sizes[0], args.peak_of))
        return 0
    # The child processes measure the same model and blocks.
    own = ["--model", args.model, "--dataset", args.dataset, "--tokenizer", args.tokenizer, "--device", args.device]
    own += ["--precision", args.precision, "--blocks", str(args.blocks)]
    figures: dict = {"model": model.name, "target": target.spec, "blocks": len(blocks), "ratios": [], "peaks": []}
    for batch_size in args.batch_sizes:
        for way in ("graph", "pair"):
            row = _ratio(model, target, blocks, batch_size, way, args.pairs)
            figures["ratios"].append(row)
            print(
                f"batch {batch_size}, {NAMES[way]}: {row['pplgate_s']:.4f} s/block, bare session.run "
                f"{row['bare_s']:.4f} s/block: {row['ratio']:.3f}x (best of {args.pairs} alternating pairs, "
                f"{len(blocks)} blocks a side)",
                flush=True,
            )
    figures["scorer_s"] = _scorer_seconds(model, target, blocks)
    print(f"the scorer alone: {figures['scorer_s'] * 1000:.1f} ms a block (median of 7)", flush=True)
    figures["profiled"] = [_profiled(model, target, blocks, batch_size) for batch_size in args.batch_sizes]
    for row in figures["profiled"]:
        print(
            f"batch {row['batch_size']}, onnxruntime's profile of the scored graph (median run): the scorer's nodes "
            f"{row['scorer_ms_per_block']:.1f} ms a block, {row['scorer_share']:.2%} of its kernels' time: "
            f"{row['ratio']:.3f}x the model's own",
            flush=True,
        )
    for batch_size in args.batch_sizes:
        peaks = {way: _peak_in_own_process(own, way, batch_size) for way in WAYS}
        figures["peaks"].append({"batch_size": batch_size, **peaks})
        print(
            f"memory peak at batch {batch_size}: "
            + ", ".join(f"{way} {peak / 2**20:,.0f} MiB" for way, peak in peaks.items()),
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
