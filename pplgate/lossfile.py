"""Per-token losses saved with their token ids and block layout (``--save-losses``)."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pplgate.errors import PplgateError
from pplgate.fileio import write_atomic


@dataclass(frozen=True)
class SavedLosses:
    token_losses: np.ndarray  # [n_blocks, T-1] float32: block i, position t scores ids[i, t + 1]
    ids: np.ndarray  # [n_blocks, T] int32
    meta: dict  # the run's Final report

    @property
    def label(self) -> str:
        return f"{self.meta.get('device', '?')}-{self.meta.get('precision', '?')}"


def save_losses(path: Path, token_losses: np.ndarray, blocks: np.ndarray, report: dict) -> Path:
    def write(f) -> None:
        np.savez_compressed(f, token_losses=token_losses.astype(np.float32), ids=blocks.astype(np.int32),
                            meta=np.array(json.dumps(report)))

    return write_atomic(Path(path), write)


def load_losses(path: Path) -> SavedLosses:
    path = Path(path)
    if not path.is_file():
        raise PplgateError(f"losses file {path} does not exist: write one with python -m pplgate ... --save-losses {path}.")
    try:
        with np.load(path) as data:
            saved = SavedLosses(data["token_losses"], data["ids"], json.loads(str(data["meta"])))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise PplgateError(f"losses file {path} is not one pplgate wrote ({type(err).__name__}): write it again with --save-losses.") from err
    if saved.ids.ndim != 2 or saved.token_losses.shape != (saved.ids.shape[0], saved.ids.shape[1] - 1):
        raise PplgateError(f"losses file {path} holds losses {saved.token_losses.shape} that do not fit its ids {saved.ids.shape}: write it again with --save-losses.")
    return saved
