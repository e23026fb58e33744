"""The SMTP account: who may use it, how to reach the server, its limits and live state."""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import re
from email.utils import formataddr
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, validate_email
from django.db import models
from django.db.models import F, Q, Value
from django.db.models.functions import Length, Replace
from django.db.models.lookups import GreaterThan
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_variables

from .. import conf
from ..fields import EncryptedPasswordField, Undecryptable
from ..transport import AuthMethod, Security, ServerConfig, tls_file_error
from .fields import ReplyCodeField, ReplyTextField

__all__ = ["AuthMethod", "Security", "SmtpAccount"]

SECURITY_CHOICES = [
    (Security.STARTTLS.value, _("STARTTLS (port 587)")),
    (Security.TLS.value, _("Implicit TLS / SSL (port 465)")),
    (Security.OPPORTUNISTIC.value, _("STARTTLS when offered, else plain")),
    (Security.NONE.value, _("None (plain SMTP, port 25)")),
]
AUTH_CHOICES = [
    (AuthMethod.AUTO.value, _("Automatic (best offered)")),
    (AuthMethod.PLAIN.value, "PLAIN"),
    (AuthMethod.LOGIN.value, "LOGIN"),
    (AuthMethod.CRAM_MD5.value, "CRAM-MD5"),
    (AuthMethod.XOAUTH2.value, _("OAuth 2.0 (XOAUTH2)")),
    (AuthMethod.OAUTHBEARER.value, _("OAuth 2.0 (OAUTHBEARER)")),
    (AuthMethod.NONE.value, _("None (no login)")),
]
#: (period name, seconds, model field) of the sending limits, smallest first.
LIMIT_PERIODS = (
    ("second", 1, "limit_per_second"),
    ("minute", 60, "limit_per_minute"),
    ("hour", 3600, "limit_per_hour"),
    ("day", 86400, "limit_per_day"),
)
_HOST_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_.-]+$")


def _is_host(host: str) -> bool:
    """A host name or IP address; a colon only in an (unbracketed) IPv6 address."""
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    return bool(_HOST_RE.match(host))


def parse_sender_list(text: str) -> list[str]:
    """Split 'allowed senders' (one per line or comma-separated), lower-cased."""
    return list(_sender_entries(text or ""))


# Selection asks every candidate account whether it may send each message's From: a
# split of the same text per message and account was a tenth of preparing a batch.
# A pure function of the text, so remembering it changes nothing but the time.
@functools.lru_cache(maxsize=512)
def _sender_entries(text: str) -> tuple[str, ...]:
    return tuple(item.strip().lower() for item in re.split(r"[\s,;]+", text) if item.strip())


def sender_matches(entry: str, address: str) -> bool:
    """An entry is a full address, ``@domain`` or ``domain``; case-insensitive."""
    address = address.lower()
    if "@" in entry.lstrip("@"):
        return entry == address
    domain = entry.lstrip("@")
    return address.rpartition("@")[2] == domain


def validate_account_name(name: str) -> None:
    """Refuse names made only of digits: a hint that is a number means a primary key,
    so such a name could be confused with another account's id (and receive its mail)."""
    text = str(name).strip()
    if text.isascii() and text.isdigit():
        raise ValidationError(
            _(
                "An account name cannot be only digits: numbers are how mail names an "
                "account by its id. Add a letter, for example “account-%(name)s”."
            ),
            code="digits_only",
            params={"name": text},
        )


def _without_digits(expression: Any) -> Any:
    for digit in "0123456789":
        expression = Replace(expression, Value(digit), Value(""))
    return expression


#: The database's own guard for :func:`validate_account_name` (code that skips model
#: validation, such as ``objects.create()`` or ``update()``): a name must keep at least
#: one character once its digits are removed. Plain REPLACE and LENGTH, which every
#: database (and a bare ``sqlite3`` shell) has, rather than a regular expression.
NAME_NOT_DIGITS = models.CheckConstraint(
    condition=GreaterThan(Length(_without_digits(F("name"))), 0),
    name="multismtp_account_name_not_digits",
    violation_error_message=_(
        "An account name cannot be only digits: numbers are how mail names an account "
        "by its id. Add a letter."
    ),
)


def _limit_field(name: str, label: Any) -> models.PositiveIntegerField[Any, Any]:
    return models.PositiveIntegerField(
        label,
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text=_("Leave empty for no limit."),
    )


