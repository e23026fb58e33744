"""An account's OAuth 2.0 connection: the app it logs in with and its token state.

Kept beside :class:`~django_multismtp.models.SmtpAccount` (one-to-one) rather than on
it: only OAuth accounts have one, and the token columns change on every refresh, which
must not touch (or lock) the account row the admin edits. Every token and the client
secret is an encrypted secret field, so none is ever displayed, dumped or logged.
"""

from __future__ import annotations

from typing import Any

from django.core.validators import URLValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from ..fields import EncryptedPasswordField, EncryptedSecretTextField
from .account import SmtpAccount
from .fields import ReplyTextField

#: A CharField with this validator rather than a URLField: the URLField's form field
#: warns about its default scheme on Django 5.2, and these URLs are always typed whole.
_URL = URLValidator(schemes=["https", "http"])


class OAuthState(models.TextChoices):
    DISCONNECTED = "disconnected", _("not connected")
    CONNECTED = "connected", _("connected")
    #: The refresh token was refused for good (revoked, consent withdrawn, password
    #: changed): only a person clicking "Connect" again can fix it.
    NEEDS_RECONNECT = "needs_reconnect", _("needs reconnect")


class OAuthFlow(models.TextChoices):
    AUTHORIZATION_CODE = "authorization_code", _("Authorization code (a person signs in)")
    CLIENT_CREDENTIALS = "client_credentials", _("Client credentials (app-only)")
    JWT_BEARER = "jwt_bearer", _("Service account (JWT bearer, RFC 7523)")


class OAuthConnection(models.Model):
    account = models.OneToOneField(
        SmtpAccount, on_delete=models.CASCADE, related_name="oauth", verbose_name=_("account")
    )
    #: A key of ``presets.OAUTH_PROVIDERS`` (or of MULTISMTP["OAUTH_PROVIDERS"]).
    provider = models.CharField(_("provider"), max_length=50, default="generic")
    flow = models.CharField(
        _("flow"), max_length=30, choices=OAuthFlow.choices, default=OAuthFlow.AUTHORIZATION_CODE
    )
    # The app; empty fields are taken from MULTISMTP["OAUTH_PROVIDERS"][provider].
    client_id = models.CharField(_("client id"), max_length=255, blank=True)
    #: For the JWT-bearer flow: the service account's private key (PEM).
    client_secret: Any = EncryptedPasswordField(
        _("client secret"), max_length=8000, blank=True, default=""
    )
    tenant = models.CharField(_("tenant id"), max_length=100, blank=True)
    authorize_url = models.CharField(
        _("authorization URL"), max_length=500, blank=True, validators=[_URL]
    )
    token_url = models.CharField(_("token URL"), max_length=500, blank=True, validators=[_URL])
    revoke_url = models.CharField(
        _("revocation URL"), max_length=500, blank=True, validators=[_URL]
    )
    scopes = models.CharField(_("scopes"), max_length=500, blank=True)
    #: Providers show it in their console (Entra ID: Certificates & secrets) and say
    #: nothing of it until it has expired; verify_smtp_accounts warns 30 days before.
    client_secret_expires = models.DateField(
        _("client secret expires"),
        null=True,
        blank=True,
        help_text=_(
            "The expiry date the provider's console shows for the client secret (Entra ID: "
            "Certificates & secrets). verify_smtp_accounts warns 30 days before."
        ),
    )

    # Token state, shared by every process through this row.
    state = models.CharField(
        _("state"), max_length=20, choices=OAuthState.choices, default=OAuthState.DISCONNECTED
    )
    refresh_token: Any = EncryptedSecretTextField(_("refresh token"), blank=True, default="")
    access_token: Any = EncryptedSecretTextField(_("access token"), blank=True, default="")
    access_expires_at = models.DateTimeField(_("access token expires"), null=True, blank=True)
    #: A process holds the refresh until then (conditional update: one refresh at a time).
    refreshing_until = models.DateTimeField(null=True, blank=True, editable=False)
    refresh_failures = models.PositiveIntegerField(default=0, editable=False)
    retry_refresh_at = models.DateTimeField(null=True, blank=True, editable=False)
    #: The token endpoint's words: guarded like an SMTP reply (it is as untrusted).
    last_refresh_error = ReplyTextField(_("last token error"), blank=True)
    connected_at = models.DateTimeField(_("connected at"), null=True, blank=True)
    #: The last time the token endpoint gave a token (connect, refresh, app-only grant).
    refreshed_at = models.DateTimeField(
        _("last token refresh"), null=True, blank=True, editable=False
    )
    #: What the provider granted (its token response's ``scope``), which may be less
    #: than what was asked for.
    granted_scopes = models.CharField(
        _("scopes granted"), max_length=500, blank=True, editable=False
    )

    class Meta:
        verbose_name = _("OAuth connection")
        verbose_name_plural = _("OAuth connections")

    def __str__(self) -> str:
        return f"{self.account} ({self.provider}, {self.get_state_display()})"
