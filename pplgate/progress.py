"""Progress that a person at a terminal and a log read the next morning can both follow.

On a terminal, tqdm's bar.  Anywhere else (a CI log, a nightly job, pytest's
captured output) a bar is either nothing, as tqdm turns itself off, or
carriage-return noise; there a line is logged through the ``pplgate`` logger
every tenth of the work or every 30 seconds, whichever comes first, as
llama.cpp's perplexity tool prints a line per chunk:

    pplgate: cpu-fp32: 28/274 blocks, 8,412 tokens/s, perplexity so far 1.3e+10, ETA 0:00:31

The CLI shows the logger's lines on stderr; under pytest they are in each
test's captured log, and live with ``--log-cli-level=INFO``.
"""

from __future__ import annotations

import datetime
import logging
import math
import sys
import time

log = logging.getLogger("pplgate")

# A line at least this often, however slow the work.
LINE_EVERY_S = 30.0
# And one every 1/LINES of the work, however fast.
LINES = 10


def eta(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds))) if math.isfinite(seconds) else "?"


class Progress:
    """``update(n, note)`` as work is done; a bar on a terminal, log lines elsewhere, nothing when not ``enabled``."""

    def __init__(self, total: int | None, desc: str, unit: str, enabled: bool = True, scale: float = 1.0):
        self.total, self.desc, self.unit, self.scale = total, desc, unit, scale
        self.done = 0
        self.bar = None
        self.lines = enabled and not sys.stderr.isatty()
        if enabled and not self.lines:
            from tqdm import tqdm

            self.bar = tqdm(total=None if total is None else total / scale, unit=unit, desc=desc)
        self.start = self.last_line = time.monotonic()
        self.step = max(1, math.ceil(total / LINES)) if total else None
        self.next_count = self.step

    def update(self, n: int, note: str = "") -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n / self.scale)
            if note:
                self.bar.set_postfix_str(note, refresh=False)
            return
        if not self.lines:
            return
        now = time.monotonic()
        finished = self.total is not None and self.done >= self.total
        by_count = self.next_count is not None and self.done >= self.next_count
        if finished or by_count or now - self.last_line >= LINE_EVERY_S:
            self._line(now, note)
            self.last_line = now
            while self.next_count is not None and self.step is not None and self.next_count <= self.done:
                self.next_count += self.step

    def _amount(self, count: int) -> str:
        return f"{count / self.scale:,.0f}" if self.scale == 1 else f"{count / self.scale:,.1f}"

    def _line(self, now: float, note: str) -> None:
        of = "" if self.total is None else f"/{self._amount(self.total)}"
        parts = [f"{self.desc}: {self._amount(self.done)}{of} {self.unit}"]
        if note:
            parts.append(note)
        if self.total is not None and self.done < self.total:
            elapsed = now - self.start
            parts.append(f"ETA {eta(elapsed / self.done * (self.total - self.done) if self.done else math.inf)}")
        log.info(", ".join(parts))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
