"""What a gate test hands the summary, and how a fault becomes a skip or a failure.

Light: the summary imports this in every pytest run.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pplgate.verdicts import Verdict

# user_properties keys: they carry a test's outcome to the controller under
# pytest-xdist, and into --junitxml, as well as to the terminal summary.
RESULT_PROPERTY = "pplgate_result"
TARGET_PROPERTY = "pplgate_target"
THROUGHPUT_PROPERTY = "pplgate_throughput"
THROUGHPUT_TARGET_PROPERTY = "pplgate_throughput_target"


@dataclass
class Outcome:
    """One line of the gate's summary and one record of its JSON report."""

    id: str
    verdict: Verdict
    target: str | None = None  # the golden key (cpu-fp16): what computed it
    perplexity: float | None = None
    perplexity_stderr: float | None = None
    expected: float | None = None
    rel_tol: float | None = None
    tokens_per_second: float | None = None
    model_sha256: str | None = None  # the model that ran
    model_pinned: bool | None = None  # whether the golden entry pins it
    reason: str | None = None  # why it was skipped or could not run: the sentence
    report: dict | None = None  # the Final report, where there is one

    def __post_init__(self) -> None:
        self.verdict = Verdict(self.verdict)  # read back from JSON under pytest-xdist: the text


# Set on the skip of a target no node could run (tf32 off CUDA): a skip, strict or not.  Every other skip of a gate
# test fails under --gate-strict, whoever raised it (pytest_pplgate.plugin.pytest_runtest_makereport).
INAPPLICABLE = "pplgate_inapplicable"


def inapplicable(skip: BaseException) -> bool:
    return bool(getattr(skip, INAPPLICABLE, False))


def obtain(strict: bool, make):
    """Runs ``make``; a missing provider or source skips (fails when strict), a target that does not apply skips, other
    faults fail with their sentence.
    """
    __tracebackhide__ = True
    from pplgate.errors import NotApplicable, PplgateError, ProviderUnavailable, SourceUnavailable
    from pplgate.redact import printable

    missing = broken = not_applicable = None
    try:
        return make()
    except NotApplicable as err:
        not_applicable = printable(str(err))
    except (ProviderUnavailable, SourceUnavailable) as err:
        missing = printable(str(err))  # a skip reason is printed and kept in reports: no credentials
    except PplgateError as err:
        broken = printable(str(err))
    # Outside the except blocks, so the report shows the sentence without a chained traceback.
    if not_applicable is not None:
        # Nothing is missing: no node could run it, so strict or not it is a skip.  pytest's own skip, marked, so
        # its reason reads as any skip's.
        skip = pytest.skip.Exception(not_applicable)
        setattr(skip, INAPPLICABLE, True)
        raise skip
    if broken is not None:
        pytest.fail(broken, pytrace=False)
    if strict:
        pytest.fail(f"{missing} (--gate-strict: a missing provider or source is a failure)", pytrace=False)
    pytest.skip(str(missing))
