"""Django admin: SMTP accounts (presets, status, test, send-code-and-confirm), the log and
the outbox (retry now, cancel).

Extra pages are full admin pages (``admin_view``-wrapped, CSRF-protected, POST for
anything with side effects, permission-checked), following Django's own
``delete_selected`` two-step action. Staff without the model's global permissions see
and edit only the accounts they own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import F, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_post_parameters

from . import clock, conf, ops, outbox, stall, verification
from .exposure import security_warnings
from .fields import Undecryptable, secret_fields
from .forms import ConfirmCodeForm, SendCodeForm, SmtpAccountForm
from .models import DeliveryLog, OAuthConnection, OutboxMessage, SmtpAccount
from .oauth import providers as oauth_providers
from .presets import PRESETS
from .throttling import too_many

if TYPE_CHECKING:
    AccountAdminBase = admin.ModelAdmin[SmtpAccount]
    LogAdminBase = admin.ModelAdmin[DeliveryLog]
    OutboxAdminBase = admin.ModelAdmin[OutboxMessage]
else:
    AccountAdminBase = LogAdminBase = OutboxAdminBase = admin.ModelAdmin

BADGE_COLOURS = {
    "verified": "#2e7d32",
    "unverified": "#6d6d6d",
    "rate_limited": "#b26a00",
    "error": "#c62828",
    "inactive": "#9e9e9e",
}
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


def _badge(key: str, colour: str, label: Any, title: str = "") -> str:
    return format_html(
        '<span class="multismtp-status multismtp-status-{}" style="color:#fff;'
        'background:{};padding:2px 6px;border-radius:8px;white-space:nowrap" title="{}">'
        "{}</span>",
        key,
        colour,
        title,
        label,
    )


def _valid_selection(request: HttpRequest) -> bool:
    """Are the selected rows of an action primary keys? Django's ``pk__in`` query fails
    with a server error on anything else (ValueError, or OverflowError on SQLite)."""
    return all(
        re.fullmatch(r"[0-9]{1,19}", value) and int(value) < 2**63
        for value in request.POST.getlist(ACTION_CHECKBOX_NAME)
    )


def _refuse_selection(model_admin: Any, request: HttpRequest) -> None:
    model_admin.message_user(
        request, gettext("The selection is not valid. No items have been changed."), messages.ERROR
    )


class ValidSelectionMixin:
    """Refuse forged action selections with a message instead of a server error."""

    def response_action(
        self, request: HttpRequest, queryset: Any, **kwargs: Any
    ) -> HttpResponse | None:
        # **kwargs: Django 6.1 passes action_location.
        if not _valid_selection(request):
            _refuse_selection(self, request)
            return None
        return super().response_action(request, queryset, **kwargs)  # type: ignore[misc,no-any-return]


class SecretFieldsMixin:
    """Never display a secret field (``fields.secret_fields``), in any admin mode.

    Wherever the admin would show a secret read-only (the view-only page of staff
    without the change permission, ``readonly_fields``, a ``has_change_permission``
    that says no, list columns), it shows whether one is set instead. The add/change
    view marks the secrets' POST parameters sensitive, so error reports show stars.
    Every model admin of the app uses this, so a new secret field is covered at once.
    """

    model: Any

    def _secret_displays(self) -> dict[str, Callable[[Any], str]]:
        displays: dict[str, Callable[[Any], str]] | None = self.__dict__.get("_secret_display")
        if displays is None:
            displays = {
                f.name: _secret_status(f.name, f.verbose_name) for f in secret_fields(self.model)
            }
            self.__dict__["_secret_display"] = displays
        return displays

    def _view_only(self, request: HttpRequest, obj: Any) -> bool:
        # The change page of an object the user may not change shows every field read-only.
        return obj is not None and not self.has_change_permission(request, obj)  # type: ignore[attr-defined]

    def _swap(self, fields: Sequence[Any], read_only: set[str]) -> list[Any]:
        """Secrets shown read-only become their status; a status whose secret is an
        input (or already listed) is dropped."""
        displays = self._secret_displays()
        status_of = {display: name for name, display in displays.items()}
        swapped: list[Any] = []
        for item in fields:
            if isinstance(item, (list, tuple)):
                swapped.append(tuple(self._swap(item, read_only)))
                continue
            if isinstance(item, str) and item in read_only:
                item = displays[item]
            elif item in status_of and status_of[item] not in read_only:
                continue
            if not (item in status_of and item in swapped):
                swapped.append(item)
        return swapped

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # Every status is read-only (that keeps it out of the form); it is shown only
        # where get_fieldsets() puts it instead of the secret.
        fields = list(super().get_readonly_fields(request, obj))  # type: ignore[misc]
        return fields + [d for d in self._secret_displays().values() if d not in fields]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)  # type: ignore[misc]
        displays = self._secret_displays()
        if not displays:
            return fieldsets
        # self.get_readonly_fields: what the whole admin (subclasses too) makes read-only.
        readonly = self.get_readonly_fields(request, obj)
        view_only = self._view_only(request, obj)
        read_only = {name for name in displays if view_only or name in readonly}
        return [
            (title, {**options, "fields": self._swap(options["fields"], read_only)})
            for title, options in fieldsets
        ]

    def get_list_display(self, request: HttpRequest) -> Any:
        secrets = set(self._secret_displays())
        return self._swap(super().get_list_display(request), secrets)  # type: ignore[misc]

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        view = super().changeform_view  # type: ignore[misc]
        names = list(self._secret_displays())
        inlines = getattr(self, "inlines", ())
        if any(secret_fields(inline.model) for inline in inlines):
            # Inline forms' parameters are prefixed ("smtp_accounts-0-password"): hide all.
            view = sensitive_post_parameters()(view)
        elif names:
            view = sensitive_post_parameters(*names)(view)
        return view(request, object_id, form_url, extra_context)  # type: ignore[no-any-return]


def _secret_status(name: str, label: Any) -> Callable[[Any], str]:
    """A read-only display of a secret: whether one is stored, never what it is."""

    @admin.display(description=label)
    def status(obj: Any) -> str:
        value = getattr(obj, name, None)
        if isinstance(value, Undecryptable):
            return gettext("set, but the current FERNET_KEYS cannot decrypt it")
        return gettext("set") if value else gettext("not set")

    status.__name__ = f"{name}_status"
    return status


class StatusFilter(admin.SimpleListFilter):
    title = _("status")
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [
            ("verified", _("verified")),
            ("unverified", _("not verified")),
            ("rate_limited", _("rate limited")),
            ("error", _("last attempt failed")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        now = clock.now()
        value = self.value()
        if value == "verified":
            return queryset.filter(verified_at__isnull=False)
        if value == "unverified":
            return queryset.filter(verified_at__isnull=True)
        if value == "rate_limited":
            return queryset.filter(rate_limited_until__gt=now)
        if value == "error":
            return queryset.filter(last_error_at__isnull=False).filter(
                Q(last_success_at__isnull=True) | Q(last_error_at__gt=F("last_success_at"))
            )
        return queryset


#: Live state: shown, never edited (the backend and the actions maintain it).
STATE_FIELDS = (
    "status_badge",
    "verified_at",
    "verified_by",
    "rate_limited_until",
    "last_error",
    "last_error_code",
    "last_error_at",
    "last_success_at",
    "created_at",
    "updated_at",
)


class PurposeFilter(admin.SimpleListFilter):
    """Purposes by their labels (the field has no fixed choices: sites add purposes)."""

    title = _("purpose")
    parameter_name = "purpose"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return conf.purpose_choices()

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(purpose=self.value()) if self.value() else queryset


class OAuthConnectionForm(forms.ModelForm):  # type: ignore[type-arg]
    """The OAuth app of an account; the client secret is write-only (blank keeps it)."""

    client_secret = forms.CharField(
        label=_("client secret"),
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=_("Leave empty to keep the stored secret (or to use OAUTH_PROVIDERS)."),
    )

    class Meta:
        model = OAuthConnection
        fields = (
            "provider",
            "flow",
            "client_id",
            "client_secret",
            "tenant",
            "authorize_url",
            "token_url",
            "revoke_url",
            "scopes",
        )

    def clean_client_secret(self) -> Any:
        typed = self.cleaned_data.get("client_secret") or ""
        return typed or (self.instance.client_secret if self.instance.pk else "")


class OAuthConnectionInline(SecretFieldsMixin, admin.StackedInline):  # type: ignore[type-arg]
    """OAuth 2.0 app and connection of an account, with Connect / Disconnect buttons."""

    model = OAuthConnection
    form = OAuthConnectionForm
    extra = 0
    max_num = 1
    can_delete = True
    verbose_name = _("OAuth 2.0 (XOAUTH2 / OAUTHBEARER)")
    verbose_name_plural = verbose_name
    readonly_fields = ("connection", "last_refresh_error")

    @admin.display(description=_("connection"))
    def connection(self, obj: OAuthConnection) -> str:
        if obj.pk is None:
            return gettext("Save the account first, then connect it.")
        connect = reverse("django_multismtp:oauth_connect", args=[obj.account_id])
        disconnect = reverse("django_multismtp:oauth_disconnect", args=[obj.account_id])
        back = reverse("admin:django_multismtp_smtpaccount_change", args=[obj.account_id])
        callback = reverse("django_multismtp:oauth_callback")
        label = oauth_providers.provider(obj.provider).label
        return format_html(
            '<strong class="oauth-state">{}</strong> '
            '<button type="submit" class="button" name="oauth-connect" '
            'formaction="{}?next={}" formmethod="post" formnovalidate>{}</button> '
            '<button type="submit" class="button" name="oauth-disconnect" '
            'formaction="{}?next={}" formmethod="post" formnovalidate>{}</button>'
            '<p class="help">{} <code class="oauth-redirect-uri">{}</code></p>',
            obj.get_state_display(),
            connect,
            back,
            gettext("Connect with %(provider)s") % {"provider": label},
            disconnect,
            back,
            gettext("Disconnect"),
            gettext("Redirect URI to register in the provider's console (this site's address +):"),
            callback,
        )


@admin.register(SmtpAccount)
class SmtpAccountAdmin(SecretFieldsMixin, ValidSelectionMixin, AccountAdminBase):  # type: ignore[misc]
    form = SmtpAccountForm
    inlines = (OAuthConnectionInline,)

    def get_inline_instances(self, request: HttpRequest, obj: Any = None) -> Any:
        # The OAuth section only for a saved account that logs in with OAuth: other
        # accounts' forms stay as they were (no inline management form to post).
        if obj is None or obj.auth_method not in ("xoauth2", "oauthbearer"):
            return []
        return super().get_inline_instances(request, obj)

    list_display = (
        "name",
        "purpose_label",
        "owner",
        "server",
        "from_email",
        "is_active",
        "status_badge",
        "updated_at",
    )
    # RelatedOnly: owners must not see every user name of the site in the sidebar.
    list_filter = (
        PurposeFilter,
        StatusFilter,
        "is_active",
        "is_site_default",
        ("owner", admin.RelatedOnlyFieldListFilter),
    )
    search_fields = ("name", "host", "from_email", "username")
    filter_horizontal = ("default_for",)
    readonly_fields = STATE_FIELDS
    fieldsets = (
        (
            _("Identity"),
            {
                "fields": (
                    "name",
                    "description",
                    "purpose",
                    "owner",
                    "default_for",
                    "is_site_default",
                    "priority",
                )
            },
        ),
        (_("Sender"), {"fields": ("from_email", "from_name", "reply_to", "allowed_senders")}),
        (
            _("Server"),
            {
                "fields": (
                    "preset",
                    "host",
                    "port",
                    "security",
                    "verify_certificates",
                    "ca_file",
                    "ehlo_hostname",
                    "timeout",
                    "public_host_only",
                )
            },
        ),
        (
            _("Authentication"),
            {"fields": ("auth_method", "username", "password", "clear_password")},
        ),
        (
            _("Limits"),
            {
                "fields": (
                    "limit_per_second",
                    "limit_per_minute",
                    "limit_per_hour",
                    "limit_per_day",
                    "max_connections",
                    "max_messages_per_connection",
                    "max_message_size",
                ),
                "classes": ("collapse",),
            },
        ),
        (
            _("State"),
            {"fields": ("is_active", *STATE_FIELDS)},
        ),
    )
    actions = [
        "test_connection",
        "send_test_email",
        "clear_rate_limit",
        "activate",
        "deactivate",
    ]
    change_form_template = "admin/django_multismtp/smtpaccount/change_form.html"
    test_results_template = "admin/django_multismtp/smtpaccount/test_results.html"
    send_code_template = "admin/django_multismtp/smtpaccount/send_code.html"
    confirm_template = "admin/django_multismtp/smtpaccount/confirm_code.html"

    # -- columns ----------------------------------------------------------------------
    @admin.display(description=_("purpose"), ordering="purpose")
    def purpose_label(self, obj: SmtpAccount) -> str:
        return str(conf.purposes().get(obj.purpose, obj.purpose))

    @admin.display(description=_("server"), ordering="host")
    def server(self, obj: SmtpAccount) -> str:
        return f"{obj.host}:{obj.port}"

    @admin.display(description=_("status"))
    def status_badge(self, obj: SmtpAccount) -> str:
        if obj.pk is None:
            return "-"
        key, label = obj.status(clock.now())
        oauth = getattr(obj, "oauth", None)
        if key != "inactive" and oauth is not None and oauth.state == "needs_reconnect":
            return _badge(
                "error",
                BADGE_COLOURS["error"],
                gettext("needs reconnect"),
                oauth.last_refresh_error,
            )
        return _badge(key, BADGE_COLOURS[key], label, obj.last_error if key == "error" else "")

    # -- scoping: owners see their own accounts ---------------------------------------
    def _global(self, request: HttpRequest, action: str = "change") -> bool:
        opts = self.opts
        return bool(request.user.has_perm(f"{opts.app_label}.{action}_{opts.model_name}"))

    def _owns_any(self, request: HttpRequest) -> bool:
        user = request.user
        return bool(
            user.is_active and user.is_staff and SmtpAccount.objects.filter(owner=user).exists()
        )

    def get_queryset(self, request: HttpRequest) -> QuerySet[SmtpAccount]:
        queryset = super().get_queryset(request).select_related("owner", "oauth")
        if self._global(request, "view") or self._global(request, "change"):
            return queryset
        return queryset.filter(owner=request.user.pk)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return super().has_module_permission(request) or self._owns_any(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if super().has_view_permission(request, obj):
            return True
        return self._own(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if super().has_change_permission(request, obj):
            return True
        return self._own(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if super().has_delete_permission(request, obj):
            return True
        return obj is not None and self._own(request, obj)

    def _own(self, request: HttpRequest, obj: Any) -> bool:
        if obj is None:
            return self._owns_any(request)
        return bool(request.user.is_staff and obj.owner_id == request.user.pk)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))
        if not self._global(request):
            # Owners manage their mailbox, not its routing or limits.
            fields += [
                "ca_file",  # a path on the web server: not for owners to probe
                "purpose",
                "owner",
                "default_for",
                "is_site_default",
                "priority",
                "limit_per_second",
                "limit_per_minute",
                "limit_per_hour",
                "limit_per_day",
                "max_connections",
                "max_messages_per_connection",
                "max_message_size",
                "public_host_only",
            ]
        return fields

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        if not self._global(request):
            # Owners type their own host, as on "My SMTP settings": public hosts only.
            form = type(form.__name__, (form,), {"public_hosts_only": True})
        return form

    def save_model(self, request: HttpRequest, obj: SmtpAccount, form: Any, change: bool) -> None:
        if not self._global(request):
            # ... and the account keeps that restriction when it connects.
            obj.public_host_only = True
        super().save_model(request, obj, form, change)
        preset = PRESETS.get(form.cleaned_data.get("preset") or "")
        # Only when the preset's server is what was saved (not overwritten by hand).
        if preset is not None and preset.caveat and obj.host == preset.host:
            self.message_user(request, f"{preset.label}: {preset.caveat}", messages.WARNING)

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        _warn_if_stalled(request)
        return super().changelist_view(request, extra_context)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> HttpResponse:
        # In red at the top of the form: what the saved settings expose (exposure.py).
        if obj is not None and obj.pk is not None:
            context["security_warnings"] = security_warnings(
                obj.host, obj.security, obj.verify_certificates
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    # -- extra pages ------------------------------------------------------------------
    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "<path:object_id>/confirm/",
                self.admin_site.admin_view(self.confirm_view),
                name="{}_{}_confirm".format(*info),
            ),
        ] + super().get_urls()

    def _context(self, request: HttpRequest, title: Any, **extra: Any) -> dict[str, Any]:
        request.current_app = self.admin_site.name
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            **extra,
        }

    # -- actions ----------------------------------------------------------------------
    def _changeable(
        self, request: HttpRequest, queryset: QuerySet[SmtpAccount]
    ) -> QuerySet[SmtpAccount]:
        """The accounts an action may change. With the global *view* permission the list
        shows every account, but staff without the global *change* permission act on
        their own accounts only."""
        if self._global(request):
            return queryset
        return queryset.filter(owner=request.user.pk)

    @admin.action(description=_("Test connection (no mail sent)"), permissions=["change"])
    def test_connection(
        self, request: HttpRequest, queryset: QuerySet[SmtpAccount]
    ) -> HttpResponse:
        queryset = self._changeable(request, queryset)
        results = [(account, ops.test_connection(account)) for account in queryset]
        context = self._context(request, _("Connection test results"), results=results)
        return TemplateResponse(request, self.test_results_template, context)

    @admin.action(description=_("Send test email with a confirmation code"), permissions=["change"])
    def send_test_email(
        self, request: HttpRequest, queryset: QuerySet[SmtpAccount]
    ) -> HttpResponse | None:
        accounts = list(self._changeable(request, queryset))
        form = SendCodeForm(
            request.POST if request.POST.get("post") else None,
            initial={"recipient": getattr(request.user, "email", "")},
        )
        if request.POST.get("post") and form.is_valid():
            if too_many(request, "send"):
                self.message_user(
                    request,
                    gettext("Too many codes sent recently. Wait a while and try again."),
                    messages.ERROR,
                )
                return None
            sent = []
            for position, account in enumerate(accounts):
                # Every message counts against the limit, not every request.
                if position and too_many(request, "send"):
                    self.message_user(
                        request,
                        gettext("Send limit reached after %(n)d account(s); try the rest later.")
                        % {"n": position},
                        messages.WARNING,
                    )
                    break
                outcome = verification.send_code(
                    account, form.cleaned_data["recipient"], user=request.user
                )
                sent.append((account, outcome.result))
            ok = [account for account, result in sent if result.ok]
            if len(accounts) == 1 and ok:
                self.message_user(
                    request,
                    gettext("Code sent to %(to)s. Paste it below.")
                    % {"to": form.cleaned_data["recipient"]},
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(self._confirm_url(ok[0]))
            context = self._context(
                request,
                _("Test email results"),
                results=sent,
                confirm=True,
                confirm_urls={a.pk: self._confirm_url(a) for a in ok},
            )
            return TemplateResponse(request, self.test_results_template, context)
        context = self._context(
            request,
            _("Send a test email with a confirmation code"),
            form=form,
            accounts=accounts,
            action="send_test_email",
        )
        return TemplateResponse(request, self.send_code_template, context)

    @admin.action(description=_("Clear rate limit"), permissions=["change"])
    def clear_rate_limit(self, request: HttpRequest, queryset: QuerySet[SmtpAccount]) -> None:
        for account in self._changeable(request, queryset):
            ops.clear_rate_limit(account)
        self.message_user(request, gettext("Rate limit cleared."), messages.SUCCESS)

    @admin.action(description=_("Activate"), permissions=["change"])
    def activate(self, request: HttpRequest, queryset: QuerySet[SmtpAccount]) -> None:
        queryset = self._changeable(request, queryset)
        count = queryset.update(is_active=True, updated_at=timezone.now())
        self.message_user(request, gettext("%(n)d account(s) activated.") % {"n": count})

    @admin.action(description=_("Deactivate"), permissions=["change"])
    def deactivate(self, request: HttpRequest, queryset: QuerySet[SmtpAccount]) -> None:
        queryset = self._changeable(request, queryset)
        count = queryset.update(is_active=False, updated_at=timezone.now())
        self.message_user(request, gettext("%(n)d account(s) deactivated.") % {"n": count})

    def _confirm_url(self, account: SmtpAccount) -> str:
        info = self.opts.app_label, self.opts.model_name
        return reverse(
            "admin:{}_{}_confirm".format(*info), args=[account.pk], current_app=self.admin_site.name
        )

    def confirm_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        try:
            pk = int(object_id)
        except ValueError:
            raise Http404 from None
        account = get_object_or_404(self.get_queryset(request), pk=pk)
        if not self.has_change_permission(request, account):
            raise Http404
        form = ConfirmCodeForm(request.POST or None)
        if request.method == "POST" and form.is_valid() and form.confirm(request, account):
            self.message_user(request, verification.Confirmation.VERIFIED.message, messages.SUCCESS)
            info = self.opts.app_label, self.opts.model_name
            return HttpResponseRedirect(
                reverse("admin:{}_{}_changelist".format(*info), current_app=self.admin_site.name)
            )
        context = self._context(
            request,
            _("Confirm the code for %(name)s") % {"name": account.name},
            form=form,
            account=account,
            original=account,
        )
        return TemplateResponse(request, self.confirm_template, context)


@admin.register(DeliveryLog)
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


def _warn_if_stalled(request: HttpRequest) -> None:
    """A banner on the account and outbox lists when queued mail waits with no worker
    (see :mod:`django_multismtp.stall`): a site that queues must run one."""
    if request.method != "GET":
        return
    stuck = stall.stalled(clock.now())
    if stuck is not None:
        messages.error(request, stuck.message())


@admin.register(OutboxMessage)
class OutboxMessageAdmin(SecretFieldsMixin, ValidSelectionMixin, OutboxAdminBase):  # type: ignore[misc]
    """Read-only rows with two actions: a person decides *when*, never *what*."""

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        _warn_if_stalled(request)
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
        return _badge(key, OUTBOX_COLOURS[key], OUTBOX_LABELS[key], obj.last_error)

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
