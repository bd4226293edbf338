"""The one exception type that carries a user-facing sentence.

Every fault a user can cause or fix (a missing file, an unreachable hub, a
provider this onnxruntime lacks) is raised as a ``PplgateError`` whose message
is one sentence saying what is wrong and what to do.  The CLI prints it without
a traceback; the pytest plugin turns it into a skip or a failure.
"""


class PplgateError(Exception):
    """A fault the user can act on; ``str(err)`` is the sentence to show."""


class SourceUnavailable(PplgateError):
    """A model, dataset or tokenizer that cannot be reached from here.

    Kept apart from other errors because the gate skips on it (no network, no
    local copy) unless ``--gate-strict`` asks for a failure instead.
    """

    def __init__(self, message: str, option: str):
        super().__init__(message)
        self.option = option


class ProviderUnavailable(PplgateError):
    """An execution provider that this onnxruntime build does not have."""

    def __init__(self, message: str, provider: str):
        super().__init__(message)
        self.provider = provider


class NotApplicable(PplgateError):
    """A device and precision that do not go together (tf32 on the CPU): skipped, even by --gate-strict."""


class GoldenError(PplgateError):
    """A golden file that cannot be used as it is: its own tests fail with the sentence."""
