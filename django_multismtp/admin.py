"""Django admin for SMTP accounts and the delivery log."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from . import conf, ops
from .models import DeliveryLog, SmtpAccount

if TYPE_CHECKING:
    AccountAdminBase = admin.ModelAdmin[SmtpAccount]
    LogAdminBase = admin.ModelAdmin[DeliveryLog]
else:
    AccountAdminBase = LogAdminBase = admin.ModelAdmin


class SmtpAccountForm(forms.ModelForm):  # type: ignore[type-arg]
    password = forms.CharField(
        label=_("password"),
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=_("Leave empty to keep the stored password."),
    )
    clear_password = forms.BooleanField(label=_("clear the stored password"), required=False)
    purpose = forms.ChoiceField(label=_("purpose"), choices=())

    class Meta:
        model = SmtpAccount
        fields = (
            "name",
            "description",
            "purpose",
            "owner",
            "default_for",
            "is_site_default",
            "priority",
            "from_email",
            "from_name",
            "reply_to",
            "allowed_senders",
            "host",
            "port",
            "security",
            "verify_certificates",
            "ca_file",
            "ehlo_hostname",
            "timeout",
            "auth_method",
            "username",
            "limit_per_second",
            "limit_per_minute",
            "limit_per_hour",
            "limit_per_day",
            "max_connections",
            "max_messages_per_connection",
            "max_message_size",
            "is_active",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["purpose"].choices = conf.purpose_choices()  # type: ignore[attr-defined]

    def save(self, commit: bool = True) -> SmtpAccount:
        account: SmtpAccount = super().save(commit=False)
        if self.cleaned_data.get("clear_password"):
            account.password = ""
        elif self.cleaned_data.get("password"):
            account.password = self.cleaned_data["password"]
        if commit:
            account.save()
            self.save_m2m()
        return account


@admin.register(SmtpAccount)
class SmtpAccountAdmin(AccountAdminBase):
    form = SmtpAccountForm
    list_display = (
        "name",
        "purpose",
        "owner",
        "host",
        "port",
        "from_email",
        "is_active",
        "rate_limited_until",
        "updated_at",
    )
    list_filter = ("purpose", "is_active", "is_site_default")
    search_fields = ("name", "host", "from_email", "username")
    filter_horizontal = ("default_for",)
    readonly_fields = (
        "verified_at",
        "verified_by",
        "last_error",
        "last_error_code",
        "last_error_at",
        "last_success_at",
        "created_at",
        "updated_at",
    )
    actions = ["test_connection"]

    @admin.action(description=_("Test connection"), permissions=["change"])
    def test_connection(self, request: HttpRequest, queryset: QuerySet[SmtpAccount]) -> None:
        for account in queryset:
            result = ops.test_connection(account)
            if result.ok:
                self.message_user(request, f"{account.name}: {result.reply}", messages.SUCCESS)
            else:
                self.message_user(
                    request,
                    f"{account.name}: {result.outcome} {result.code or ''} {result.reply}. "
                    f"{result.hint}",
                    messages.ERROR,
                )


@admin.register(DeliveryLog)
class DeliveryLogAdmin(LogAdminBase):
    list_display = (
        "created_at",
        "account_name",
        "message_id",
        "outcome",
        "reply_code",
        "recipient_count",
    )
    list_filter = ("outcome", "account", "created_at")
    search_fields = ("message_id", "recipient_domains")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
