"""What a source string names: the scheme decides, in any case."""

from __future__ import annotations

import pytest

from pplgate.errors import PplgateError
from pplgate.spec import is_builtin, is_hub, is_url, local_path, looks_local, scheme, unreadable


@pytest.mark.parametrize(("spec", "url", "hub", "local"), [
    ("https://h/m.onnx", True, False, False),
    ("HTTP://h/m.onnx", True, False, False),  # schemes are case-insensitive: never a local path
    ("Hf://o/r/m.onnx", False, True, False),
    ("file:///tmp/m.onnx", False, False, True),
    ("./m.onnx", False, False, True),
    ("~/m.onnx", False, False, True),
    ("Salesforce/wikitext", False, False, False),
])
def test_what_a_source_names(spec, url, hub, local):
    assert (is_url(spec), is_hub(spec), looks_local(spec)) == (url, hub, local)


def test_scheme_and_builtin():
    assert scheme("HTTPS://x/y") == "https" and scheme("/x/y") is None and scheme("builtin:tiny") is None
    assert is_builtin("builtin:tiny") and not is_builtin("tiny")


def test_a_file_url_is_the_path_it_names(tmp_path):
    assert local_path((tmp_path / "m.onnx").as_uri()) == tmp_path / "m.onnx"


def test_a_home_folder_of_no_user_is_one_sentence():
    with pytest.raises(PplgateError) as info:
        local_path("~no-such-user-here/x")
    assert str(info.value) == ("~no-such-user-here/x starts with ~no-such-user-here, but this machine has no user 'no-such-user-here' "
                               "(or no home folder for it): write the path in full.")


def test_why_a_local_model_cannot_be_read(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "m.onnx").write_bytes(b"x")
    assert unreadable(str(tmp_path / "absent.onnx")) == "no such file"
    assert unreadable(str(tmp_path / "d")) == "a directory, not a file"
    assert unreadable("/dev/null") == "not a regular file but a device, pipe or socket"
    assert unreadable(str(tmp_path / "m.onnx")) is None and unreadable("https://h/m.onnx") is None and unreadable("builtin:tiny") is None
