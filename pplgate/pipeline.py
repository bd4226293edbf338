"""From sources to a report: the steps the CLI and the pytest gate share."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from pplgate.compare import compare_with_reference
from pplgate.blocks import Blocks, Method
from pplgate.data import DEFAULT_DATASET, DEFAULT_TOKENIZER, TokenStream, load_tokens
from pplgate.devices import Device
from pplgate.errors import PplgateError
from pplgate.evaluate import Evaluation, evaluate
from pplgate.fileio import default_model_dir, user_cache_dir
from pplgate.graph import check_fits
from pplgate.lossfile import save_losses
from pplgate.report import final_report
from pplgate.runtime import ORT_RUN_ERRORS, LMSession, RuntimeOptions, check_provider, open_session
from pplgate.sourcefolder import SourceFolder
from pplgate.sources import VENDOR_MODEL_URL, resolve_model


@dataclass(frozen=True)
class Sources:
    model: str = VENDOR_MODEL_URL
    dataset: str = DEFAULT_DATASET
    tokenizer: str = DEFAULT_TOKENIZER
    # Downloaded, built and converted models: one folder for the CLI and the
    # gate, whatever the working directory.
    model_dir: Path = field(default_factory=default_model_dir)
    # Tokenized data; read from the environment when a Sources is made, not at import.
    cache_dir: Path = field(default_factory=user_cache_dir)
    # A folder written by 'python -m pplgate fetch' (--sources): remote sources are read from it.
    folder: Path | None = None

    def resolved(self) -> Sources:
        """Each remote source replaced by its checked copy in ``folder``; as it is without one."""
        if self.folder is None:
            return self
        f = SourceFolder(Path(self.folder), self.cache_dir)
        return replace(self, model=f.model(self.model), dataset=f.dataset(self.dataset), tokenizer=f.tokenizer(self.tokenizer), folder=None)


def load_blocks(sources: Sources, method: Method = Method()) -> tuple[TokenStream, Blocks]:
    """The token stream and its blocks, the first ``method.max_blocks`` only if given."""
    if method.max_blocks is not None and method.max_blocks < 1:
        raise PplgateError(f"--max-blocks {method.max_blocks} is below 1: pass 1 or more, or leave it out for the whole split.")
    tokens = load_tokens(sources.dataset, sources.tokenizer, sources.cache_dir)
    blocks = tokens.blocks(method.grouping, method.block_size)
    if len(blocks) == 0:
        raise PplgateError(f"dataset {sources.dataset} gives {len(tokens.ids)} tokens, no block to score: pass --dataset with the full wikitext-2-raw-v1 test split.")
    return tokens, blocks.head(method.max_blocks)


def build_session(
    sources: Sources,
    device: Device,
    precision: str,
    blocks: Blocks,
    vocab_size: int,
    scoring: str = "auto",
    options: RuntimeOptions | None = None,
    progress: bool = True,
) -> LMSession:
    """The session of the model on ``device``, checked to take ``blocks`` before any of them is scored."""
    check_provider(device)  # before any download: a missing provider is known at once
    path = resolve_model(sources.model, sources.model_dir, progress=progress)
    session = open_session(path, device, precision, scoring, options)
    longest = int(blocks.lengths.max())
    check_fits(session.iface, path.name, longest, vocab_size, int(blocks.ids.max()))
    if session.iface.sequence_length is None:
        _probe(session, path.name, longest)
    return session


def _probe(session: LMSession, name: str, length: int) -> None:
    """One block of ``length`` through a graph whose sequence axis is dynamic: its context shows only when run."""
    try:
        session.token_losses(np.zeros((1, length), dtype=np.int64))
    except ORT_RUN_ERRORS as err:
        raise PplgateError(f"model {name} cannot take blocks of {length} tokens ({str(err).strip().splitlines()[0]}): "
                           "pass --block-size (a case's method.block_size) no larger than its context.") from err


def run(
    sources: Sources,
    device: Device,
    precision: str,
    batch_size: int = 1,
    method: Method = Method(),
    scoring: str = "auto",
    options: RuntimeOptions | None = None,
    measure_forward: bool = False,
    progress: bool = True,
    reference: tuple[Device, str] | None = None,
    save_losses_to: Path | None = None,
) -> tuple[dict, Evaluation]:
    """One evaluation, as the vendor's script does it; returns the Final report and the losses."""
    check_provider(device)  # before any source: a missing provider is the first cause to name
    if reference is not None:
        check_provider(reference[0])
    sources = sources.resolved()
    tokens, blocks = load_blocks(sources, method)
    session = build_session(sources, device, precision, blocks, tokens.vocab_size, scoring, options, progress)
    baseline = open_session(session.source_path, device, precision, "host", options) if measure_forward else None
    evaluation = evaluate(session, blocks, batch_size, progress=progress, baseline=baseline)
    report = final_report(
        model=sources.model,
        dataset=sources.dataset,
        tokenizer=sources.tokenizer,
        session=session,
        evaluation=evaluation,
        tokens=tokens,
        grouping=method.grouping,
        cache_dir=sources.cache_dir,
    )
    if reference is not None:
        # KL needs both distributions on the host: logits-fetching sessions of the run and the reference.
        run_host = session if session.scoring == "host" else open_session(session.source_path, device, precision, "host", options)
        reference_host = open_session(session.source_path, reference[0], reference[1], "host", options)
        report.update(compare_with_reference(run_host, reference_host, blocks, batch_size).summary())
    if save_losses_to is not None:
        save_losses(save_losses_to, evaluation.token_losses, blocks, report)
    return report, evaluation
