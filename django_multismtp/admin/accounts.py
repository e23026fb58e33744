"""The SMTP account admin: presets, status, test, send-code-and-confirm.

Extra pages are full admin pages (``admin_view``-wrapped, CSRF-protected, POST for
anything with side effects, permission-checked), following Django's own
``delete_selected`` two-step action. Staff without the model's global permissions see
and edit only the accounts they own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.views.main import ChangeList
from django.db.models import F, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from .. import clock, conf, ops, selection, verification
from ..exceptions import MultiSMTPConfigurationError
from ..exposure import security_warnings
from ..forms import ACCOUNT_FIELD_GROUPS, ConfirmCodeForm, SendCodeForm, SmtpAccountForm
from ..models import OAuthConnection, SmtpAccount
from ..oauth import providers as oauth_providers
from ..presets import PRESETS
from ..throttling import too_many
from .actions import ValidSelectionMixin
from .display import badge, warn_if_stalled
from .secrets import SecretFieldsMixin

if TYPE_CHECKING:
    AccountAdminBase = admin.ModelAdmin[SmtpAccount]
else:
    AccountAdminBase = admin.ModelAdmin


BADGE_COLOURS = {
    "verified": "#2e7d32",
    "unverified": "#6d6d6d",
    "rate_limited": "#b26a00",
    "error": "#c62828",
    "inactive": "#9e9e9e",
}


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


#: Owner vs "Default for users", in one line each (they are easily confused).
OWNERSHIP_HELP = {
    "owner": _(
        "Owner: the one user whose personal account this is; they may edit it, and only "
        "mail sent as them goes through it."
    ),
    "default_for": _(
        "Default for users: a shared account that these users' mail goes through unless "
        "they have their own; they cannot edit it."
    ),
}

#: Live state: shown, never edited (the backend and the actions maintain it).
STATE_FIELDS = (
    "status_badge",
    "pool",
    "connections_in_use",
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


def _local(moment: Any) -> Any:
    """A stored time as the site shows times (naive when USE_TZ is off)."""
    return timezone.localtime(moment) if timezone.is_aware(moment) else moment


class PurposeFilter(admin.SimpleListFilter):
    """Purposes by their labels (the field has no fixed choices: sites add purposes)."""

    title = _("purpose")
    parameter_name = "purpose"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return conf.purpose_choices()

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(purpose=self.value()) if self.value() else queryset


class PooledChangeList(ChangeList):
    """The account list, each shown account knowing the pool it belongs to (one query
    for the active accounts, whatever the page shows)."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        pools = selection.pools(SmtpAccount.objects.filter(is_active=True))
        for account in self.result_list:
            if account.is_active:  # an inactive account shares nothing
                account.pool_members = pools.get(selection.pool_key(account), [])


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
            "client_secret_expires",
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


