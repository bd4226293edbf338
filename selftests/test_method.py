"""How the split becomes blocks: the settings, checked when made, the same sentence from an option or a golden file."""

from __future__ import annotations

import pytest

from pplgate.errors import PplgateError
from pplgate.method import Method


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"grouping": "sliding"}, "grouping 'sliding' is unknown: use one of vendor, contiguous."),
    ({"block_size": "1024"}, "block size '1024' is not a whole number: the vendor's is 1024."),
    ({"block_size": 1}, "block size 1 is below 2: a block needs a token to predict from and one to score."),
    ({"max_blocks": 0}, "max blocks 0 is below 1: give 1 or more, or none for the whole split."),
    ({"max_blocks": True}, "max blocks True is not a whole number: give 1 or more, or none for the whole split."),
])
def test_a_method_is_checked_when_made(kwargs, message):
    with pytest.raises(PplgateError) as info:
        Method(**kwargs)
    assert str(info.value) == message


def test_the_vendors_method_by_default():
    assert Method() == Method("vendor", 1024, None)
