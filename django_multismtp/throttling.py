"""Rate limits on sending and confirming verification codes (django-ratelimit).

Both limits apply per user and per client IP, so neither a single account nor a single
address can mail-bomb a mailbox or brute-force a code.
"""

from __future__ import annotations

from django.http import HttpRequest
from django_ratelimit.core import is_ratelimited

from . import conf

RATES = {"send": "VERIFICATION_SEND_RATE", "confirm": "VERIFICATION_CONFIRM_RATE"}


def too_many(request: HttpRequest, action: str) -> bool:
    """Count one ``action`` ("send" or "confirm") and tell whether a limit is exceeded."""
    rate = str(conf.get_setting(RATES[action]))
    limited = False
    keys = ["ip"] + (["user"] if request.user.is_authenticated else [])
    for key in keys:
        if is_ratelimited(
            request, group=f"django_multismtp.{action}.{key}", key=key, rate=rate, increment=True
        ):
            limited = True
    return limited
