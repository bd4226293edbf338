"""CI: two Final reports of the same model on the same blocks agree within 1e-6 relative.

Usage: same-perplexity.py NEWEST.json FLOOR.json
"""

import json
import sys

TOLERANCE = 1e-6


def main(newest_path: str, floor_path: str) -> int:
    newest, floor = (json.load(open(p)) for p in (newest_path, floor_path))
    for report in (newest, floor):
        print(f"python {report['machine']['python']}, onnxruntime {report['onnxruntime']}: "
              f"{report['blocks']} blocks, perplexity {report['perplexity']!r}")
    for key in ("model_sha256", "blocks_sha256"):
        if newest[key] != floor[key]:
            print(f"CI: the two runs differ in {key} ({newest[key]} against {floor[key]}): they are not the same model on the same blocks.")
            return 1
    relative = abs(floor["perplexity"] / newest["perplexity"] - 1)
    print(f"relative difference {relative:.2e} (tolerance {TOLERANCE:g})")
    return 0 if relative <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
