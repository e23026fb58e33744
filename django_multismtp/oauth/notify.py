"""The default receiver of ``oauth_needs_reconnect``: tell the owner and the ADMINS.

An account that needs reconnecting stops sending until a person acts, so the people who
can act are told at once rather than when someone wonders where the mail went. Switch
off with ``MULTISMTP["OAUTH_NOTIFY"] = False`` (the signal is still sent).
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.mail import mail_admins, send_mail
from django.dispatch import receiver

from .. import conf
from ..signals import oauth_needs_reconnect

logger = logging.getLogger("django_multismtp.oauth")


@receiver(oauth_needs_reconnect, dispatch_uid="django_multismtp.oauth.notify")
def notify_needs_reconnect(sender: Any, account: Any, error: str, hint: str, **kwargs: Any) -> None:
    logger.warning("SMTP account %s needs reconnecting: %s", account.name, error)
    if not conf.get_setting("OAUTH_NOTIFY"):
        return
    subject = f"SMTP account “{account.name}” needs to be connected again"
    body = (
        f"The mail provider no longer accepts the sign-in of the SMTP account "
        f"“{account.name}” ({account.username or account.from_email}). Mail that would "
        f"go through it is sent through other accounts or waits in the outbox.\n\n"
        f"Provider's answer: {error}\n\nWhat to do: {hint}\n"
    )
    try:
        mail_admins(subject, body, fail_silently=False)
        owner = account.owner
        if owner is not None and owner.email:
            send_mail(subject, body, None, [owner.email], fail_silently=False)
    except Exception:  # noqa: BLE001 - telling people must not break sending
        logger.exception("could not send the needs-reconnect notice for %s", account.name)
