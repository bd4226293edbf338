"""The compatibility floor as files: ranges for nodes, the floor CI tests, the newest set for CPU nodes."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def requirements(path: Path, operator: str) -> dict[str, str]:
    """name -> version of the ``name<operator>version`` lines; other lines (-r, -e, comments) skipped."""
    found = {}
    for line in path.read_text().splitlines():
        match = re.fullmatch(rf"([A-Za-z0-9_.-]+(?:\[[a-z,]+\])?){re.escape(operator)}([0-9.]+)", line.strip())
        if match:
            found[match[1].lower().replace("_", "-")] = match[2]
    return found


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def ranges() -> dict[str, str]:
    """The lower bounds of everything a node installs: the core, and the PostgreSQL extra (pplgate[postgres])."""
    lower = requirements(ROOT / "requirements-core.txt", ">=")
    # psycopg[binary] installs psycopg-binary at the same version; the floor pins both.
    for name, low in requirements(ROOT / "requirements-postgres.txt", ">=").items():
        bare = name.split("[")[0]
        lower[bare] = low
        if name.endswith("[binary]"):
            lower[f"{bare}-binary"] = low
    return lower


def test_the_floor_ci_installs_is_the_ranges_lower_bounds():
    lower = ranges()
    assert lower == requirements(ROOT / ".ci" / "floor-constraints.txt", "==")
    assert {"numpy", "datasets", "psycopg"} <= set(lower)


def test_the_ranges_never_name_onnxruntime():
    """Installing them beside a vendor's onnxruntime must not replace it (.ci/run checks that too, installing for real)."""
    text = (ROOT / "requirements-core.txt").read_text().lower()
    assert not [line for line in text.splitlines() if line.strip().startswith("onnxruntime")]


def test_the_newest_set_lies_within_the_ranges():
    lower, pinned = ranges(), requirements(ROOT / "requirements.txt", "==")
    assert set(lower) <= set(pinned)
    assert all(version(pinned[name]) >= version(low) for name, low in lower.items())
    assert "onnxruntime" in pinned
