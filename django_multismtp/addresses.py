"""Envelope addresses, the same on every Django version.

Django 6.0 replaced ``sanitize_address`` (now deprecated) with
``smtp.EmailBackend.prep_address``; this is that behaviour, usable on 5.2 too, so our
envelopes (IDNA domains, CR/LF injection refused) do not depend on the version.
"""

from __future__ import annotations

from email.headerregistry import Address, AddressHeader
from typing import Any

from django.utils.encoding import force_str, punycode


def prep_address(address: Any, force_ascii: bool = True) -> str:
    """Return the addr-spec of ``address``; ``ValueError`` for anything invalid."""
    address = force_str(address)
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
