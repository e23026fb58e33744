"""Connection slots: an account's ``max_connections`` as a budget shared by every process.

One row per account and slot number (0 .. max_connections - 1). A process opens a
connection to an account only while it holds a slot's lease (``holder``, until
``expires_at``); it renews the lease while the connection is open and gives it back on
close. A process that dies without giving it back (killed, the machine lost) keeps it
only until the lease expires; then any process may take it (see ``slots.py``). A
process that finds them all taken marks the account's rows as wanted, and holders of
more than their share give the rest back, so workers that start later get their turn.
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class ConnectionSlot(models.Model):
    account = models.ForeignKey(
        "SmtpAccount", on_delete=models.CASCADE, related_name="connection_slots"
    )
    slot_no = models.PositiveSmallIntegerField(_("slot"))
    #: Who holds the slot ("host:pid:pool"), "" when it is free.
    holder = models.CharField(_("holder"), max_length=200, blank=True, default="")
    #: The holder's lease ends here; an expired slot is free whoever holds it.
    expires_at = models.DateTimeField(_("lease expires at"), null=True, blank=True)
    #: A process found every slot of the account taken and waits for one: holders of
    #: more than their share give some back (set on all the account's rows).
    wanted_at = models.DateTimeField(_("wanted at"), null=True, blank=True)

    class Meta:
        verbose_name = _("connection slot")
        verbose_name_plural = _("connection slots")
        constraints = [
            models.UniqueConstraint(fields=["account", "slot_no"], name="multismtp_connection_slot")
        ]

    def __str__(self) -> str:
        return f"{self.account_id}#{self.slot_no}: {self.holder or '-'}"
