"""Forms for the admin and the "My SMTP settings" page.

The password is write-only (never rendered back; empty keeps the stored one; a checkbox
clears it). A provider preset fills host, port, security and the login method (an OAuth
preset chooses OAuth 2.0 (XOAUTH2), a password preset takes an OAuth method back to
Automatic): on submit without JavaScript (when the host is left empty), and at once with
JavaScript, which also shows the provider's caveat and the OAuth section. Every error
names what to change.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import socket
from typing import TYPE_CHECKING, Any

from django import forms
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_variables

from . import conf
from .models import OAuthConnection, SmtpAccount
from .models.account import _is_host
from .netguard import InternalAddressError, public_addresses
from .presets import PRESETS, preset_choices
from .throttling import too_many
from .transport import tls_file_error
from .verification import Confirmation, confirm_code

RESOLVE_TIMEOUT = 3.0
_resolver = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="multismtp-dns")


class PresetSelect(forms.Select):
    """A select that carries the presets as JSON for the optional script."""

    class Media:
        js = ("django_multismtp/presets.js",)

    def render(self, name: str, value: Any, attrs: Any = None, renderer: Any = None) -> SafeString:
        html = super().render(name, value, attrs, renderer)
        data = {
            key: {
                "host": p.host,
                "port": p.port,
                "security": p.security.value,
                "caveat": str(p.caveat),
                "username_hint": str(p.username_hint),
                "auth_method": p.auth_method,
                "oauth_provider": p.oauth_provider,
            }
            for key, p in PRESETS.items()
        }
        selected = PRESETS.get(str(value or ""))
        caveat = str(selected.caveat) if selected else ""
        payload = json.dumps(data).replace("<", "\\u003c")
        return format_html(
            '{}<script type="application/json" id="multismtp-presets">{}</script>'
            '<p class="help multismtp-caveat" id="multismtp-caveat">{}</p>'
            '<p class="help multismtp-oauth-note" id="multismtp-oauth-note" '
            'style="display: none">{}</p>',
            html,
            mark_safe(payload),  # noqa: S308 (JSON with "<" escaped)
            caveat,
            _(
                "OAuth 2.0: no password. Save, then click \u201cConnect\u201d in the OAuth 2.0 "
                "section to sign in to the mailbox."
            ),
        )


def resolve_error(host: str, port: int, *, public_only: bool) -> str | None:
    """A message for a host that does not resolve (or is internal), else None."""
    future = _resolver.submit(public_addresses if public_only else socket.getaddrinfo, host, port)
    try:
        future.result(timeout=RESOLVE_TIMEOUT)
    except InternalAddressError:
        return str(
            _(
                "%(host)s resolves to an internal address (loopback, private or link-local "
                "network), which is not allowed here. Use your provider's public SMTP host."
            )
            % {"host": host}
        )
    except (socket.gaierror, UnicodeError, ValueError):
        return str(_("The host %(host)s does not resolve. Check its spelling.") % {"host": host})
    except concurrent.futures.TimeoutError:
        return str(_("Looking up %(host)s took too long. Check the host name.") % {"host": host})
    except OSError as exc:
        return str(_("The host %(host)s cannot be used: %(error)s") % {"host": host, "error": exc})
    return None


class AccountFormMixin(forms.ModelForm):  # type: ignore[type-arg]
    """What both account forms share: presets, the write-only password, host checks."""

    preset = forms.ChoiceField(
        label=_("Provider preset"),
        required=False,
        choices=preset_choices,
        widget=PresetSelect,
        help_text=_("Fills host, port, security and authentication (when the host is empty)."),
    )
    password = forms.CharField(
        label=_("Password"),
        required=False,
        strip=False,
        max_length=255,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=_("Leave empty to keep the stored password."),
    )
    clear_password = forms.BooleanField(label=_("Clear the stored password"), required=False)

    #: Check that the host resolves to public addresses only (self-service).
    public_hosts_only = False
    #: Give an account saved with an OAuth preset its OAuth section only when the site
    #: has the provider's app (MULTISMTP["OAUTH_PROVIDERS"]): an owner cannot set one up.
    oauth_needs_site_app = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Write-only: keep the stored password out of the form (model_to_dict put it in
        # initial), so it is never a "changed" field when left empty.
        self.initial.pop("password", None)
        if "host" in self.fields:
            self.fields["host"].required = False
        # (The admin leaves the field out where it shows the password read-only.)
        if "password" in self.fields and self.instance.pk and self.instance.password:
            self.fields["password"].help_text = _(
                "A password is stored. Leave empty to keep it, or type a new one."
            )

    @sensitive_variables("data")
    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        preset = PRESETS.get(data.get("preset") or "")
        if preset is not None and not data.get("host"):
            data["host"] = preset.host
            data["port"] = preset.port
            data["security"] = preset.security.value
            if "auth_method" in self.fields:  # as presets.js does
                data["auth_method"] = preset.auth_method_for(str(data.get("auth_method") or ""))
            if preset.username_hint == "apikey" and not data.get("username"):
                data["username"] = "apikey"
        if not data.get("host") and "host" not in self.errors:
            self.add_error("host", _("Enter the SMTP host, or choose a provider preset."))
        if data.get("password") and data.get("clear_password"):
            self.add_error(
                "clear_password",
                _("Either type a new password or clear the stored one, not both."),
            )
        host, port = data.get("host"), data.get("port")
        # Resolve only a well-formed host and port: the model reports the others, and
        # getaddrinfo() raises OverflowError for a port beyond the C range.
        if (
            host
            and _is_host(str(host))
            and isinstance(port, int)
            and 0 < port <= 65535
            and "host" not in self.errors
        ):
            public = self.public_hosts_only and not conf.get_setting("ALLOW_INTERNAL_HOSTS")
            error = resolve_error(str(host), port, public_only=public)
            if error:
                self.add_error("host", error)
        return data

    def clean_from_name(self) -> str:
        # It becomes part of the From header: a line break would make every message fail.
        value = str(self.cleaned_data.get("from_name") or "")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            raise forms.ValidationError(
                _("The from name cannot contain line breaks or other control characters.")
            )
        return value

    def clean_ca_file(self) -> str:
        # A path on this server, read when connecting: a missing file must be reported
        # now, not later as a server that refuses connections.
        value = str(self.cleaned_data.get("ca_file") or "").strip()
        if value and (problem := tls_file_error(value)):
            raise forms.ValidationError(
                _("This CA file cannot be used: %(problem)s.") % {"problem": problem}
            )
        return value

    def clean_ehlo_hostname(self) -> str:
        # It is sent in the EHLO command: the SMTP client refuses spaces and line breaks.
        value = str(self.cleaned_data.get("ehlo_hostname") or "")
        if value and not _is_host(value):
            raise forms.ValidationError(
                _("Enter a host name such as mail.example.com, without spaces, or leave it empty.")
            )
        return value

    @sensitive_variables("password")
    def _post_clean(self) -> None:
        # Apply what clean() filled in from a preset before the model validates it.
        for name in ("host", "port", "security", "auth_method", "username"):
            if name in self.cleaned_data and name in self.fields:
                setattr(self.instance, name, self.cleaned_data[name])
        password = self.cleaned_data.get("password")
        if self.cleaned_data.get("clear_password"):
            self.instance.password = ""
        elif password:
            self.instance.password = str(password)
        # The password is write-only: never let construct_instance() copy the (usually
        # empty) typed value over the stored one. The admin's form lists "password" among
        # its fields (from the fieldsets), so it would otherwise be wiped on every save.
        self.cleaned_data.pop("password", None)
        super()._post_clean()  # type: ignore[misc]

    def _save_m2m(self) -> None:
        # Runs once the account is saved (form.save(), or the admin's save_related()).
        super()._save_m2m()  # type: ignore[misc]
        self._add_oauth_section()

    def _add_oauth_section(self) -> None:
        """An account saved with an OAuth preset gets its OAuth connection (the section
        with "Connect with <provider>"), unless it has one."""
        preset = PRESETS.get(self.cleaned_data.get("preset") or "")
        account = self.instance
        if (
            preset is None
            or not preset.oauth_provider
            or account.auth_method != preset.auth_method
            or OAuthConnection.objects.filter(account=account).exists()
        ):
            return
        if self.oauth_needs_site_app and not conf.oauth_provider_settings(
            preset.oauth_provider
        ).get("client_id"):
            return
        OAuthConnection.objects.create(account=account, provider=preset.oauth_provider)


#: The account's form fields, in the groups the admin shows them under (its fieldsets
#: are built from these): a new field is added here once, and appears in both.
ACCOUNT_FIELD_GROUPS: dict[str, tuple[str, ...]] = {
    "identity": (
        "name",
        "description",
        "purpose",
        "owner",
        "default_for",
        "is_site_default",
        "priority",
    ),
    "sender": ("from_email", "from_name", "reply_to", "allowed_senders"),
    "server": (
        "preset",
        "host",
        "port",
        "security",
        "verify_certificates",
        "ca_file",
        "ehlo_hostname",
        "timeout",
        "public_host_only",
    ),
    "authentication": ("auth_method", "username"),
    "limits": (
        "limit_per_second",
        "limit_per_minute",
        "limit_per_hour",
        "limit_per_day",
        "max_connections",
        "max_messages_per_connection",
        "max_message_size",
    ),
    "state": ("is_active",),
}
ACCOUNT_FIELDS = tuple(name for group in ACCOUNT_FIELD_GROUPS.values() for name in group)


if TYPE_CHECKING:
    UsersFieldBase = forms.ModelMultipleChoiceField[Any]
else:
    UsersFieldBase = forms.ModelMultipleChoiceField


class UsersField(UsersFieldBase):
    """Refuses integer keys beyond 64 bits, which SQLite cannot even compare (OverflowError
    from Django's ``pk__in`` query, a server error) instead of reporting a bad choice."""

    def _check_values(self, value: Any) -> Any:
        for pk in value:
            text = str(pk).strip()
            if re.fullmatch(r"-?[0-9]+", text) and (
                len(text) > 20 or not -(2**63) <= int(text) < 2**63
            ):
                raise forms.ValidationError(
                    self.error_messages["invalid_pk_value"],
                    code="invalid_pk_value",
                    params={"pk": pk},
                )
        return super()._check_values(value)  # type: ignore[misc]


class SmtpAccountForm(AccountFormMixin):
    purpose = forms.ChoiceField(label=_("Purpose"), choices=conf.purpose_choices)

    class Meta:
        model = SmtpAccount
        fields = ACCOUNT_FIELDS
        field_classes = {"default_for": UsersField}


SELF_SERVICE_FIELDS = (
    "preset",
    "from_email",
    "from_name",
    "reply_to",
    "host",
    "port",
    "security",
    "verify_certificates",
    "auth_method",
    "username",
)


def _free_name(base: str) -> str:
    """``base``, or ``base 2``, ``base 3``...: account names are unique, and the form
    does not show the name (a second account, or a name taken by someone else, would
    otherwise fail with an IntegrityError)."""
    name, number = base[:100], 1
    while SmtpAccount.objects.filter(name=name).exists():
        number += 1
        suffix = f" {number}"
        name = base[: 100 - len(suffix)] + suffix
    return name


class MySmtpSettingsForm(AccountFormMixin):
    """The account form a staff user fills in for their own mailbox."""

    public_hosts_only = True
    oauth_needs_site_app = True

    class Meta:
        model = SmtpAccount
        fields = SELF_SERVICE_FIELDS

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        self.user = user
        super().__init__(*args, **kwargs)
        # The host is typed here, so the account connects to public addresses only
        # (also an account an administrator made, or DNS could answer differently later).
        self.instance.public_host_only = True
        if self.instance.pk is None:
            self.instance.owner = user
            self.instance.purpose = conf.default_purpose()
            self.instance.name = _free_name(f"{user.get_username()} (personal)")
            email = str(getattr(user, "email", "") or "")
            if email and not self.initial.get("from_email"):
                self.initial["from_email"] = email
        field_order = [*SELF_SERVICE_FIELDS, "password", "clear_password"]
        self.order_fields(field_order)


class SendCodeForm(forms.Form):
    recipient = forms.EmailField(
        label=_("Send the code to"),
        max_length=254,
        help_text=_("A mailbox you can read. The message goes out through this account."),
    )


class ConfirmCodeForm(forms.Form):
    code = forms.CharField(
        label=_("Confirmation code"),
        max_length=32,
        help_text=_("The code from the test message, e.g. K7PX2M9Q."),
    )

    def confirm(self, request: HttpRequest, account: SmtpAccount) -> bool:
        """Check the (valid) form's code, rate-limited per user and IP; True if verified.

        The admin and "My SMTP settings" both confirm through here; refusals become form
        errors a person can act on.
        """
        if too_many(request, "confirm"):
            self.add_error(None, _("Too many attempts. Wait a while and try again."))
            return False
        result = confirm_code(account, self.cleaned_data["code"], user=request.user)
        if result != Confirmation.VERIFIED:
            self.add_error("code", result.message)
            return False
        return True
