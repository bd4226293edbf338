"""What else the machine was doing while a throughput test was timed.

A timing taken while another process kept a core busy is slower for reasons
that are not the model's, the runtime's or the driver's: the history must
neither call it a regression nor compare later runs with it.  So each timed
test records, from the operating system:

- the load average at its start and end (1 minute);
- the share of the machine's CPU time that other processes (and the
  hypervisor: steal time) took while it ran, from /proc/stat against this
  process's own CPU time;
- the CPU frequency governor, where readable (``powersave`` moves timings);
- for CUDA, the other processes on the GPU, from nvidia-smi where present.

A run is **under load** when others took more than ``LOADED_SHARE`` of the
CPU.  What a platform cannot tell is None, never a guess.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# Others' share of all cores above which a timing is not trusted: one busy
# core of two is 0.5, background daemons stay below 0.05.
LOADED_SHARE = 0.15
GOVERNOR = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")


def _busy_seconds() -> float | None:
    """All CPUs' non-idle time since boot, steal included, from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    ticks = [int(v) for v in fields[1:]]  # user nice system idle iowait irq softirq steal guest guest_nice
    guest = sum(ticks[8:10])  # already counted in user and nice
    busy = sum(ticks[:8]) - ticks[3] - ticks[4] - guest
    return busy / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _governor() -> str | None:
    try:
        return GOVERNOR.read_text().strip()
    except OSError:
        return None


def _gpu_others() -> int | None:
    """Other processes computing on the GPUs, or None where nvidia-smi cannot say."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return sum(1 for line in out.split() if line.strip().isdigit() and int(line) != os.getpid())


@dataclass(frozen=True)
class Conditions:
    load_start: float | None
    load_end: float | None
    others_cpu_share: float | None  # of all cores, 0..1, while the test ran
    governor: str | None
    gpu_other_processes: int | None
    cpu_count: int

    @property
    def under_load(self) -> bool:
        return bool(self.others_cpu_share is not None and self.others_cpu_share > LOADED_SHARE)

    def describe(self) -> str:
        share = "unknown" if self.others_cpu_share is None else f"{self.others_cpu_share:.0%}"
        words = [f"other processes took {share} of {self.cpu_count} cores"]
        if self.load_start is not None and self.load_end is not None:
            words.append(f"load {self.load_start:.2f} -> {self.load_end:.2f}")
        if self.gpu_other_processes:
            words.append(f"{self.gpu_other_processes} other processes on the GPU")
        return ", ".join(words)

    def record(self) -> dict:
        return {**asdict(self), "under_load": self.under_load}


class Watch:
    """Started before the timed rounds, ``stop()`` after them: the Conditions in between."""

    def __init__(self, gpu: bool = False):
        self.gpu = gpu
        self.load_start = _load()
        self.busy_start = _busy_seconds()
        self.own_start = _own_seconds()
        self.wall_start = time.monotonic()

    def stop(self) -> Conditions:
        busy, own, wall = _busy_seconds(), _own_seconds(), time.monotonic() - self.wall_start
        cpus = os.cpu_count() or 1
        share = None
        if busy is not None and self.busy_start is not None and wall > 0:
            others = (busy - self.busy_start) - (own - self.own_start)
            share = min(1.0, max(0.0, others / (wall * cpus)))
        gpu = _gpu_others() if self.gpu else None
        return Conditions(self.load_start, _load(), share, _governor(), gpu, cpus)