class SmtpAccount(models.Model):
    # Identity
    name = models.CharField(
        _("name"), max_length=100, unique=True, validators=[validate_account_name]
    )
    description = models.TextField(_("description"), blank=True)
    purpose = models.CharField(
        _("purpose"),
        max_length=50,
        default="system",
        db_index=True,
        help_text=_("What mail this account sends: system, customer service, campaigns..."),
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("owner"),
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="smtp_accounts",
        help_text=_("A personal account: only mail sent as this user goes through it."),
    )
    default_for = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        verbose_name=_("default for users"),
        blank=True,
        related_name="default_smtp_accounts",
        help_text=_("Mail sent as these users goes through this account."),
    )
    is_site_default = models.BooleanField(
        _("site default for its purpose"),
        default=False,
        help_text=_("Used when nothing more specific matches. One per purpose."),
    )
    priority = models.PositiveIntegerField(
        _("priority"), default=100, help_text=_("Lower numbers are tried first.")
    )

    # Sender
    from_email = models.EmailField(_("from email"), max_length=254)
    from_name = models.CharField(_("from name"), max_length=100, blank=True)
    reply_to = models.EmailField(_("reply-to"), max_length=254, blank=True)
    allowed_senders = models.TextField(
        _("allowed From addresses"),
        blank=True,
        help_text=_(
            "Addresses or domains (example.com) this account may send as, one per line. "
            "The from email is always allowed."
        ),
    )

    # Server
    #: The provider preset the account was set up with (presets.PRESETS key, or ""):
    #: it picks the provider's own hint for a rejected password.
    preset = models.CharField(_("provider preset"), max_length=32, blank=True, default="")
    host = models.CharField(_("host"), max_length=253)
    port = models.PositiveIntegerField(
        _("port"), default=587, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    security = models.CharField(
        _("security"), max_length=20, choices=SECURITY_CHOICES, default=Security.STARTTLS.value
    )
    verify_certificates = models.BooleanField(_("verify certificates"), default=True)
    ca_file = models.CharField(
        _("CA file"),
        max_length=500,
        blank=True,
        help_text=_("Path to a CA bundle on the server, for a private certificate authority."),
    )
    ehlo_hostname = models.CharField(
        _("EHLO host name"),
        max_length=253,
        blank=True,
        help_text=_("Name announced to the server; empty for this machine's name."),
    )
    public_host_only = models.BooleanField(
        _("public hosts only"),
        default=False,
        help_text=_(
            "Refuse to connect when the host resolves to a loopback, private or link-local "
            "address. Set for accounts users enter themselves; ALLOW_INTERNAL_HOSTS overrides."
        ),
    )
    timeout = models.PositiveIntegerField(
        _("timeout (seconds)"),
        default=30,
        validators=[MinValueValidator(1), MaxValueValidator(600)],
    )

    # Authentication
    auth_method = models.CharField(
        _("authentication"), max_length=20, choices=AUTH_CHOICES, default=AuthMethod.AUTO.value
    )
    username = models.CharField(_("user name"), max_length=254, blank=True)
    # Typed as Any: a str, or Undecryptable when the current keys cannot read it (or the
    # Ciphertext loaddata leaves in memory). A secret: never displayed or dumped in clear.
    password: Any = EncryptedPasswordField(_("password"), max_length=255, blank=True, default="")

    # Limits
    limit_per_second = _limit_field("limit_per_second", _("messages per second"))
    limit_per_minute = _limit_field("limit_per_minute", _("messages per minute"))
    limit_per_hour = _limit_field("limit_per_hour", _("messages per hour"))
    limit_per_day = _limit_field("limit_per_day", _("messages per day"))
    max_connections = models.PositiveIntegerField(
        _("max connections"), default=1, validators=[MinValueValidator(1), MaxValueValidator(50)]
    )
    max_messages_per_connection = models.PositiveIntegerField(
        _("max messages per connection"), null=True, blank=True, validators=[MinValueValidator(1)]
    )
    max_message_size = models.PositiveIntegerField(
        _("max message size (bytes)"), null=True, blank=True, validators=[MinValueValidator(1)]
    )

    # State
    is_active = models.BooleanField(_("active"), default=True)
    verified_at = models.DateTimeField(_("verified at"), null=True, blank=True)
    verified_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("verified by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    rate_limited_until = models.DateTimeField(_("rate limited until"), null=True, blank=True)
    consecutive_throttles = models.PositiveIntegerField(default=0, editable=False)
    last_error = ReplyTextField(_("last error"), blank=True)
    last_error_code = ReplyCodeField(_("last error code"), null=True, blank=True)
    last_error_at = models.DateTimeField(_("last error at"), null=True, blank=True)
    last_success_at = models.DateTimeField(_("last success at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    #: Fields whose change makes an earlier verification meaningless.
    CONNECTION_FIELDS = ("host", "port", "username", "password", "security")

    class Meta:
        verbose_name = _("SMTP account")
        verbose_name_plural = _("accounts")
        ordering = ["priority", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["purpose"],
                condition=Q(is_site_default=True),
                name="multismtp_one_site_default_per_purpose",
                violation_error_message=_(
                    "Another account is already the site default for this purpose. "
                    "Untick 'site default' here or on the other account."
                ),
            ),
            NAME_NOT_DIGITS,
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        # A verification proves one server and login; a different one must be proven again.
        if self.pk is not None and self.connection_changed():
            self.verified_at = None
            self.verified_by = None
            update_fields = kwargs.get("update_fields")
            if update_fields is not None:
                kwargs["update_fields"] = {*update_fields, "verified_at", "verified_by"}
        super().save(*args, **kwargs)
        self._loaded_connection = self._connection_values()

    # -- verification ---------------------------------------------------------------
    @classmethod
    def from_db(cls, db: Any, field_names: Any, values: Any, **kwargs: Any) -> SmtpAccount:
        instance = super().from_db(db, field_names, values, **kwargs)
        instance._loaded_connection = instance._connection_values()
        return instance

    def _connection_values(self) -> tuple[Any, ...] | None:
        if any(f in self.get_deferred_fields() for f in self.CONNECTION_FIELDS):
            return None
        return tuple(getattr(self, f) for f in self.CONNECTION_FIELDS)

    def connection_changed(self) -> bool:
        """Did host, port, user name, password or security change since loading?"""
        loaded = getattr(self, "_loaded_connection", None)
        return loaded is not None and loaded != self._connection_values()

    @property
    def has_current_error(self) -> bool:
        """Is ``last_error`` still news: it happened after the last success?

        ``last_error`` is kept after a later test or send succeeds (it says what went wrong
        last time), so every page that shows it as the account's state asks this first.
        """
        return self.last_error_at is not None and (
            self.last_success_at is None or self.last_error_at > self.last_success_at
        )

    def status(self, now: dt.datetime) -> tuple[str, str]:
        """``(key, label)`` for badges: inactive, rate_limited, error, verified, unverified."""
        if not self.is_active:
            return "inactive", str(_("inactive"))
        if self.is_rate_limited(now):
            assert self.rate_limited_until is not None
            return "rate_limited", str(_("rate limited until %(time)s")) % {
                "time": self.rate_limited_until.strftime("%Y-%m-%d %H:%M UTC")
            }
        if self.has_current_error:
            return "error", str(_("last error: %(error)s")) % {
                "error": self.last_error.splitlines()[0][:40] if self.last_error else ""
            }
        if self.verified_at:
            return "verified", str(_("verified"))
        return "unverified", str(_("not verified"))

    @property
    def connection_budget(self) -> int:
        """How many connections every process together may open (``max_connections``,
        at least one): the account's number of connection slots."""
        return max(int(self.max_connections or 1), 1)

    # -- sender rules -----------------------------------------------------------------
    def sender_list(self) -> list[str]:
        return parse_sender_list(self.allowed_senders)

    def may_send(self, address: str) -> bool:
        """May this account send mail whose From is ``address``?"""
        address = (address or "").lower()
        if address and address == (self.from_email or "").lower():
            return True
        return any(
            sender_matches(entry, address) for entry in _sender_entries(self.allowed_senders or "")
        )

    def formatted_from(self) -> str:
        return formataddr((self.from_name, self.from_email)) if self.from_name else self.from_email

    # -- limits and state -----------------------------------------------------------
    def limits(self) -> list[tuple[str, int, int]]:
        """``(period, seconds, limit)`` for every configured limit."""
        return [
            (period, seconds, value)
            for period, seconds, field in LIMIT_PERIODS
            if (value := getattr(self, field))
        ]

    def is_rate_limited(self, now: dt.datetime) -> bool:
        return self.rate_limited_until is not None and self.rate_limited_until > now

    @property
    def has_undecryptable_password(self) -> bool:
        return isinstance(self.password, Undecryptable)

    @sensitive_variables("password")
    def server_config(self) -> ServerConfig:
        field = self._meta.get_field("password")
        assert isinstance(field, EncryptedPasswordField)
        password = field.reveal(self.password)
        return ServerConfig(
            host=self.host,
            port=self.port,
            security=Security(self.security),
            verify_certificates=self.verify_certificates,
            ca_file=self.ca_file,
            ehlo_hostname=self.ehlo_hostname,
            timeout=float(self.timeout),
            auth_method=AuthMethod(self.auth_method),
            username=self.username,
            password="" if isinstance(password, Undecryptable) else (password or ""),
            password_error=isinstance(password, Undecryptable),
            max_messages_per_connection=self.max_messages_per_connection,
            max_connections=self.connection_budget,
            public_only=self.public_host_only and not conf.get_setting("ALLOW_INTERNAL_HOSTS"),
            key=f"account:{self.pk}",
        )

    # -- validation -----------------------------------------------------------------
    def clean(self) -> None:
        errors: dict[str, list[Any]] = {}

        def add(field: str, message: Any) -> None:
            errors.setdefault(field, []).append(message)

        purposes = conf.purposes()
        if self.purpose not in purposes:
            add(
                "purpose",
                _("Unknown purpose %(purpose)r. Choose one of: %(choices)s.")
                % {"purpose": self.purpose, "choices": ", ".join(purposes)},
            )
        host = (self.host or "").strip()
        if host and not _is_host(host):
            add(
                "host",
                _("Enter a host name such as smtp.example.com, without smtp:// or a port."),
            )
        security, port = self.security, self.port
        if security == Security.TLS and port in (25, 587):
            add(
                "port",
                _(
                    "Port %(port)s expects STARTTLS or plain SMTP, not implicit TLS. Use port "
                    "465 for implicit TLS, or choose STARTTLS."
                )
                % {"port": port},
            )
        if security in (Security.STARTTLS, Security.NONE, Security.OPPORTUNISTIC) and port == 465:
            add(
                "port",
                _("Port 465 expects implicit TLS. Choose 'Implicit TLS', or use port 587."),
            )
        explicit_auth = self.auth_method in (
            AuthMethod.PLAIN,
            AuthMethod.LOGIN,
            AuthMethod.CRAM_MD5,
        )
        if explicit_auth and not self.username:
            add("username", _("Enter the user name to log in with, or choose no authentication."))
        if self.from_email:
            try:
                validate_email(self.from_email)
            except ValidationError:
                pass  # EmailField reports it
            else:
                allowed = self.sender_list()
                if allowed and not any(sender_matches(e, self.from_email) for e in allowed):
                    add(
                        "from_email",
                        _(
                            "%(email)s is not among the allowed From addresses of this "
                            "account. Add it (or its domain) there."
                        )
                        % {"email": self.from_email},
                    )
        for entry in self.sender_list():
            candidate = entry if "@" in entry.lstrip("@") else f"x@{entry.lstrip('@')}"
            try:
                validate_email(candidate)
            except ValidationError:
                add(
                    "allowed_senders",
                    _("%(entry)r is neither an email address nor a domain.") % {"entry": entry},
                )
        if self.ca_file and (problem := tls_file_error(self.ca_file)):
            # Checked here too, not only when connecting: there it would look like a
            # server that refuses connections.
            add("ca_file", _("This CA file cannot be used: %(problem)s.") % {"problem": problem})
        if self.ehlo_hostname and not _is_host(self.ehlo_hostname.strip()):
            add("ehlo_hostname", _("Enter a host name such as mail.example.com, or leave empty."))
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in self.from_name or ""):
            add("from_name", _("The from name cannot contain line breaks or control characters."))
        if self.owner_id and self.is_site_default:
            add(
                "is_site_default",
                _("A personal account (with an owner) cannot be a site default."),
            )
        if errors:
            raise ValidationError(errors)