class SmtpAccountAdmin(SecretFieldsMixin, ValidSelectionMixin, AccountAdminBase):  # type: ignore[misc]
    form = SmtpAccountForm
    inlines = (OAuthConnectionInline,)

    def get_inline_instances(self, request: HttpRequest, obj: Any = None) -> Any:
        # The OAuth section only for a saved account that logs in with OAuth: other
        # accounts' forms stay as they were (no inline management form to post).
        if obj is None or obj.auth_method not in ("xoauth2", "oauthbearer"):
            return []
        return super().get_inline_instances(request, obj)

    # The status right after the name: at 1366 pixels with the sidebar open, what decides
    # "does it work" must not be the column that falls off the right edge.
    list_display = (
        "name",
        "status_badge",
        "purpose_label",
        "owner",
        "server",
        "from_email",
        "is_active",
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
    # Built from the form's groups, so a field added to the form is never missing here.
    fieldsets = (
        (_("Identity"), {"fields": ACCOUNT_FIELD_GROUPS["identity"]}),
        (_("Sender"), {"fields": ACCOUNT_FIELD_GROUPS["sender"]}),
        (_("Server"), {"fields": ACCOUNT_FIELD_GROUPS["server"]}),
        (
            _("Authentication"),
            {"fields": (*ACCOUNT_FIELD_GROUPS["authentication"], "password", "clear_password")},
        ),
        (
            _("Limits"),
            {"fields": ACCOUNT_FIELD_GROUPS["limits"], "classes": ("collapse",)},
        ),
        (_("State"), {"fields": (*ACCOUNT_FIELD_GROUPS["state"], *STATE_FIELDS)}),
    )

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        """A new account starts with the provider preset and shows only what it needs:
        no State (nothing has happened yet), no "keep the stored password" (none is)."""
        fieldsets = super().get_fieldsets(request, obj)
        if obj is not None:
            return fieldsets
        skip = {"preset", "clear_password"}
        trimmed = [
            (title, {**options, "fields": [f for f in options["fields"] if f not in skip]})
            for title, options in fieldsets
            if title != _("State")
        ]
        return [(_("Provider"), {"fields": ["preset"]}), *trimmed]

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
        label = str(conf.purposes().get(obj.purpose, obj.purpose))
        members = getattr(obj, "pool_members", None)
        if not members:
            return label
        policy = self._policy(obj)
        return format_html(
            '{}<br><small class="multismtp-pool" title="{}">{}</small>',
            label,
            self._pool_text(obj, members, policy),
            ngettext("pool of %(count)d, %(policy)s", "pool of %(count)d, %(policy)s", len(members))
            % {"count": len(members), "policy": policy},
        )

    @admin.display(description=_("pool"))
    def pool(self, obj: SmtpAccount) -> str:
        """Which accounts share this one's mail (selection.pools), and by what policy."""
        if obj.pk is None or not obj.is_active:
            return "-"
        members = selection.pools(SmtpAccount.objects.filter(is_active=True)).get(
            selection.pool_key(obj), []
        )
        if not members:
            return gettext(
                "None: no other active account has the same purpose, priority and owner."
            )
        return self._pool_text(obj, members, self._policy(obj))

    @admin.display(description=_("connections in use"))
    def connections_in_use(self, obj: SmtpAccount) -> str:
        """Who holds the account's connection slots now: ``max_connections`` is one
        budget for every process (see :mod:`django_multismtp.slots`), so a site whose
        mail waits as *busy* needs to see which processes (host and pid) hold it, and
        until when their leases run if they died."""
        if obj.pk is None:
            return "-"
        now = clock.now()
        allowed = obj.connection_budget
        slots = list(
            obj.connection_slots.filter(slot_no__lt=allowed)
            .exclude(holder="")
            .filter(expires_at__gte=now)
            .order_by("slot_no")
        )
        summary = gettext("%(held)d of %(allowed)d") % {"held": len(slots), "allowed": allowed}
        holders: dict[str, list[Any]] = {}
        for slot in slots:
            host, _sep, rest = slot.holder.partition(":")
            pid = rest.partition(":")[0]
            holders.setdefault(f"{host} (pid {pid})", []).append(slot.expires_at)
        if not holders:
            return summary
        parts = [
            ngettext(
                "%(holder)s: %(count)d, lease until %(until)s",
                "%(holder)s: %(count)d, leases until %(until)s",
                len(leases),
            )
            % {
                "holder": holder,
                "count": len(leases),
                "until": _local(max(leases)).strftime("%H:%M:%S"),
            }
            for holder, leases in holders.items()
        ]
        return f"{summary}: {'; '.join(parts)}"

    def _pool_text(self, obj: SmtpAccount, members: list[SmtpAccount], policy: str) -> str:
        return gettext(
            "Shares its mail with %(others)s (POOL_POLICY %(policy)s), for mail each may send."
        ) % {
            "others": ", ".join(m.name for m in members if m.pk != obj.pk),
            "policy": policy,
        }

    @staticmethod
    def _policy(obj: SmtpAccount) -> str:
        try:
            return conf.pool_policy(obj.purpose)
        except MultiSMTPConfigurationError:  # check E007 says so; the page still shows
            return "?"

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> Any:
        return PooledChangeList

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
            return badge(
                "error",
                BADGE_COLOURS["error"],
                gettext("needs reconnect"),
                oauth.last_refresh_error,
            )
        if key != "error":
            return badge(key, BADGE_COLOURS[key], label)
        # Short in the list (the reply code); the whole error in the tooltip.
        code = obj.last_error_code or gettext("failed")
        short = gettext("last error: %(code)s") % {"code": code}
        return badge(key, BADGE_COLOURS[key], short, obj.last_error)

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
        # Owner and "Default for users" look alike; one line each says which is which.
        kwargs["help_texts"] = {**OWNERSHIP_HELP, **kwargs.get("help_texts", {})}
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
        warn_if_stalled(request)
        self._warn_needs_reconnect(request)
        return super().changelist_view(request, extra_context)

    def _warn_needs_reconnect(self, request: HttpRequest) -> None:
        """A banner over the list: an account whose OAuth sign-in was refused for good
        sends nothing until a person clicks "Connect" again; the badge alone is easy to
        miss in a long list. Only accounts this user may see (owners: their own)."""
        if request.method != "GET":
            return
        names = list(
            self.get_queryset(request)
            .filter(is_active=True, oauth__state="needs_reconnect")
            .order_by("name")
            .values_list("name", flat=True)
        )
        if names:
            messages.error(
                request,
                ngettext(
                    "The account %(names)s needs reconnecting: its OAuth 2.0 sign-in was "
                    "refused (consent withdrawn, password changed or sign-in expired), so it "
                    "sends nothing. Open it and click \u201cConnect\u201d.",
                    "The accounts %(names)s need reconnecting: their OAuth 2.0 sign-in was "
                    "refused (consent withdrawn, password changed or sign-in expired), so they "
                    "send nothing. Open each and click \u201cConnect\u201d.",
                    len(names),
                )
                % {"names": ", ".join(f"\u201c{name}\u201d" for name in names)},
            )

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> HttpResponse:
        context["account_tools"] = [
            ("test_connection", gettext("Test connection")),
            ("send_test_email", gettext("Send test e-mail")),
        ]
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
