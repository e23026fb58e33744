"""The delivery log: one row per message attempt, so "why did this not go out" has an answer."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from ..replies import Outcome
from .fields import ReplyCodeField, ReplyTextField

#: The log's outcome for an account passed over because of its limits or pause.
DEFERRED = "deferred"

OUTCOME_CHOICES = [
    (Outcome.SENT.value, _("sent")),
    (Outcome.THROTTLED.value, _("throttled")),
    (Outcome.TRANSIENT.value, _("temporary failure")),
    (Outcome.PERMANENT.value, _("refused")),
    (Outcome.AUTH_FAILED.value, _("authentication failed")),
    (Outcome.TLS_FAILED.value, _("TLS failed")),
    (Outcome.CONNECTION_FAILED.value, _("connection failed")),
    (Outcome.CONFIG_ERROR.value, _("configuration error")),
    (Outcome.CANCELLED.value, _("cancelled")),
    (Outcome.PROTOCOL_ERROR.value, _("protocol error")),
    # Not sent through this account now: its own sending limit is reached, or it is
    # rate limited; the text says until when. (Not a server's verdict, so not in
    # replies.Outcome.)
    (DEFERRED, _("deferred")),
]


class DeliveryLog(models.Model):
    #: No foreign-key constraint in the database (``db_constraint=False``): Django still
    #: sets the column to NULL when the account is deleted (``on_delete``), but the
    #: database no longer checks each inserted row's account, a check per message sent
    #: (issue #17). A log row is a record, not what decides a message's fate: with the
    #: constraint (and the one of ``OutboxMessage.sent_by``), a worker writing the
    #: outcome of messages sent through an account deleted meanwhile had the commit of
    #: its whole chunk refused, settlements included, and messages the server took
    #: were sent again. Such a row now keeps the deleted account's key (the admin
    #: shows no account for it) and its ``account_name``.
    account = models.ForeignKey(
        "SmtpAccount",
        verbose_name=_("account"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        db_constraint=False,
        related_name="deliveries",
    )
    #: Kept when the account is deleted, and "fallback" for the fallback server.
    account_name = models.CharField(_("account name"), max_length=100)
    #: Indexed in ``Meta.indexes`` (a plain index: see there).
    message_id = models.CharField(_("Message-ID"), max_length=255)
    from_email = models.CharField(_("from"), max_length=254, blank=True)
    recipient_count = models.PositiveIntegerField(_("recipients"), default=0)
    recipient_domains = models.CharField(_("recipient domains"), max_length=500, blank=True)
    #: "Did bob's password-reset mail go out?": the subject, and the envelope recipients
    #: as MULTISMTP["LOG_RECIPIENTS"] says (plain, hashed, or not at all).
    subject = models.CharField(_("subject"), max_length=255, blank=True)
    recipients = models.TextField(_("recipients"), blank=True)
    outcome = models.CharField(_("outcome"), max_length=20, choices=OUTCOME_CHOICES)
    #: NULL when the server gave no valid code (a protocol error).
    reply_code = ReplyCodeField(_("reply code"), null=True, blank=True)
    reply_text = ReplyTextField(_("reply"), blank=True)
    duration_ms = models.PositiveIntegerField(_("duration (ms)"), default=0)
    attempt = models.PositiveIntegerField(_("attempt"), default=1)
    created_at = models.DateTimeField(_("time"), db_index=True)

    class Meta:
        verbose_name = _("delivery log entry")
        verbose_name_plural = _("delivery log entries")
        ordering = ["-created_at", "-id"]
        # Every message a worker sends writes one row, so each index costs an entry per
        # message (issue #17). Kept: the primary key, the account (the admin's filter,
        # an account's deletion), ``created_at`` (the admin's order, date filter and
        # ``cleanup_outbox``), and these two. ``message_id``: a plain index for "did
        # this message go out?" (``filter(message_id=...)``), without the ``LIKE`` twin
        # ``db_index`` adds on PostgreSQL, which serves only case-sensitive prefix
        # searches and nothing makes one (the admin's search is ``icontains``, which no
        # B-tree serves). ``outcome``: only the rows that were not sent (nearly every row
        # is sent, and a filter on "sent" reads most of the table whatever the index),
        # so the admin's filter on a failure outcome still finds its rows by index.
        indexes = [
            models.Index(fields=["message_id"], name="multismtp_log_message_id"),
            models.Index(
                fields=["outcome"],
                name="multismtp_log_not_sent",
                condition=~models.Q(outcome=Outcome.SENT.value),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.message_id} via {self.account_name}: {self.outcome}"
