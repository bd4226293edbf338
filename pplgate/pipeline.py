"""From sources to a report: the steps the CLI and the pytest gate share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pplgate.compare import compare_with_reference
from pplgate.blocks import BLOCK_SIZE, Blocks
from pplgate.data import DEFAULT_DATASET, DEFAULT_TOKENIZER, TokenStream, load_tokens
from pplgate.devices import Device
from pplgate.errors import PplgateError
from pplgate.evaluate import Evaluation, evaluate
from pplgate.fileio import user_cache_dir
from pplgate.graph import check_fits
from pplgate.lossfile import save_losses
from pplgate.report import final_report
from pplgate.runtime import LMSession, RuntimeOptions, check_provider, open_session
from pplgate.sources import VENDOR_MODEL_URL, resolve_model


@dataclass(frozen=True)
class Sources:
    model: str = VENDOR_MODEL_URL
    dataset: str = DEFAULT_DATASET
    tokenizer: str = DEFAULT_TOKENIZER
    # Downloaded, built and converted models.
    model_dir: Path = Path("model")
    # Tokenized data; read from the environment when a Sources is made, not at import.
    cache_dir: Path = field(default_factory=user_cache_dir)


def load_blocks(sources: Sources, grouping: str = "vendor", max_blocks: int | None = None) -> tuple[TokenStream, Blocks]:
    """The token stream and its blocks, the first ``max_blocks`` only if given."""
    if max_blocks is not None and max_blocks < 1:
        raise PplgateError(f"--max-blocks {max_blocks} is below 1: pass 1 or more, or leave it out for the whole split.")
    tokens = load_tokens(sources.dataset, sources.tokenizer, sources.cache_dir)
    blocks = tokens.blocks(grouping, BLOCK_SIZE)
    if len(blocks) == 0:
        raise PplgateError(f"dataset {sources.dataset} gives {len(tokens.ids)} tokens, no block to score: pass --dataset with the full wikitext-2-raw-v1 test split.")
    return tokens, blocks.head(max_blocks)


def build_session(
    sources: Sources,
    device: Device,
    precision: str,
    tokens: TokenStream,
    scoring: str = "auto",
    options: RuntimeOptions | None = None,
    progress: bool = True,
) -> LMSession:
    check_provider(device)  # before any download: a missing provider is known at once
    path = resolve_model(sources.model, sources.model_dir, progress=progress)
    session = open_session(path, device, precision, scoring, options)
    check_fits(session.iface, path.name, BLOCK_SIZE, tokens.vocab_size, int(tokens.ids.max()))
    return session


def run(
    sources: Sources,
    device: Device,
    precision: str,
    batch_size: int = 1,
    max_blocks: int | None = None,
    grouping: str = "vendor",
    scoring: str = "auto",
    options: RuntimeOptions | None = None,
    measure_forward: bool = False,
    progress: bool = True,
    reference: tuple[Device, str] | None = None,
    save_losses_to: Path | None = None,
) -> tuple[dict, Evaluation]:
    """One evaluation, as the vendor's script does it; returns the Final report and the losses."""
    check_provider(device)
    if reference is not None:
        check_provider(reference[0])
    tokens, blocks = load_blocks(sources, grouping, max_blocks)
    session = build_session(sources, device, precision, tokens, scoring, options, progress)
    baseline = open_session(session.source_path, device, precision, "host", options) if measure_forward else None
    evaluation = evaluate(session, blocks, batch_size, progress=progress, baseline=baseline)
    report = final_report(
        model=sources.model,
        dataset=sources.dataset,
        tokenizer=sources.tokenizer,
        session=session,
        evaluation=evaluation,
        tokens=tokens,
        grouping=grouping,
        cache_dir=sources.cache_dir,
    )
    if reference is not None:
        # KL needs both distributions on the host: logits-fetching sessions of the run and the reference.
        run_host = session if session.scoring == "host" else open_session(session.source_path, device, precision, "host", options)
        reference_host = open_session(session.source_path, reference[0], reference[1], "host", options)
        report |= compare_with_reference(run_host, reference_host, blocks, batch_size).summary()
    if save_losses_to is not None:
        save_losses(save_losses_to, evaluation.token_losses, blocks, report)
    return report, evaluation
