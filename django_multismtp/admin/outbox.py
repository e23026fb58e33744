"""The outbox: read-only rows with two actions (retry now, cancel)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .. import clock, outbox
from ..models import OutboxMessage
from .actions import ValidSelectionMixin
from .display import badge, warn_if_stalled
from .secrets import SecretFieldsMixin

if TYPE_CHECKING:
    OutboxAdminBase = admin.ModelAdmin[OutboxMessage]
else:
    OutboxAdminBase = admin.ModelAdmin


OUTBOX_LABELS = {
    "queued": _("queued"),
    "sending": _("sending"),
    "sent": _("sent"),
    "failed": _("failed"),
    "cancelled": _("cancelled"),
}
OUTBOX_COLOURS = {
    "queued": "#1565c0",
    "sending": "#6a1b9a",
    "sent": "#2e7d32",
    "failed": "#c62828",
    "cancelled": "#9e9e9e",
}


class OutboxStatusFilter(admin.SimpleListFilter):
    """The stored statuses, plus "sending" (queued and claimed by a live worker)."""

    title = _("status")
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [*OUTBOX_LABELS.items(), ("duplicate", _("possible duplicate"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        claimed = OutboxMessage.claimed(clock.now())
        value = self.value()
        if value == "queued":
            return queryset.filter(status="queued").exclude(claimed)
        if value == "sending":
            return queryset.filter(claimed, status="queued")
        if value == "duplicate":
            return queryset.filter(possible_duplicate=True)
        if value in ("sent", "failed", "cancelled"):
            return queryset.filter(status=value)
        return queryset


class OutboxMessageAdmin(SecretFieldsMixin, ValidSelectionMixin, OutboxAdminBase):  # type: ignore[misc]
    """Read-only rows with two actions: a person decides *when*, never *what*."""

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        warn_if_stalled(request)
        return super().changelist_view(request, extra_context)

    list_display = (
        "created_at",
        "subject",
        "recipients_short",
        "status_badge",
        "attempts",
        "next_attempt_at",
        "last_error_short",
        "sent_by",
    )
    list_filter = (OutboxStatusFilter, "created_at")
    search_fields = ("message_id", "subject", "envelope_recipients", "from_email")
    date_hierarchy = "created_at"
    actions = ("retry_now", "cancel")
    exclude = ("data",)
    readonly_fields = (
        "message_id",
        "subject",
        "from_email",
        "reply_to",
        "envelope_recipients",
        "size",
        "hinted_account",
        "account_hint",
        "user",
        "purpose",
        "mailer",
        "status",
        "attempts",
        "deferrals",
        "smtp_attempts",
        "next_attempt_at",
        "last_error",
        "last_error_code",
        "created_at",
        "sent_at",
        "sent_by",
        "locked_by",
        "locked_until",
        "claims",
        "possible_duplicate",
        "delivery_log",
    )

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj: OutboxMessage) -> str:
        key = obj.display_status(clock.now())
        return badge(key, OUTBOX_COLOURS[key], OUTBOX_LABELS[key], obj.last_error)

    @admin.display(description=_("recipients"))
    def recipients_short(self, obj: OutboxMessage) -> str:
        recipients = obj.recipients()
        more = f" (+{len(recipients) - 1})" if len(recipients) > 1 else ""
        return (recipients[0] if recipients else "") + more

    @admin.display(description=_("last error"))
    def last_error_short(self, obj: OutboxMessage) -> str:
        first = obj.last_error.splitlines()[0] if obj.last_error else ""
        return first[:120] + ("..." if len(first) > 120 else "")

    @admin.display(description=_("delivery log"))
    def delivery_log(self, obj: OutboxMessage) -> str:
        url = reverse("admin:django_multismtp_deliverylog_changelist")
        return format_html(
            '<a href="{}?q={}">{}</a>', url, obj.message_id, gettext("Attempts of this message")
        )

    def get_queryset(self, request: HttpRequest) -> QuerySet[OutboxMessage]:
        return super().get_queryset(request).defer("data").select_related("sent_by")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The form is read-only; the actions need the change permission.
        return super().has_change_permission(request, obj) if obj is None else False

    @admin.action(description=_("Retry now"), permissions=["change"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[OutboxMessage]) -> None:
        self._report(
            request,
            queryset,
            outbox.retry_now(queryset),
            gettext("%(count)d message(s) will be sent by the next worker run."),
            gettext("%(n)d sent or cancelled message(s) were left alone."),
        )

    @admin.action(description=_("Cancel"), permissions=["change"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[OutboxMessage]) -> None:
        self._report(
            request,
            queryset,
            outbox.cancel(queryset),
            gettext("%(count)d message(s) cancelled."),
            gettext("%(n)d already sent or cancelled message(s) were left alone."),
        )

    def _report(
        self,
        request: HttpRequest,
        queryset: QuerySet[OutboxMessage],
        count: int,
        done: str,
        left: str,
    ) -> None:
        """Say what an action changed, and how many selected rows it left alone."""
        skipped = queryset.count() - count
        text = done % {"count": count} + (" " + left % {"n": skipped} if skipped else "")
        self.message_user(request, text, messages.SUCCESS if count else messages.WARNING)
