"""Provider presets and the resolution of an account's OAuth app.

An account's own client id, secret, tenant and URLs win; what it leaves empty comes from
``MULTISMTP["OAUTH_PROVIDERS"][provider]`` (one registered app for every mailbox), then
from the preset below. ``{tenant}`` in a Microsoft URL is the directory (tenant) id, or
``organizations`` when none is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import conf


@dataclass(frozen=True)
class Provider:
    key: str
    label: str
    authorize_url: str = ""
    token_url: str = ""
    revoke_url: str = ""
    #: Scopes of the delegated (authorization-code) flow.
    scopes: str = ""
    #: Scopes of the app-only flows (client credentials, JWT bearer).
    app_scopes: str = ""
    #: Extra query parameters of the authorization request.
    authorize_params: dict[str, str] = field(default_factory=dict)
    smtp_host: str = ""
    smtp_port: int = 587


PROVIDERS: dict[str, Provider] = {
    "microsoft": Provider(
        key="microsoft",
        label="Microsoft 365",
        authorize_url="https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize",
        token_url="https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",  # noqa: S106
        # Entra ID has no RFC 7009 revocation endpoint; disconnecting forgets the tokens.
        revoke_url="",
        scopes="https://outlook.office.com/SMTP.Send offline_access openid email",
        app_scopes="https://outlook.office365.com/.default",
        smtp_host="smtp.office365.com",
    ),
    "google": Provider(
        key="google",
        label="Google",
        authorize_url="https://accounts.google.com/o/oauth2/v2/auth",
        token_url="https://oauth2.googleapis.com/token",  # noqa: S106
        revoke_url="https://oauth2.googleapis.com/revoke",
        scopes="https://mail.google.com/ openid email",
        app_scopes="https://mail.google.com/",
        # offline: a refresh token; consent: Google sends one on every reconnect.
        authorize_params={"access_type": "offline", "prompt": "consent"},
        smtp_host="smtp.gmail.com",
    ),
    "generic": Provider(key="generic", label="OAuth 2.0"),
}


@dataclass(frozen=True)
class App:
    """Everything needed to talk to one provider's token endpoint for one account."""

    provider: str
    client_id: str
    client_secret: str = field(repr=False)
    authorize_url: str
    token_url: str
    revoke_url: str
    scopes: str
    authorize_params: dict[str, str]
    #: Service-account key (PEM) and subject of the JWT bearer flow.
    private_key: str = field(default="", repr=False)
    token_auth_method: str = "client_secret_post"  # noqa: S105


def provider(key: str) -> Provider:
    return PROVIDERS.get(key) or Provider(key=key, label=key)


def resolve(
    provider_key: str,
    *,
    flow: str,
    client_id: str = "",
    client_secret: str = "",
    tenant: str = "",
    authorize_url: str = "",
    token_url: str = "",
    revoke_url: str = "",
    scopes: str = "",
) -> App:
    preset = provider(provider_key)
    site: dict[str, Any] = conf.oauth_provider_settings(provider_key)

    def pick(own: str, name: str, default: str = "") -> str:
        value = site.get(name) or ""
        if isinstance(value, list | tuple):  # scopes may be a list (the checks allow it)
            value = " ".join(map(str, value))
        return own or str(value) or default

    tenant = pick(tenant, "tenant", "organizations")
    app_flow = flow != "authorization_code"
    default_scopes = preset.app_scopes if app_flow else preset.scopes
    return App(
        provider=provider_key,
        client_id=pick(client_id, "client_id"),
        client_secret=pick(client_secret, "client_secret"),
        authorize_url=pick(authorize_url, "authorize_url", preset.authorize_url).format(
            tenant=tenant
        ),
        token_url=pick(token_url, "token_url", preset.token_url).format(tenant=tenant),
        revoke_url=pick(revoke_url, "revoke_url", preset.revoke_url),
        scopes=pick(scopes, "scopes", default_scopes),
        authorize_params={**preset.authorize_params, **site.get("authorize_params", {})},
        private_key=str(site.get("private_key") or ""),
        token_auth_method=str(site.get("token_auth_method") or "client_secret_post"),
    )
