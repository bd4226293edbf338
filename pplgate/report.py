"""The "Final report": the vendor's JSON summary of one evaluation, with provenance."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort

from pplgate import __version__
from pplgate.data import TokenStream
from pplgate.evaluate import Evaluation
from pplgate.method import ROWS_PER_BATCH, Method
from pplgate.metric import CrossToolMetrics
from pplgate.modelfiles import model_identity
from pplgate.redact import reported_address
from pplgate.runtime import LMSession
from pplgate.sourcefolder import Sources


def onnxruntime_distribution() -> str:
    """The pip distribution that provides the imported ``onnxruntime`` module.

    onnxruntime, onnxruntime-gpu, onnxruntime-openvino and vendor builds all
    install the same module; only the distribution says which one ran.
    """
    names = [dist.metadata["Name"] for dist in importlib.metadata.distributions() if _provides(dist, "onnxruntime")]
    return names[0] if names else "unknown (not installed by pip)"


def _provides(dist: importlib.metadata.Distribution, module: str) -> bool:
    """Whether ``dist`` installs the top-level ``module`` (packages_distributions, which is 3.10+, by hand)."""
    top_level = dist.read_text("top_level.txt")
    if top_level is not None:
        return module in top_level.split()
    return any(f.parts[:1] == (module,) for f in dist.files or ())


def machine_info() -> dict:
    return {
        "node": platform.node(),
        "processor": platform.processor() or platform.machine(),
        "machine": platform.machine(),
        "system": platform.system(),
        "release": platform.release(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }


def commit_info(cwd: str | None = None) -> dict:
    """The git commit of the working directory, as pytest-benchmark records it."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        return {
            "id": git("rev-parse", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
        }
    except (OSError, subprocess.SubprocessError):
        return {"id": None, "dirty": None, "branch": None}


def final_report(
    sources: Sources, session: LMSession, evaluation: Evaluation, tokens: TokenStream, method: Method
) -> dict:
    """The vendor's summary of ``evaluation``, with what ran, on what, and how the blocks were cut."""
    ev, grouping = evaluation, method.grouping
    source = model_identity(session.source_path, sources.cache_dir)
    converted = (
        model_identity(session.model_path, sources.cache_dir) if session.model_path != session.source_path else None
    )
    n_bytes, n_words = tokens.scored_bytes_and_words(ev.layout)
    cross = CrossToolMetrics(total_nll=float(ev.token_losses.sum(dtype=np.float64)), words=n_words, bytes=n_bytes)
    return {
        "model": reported_address(sources.model),
        "model_file": session.model_path.name,
        # The bytes that ran, which golden files pin: the file as given with
        # its external-data files (pplgate.modelfiles), and the fp16
        # conversion made of it where there is one.
        "model_sha256": source.sha256,
        "model_bytes": source.bytes,
        "model_files": source.files,
        "converted_model_sha256": converted.sha256 if converted else None,
        "dataset": sources.dataset,
        "tokenizer": sources.tokenizer,
        "device": session.device.spec,
        "precision": session.precision.value,
        # What computed it: the CPU provider's fp16 is mostly fp32, CUDA's fp32 is TF32 unless switched off.
        "computed_as": session.computed_as,
        "batch_size": ev.batch_size,
        "perplexity": ev.perplexity,
        "perplexity_stderr": ev.perplexity_stderr,
        # Token perplexity above depends on GPT-2's tokenizer; these two, over
        # the text of the same scored tokens, compare with other tools' tables.
        "word_perplexity": cross.word_perplexity,
        "bits_per_byte": cross.bits_per_byte,
        # Which blocks were fed: how the rows were cut (pplgate.blocks), from
        # how many rows, and a fingerprint of the ids that golden files pin.
        "grouping": grouping,
        "rows_per_batch": ROWS_PER_BATCH if grouping == "vendor" else None,
        "rows": tokens.rows,
        "blocks": ev.blocks,
        "total_tokens": len(tokens.ids),
        "scored_tokens": ev.scored_tokens,
        "blocks_sha256": ev.layout.fingerprint(),
        "scored_words": cross.words,
        "scored_bytes": cross.bytes,
        "eval_seconds": ev.eval_seconds,
        # Measured only when asked for (--measure-forward): the bare
        # session.run over the same batches, so the loop's own cost is
        # eval_seconds - forward_seconds.
        "forward_seconds": ev.forward_seconds,
        "seconds_per_block": ev.eval_seconds / ev.blocks,
        "warmup_batches": ev.warmup_batches,
        "tokens_per_second": ev.tokens_per_second,
        "scoring": session.scoring,
        "onnxruntime": ort.__version__,
        "onnxruntime_distribution": onnxruntime_distribution(),
        "providers": session.providers,
        "provider_options": session.requested_provider_options,
        # What the session reports it runs with: a provider may ignore options
        # it does not know (the CPU provider ignores all).
        "provider_options_effective": session.effective_provider_options,
        "intra_op_threads": session.options.intra_op_threads,
        "pplgate": __version__,
        "machine": machine_info(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def throughput_info(
    *,
    test: str,
    case: str,
    session: LMSession,
    evaluation: Evaluation,
    mean_seconds: float,
    method: Method,
    conditions: dict,
    cache_dir: Path,
) -> dict:
    """A throughput test's pytest-benchmark ``extra_info``: what ran, how fast, on what, under which conditions.

    ``pplgate.verdicts`` reads it back from the saved runs: the settings that
    start a series, the runtime fields whose change a verdict names, and the
    model, blocks and method on which the perplexity must not drift.
    """
    ev = evaluation
    source = model_identity(session.source_path, cache_dir)
    tokens = int(ev.layout.ids.size)
    return {
        "test": test,
        "case": case,
        "device": session.device.spec,
        "precision": session.precision.value,
        "computed_as": session.computed_as,
        "blocks": ev.blocks,
        "batch_size": ev.batch_size,
        "tokens": tokens,  # fed per round
        "tokens_per_second": tokens / mean_seconds,
        "seconds_per_block": mean_seconds / ev.blocks,
        "perplexity": ev.perplexity,  # of the timed blocks, in the last round
        "model_sha256": source.sha256,
        "blocks_sha256": ev.layout.fingerprint(),
        "method": {"grouping": method.grouping, "block_size": method.block_size},
        "scoring": session.scoring,
        "onnxruntime": ort.__version__,
        "onnxruntime_distribution": onnxruntime_distribution(),
        "providers": session.providers,
        # No provider reports a driver version through onnxruntime's API; kept
        # so that a build that does can fill it in and the history names it.
        "driver": None,
        "provider_options": session.requested_provider_options,
        "intra_op_threads": session.options.intra_op_threads,
        "conditions": conditions,
    }
