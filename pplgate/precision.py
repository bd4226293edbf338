"""fp16 models for providers that run what they are given.

onnxruntime's own float16 converter, with the graph's inputs and outputs
kept as they were (int64 ids in, float32 logits out), so the feeding and the
scoring are the same as for fp32.  The conversion is cached next to its source
and redone when the source changes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from filelock import FileLock

from pplgate.digest import sidecar, stamp
from pplgate.errors import PplgateError
from pplgate.fileio import write_atomic, write_json_atomic
from pplgate.graph import load
from pplgate.sources import lock_path, log


def _made_from(meta: dict, key: dict) -> bool:
    return all(meta.get(k) == v for k, v in key.items())


def fp16_path(source: Path) -> Path:
    return source.with_name(source.stem + ".fp16.onnx")


def convert_fp16(source: Path) -> Path:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    target = fp16_path(source)
    meta = sidecar(target)
    stat = source.stat()
    key = {"source": source.name, "source_bytes": stat.st_size, "source_mtime_ns": stat.st_mtime_ns}
    try:
        with FileLock(lock_path(target)):
            if target.is_file() and meta.is_file() and _made_from(json.loads(meta.read_text()), key):
                return target
            log.info("converting %s to fp16 into %s", source.name, target)
            model = convert_float_to_float16(load(source), keep_io_types=True)
            data = model.SerializeToString()
            write_atomic(target, lambda f: f.write(data))
            # Hashed from the bytes just written, so checking a golden pin costs no second read.
            write_json_atomic(meta, key | stamp(target, hashlib.sha256(data).hexdigest()))
    except PermissionError as err:
        raise PplgateError(f"cannot write the fp16 conversion of {source.name} next to it in {source.parent}: copy the model to a writable folder and pass that path to --model.") from err
    return target
