"""Provider presets: host, port and security of well-known SMTP services, with caveats.

People rarely know their provider's SMTP host or which port goes with which security
mode; a wrong pair is the most common set-up error (see ``replies.HINTS["tls_mismatch"]``).
The caveats are the things the seed products' help pages warn about.

A preset also says how the account logs in: the OAuth presets (Microsoft 365 and Google,
which are turning passwords off) choose *OAuth 2.0 (XOAUTH2)* and the provider whose app
the account connects with; every other preset is a password login, and choosing one
takes an OAuth method back to *Automatic*. The form applies this on submit, the script
at once, from the same data.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from .transport import BEARER_METHODS, AuthMethod, Security


@dataclass(frozen=True)
class Preset:
    key: str
    label: str
    host: str
    port: int
    security: Security
    caveat: str | Promise = ""
    username_hint: str | Promise = ""
    #: The login method the preset sets; "" for a password preset (see auth_method_for).
    auth_method: str = ""
    #: For an OAuth preset: the ``oauth.providers`` key of the app the account connects with.
    oauth_provider: str = ""

    def auth_method_for(self, current: str) -> str:
        """The login method after choosing this preset when ``current`` was chosen: the
        preset's own, else a password method (an OAuth one goes back to Automatic)."""
        if self.auth_method:
            return self.auth_method
        return AuthMethod.AUTO.value if current in BEARER_METHODS else current


PRESETS: dict[str, Preset] = {
    p.key: p
    for p in [
        Preset(
            "microsoft365_oauth",
            "Microsoft 365 (OAuth 2.0)",
            "smtp.office365.com",
            587,
            Security.STARTTLS,
            _(
                "Signs in with OAuth 2.0 (XOAUTH2), no password: save, then click \u201cConnect "
                "with Microsoft 365\u201d. The app (client id and secret, tenant) comes from the "
                "OAuth 2.0 section or MULTISMTP['OAUTH_PROVIDERS']['microsoft']. Authenticated "
                "SMTP must be enabled for the mailbox."
            ),
            _("Your full Microsoft 365 address"),
            auth_method=AuthMethod.XOAUTH2.value,
            oauth_provider="microsoft",
        ),
        Preset(
            "google_oauth",
            "Gmail / Google Workspace (OAuth 2.0)",
            "smtp.gmail.com",
            587,
            Security.STARTTLS,
            _(
                "Signs in with OAuth 2.0 (XOAUTH2), no password: save, then click \u201cConnect "
                "with Google\u201d. The app (client id and secret) comes from the OAuth 2.0 "
                "section or MULTISMTP['OAUTH_PROVIDERS']['google']. Not for bulk campaigns "
                "(about 500 messages a day for Gmail, 2,000 for Workspace)."
            ),
            _("Your full Gmail address"),
            auth_method=AuthMethod.XOAUTH2.value,
            oauth_provider="google",
        ),
        Preset(
            "gmail",
            "Gmail / Google Workspace",
            "smtp.gmail.com",
            587,
            Security.STARTTLS,
            _(
                "Not for bulk campaigns (about 500 messages a day for Gmail, 2,000 for "
                "Workspace). Prefer the \u201cGmail / Google Workspace (OAuth 2.0)\u201d preset; "
                "otherwise turn on 2-Step Verification and use an App Password."
            ),
            _("Your full Gmail address"),
        ),
        Preset(
            "microsoft365",
            "Outlook / Microsoft 365 (password)",
            "smtp.office365.com",
            587,
            Security.STARTTLS,
            _(
                "Microsoft turns basic-auth SMTP off at the end of December 2026: choose the "
                "\u201cMicrosoft 365 (OAuth 2.0)\u201d preset instead. Authenticated SMTP must be "
                "enabled for the mailbox."
            ),
            _("Your full Microsoft 365 address"),
        ),
        Preset(
            "outlook",
            "Outlook.com (personal)",
            "smtp-mail.outlook.com",
            587,
            Security.STARTTLS,
            _("Personal Outlook.com accounts are limited to a few hundred messages a day."),
        ),
        Preset(
            "yahoo",
            "Yahoo Mail",
            "smtp.mail.yahoo.com",
            465,
            Security.TLS,
            _("Generate an app password in Yahoo's account security settings."),
        ),
        Preset(
            "comcast",
            "Comcast / Xfinity",
            "smtp.comcast.net",
            587,
            Security.STARTTLS,
            _("Use your Xfinity email address and password."),
        ),
        Preset(
            "icloud",
            "iCloud Mail",
            "smtp.mail.me.com",
            587,
            Security.STARTTLS,
            _("Requires an app-specific password (two-factor authentication must be on)."),
            _("Your iCloud address"),
        ),
        Preset(
            "zoho",
            "Zoho Mail",
            "smtp.zoho.com",
            465,
            Security.TLS,
            _("Accounts in the EU data centre use smtp.zoho.eu."),
        ),
        Preset(
            "ses",
            "Amazon SES",
            "email-smtp.us-east-1.amazonaws.com",
            587,
            Security.STARTTLS,
            _(
                "Use SMTP credentials created in the SES console (not IAM access keys), and the "
                "host of your region. New accounts are in the sandbox: verified recipients only."
            ),
        ),
        Preset(
            "mailgun",
            "Mailgun",
            "smtp.mailgun.org",
            587,
            Security.STARTTLS,
            _("EU domains use smtp.eu.mailgun.org. The login is the domain's SMTP user."),
        ),
        Preset(
            "sendgrid",
            "SendGrid",
            "smtp.sendgrid.net",
            587,
            Security.STARTTLS,
            _("The user name is literally 'apikey'; the password is an API key."),
            "apikey",
        ),
        Preset(
            "brevo",
            "Brevo (Sendinblue)",
            "smtp-relay.brevo.com",
            587,
            Security.STARTTLS,
            _("Use the SMTP key from Brevo's SMTP & API page, not your login password."),
        ),
        Preset(
            "postmark",
            "Postmark SMTP",
            "smtp.postmarkapp.com",
            587,
            Security.STARTTLS,
            _("Use a Server API token as both user name and password."),
        ),
    ]
}


def preset_choices() -> list[tuple[str, str]]:
    return [("", "---------")] + [(p.key, p.label) for p in PRESETS.values()]
