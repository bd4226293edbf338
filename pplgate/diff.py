"""``python -m pplgate diff A B``: two runs' per-token losses, paired.

Both runs scored the same tokens, so their difference is measured token by
token: its standard error is far smaller than either run's own ± (the noise
of the text cancels), and the tokens where they disagree most show where a
kernel goes wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pplgate.errors import PplgateError
from pplgate.lossfile import SavedLosses
from pplgate.metric import perplexity, perplexity_stderr


@dataclass(frozen=True)
class PairedDifference:
    tokens: int
    mean_difference: float  # mean of loss A - loss B, nats
    max_abs_difference: float
    mean_loss_a: float  # nats
    mean_loss_b: float
    perplexity_a: float  # inf where exp(mean loss) overflows float64
    perplexity_b: float
    stderr_a: float  # each run's own ±
    stderr_b: float
    difference: float  # perplexity A - perplexity B; NaN where either is infinite
    difference_stderr: float  # its ±, paired; NaN where either is infinite

    @property
    def comparable(self) -> bool:
        return math.isfinite(self.perplexity_a) and math.isfinite(self.perplexity_b)


def paired_difference(a: np.ndarray, b: np.ndarray) -> PairedDifference:
    """a, b: per-token losses of the same tokens, any shape, equal."""
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    n = x.size
    ppl_a, ppl_b = perplexity(np.array([x.mean()])), perplexity(np.array([y.mean()]))
    difference = difference_stderr = math.nan
    if math.isfinite(ppl_a) and math.isfinite(ppl_b):
        # Delta method on (mean A, mean B) with their paired covariance:
        # var(pA - pB) = (pA^2 var(a) + pB^2 var(b) - 2 pA pB cov(a, b)) / (n - 1).
        cov = np.cov(x, y, bias=True)
        var = (ppl_a**2 * cov[0, 0] + ppl_b**2 * cov[1, 1] - 2 * ppl_a * ppl_b * cov[0, 1]) / (n - 1)
        difference, difference_stderr = ppl_a - ppl_b, math.sqrt(max(var, 0.0))
    d = x - y
    return PairedDifference(
        tokens=n,
        mean_difference=float(d.mean()),
        max_abs_difference=float(np.abs(d).max()),
        mean_loss_a=float(x.mean()),
        mean_loss_b=float(y.mean()),
        perplexity_a=ppl_a,
        perplexity_b=ppl_b,
        stderr_a=perplexity_stderr(x) if math.isfinite(ppl_a) else math.nan,
        stderr_b=perplexity_stderr(y) if math.isfinite(ppl_b) else math.nan,
        difference=difference,
        difference_stderr=difference_stderr,
    )


def _perplexity_line(name: str, ppl: float, stderr: float, mean_loss: float) -> str:
    if math.isfinite(ppl):
        return f"perplexity {name}             {ppl:.6g} ± {stderr:.4g}"
    return f"perplexity {name}             inf (its mean loss, {mean_loss:.6g} nats, is beyond float64's exp)"


def worst_tokens(a: np.ndarray, b: np.ndarray, count: int = 10) -> list[int]:
    """Indices of the ``count`` tokens where |loss A - loss B| is largest, largest first."""
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return [int(i) for i in np.argsort(d, axis=None)[::-1][:count]]


def check_pair(a: SavedLosses, b: SavedLosses) -> None:
    if a.blocks.fingerprint() != b.blocks.fingerprint():
        raise PplgateError(
            f"the two files scored different tokens ({len(a.blocks)} and {len(b.blocks)} blocks, or other data): "
            "compare runs made with the same --dataset, --tokenizer and --max-blocks."
        )


def render(a: SavedLosses, b: SavedLosses, decode, count: int = 10, context: int = 20) -> str:
    """The report ``diff`` prints; ``decode`` turns a list of ids into text."""
    check_pair(a, b)
    p = paired_difference(a.token_losses, b.token_losses)
    lines = [
        f"A: {a.label} {a.meta.get('model', '')}",
        f"B: {b.label} {b.meta.get('model', '')}",
        f"tokens compared          {p.tokens}",
        f"mean loss difference     {p.mean_difference:+.6g} nats (A - B)",
        f"max |loss difference|    {p.max_abs_difference:.6g} nats",
        _perplexity_line("A", p.perplexity_a, p.stderr_a, p.mean_loss_a),
        _perplexity_line("B", p.perplexity_b, p.stderr_b, p.mean_loss_b),
        f"perplexity A - B         {p.difference:+.6g} ± {p.difference_stderr:.4g} (paired)"
        if p.comparable
        else "perplexity A - B         none: a perplexity is infinite; the mean loss difference above compares them",
        "",
        f"the {count} tokens where A and B disagree most (block:position, loss A, loss B, {context} tokens of "
        f"context, then the token in [[ ]]):",
    ]
    for flat in worst_tokens(a.token_losses, b.token_losses, count):
        block, pos = a.locate(flat)
        ids = a.blocks.block(block)
        target = pos + 1  # position pos scores the id at pos + 1
        before = decode(ids[max(0, target - context) : target].tolist())
        token = decode([int(ids[target])])
        la, lb = float(a.token_losses[flat]), float(b.token_losses[flat])
        lines.append(f"  {block}:{target:<5} A {la:8.4f}  B {lb:8.4f}  {before!r} [[{token!r}]]")
    return "\n".join(lines)
