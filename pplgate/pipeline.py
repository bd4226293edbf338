"""From options to a report: the steps the CLI, the pytest gate and localize share.

    check_target     every device and precision named, before any source is touched
    Sources.resolved remote sources from the --sources folder (pplgate.sourcefolder)
    load_blocks      the tokenized split cut by the Method (pplgate.data, pplgate.blocks)
    build_session    the model resolved, converted where fp16 needs it, its session checked to take the blocks
    evaluate_report  the blocks scored (pplgate.evaluate) and the Final report (pplgate.report)
    compare          the same blocks against a reference session (pplgate.reference)

``run`` strings them together for one evaluation; the gate calls each step
itself and keeps what it made, so that tests share it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pplgate.blocks import Blocks
from pplgate.data import TokenStream, load_tokens
from pplgate.errors import PplgateError
from pplgate.evaluate import Evaluation, evaluate
from pplgate.interface import check_fits, logits_rank, logits_short
from pplgate.method import Method
from pplgate.models import resolve_model
from pplgate.options import RunSettings, RuntimeOptions
from pplgate.reference import compare_with_reference
from pplgate.report import final_report
from pplgate.runtime import ORT_RUN_ERRORS, LMSession, check_provider, open_session
from pplgate.scoring import TOKEN_LOSSES
from pplgate.sourcefolder import Sources
from pplgate.target import Target


def check_target(target: Target, provider_options: dict[str, str] | None = None) -> None:
    """Before any source: a precision the device does not have (tf32 on the CPU), a provider
    option that contradicts the precision (use_tf32=1 with fp32), a provider this onnxruntime lacks."""
    target.check(provider_options)
    check_provider(target.device)


def load_blocks(sources: Sources, method: Method = Method(), progress: bool = True) -> tuple[TokenStream, Blocks]:
    """The token stream and its blocks, the first ``method.max_blocks`` only if given."""
    tokens = load_tokens(sources.dataset, sources.tokenizer, sources.cache_dir, progress)
    blocks = tokens.blocks(method.grouping, method.block_size)
    if len(blocks) == 0:
        raise PplgateError(
            f"dataset {sources.dataset} gives {len(tokens.ids)} tokens, no block to score: pass --dataset with the "
            f"full wikitext-2-raw-v1 test split."
        )
    return tokens, blocks.head(method.max_blocks)


def build_session(
    sources: Sources, target: Target, tokens: TokenStream, blocks: Blocks, settings: RunSettings = RunSettings()
) -> LMSession:
    """The session of the model on ``target``, checked to take ``blocks`` before any of them is scored."""
    path = resolve_model(sources.model, sources.model_dir, progress=settings.progress, cache_dir=sources.cache_dir)
    session = open_session(
        path, target, settings.scoring, settings.options, cache_dir=sources.cache_dir, vocab=tokens.vocab_size
    )
    longest = int(blocks.lengths.max())
    check_fits(
        session.iface,
        path.name,
        longest,
        tokens.vocab_size,
        int(blocks.ids.max()),
        min(settings.batch_size, len(blocks)),
        shortest=int(blocks.lengths.min()),
    )
    if session.iface.sequence_length is None:
        _probe(session, path.name, longest)
    return session


def _probe(session: LMSession, name: str, length: int) -> None:
    """Blocks through a graph whose sequence axis is dynamic: its logits' shape and its context show only when run."""
    batch = session.iface.batch_size or 1
    # A few tokens, fetched as they come: one row of logits per position, or the model cannot be scored.
    short = np.zeros((batch, min(length, 8)), dtype=np.int64)
    try:
        if session.scored:
            # The scorer takes only logits of one row per position: losses of the ids' shape say they were.
            losses = session.session.run([TOKEN_LOSSES], session.feeds(short))[0]
            if losses.shape != short.shape:
                _check_logits(name, session.forward(short), short)
            width = session.iface.vocab_size or session.vocab or 0
        else:
            logits = session.session.run([session.iface.logits], session.feeds(short))[0]
            _check_logits(name, logits, short)
            width = session.iface.vocab_size or int(logits.shape[-1])
    except ORT_RUN_ERRORS as err:
        cannot = PplgateError(
            f"model {name} cannot run a block ({str(err).strip().splitlines()[0]}): {_check_advice(session.target)}."
        )
        if not session.scored:
            raise cannot from err
        # The scorer appended to the graph fails on logits it cannot score: the model's own session says why.
        try:
            logits = session.forward(short)
        except ORT_RUN_ERRORS:
            raise cannot from err
        _check_logits(name, logits, short)
        raise cannot from err
    # A whole block the way the evaluation runs it (into the scorer's buffer): the context the graph takes.
    # Its logits alone are batch x length x vocab: a block size past any context must not allocate them first.
    need = batch * length * width * np.dtype(session.iface.logits_dtype).itemsize
    memory = physical_memory()
    if memory is not None and need > memory:
        raise PplgateError(
            f"blocks of {length} tokens (batch {batch}) need {need / 2**30:,.1f} GiB for their logits alone, more "
            f"than this machine's "
            f"{memory / 2**30:,.1f} GiB of memory: pass --block-size (a case's method.block_size) no larger than the "
            f"model's context."
        )
    try:
        session.token_losses(np.zeros((batch, length), dtype=np.int64))
    except ORT_RUN_ERRORS as err:
        raise PplgateError(
            f"model {name} cannot take blocks of {length} tokens ({str(err).strip().splitlines()[0]}): "
            "pass --block-size (a case's method.block_size) no larger than its context."
        ) from err


