"""Send a confirmation code through an account, then confirm it to mark the account verified.

Shared by the admin action and the "My SMTP settings" page. Codes are short (easy to
type), random (``secrets``), stored as a keyed hash (``salted_hmac`` with SECRET_KEY),
expire after ``VERIFICATION_CODE_TTL`` and allow ``VERIFICATION_MAX_ATTEMPTS`` tries.
Sending a new code invalidates the earlier ones.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils.crypto import constant_time_compare, salted_hmac
from django.utils.translation import gettext as _

from . import clock, conf, ops
from .models import SmtpAccount, VerificationCode

ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I look-alikes
CODE_LENGTH = 8


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def normalise(code: str) -> str:
    return "".join(ch for ch in str(code).upper() if ch.isalnum())[:64]


def hash_code(account_id: int, code: str) -> str:
    return salted_hmac(
        "django_multismtp.verification", f"{account_id}:{normalise(code)}", algorithm="sha256"
    ).hexdigest()


@dataclass
class SentCode:
    result: ops.CheckResult
    code: VerificationCode | None


def send_code(account: SmtpAccount, to: str, *, user: Any = None) -> SentCode:
    """Send a fresh code through ``account`` to ``to``; earlier codes stop working."""
    code = new_code()
    body = _(
        "Your confirmation code for the SMTP account %(name)s is:\n\n    %(code)s\n\n"
        "Paste it on the confirmation page to mark the account as verified. "
        "It expires in %(minutes)d minutes."
    ) % {
        "name": account.name,
        "code": code,
        "minutes": int(conf.get_timedelta("VERIFICATION_CODE_TTL").total_seconds() // 60),
    }
    result = ops.send_test_message(
        account, to, subject=_("Confirmation code: %(code)s") % {"code": code}, body=body
    )
    if not result.ok:
        return SentCode(result, None)
    now = clock.now()
    with transaction.atomic():
        VerificationCode.objects.filter(account=account, used_at__isnull=True).update(used_at=now)
        record = VerificationCode.objects.create(
            account=account,
            code_hash=hash_code(account.pk, code),
            sent_to=to,
            created_by=user if getattr(user, "is_authenticated", False) else None,
            created_at=now,
            expires_at=now + conf.get_timedelta("VERIFICATION_CODE_TTL"),
        )
    return SentCode(result, record)


class Confirmation(enum.StrEnum):
    VERIFIED = "verified"
    WRONG = "wrong"
    EXPIRED = "expired"
    TOO_MANY_ATTEMPTS = "too_many_attempts"
    NO_CODE = "no_code"

    @property
    def message(self) -> str:
        return {
            Confirmation.VERIFIED: _("The code is right: the account is verified."),
            Confirmation.WRONG: _("That code is not right. Check the message and try again."),
            Confirmation.EXPIRED: _("That code has expired. Send a new one."),
            Confirmation.TOO_MANY_ATTEMPTS: _(
                "Too many wrong attempts for this code. Send a new one."
            ),
            Confirmation.NO_CODE: _("No code is waiting for this account. Send one first."),
        }[self]


def confirm_code(account: SmtpAccount, code: str, *, user: Any = None) -> Confirmation:
    """Check ``code`` against the account's latest unused code."""
    now = clock.now()
    with transaction.atomic():
        record = (
            VerificationCode.objects.select_for_update()
            .filter(account=account, used_at__isnull=True)
            .order_by("-created_at", "-pk")
            .first()
        )
        if record is None:
            return Confirmation.NO_CODE
        if record.expires_at <= now:
            return Confirmation.EXPIRED
        if record.attempts >= int(conf.get_setting("VERIFICATION_MAX_ATTEMPTS")):
            return Confirmation.TOO_MANY_ATTEMPTS
        VerificationCode.objects.filter(pk=record.pk).update(attempts=F("attempts") + 1)
        if not constant_time_compare(record.code_hash, hash_code(account.pk, code)):
            return Confirmation.WRONG
        VerificationCode.objects.filter(pk=record.pk).update(used_at=now)
        verified_by = user if getattr(user, "is_authenticated", False) else None
        SmtpAccount.objects.filter(pk=account.pk).update(verified_at=now, verified_by=verified_by)
        account.verified_at, account.verified_by = now, verified_by
    return Confirmation.VERIFIED
