"""What an OAuth account's tokens look like to the person who keeps it working.

A mailbox connected with OAuth keeps sending for months, then stops on a date nobody
wrote down: the refresh token is revoked, or the app's client secret expires (Entra ID
secrets last at most two years, and the token endpoint says nothing until the day they
have expired). ``verify_smtp_accounts`` shows this per account: when the access token
expires, when the last token came, which scopes the provider granted, and when the
client secret expires, with a warning from 30 days before.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import TYPE_CHECKING, Any

from django.utils.translation import gettext as _

from .. import conf

if TYPE_CHECKING:
    from ..models import SmtpAccount

#: How long before its expiry a client secret is reported.
SECRET_WARNING = dt.timedelta(days=30)


def secret_expiry(value: Any) -> dt.date | None:
    """A ``client_secret_expires`` setting as a date ("YYYY-MM-DD", a date or a
    datetime); None when it is none of these."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            return None
    return None


@dataclasses.dataclass
class TokenHealth:
    provider: str
    state: str
    token_expires: dt.datetime | None
    refreshed_at: dt.datetime | None
    scopes: str
    client_secret_expires: dt.date | None

    def warnings(self, today: dt.date) -> list[str]:
        """A client secret that has expired or expires within ``SECRET_WARNING``."""
        expires = self.client_secret_expires
        if expires is None or expires - today >= SECRET_WARNING:
            return []
        days = (expires - today).days
        if days < 0:
            return [
                _(
                    "The OAuth client secret expired on %(date)s: the next token refresh "
                    "fails. Create a new secret in the provider's console and enter it."
                )
                % {"date": expires.isoformat()}
            ]
        return [
            _(
                "The OAuth client secret expires on %(date)s (%(days)d days): create a new "
                "one in the provider's console and enter it before then."
            )
            % {"date": expires.isoformat(), "days": days}
        ]

    def as_dict(self) -> dict[str, str | None]:
        """JSON-ready: dates and times in ISO 8601."""

        def iso(value: dt.date | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "provider": self.provider,
            "state": self.state,
            "token_expires": iso(self.token_expires),
            "refreshed_at": iso(self.refreshed_at),
            "scopes": self.scopes,
            "client_secret_expires": iso(self.client_secret_expires),
        }


def token_health(account: SmtpAccount) -> TokenHealth | None:
    """The token state of ``account``, or None when it does not log in with OAuth."""
    from ..models import OAuthConnection
    from ..transport import BEARER_METHODS

    if account.auth_method not in BEARER_METHODS:
        return None
    oauth = OAuthConnection.objects.filter(account=account).first()
    if oauth is None:
        return None
    site = conf.oauth_provider_settings(oauth.provider)
    return TokenHealth(
        provider=oauth.provider,
        state=str(oauth.state),
        token_expires=oauth.access_expires_at,
        refreshed_at=oauth.refreshed_at,
        scopes=oauth.granted_scopes or oauth.scopes,
        client_secret_expires=(
            oauth.client_secret_expires or secret_expiry(site.get("client_secret_expires"))
        ),
    )
