"""Per-token losses saved with their token ids and block layout (``--save-losses``)."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pplgate.blocks import Blocks
from pplgate.errors import PplgateError
from pplgate.fileio import DEFAULT_FIX, write_atomic


@dataclass(frozen=True)
class SavedLosses:
    token_losses: np.ndarray  # [scored tokens] float32, block by block
    blocks: Blocks  # the ids fed: block i's position t is scored against its id t + 1
    meta: dict  # the run's Final report

    def locate(self, flat: int) -> tuple[int, int]:
        """Index into token_losses -> (block, position scored from)."""
        starts = self.blocks.scored_starts
        block = int(np.searchsorted(starts, flat, side="right") - 1)
        return block, flat - int(starts[block])

    @property
    def label(self) -> str:
        return f"{self.meta.get('device', '?')}-{self.meta.get('precision', '?')}"


def save_losses(path: Path, token_losses: np.ndarray, blocks: Blocks, report: dict, fix: str = DEFAULT_FIX) -> Path:
    def write(f) -> None:
        np.savez_compressed(
            f,
            token_losses=token_losses.astype(np.float32),
            ids=blocks.ids.astype(np.int32),
            lengths=blocks.lengths,
            meta=np.array(json.dumps(report)),
        )

    return write_atomic(Path(path), write, fix)


def load_losses(path: Path) -> SavedLosses:
    path = Path(path)
    if not path.is_file():
        raise PplgateError(
            f"losses file {path} does not exist: write one with python -m pplgate ... --save-losses {path}."
        )
    try:
        with np.load(path) as data:
            blocks = Blocks(data["ids"].astype(np.int64), data["lengths"].astype(np.int64))
            saved = SavedLosses(data["token_losses"], blocks, json.loads(str(data["meta"])))
    except (OSError, ValueError, KeyError, TypeError, RecursionError, zipfile.BadZipFile) as err:
        raise PplgateError(
            f"losses file {path} is not one pplgate wrote ({type(err).__name__}): write it again with --save-losses."
        ) from err
    if not isinstance(saved.meta, dict):
        raise PplgateError(
            f"losses file {path} holds a report that is {type(saved.meta).__name__}, not a JSON object: write it "
            f"again with --save-losses."
        )
    if blocks.ids.size != blocks.lengths.sum() or saved.token_losses.shape != (blocks.scored_tokens,):
        raise PplgateError(
            f"losses file {path} holds {saved.token_losses.size} losses that do not fit its {len(blocks)} blocks: "
            f"write it again with --save-losses."
        )
    return saved
