"""Django admin: SMTP accounts (presets, status, test, send-code-and-confirm), the log and
the outbox (retry now, cancel).

One module per model admin (:mod:`.accounts`, :mod:`.delivery_log`, :mod:`.outbox`) and
the pieces they share (:mod:`.actions`, :mod:`.secrets`, :mod:`.display`); this package
registers them. Extra pages are full admin pages (``admin_view``-wrapped, CSRF-protected,
POST for anything with side effects, permission-checked), following Django's own
``delete_selected`` two-step action. Staff without the model's global permissions see
and edit only the accounts they own.
"""

from __future__ import annotations

from django.contrib import admin

from ..models import DeliveryLog, OutboxMessage, SmtpAccount
from .accounts import STATE_FIELDS, PurposeFilter, SmtpAccountAdmin, StatusFilter
from .actions import ValidSelectionMixin
from .delivery_log import DeliveryLogAdmin
from .outbox import OutboxMessageAdmin, OutboxStatusFilter
from .secrets import SecretFieldsMixin

admin.site.register(SmtpAccount, SmtpAccountAdmin)
admin.site.register(DeliveryLog, DeliveryLogAdmin)
admin.site.register(OutboxMessage, OutboxMessageAdmin)

__all__ = [
    "STATE_FIELDS",
    "DeliveryLogAdmin",
    "OutboxMessageAdmin",
    "OutboxStatusFilter",
    "PurposeFilter",
    "SecretFieldsMixin",
    "SmtpAccountAdmin",
    "StatusFilter",
    "ValidSelectionMixin",
]
