"""Account settings that expose mail or passwords on the network, in words for a person.

The admin's change page and the "My SMTP settings" page show these in red above the
form. Saving is still allowed (a test server, a relay on a private network, a provider
with a broken certificate are real cases), but nobody should turn certificate checks off
or send in clear text without seeing what it costs.
"""

from __future__ import annotations

import ipaddress

from django.utils.translation import gettext as _

from .transport import Security

#: Host names that never leave the machine.
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_local_host(host: str) -> bool:
    """``localhost`` (or a ``*.localhost`` name) or a loopback address."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name in LOCAL_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def security_warnings(host: str, security: str, verify_certificates: bool) -> list[str]:
    """What is unsafe about these connection settings (empty when nothing is)."""
    warnings = []
    plain = security == Security.NONE.value
    if plain and host and not is_local_host(host):
        warnings.append(
            _(
                "Security is set to plain SMTP for %(host)s, which is not on this machine: "
                "the password and every message cross the network unencrypted. Choose "
                "STARTTLS (usually port 587) or implicit TLS (port 465)."
            )
            % {"host": host}
        )
    if not verify_certificates and not plain:
        warnings.append(
            _(
                "Certificate checks are off: anyone between this site and the server can "
                "pose as the server and read the password and the mail. Turn them back on; "
                "for a private CA, give its file as CA file instead."
            )
        )
    return warnings
