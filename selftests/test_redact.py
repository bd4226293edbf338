"""Secrets in addresses: used, never shown."""

from __future__ import annotations

from pplgate.method import VENDOR_MODEL_URL
from pplgate.redact import HiddenText, bare_address, printable, redact, split_userinfo


def test_redact_leaves_addresses_usable_and_hides_what_is_secret():
    assert redact("x https://u:p@h/a.onnx?X-Amz-Signature=1&q-ak=2&q-signature=3&api_key=4&part=5 y") == (
        "x https://***@h/a.onnx?X-Amz-Signature=***&q-ak=***&q-signature=***&api_key=***&part=*** y")
    # Every value but a known harmless one, whatever the name or its spelling; fragments and bare values too.
    assert redact("https://h/m.onnx?pw=1&pwd=2&pass=3&code=4&Authorization=Bearer%20x&jwt=5&bearer=6&%74oken=7;sid=8&revision=main#sha256=ab") == (
        "https://h/m.onnx?pw=***&pwd=***&pass=***&code=***&Authorization=***&jwt=***&bearer=***&%74oken=***;sid=***&revision=main#sha256=ab")
    assert redact("hf://o/r/f.onnx?token=hf_abc#frag https://h/x?opaque") == "hf://o/r/f.onnx?token=***#*** https://h/x?***"
    assert redact("builtin:tiny /data/model.onnx hf://o/r/f.onnx") == "builtin:tiny /data/model.onnx hf://o/r/f.onnx"


def test_a_password_with_an_unencoded_slash_is_masked_whole():
    """urlsplit reads such a password as the start of the path: the user info still ends at the @."""
    assert redact("https://user:pa/ss@host/m.onnx") == "https://***@host/m.onnx"
    assert split_userinfo("https://user:pa/ss@host/m.onnx") == ("https://host/m.onnx", "user:pa/ss")
    assert split_userinfo("https://host/a@b/m.onnx") == ("https://host/a@b/m.onnx", None)  # an @ in the path of a plain host


def test_reports_name_an_address_without_its_secrets():
    assert bare_address("https://u:p@h/a.onnx?sig=1#sha256=ab") == "https://h/a.onnx"
    assert bare_address("https://u:p/w@h/a.onnx") == "https://h/a.onnx"
    assert bare_address("builtin:tiny") == "builtin:tiny" and bare_address("/data/m.onnx") == "/data/m.onnx"
    assert "AKIDYyBAwXzDD1e4GEzZUBgy2iDU5TeaIVUG" not in bare_address(VENDOR_MODEL_URL)


def test_printable_text_escapes_control_characters():
    assert printable("evil\nPASSED all\x1b[2K.onnx https://h/x?token=t") == "evil\\nPASSED all\\x1b[2K.onnx https://h/x?token=***"
    assert printable("a line\n") == "a line\n"


def test_hidden_text_prints_its_redaction():
    hidden = HiddenText.of("https://u:p@h/m.onnx")
    assert str(hidden) == "https://***@h/m.onnx" and "p@" not in repr(hidden) and hidden.secret == "https://u:p@h/m.onnx"
