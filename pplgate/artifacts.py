"""Files pplgate makes for itself (a built model, a download, an fp16 conversion): made once, checked when read.

Beside each, ``<file>.json`` records what it was made from and its identity
(``pplgate.digest.stamp``).  A later run reuses the file without taking its
lock (so a read-only folder serves) while the record matches and the file is
the very one stamped; otherwise it takes the lock, looks again (another
process may have made it meanwhile), and makes it.  A file whose identity
changed but whose bytes still hash as recorded (copied back, touched) is
stamped again rather than made again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pplgate.digest import sha256_of, sidecar, stamp, unchanged
from pplgate.fileio import DEFAULT_FIX, locked, read_json_dict, write_json_atomic

log = logging.getLogger("pplgate")


@dataclass(frozen=True)
class Artifact:
    path: Path
    made_from: str  # as shown in the log: "builtin:tiny", an address without its secrets, a source file's name
    key: dict = field(default_factory=dict)  # everything else that must match for the file to be reused
    verb: str = "making"  # "building", "downloading", "converting"
    fix: str = DEFAULT_FIX  # what to do when the sidecar cannot be written

    def _ours(self, record: dict) -> bool:
        return record.get("made_from") == self.made_from and all(record.get(k) == v for k, v in self.key.items())

    def current(self) -> bool:
        """Whether the file was made from these inputs and is untouched since."""
        record = read_json_dict(sidecar(self.path))
        return self.path.is_file() and self._ours(record) and unchanged(record, self.path)

    def ensure(self, make: Callable[[], str]) -> Path:
        """The file, made by ``make`` (which writes it whole and returns its sha256) unless it is current."""
        if self.current():
            return self.path
        with locked(self.path):
            record = read_json_dict(sidecar(self.path))
            if self.path.is_file():
                if self._ours(record):
                    if unchanged(record, self.path):
                        return self.path  # made by another process while this one waited
                    if sha256_of(self.path) == record.get("sha256"):
                        write_json_atomic(
                            sidecar(self.path), {**record, **stamp(self.path, record["sha256"])}, fix=self.fix
                        )
                        return self.path
                    log.info(
                        "%s is not the file made from %s (changed or truncated since): %s it again",
                        self.path,
                        self.made_from,
                        self.verb,
                    )
                elif record.get("made_from") not in (None, self.made_from):
                    log.info(
                        "%s was made from %s, not %s: %s it again",
                        self.path,
                        record["made_from"],
                        self.made_from,
                        self.verb,
                    )
                else:
                    log.info("%s was not made from %s as it is now: %s it again", self.path, self.made_from, self.verb)
            else:
                log.info("%s %s into %s", self.verb, self.made_from, self.path)
            sha = make()
            write_json_atomic(
                sidecar(self.path), {"made_from": self.made_from, **self.key, **stamp(self.path, sha)}, fix=self.fix
            )
        return self.path
