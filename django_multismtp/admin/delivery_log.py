"""The delivery log: one read-only row per SMTP transaction."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.http import HttpRequest

from ..models import DeliveryLog
from .actions import ValidSelectionMixin
from .secrets import SecretFieldsMixin

if TYPE_CHECKING:
    LogAdminBase = admin.ModelAdmin[DeliveryLog]
else:
    LogAdminBase = admin.ModelAdmin


class DeliveryLogAdmin(SecretFieldsMixin, ValidSelectionMixin, LogAdminBase):  # type: ignore[misc]
    list_display = (
        "created_at",
        "account_name",
        "message_id",
        "outcome",
        "reply_code",
        "recipient_count",
        "recipient_domains",
        "duration_ms",
    )
    list_filter = ("outcome", "account", "created_at")
    search_fields = ("message_id", "recipient_domains")
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
