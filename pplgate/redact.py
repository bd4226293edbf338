"""Secrets in addresses never reach a line, a report or a file pplgate writes.

A model address may carry credentials: user info (``https://user:pw@host``),
a signed link's query (``?X-Amz-Signature=...``), a hub token
(``hf://...?token=...``), a fragment.  As pip does (``redact_auth_from_url``,
``HiddenText``), the secret and what is shown of it are kept apart:

- ``redact_url``: an address with its user info, every query value and its
  fragment masked (``***``), except the values of parameters known to be
  harmless;
- ``redact``: the same for every address inside a text;
- ``bare_address``: the address as sentences name it, without user info,
  query and fragment; ``reported_address``: as reports keep it, the query's
  names kept and its values masked;
- ``printable``: a text as printed: redacted, control characters escaped;
- ``HiddenText``: a secret that prints as its redaction.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

# Query parameters (and fragment keys) known to carry nothing secret: their
# values are shown.  Every other value, and every bare query or fragment, is
# masked: a signed link's names vary by vendor (q-ak, X-Amz-Signature, sig,
# code, jwt, Authorization, ...) and a new one must not leak.
HARMLESS_PARAMS = frozenset(
    # libpq's (postgresql://...?host=/run/postgresql) name where a server is, never a secret.
    {"sha256", "revision", "download", "raw", "ref", "format", "version", "host", "port", "dbname", "sslmode"}
)
_ADDRESS = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"]+")
MASK = "***"


def split_userinfo(url: str) -> tuple[str, str | None]:
    """(the address without its user info, the user info or None), read as a reader of the text would.

    ``urlsplit`` takes a password holding an unencoded ``/`` for the path
    (``https://user:pa/ss@host``); here any ``@`` before the query whose
    left side has a ``:`` or no ``/`` ends the user info, so such a password is
    masked too.  Ambiguous addresses are over-masked, never shown.
    """
    head, sep, rest = url.partition("://")
    if not sep:
        return url, None
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    before = rest[:cut]
    if "@" not in before:
        return url, None
    userinfo, _, host = before.rpartition("@")
    if ":" not in userinfo and "/" in userinfo:
        return url, None  # an @ in the path, after a plain host
    return f"{head}://{host}{rest[cut:]}", userinfo


def _mask_params(text: str) -> str:
    """``a=1&token=x`` -> ``a=***&token=***`` unless a name is harmless (compared decoded: ``%73ha256`` is sha256)."""

    def one(item: str) -> str:
        name, sep, value = item.partition("=")
        if not item:
            return item
        if not sep:
            return MASK
        harmless = urllib.parse.unquote_plus(name).strip().lower() in HARMLESS_PARAMS
        return item if harmless or not value else f"{name}={MASK}"

    return "".join(one(piece) if i % 2 == 0 else piece for i, piece in enumerate(re.split(r"([&;])", text)))


def redact_url(url: str) -> str:
    """``url`` with its user info, query values (harmless ones kept) and fragment masked."""
    address, userinfo = split_userinfo(url)
    parts = urllib.parse.urlsplit(address)
    netloc = f"{MASK}@{parts.netloc}" if userinfo is not None else parts.netloc
    return parts._replace(
        netloc=netloc, query=_mask_params(parts.query), fragment=_mask_params(parts.fragment)
    ).geturl()


def redact(text: str) -> str:
    """``text`` with every address in it redacted."""
    return _ADDRESS.sub(lambda m: redact_url(m.group(0)), text)


def reported_address(spec: str) -> str:
    """An address as a report keeps it: without user info, its query's names kept and their values masked, so two
    addresses that differ in their query (``?v=1``, ``?v=2``) are told apart without either secret shown."""
    if "://" not in spec:
        return spec
    return redact_url(split_userinfo(spec)[0])


def bare_address(spec: str) -> str:
    """An address as reports name it: no user info, no query, no fragment.  Anything else as it is."""
    if "://" not in spec:
        return spec
    address, userinfo = split_userinfo(spec)
    parts = urllib.parse.urlsplit(address)
    if parts.query or parts.fragment or userinfo is not None:
        return parts._replace(query="", fragment="").geturl()
    return spec


# Control characters (C0, DEL, C1): a file name may hold a newline or a terminal escape,
# which printed raw could forge a line ("... passed") or rewrite the screen.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]|\n(?!$)")


def printable(text: str) -> str:
    """``text`` as printed and kept in reports: addresses redacted, control characters written as escapes (a newline as
    \\n).
    """
    return _CONTROL.sub(lambda m: repr(m.group(0))[1:-1], redact(text))


@dataclass(frozen=True)
class HiddenText:
    """A text holding a secret: ``str()`` and ``repr()`` give its redaction, ``.secret`` the text itself."""

    secret: str
    redacted: str

    @classmethod
    def of(cls, text: str) -> HiddenText:
        return cls(text, redact(text))

    def __str__(self) -> str:
        return self.redacted

    def __repr__(self) -> str:
        return f"HiddenText({self.redacted!r})"