def _check_logits(name: str, logits: np.ndarray, ids: np.ndarray) -> None:
    """One row of logits [batch, sequence, vocab] per position fed, or the model cannot be scored."""
    if logits.ndim != 3:
        raise logits_rank(name, logits.ndim)
    if logits.shape[:2] != ids.shape:
        raise logits_short(name, logits.shape[1], ids.shape[1])


def _check_advice(target: Target) -> str:
    """What to compare a model that fails against: the CPU at fp32, unless that is where it failed."""
    if target.key == "cpu-fp32":
        return "check that the model runs in onnxruntime on the CPU as exported, or export it again"
    return "check it with --device cpu --precision fp32"


def physical_memory() -> int | None:
    """Bytes of memory this machine has, where the system says (Linux, macOS); None elsewhere."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def evaluate_report(
    sources: Sources,
    session: LMSession,
    tokens: TokenStream,
    blocks: Blocks,
    method: Method,
    settings: RunSettings = RunSettings(),
    measure_forward: bool = False,
) -> tuple[dict, Evaluation]:
    """The blocks scored, and the Final report of it."""
    baseline = (
        open_session(
            session.source_path,
            session.target,
            "host",
            settings.options,
            cache_dir=sources.cache_dir,
            vocab=session.vocab,
        )
        if measure_forward
        else None
    )
    evaluation = evaluate(session, blocks, settings.batch_size, progress=settings.progress, baseline=baseline)
    return final_report(sources, session, evaluation, tokens, method), evaluation


def compare(
    session: LMSession,
    reference: Target,
    blocks: Blocks,
    settings: RunSettings = RunSettings(),
    cache_dir: Path | None = None,
) -> dict:
    """KL, top-1 agreement and perplexity ratio of ``session`` against the same model at ``reference``."""
    # Host scoring: the reference's logits are only fetched, so no scoring session is made for it.
    ref = open_session(
        session.source_path, reference, "host", settings.options, lean=True, cache_dir=cache_dir, vocab=session.vocab
    )
    return compare_with_reference(session, ref, blocks, settings.batch_size).summary()


def run(
    sources: Sources,
    target: Target,
    method: Method = Method(),
    settings: RunSettings = RunSettings(),
    measure_forward: bool = False,
    reference: Target | None = None,
) -> tuple[dict, Evaluation]:
    """One evaluation, as the vendor's script does it: the Final report, and the losses (of ``evaluation.layout``)."""
    check_target(target, settings.options.provider_options)
    if reference:
        check_target(reference, settings.options.provider_options)
    sources = sources.resolved()
    tokens, blocks = load_blocks(sources, method, settings.progress)
    session = build_session(sources, target, tokens, blocks, settings)
    report, evaluation = evaluate_report(sources, session, tokens, blocks, method, settings, measure_forward)
    if reference is not None:
        report.update(compare(session, reference, blocks, settings, sources.cache_dir))
    return report, evaluation


def localize_run(
    sources: Sources,
    run_side: Target,
    reference: Target,
    method: Method,
    reference_model: str | None = None,
    threshold: float | None = None,
    options: RuntimeOptions = RuntimeOptions(),
):
    """Where a run departs from a reference, node by node (pplgate.localize), on the first ``method.max_blocks``
    blocks.
    """
    from pplgate.localize import Side, localize

    check_target(run_side, options.provider_options)
    check_target(reference, options.provider_options)
    sources = sources.resolved()
    _, blocks = load_blocks(sources, method)
    model = resolve_model(sources.model, sources.model_dir, cache_dir=sources.cache_dir)
    other = resolve_model(reference_model, sources.model_dir, cache_dir=sources.cache_dir) if reference_model else model
    return localize(
        Side.of(model, run_side, sources.cache_dir),
        Side.of(other, reference, sources.cache_dir),
        blocks,
        threshold,
        options,
    )
