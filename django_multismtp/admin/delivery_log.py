"""The delivery log: one read-only row per SMTP transaction."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from .. import state
from ..models import DeliveryLog
from .actions import ValidSelectionMixin
from .display import timestamp, truncated
from .secrets import SecretFieldsMixin

if TYPE_CHECKING:
    LogAdminBase = admin.ModelAdmin[DeliveryLog]
else:
    LogAdminBase = admin.ModelAdmin


class DeliveryLogAdmin(SecretFieldsMixin, ValidSelectionMixin, LogAdminBase):  # type: ignore[misc]
    """Read-only. Answers "did bob's password-reset mail go out?": search by recipient
    (the whole address also finds hashed rows, LOG_RECIPIENTS = "hashed") or subject,
    filter by outcome, account and date; the decisive columns fit 1366 pixels."""

    list_display = (
        "time",
        "subject_short",
        "outcome",
        "reply_code",
        "recipients_short",
        "account_name",
        "attempt",
        "duration_ms",
    )
    list_filter = ("outcome", ("account", admin.RelatedOnlyFieldListFilter), "created_at")
    search_fields = ("message_id", "subject", "recipients", "recipient_domains")
    date_hierarchy = "created_at"

    @admin.display(description=_("time"), ordering="created_at")
    def time(self, obj: DeliveryLog) -> str:
        # With seconds: several attempts of one message fall within the same minute.
        return timestamp(obj.created_at)

    @admin.display(description=_("subject"), ordering="subject")
    def subject_short(self, obj: DeliveryLog) -> str:
        return truncated(obj.subject, 28) or "-"

    @admin.display(description=_("recipients"))
    def recipients_short(self, obj: DeliveryLog) -> str:
        first, _sep, rest = obj.recipients.partition(", ")
        more = f" (+{rest.count(', ') + 1})" if rest else ""
        if not first:
            return obj.recipient_domains
        return format_html("{}{}", truncated(first, 24), more)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[DeliveryLog], search_term: str
    ) -> tuple[QuerySet[DeliveryLog], bool]:
        results, duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if "@" in term and " " not in term:
            # Rows written in "hashed" mode match the hash of the whole address.
            results |= queryset.filter(recipients__contains=state.hash_address(term))
        return results, duplicates

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
