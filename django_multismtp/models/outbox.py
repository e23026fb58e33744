"""The outbox: mail that could not go out yet, kept durably until a worker delivers it.

A row holds everything needed to send the message later without the caller's
``EmailMessage``: the wire bytes (rendered with the message's own From), the envelope,
and the selection hints, so the worker picks accounts by the same rules as the request
would have. Rows are claimed with a lease (``locked_by``/``locked_until``) rather than
a long transaction, so a worker that dies only delays its rows until the lease ends.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from .fields import ReplyCodeField, ReplyTextField


class OutboxStatus(models.TextChoices):
    QUEUED = "queued", _("queued")
    SENT = "sent", _("sent")
    FAILED = "failed", _("failed")
    CANCELLED = "cancelled", _("cancelled")


class OutboxMessage(models.Model):
    Status = OutboxStatus

    # The message
    #: Not indexed: nothing here looks a row up by it ("did it go out?" is the delivery
    #: log's question, and its Message-ID is indexed there).
    message_id = models.CharField(_("Message-ID"), max_length=255)
    subject = models.CharField(_("subject"), max_length=255, blank=True)
    #: The From header as the caller wrote it; an account may replace it when sending.
    from_email = models.CharField(_("from"), max_length=998)
    #: True when the message used DEFAULT_FROM_EMAIL (the account's sender applies).
    uses_default_from = models.BooleanField(default=False)
    #: The caller's Reply-To addresses, comma-separated ("" when none: an account's
    #: reply-to then applies).
    reply_to = models.TextField(_("reply-to"), blank=True)
    #: Envelope recipients (To, Cc and Bcc), one per line, checked and IDNA-encoded.
    #: (Text rather than JSON: a JSONField makes the system checks need a database.)
    envelope_recipients = models.TextField(_("recipients"))
    data = models.BinaryField(_("message bytes"))
    size = models.PositiveIntegerField(_("size (bytes)"), default=0)

    # Selection hints, resolved when the message was queued
    #: The account an explicit hint named, by primary key (never by name: a name can
    #: change, and then another account could take it). No database constraint and no
    #: cascade: when the account is deleted the row keeps the id and the worker reports
    #: the missing account instead of choosing another one.
    hinted_account = models.ForeignKey(
        "SmtpAccount",
        verbose_name=_("hinted account"),
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,  # never looked up by it: an index would only cost every write
        related_name="+",
    )
    #: For people: the hinted account's name when the message was queued. On rows
    #: queued before hints were stored by id, a hint that named no account then is
    #: kept here (with no ``hinted_account``) and matched by name.
    account_hint = models.CharField(_("account hint"), max_length=100, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("sent as user"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        db_index=False,  # a partial index (Meta.indexes): most rows have no user
        related_name="+",
    )
    purpose = models.CharField(_("purpose"), max_length=50, blank=True)
    #: The mailer alias (Django 6.1 MAILERS) whose fallback server and options apply.
    mailer = models.CharField(_("mailer"), max_length=100, blank=True)

    # Progress
    status = models.CharField(
        _("status"), max_length=10, choices=OutboxStatus.choices, default=OutboxStatus.QUEUED
    )
    #: Passes that reached a server and failed; OUTBOX_MAX_ATTEMPTS applies to these.
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    #: Passes that found no account allowed to send now (limits, rate limited).
    deferrals = models.PositiveIntegerField(_("deferrals"), default=0)
    #: SMTP attempts in all (one per account tried), numbering the delivery log rows.
    smtp_attempts = models.PositiveIntegerField(_("SMTP attempts"), default=0)
    next_attempt_at = models.DateTimeField(_("next attempt"))
    last_error = ReplyTextField(_("last error"), blank=True)
    last_error_code = ReplyCodeField(_("last reply code"), null=True, blank=True)
    created_at = models.DateTimeField(_("queued at"), db_index=True)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)
    sent_by = models.ForeignKey(
        "SmtpAccount",
        verbose_name=_("sent by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        # Set on every row that is sent, and only ever looked up when an account is
        # deleted (rare, and a scan then is cheaper than an index written per message).
        db_index=False,
        # Nor a check in the database of every settled row's account (issue #17): Django
        # sets the column to NULL when the account is deleted (``on_delete``). With the
        # constraint, a worker settling rows sent through an account deleted meanwhile
        # had its whole chunk refused at commit, and messages the server took were
        # sent again (see DeliveryLog.account, which drops its constraint for the same
        # reasons).
        db_constraint=False,
        related_name="+",
    )

    # Leases
    locked_by = models.CharField(_("claimed by"), max_length=200, blank=True)
    locked_until = models.DateTimeField(_("claimed until"), null=True, blank=True)
    claims = models.PositiveIntegerField(_("claims"), default=0)
    #: A worker claimed this row and never reported back (it died or its lease ran
    #: out): it may have sent the message, so a later send may be a duplicate.
    possible_duplicate = models.BooleanField(_("possible duplicate"), default=False)

    class Meta:
        verbose_name = _("outbox message")
        verbose_name_plural = _("outbox messages")
        ordering = ["-created_at", "-id"]
        # Few indexes, because settling a row changes its status, and a row whose
        # indexed columns change is written anew into every index of the table (no
        # HOT update on PostgreSQL). What workers look rows up by:
        indexes = [
            # The claim: queued rows in the order they are due (the primary key breaks
            # ties, so the index gives the claim's order and it stops after its batch).
            # Partial: a row leaves it when it is settled for good.
            models.Index(
                fields=["next_attempt_at", "id"],
                condition=Q(status=OutboxStatus.QUEUED),
                name="multismtp_outbox_queued",
            ),
            # Deleting a user sets theirs to NULL.
            models.Index(
                fields=["user"], condition=Q(user__isnull=False), name="multismtp_outbox_user"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.message_id} ({self.status})"

    @staticmethod
    def claimed(now: dt.datetime) -> Q:
        """Rows a worker holds now: its lease has not run out (settling clears it)."""
        return Q(locked_until__gt=now)

    def is_claimed(self, now: dt.datetime) -> bool:
        """:meth:`claimed` for this row."""
        return self.locked_until is not None and self.locked_until > now

    def display_status(self, now: dt.datetime) -> str:
        """The status a person reads: a queued row being sent says so."""
        if self.status == OutboxStatus.QUEUED and self.is_claimed(now):
            return "sending"
        return str(self.status)

    # pre_send/post_send receivers get the row for queued mail; this mirrors the
    # EmailMessage method receivers commonly call.
    def recipients(self) -> list[str]:
        """The envelope recipients, as ``EmailMessage.recipients()`` returns them."""
        return [line for line in self.envelope_recipients.splitlines() if line]
