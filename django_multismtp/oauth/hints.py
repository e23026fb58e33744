"""What to click, and where, for each failure of a provider's token endpoint.

The SMTP side (535 5.7.139, 534-5.7.9...) is classified in :mod:`..replies`; this module
reads the token endpoint's ``error`` / ``error_description`` (Entra ID puts an AADSTS
code in the description) and the refusal of a bearer token by the SMTP server.
"""

from __future__ import annotations

import re

NOT_CONNECTED = (
    "This account logs in with OAuth 2.0 but is not connected: open the account and "
    "click “Connect”."
)
#: Hint for a temporary failure of the token endpoint (not a password).
ENDPOINT_DOWN = (
    "The provider's token endpoint did not answer usefully; mail waits and the refresh is "
    "tried again with a growing delay. Nothing to do unless it lasts (check the "
    "provider's status page and this server's outgoing HTTPS)."
)
RECONNECT = (
    "The provider no longer accepts this account's refresh token (revoked, consent "
    "withdrawn, password changed or expired after months unused): click “Connect” on "
    "the account again."
)

#: Entra ID (Microsoft 365) AADSTS codes of the token endpoint.
AADSTS: dict[str, str] = {
    "65001": (
        "Consent is missing: in the Entra admin center open App registrations → your app "
        "→ API permissions, and click “Grant admin consent”, or let the user consent when "
        "connecting."
    ),
    "90002": "The tenant id is wrong or the tenant is gone: check the account's tenant id.",
    "700016": (
        "The client id is not known in this tenant: check the application (client) id and "
        "the tenant id, or make the app multi-tenant."
    ),
    "7000215": (
        "The client secret is wrong: copy the secret's *Value* (not its ID) from App "
        "registrations → Certificates & secrets."
    ),
    "7000222": (
        "The client secret has expired: create a new one in App registrations → "
        "Certificates & secrets and enter it here (or in MULTISMTP['OAUTH_PROVIDERS'])."
    ),
    "50173": RECONNECT,
    "700082": RECONNECT,
    "50076": ("Multi-factor authentication is now required: click “Connect” and sign in again."),
    "53003": (
        "A Conditional Access policy blocks the sign-in: ask the Entra administrator to "
        "exclude this app or the mailbox."
    ),
}


def for_token_error(provider: str, description: str) -> str:
    """The hint for a token-endpoint error (``"invalid_grant: AADSTS70008: ..."``)."""
    match = re.search(r"AADSTS(\d+)", description or "")
    if match and match.group(1) in AADSTS:
        return AADSTS[match.group(1)]
    error = (description or "").split(":", 1)[0].strip()
    if error == "invalid_grant":
        if provider == "google":
            return (
                RECONNECT + " With an app in “Testing” publishing status, Google expires "
                "refresh tokens after 7 days: publish the app in Google Cloud console → "
                "OAuth consent screen."
            )
        return RECONNECT
    if error in ("invalid_client", "unauthorized_client"):
        return (
            "The provider refuses the app's client id or secret: check both, and whether "
            "the secret expired (Microsoft: Certificates & secrets; Google: Credentials)."
        )
    if error == "invalid_scope":
        return (
            "The provider refuses the scopes: Microsoft needs "
            "https://outlook.office.com/SMTP.Send (delegated) or "
            "https://outlook.office365.com/.default (app-only); Google "
            "https://mail.google.com/."
        )
    return ENDPOINT_DOWN


def for_bearer_refusal(reply: str) -> str:
    """The hint for an SMTP server refusing a *fresh* access token (already refreshed once).

    A fresh token being refused means the provider accepts the app but the mailbox does
    not accept this login: the console settings below, not the token, are what to fix.
    """
    if "5.7.139" in reply:
        return (
            "Microsoft 365 has SMTP AUTH turned off for this mailbox or tenant. In Exchange "
            "Online PowerShell run `Set-CASMailbox -Identity <mailbox> "
            "-SmtpClientAuthenticationDisabled $false` (and check the tenant's “Turn off SMTP "
            "AUTH” setting and Security defaults)."
        )
    if "5.7.3" in reply:
        return (
            "Microsoft 365 refused the token for this mailbox. The user name must be the "
            "mailbox the token was issued for. Delegated: the app needs the SMTP.Send "
            "permission, consented. App-only: register the app's service principal in "
            "Exchange (`New-ServicePrincipal`) and give it the mailbox "
            "(`Add-MailboxPermission -User <service principal id> -AccessRights FullAccess`)."
        )
    if "5.7.9" in reply:
        return (
            "Google refused the login: the token must carry the scope https://mail.google.com/ "
            "and the Workspace admin must allow the app (Security → API controls)."
        )
    return (
        "The server refused a freshly refreshed OAuth token. Check that the user name is "
        "the mailbox the token was issued for (Google: the Google address; Microsoft: the "
        "mailbox's primary address) and that the app has the SMTP scope; then connect again."
    )
