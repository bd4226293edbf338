"""What is evaluated, and how the split becomes the blocks fed (pplgate.blocks cuts them): the settings, their rules."""

from __future__ import annotations

from dataclasses import dataclass

from pplgate.errors import PplgateError

# The vendor's file, linked from its model zoo's README.  The signed query
# string is part of the address: the bucket refuses the path without it.
VENDOR_MODEL_URL = (
    "https://topsmodel-1257133546.cos.ap-shanghai.myqcloud.com/topsmodel-1257133546/topsegc/local/model/GPT/"
    "gpt2_small-huggingface-op13-fp32-seqN-nocache.onnx?q-sign-algorithm=sha1"
    "&q-ak=AKIDYyBAwXzDD1e4GEzZUBgy2iDU5TeaIVUG&q-sign-time=1681371449;2041371449"
    "&q-key-time=1681371449;2041371449&q-header-list=&q-url-param-list="
    "&q-signature=143a3bbaf9de6b76c0b2f11b4d40a71dc5eaad75"
)
# The split every case reads, the vendor's, and where the data and the tokenizer come from unless told.
DEFAULT_DATASET = "Salesforce/wikitext"
DATASET_CONFIG = "wikitext-2-raw-v1"
SPLIT = "test"
DEFAULT_TOKENIZER = "openai-community/gpt2"

GROUPINGS = ("vendor", "contiguous")
# datasets.Dataset.map(batched=True)'s default batch_size: the vendor never sets it.
ROWS_PER_BATCH = 1000
BLOCK_SIZE = 1024


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Method:
    """How the split becomes the blocks fed: the vendor's, unless a case or the CLI says otherwise.

    Checked when made, the one place its rules are written: a bad value from
    an option or a golden file is refused with the same sentence.
    """

    grouping: str = "vendor"
    block_size: int = BLOCK_SIZE
    max_blocks: int | None = None  # the first N blocks only (smoke runs); None: the whole split

    def __post_init__(self) -> None:
        if self.grouping not in GROUPINGS:
            raise PplgateError(f"grouping {self.grouping!r} is unknown: use one of {', '.join(GROUPINGS)}.")
        if not _whole(self.block_size):
            raise PplgateError(f"block size {self.block_size!r} is not a whole number: the vendor's is {BLOCK_SIZE}.")
        if self.block_size < 2:
            raise PplgateError(
                f"block size {self.block_size} is below 2: a block needs a token to predict from and one to score."
            )
        if self.max_blocks is not None and not _whole(self.max_blocks):
            raise PplgateError(
                f"max blocks {self.max_blocks!r} is not a whole number: give 1 or more, or none for the whole split."
            )
        if self.max_blocks is not None and self.max_blocks < 1:
            raise PplgateError(f"max blocks {self.max_blocks} is below 1: give 1 or more, or none for the whole split.")
