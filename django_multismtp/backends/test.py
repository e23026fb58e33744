"""A backend for your own test suite: real account selection, no network.

Use it where you would use Django's locmem backend. Every message is chosen an account
exactly as in production (hints, limits, rate-limited-until), then appended to
``django.core.mail.outbox`` with ``message.multismtp_account`` set to the account's
name (``"fallback"`` for the fallback server) so tests can assert the routing. Mail
sent from the outbox is recorded as a message with its subject, From, envelope
recipients and Message-ID (its body is in ``multismtp_wire``).
"""

from __future__ import annotations

import copy

from django.core import mail
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend

from ..engine import FALLBACK, Engine
from ..outgoing import Attempt
from ..transport import Delivery
from .smtp import EmailBackend as SMTPEmailBackend


class RecordingEngine(Engine):
    """The real engine, with the SMTP work replaced by appending to ``mail.outbox``."""

    shares_connections = False  # it opens no connection, so it takes no slot

    def transmit(self, attempts: list[Attempt]) -> None:
        if not hasattr(mail, "outbox"):
            mail.outbox = []
        for attempt in attempts:
            attempt.delivery = Delivery(None, code=250, reply="OK (test backend)")
            message = attempt.item.message
            if attempt.item.raw is not None:  # from the outbox: rebuild a readable message
                message = EmailMessage(
                    subject=message.subject,
                    from_email=attempt.item.from_email,
                    to=attempt.item.envelope_recipients,
                    headers={"Message-ID": attempt.item.message_id},
                )
            message.message()  # validates headers, as locmem does
            # The message may hold this backend as its connection (send_mail() sets it;
            # 6.1 keeps it as ``_connection``). Share it rather than copy it: its lock
            # and sessions cannot be copied.
            backends = [v for v in vars(message).values() if isinstance(v, BaseEmailBackend)]
            recorded = copy.deepcopy(message, {id(b): b for b in backends})
            recorded.multismtp_account = (
                attempt.account.name if attempt.account is not None else FALLBACK
            )
            recorded.multismtp_wire = attempt.item.render(attempt.account)
            mail.outbox.append(recorded)


class EmailBackend(SMTPEmailBackend):
    engine_class = RecordingEngine
    #: Never connects: open() connects nothing, and a mailer needs no host.
    uses_network = False
