"""The outbox: read-only rows with two actions (retry now, cancel)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from .. import clock, outbox
from ..models import OutboxMessage, OutboxStatus
from .actions import ValidSelectionMixin
from .display import badge, timestamp, truncated, warn_if_stalled
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

    # What decides "did it go out, and if not, when and why" first; long text truncated
    # (whole in a tooltip) so that it fits a 1366-pixel screen with the sidebar open.
    list_display = (
        "subject_short",
        "status_badge",
        "next_attempt",
        "last_error_short",
        "recipients_short",
        "queued_at",
        "tries",
        "sent_by",
    )
    list_filter = (OutboxStatusFilter, "created_at")
    search_fields = ("message_id", "subject", "envelope_recipients", "from_email")
    date_hierarchy = "created_at"
    actions = ("retry_now", "cancel")
    # Shown through displays that name what they count (and hide what no longer applies).
    exclude = ("data", "attempts", "deferrals", "next_attempt_at")
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
        "failed_passes",
        "deferred_passes",
        "smtp_attempts",
        "next_attempt",
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
        return badge(key, OUTBOX_COLOURS[key], OUTBOX_LABELS[key], _open_error(obj))

    @admin.display(description=_("subject"), ordering="subject")
    def subject_short(self, obj: OutboxMessage) -> str:
        return truncated(obj.subject, 28) or "-"

    @admin.display(description=_("next attempt"), ordering="next_attempt_at")
    def next_attempt(self, obj: OutboxMessage) -> Any:
        """Only while the row is queued: a sent, failed or cancelled row has none."""
        return timestamp(obj.next_attempt_at) if obj.status == OutboxStatus.QUEUED else "-"

    @admin.display(description=_("tries"))
    def tries(self, obj: OutboxMessage) -> str:
        """SMTP attempts and deferrals, named: "0 attempts" on a sent row read as if it
        never went out (``attempts`` counts failed passes only)."""
        n = obj.smtp_attempts
        text = ngettext("%(n)d SMTP attempt", "%(n)d SMTP attempts", n) % {"n": n}
        if obj.deferrals:
            n = obj.deferrals
            text += ", " + ngettext("%(n)d deferral", "%(n)d deferrals", n) % {"n": n}
        return text

    @admin.display(description=_("failed passes (count toward OUTBOX_MAX_ATTEMPTS)"))
    def failed_passes(self, obj: OutboxMessage) -> int:
        return obj.attempts

    @admin.display(description=_("deferrals (no account could send yet: limits, rate limits)"))
    def deferred_passes(self, obj: OutboxMessage) -> int:
        return obj.deferrals

    @admin.display(description=_("recipients"))
    def recipients_short(self, obj: OutboxMessage) -> str:
        recipients = obj.recipients()
        more = f" (+{len(recipients) - 1})" if len(recipients) > 1 else ""
        return format_html("{}{}", truncated(recipients[0], 24), more) if recipients else ""

    @admin.display(description=_("queued at"), ordering="created_at")
    def queued_at(self, obj: OutboxMessage) -> str:
        return timestamp(obj.created_at)

    @admin.display(description=_("last error"))
    def last_error_short(self, obj: OutboxMessage) -> str:
        return truncated(_open_error(obj).split("\n", 1)[0], 28)

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


def _open_error(obj: OutboxMessage) -> str:
    """The last error while it still applies: a sent row's earlier deferral ("reached
    its sending limit") is history, not a problem (the delivery log keeps it)."""
    return "" if obj.status == OutboxStatus.SENT else obj.last_error
