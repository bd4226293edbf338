"""A plot of perplexity and tokens/s across runs saved by pytest-benchmark.

Reads pytest-benchmark's file storage (``--benchmark-autosave`` writes
``.benchmarks/<machine>/<NNNN>_<commit>_<date>.json``), one line per
benchmark, one point per saved run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pplgate.errors import PplgateError
from pplgate.fileio import write_atomic


@dataclass
class Series:
    runs: list[str] = field(default_factory=list)  # saved run's datetime
    tokens_per_second: list[float] = field(default_factory=list)
    perplexity: list[float] = field(default_factory=list)


def read_history(storage: Path) -> dict[str, Series]:
    files = sorted(Path(storage).rglob("*.json"))
    if not files:
        raise PplgateError(f"no saved benchmark runs under {storage}: run the gate with --benchmark-autosave first, or pass --storage with pytest-benchmark's folder.")
    runs = []
    for path in files:
        try:
            runs.append(json.loads(path.read_text()))
        except json.JSONDecodeError as err:
            raise PplgateError(f"saved run {path} is not valid JSON ({err.msg}): remove it or restore it.") from err
    series: dict[str, Series] = {}
    for run in sorted(runs, key=lambda r: r.get("datetime", "")):
        for bench in run.get("benchmarks", []):
            extra = bench.get("extra_info", {})
            if "tokens_per_second" not in extra or "perplexity" not in extra:
                continue  # not a pplgate benchmark
            s = series.setdefault(bench["name"], Series())
            s.runs.append(run.get("datetime", "")[:16])
            s.tokens_per_second.append(extra["tokens_per_second"])
            s.perplexity.append(extra["perplexity"])
    if not series:
        raise PplgateError(f"the runs under {storage} hold no pplgate throughput benchmarks: save runs of gate/test_throughput.py.")
    return series


def plot_history(storage: Path, output: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display on CI nodes; chosen here, never at import
    import matplotlib.pyplot as plt

    series = read_history(storage)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=False)
    for name, s in series.items():
        label = name.removeprefix("test_throughput")
        top.plot(range(len(s.runs)), s.tokens_per_second, marker="o", label=label)
        bottom.plot(range(len(s.runs)), s.perplexity, marker="o", label=label)
    top.set_ylabel("tokens / s")
    bottom.set_ylabel("perplexity (timed blocks)")
    bottom.set_xlabel("saved run")
    top.set_title(f"pplgate history: {storage}")
    top.legend(fontsize="small")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    write_atomic(Path(output), lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return Path(output)
