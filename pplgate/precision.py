"""fp16 models for providers that run what they are given.

onnxruntime's own float16 converter, with the graph's inputs and outputs
kept as they were (int64 ids in, float32 logits out), so the feeding and the
scoring are the same as for fp32.  The conversion is cached next to its source
and redone when the source changes.
"""

from __future__ import annotations

import json
from pathlib import Path

from filelock import FileLock

from pplgate.errors import PplgateError
from pplgate.fileio import write_atomic, write_json_atomic
from pplgate.graph import load
from pplgate.sources import lock_path, log


def fp16_path(source: Path) -> Path:
    return source.with_name(source.stem + ".fp16.onnx")


def convert_fp16(source: Path) -> Path:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    target = fp16_path(source)
    stamp = target.with_name(target.name + ".json")
    stat = source.stat()
    key = {"source": source.name, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    try:
        with FileLock(lock_path(target)):
            if target.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == key:
                return target
            log.info("converting %s to fp16 into %s", source.name, target)
            model = convert_float_to_float16(load(source), keep_io_types=True)
            data = model.SerializeToString()
            write_atomic(target, lambda f: f.write(data))
            write_json_atomic(stamp, key)
    except PermissionError as err:
        raise PplgateError(f"cannot write the fp16 conversion of {source.name} next to it in {source.parent}: copy the model to a writable folder and pass that path to --model.") from err
    return target
