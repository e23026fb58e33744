"""Envelope addresses, the same on every Django version.

Django 6.0 replaced ``sanitize_address`` (now deprecated) with
``smtp.EmailBackend.prep_address``; this is that behaviour, usable on 5.2 too, so our
envelopes (IDNA domains, CR/LF injection refused) do not depend on the version.
"""

from __future__ import annotations

import re
from email.headerregistry import Address, AddressHeader
from functools import lru_cache
from typing import Any

from django.utils.encoding import force_str, punycode


def prep_address(address: Any, force_ascii: bool = True) -> str:
    """Return the addr-spec of ``address``; ``ValueError`` for anything invalid."""
    return _parse(force_str(address), force_ascii)


# A bare ASCII dot-atom address ("ann.lee+news@example.com"): what nearly every
# recipient looks like. It is its own addr-spec, so the email package's parser (about
# 0.05 ms a call, a third of preparing a message) has nothing to add; everything else
# (display names, quoting, IDNA, anything odd) takes the full parse.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
#: The pattern (unanchored) of such an address; plainmail writes these as given too.
PLAIN_ADDRESS = rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_PLAIN = re.compile(rf"{PLAIN_ADDRESS}\Z")


def _parse(address: str, force_ascii: bool) -> str:
    if _PLAIN.match(address):
        return address
    try:
        parsed = AddressHeader.value_parser(address)
    except IndexError:  # Python < 3.12 fails this way on some inputs, e.g. "to@"
        raise ValueError(f"Invalid address {address!r}") from None
    defects = {str(defect) for defect in parsed.all_defects}
    defects.discard("addr-spec local part with no domain")  # Django allows "webmaster"
    if not force_ascii:
        defects.discard("local-part contains non-ASCII characters)")
    if defects:
        raise ValueError(f"Invalid address {address!r}: {'; '.join(sorted(defects))}")
    mailboxes = parsed.all_mailboxes
    if len(mailboxes) != 1:
        raise ValueError(f"Invalid address {address!r}: must be a single address")
    mailbox = mailboxes[0]
    if force_ascii and mailbox.domain and not mailbox.domain.isascii():
        return str(Address(username=mailbox.local_part, domain=punycode(mailbox.domain)))
    return str(mailbox.addr_spec)


def addr_spec(address: Any) -> str:
    """Lower-cased addr-spec for comparisons ("" when it cannot be parsed)."""
    try:
        return prep_address(address).lower()
    except (ValueError, IndexError):
        return ""


# Parsing costs about 0.1 ms per address. A batch asks for the same From address (and
# DEFAULT_FROM_EMAIL, and each account's sender) for every message, several times each:
# remember the answers. Pure functions of a string, so caching changes nothing but the
# time; errors are not cached. Recipients, different for every message, are not cached.
@lru_cache(maxsize=256)
def _sender(address: str) -> str:
    return _parse(address, True)


def prep_sender(address: Any) -> str:
    """:func:`prep_address` for sender addresses, cached."""
    return _sender(force_str(address))


def sender_spec(address: Any) -> str:
    """:func:`addr_spec` for sender addresses, cached."""
    try:
        return prep_sender(address).lower()
    except (ValueError, IndexError):
        return ""
