"""The demo's users and SMTP accounts, created or brought back to their demo state."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

from django_multismtp.models import OAuthConnection, SmtpAccount

from . import oauth_server
from .sink import HOST, Mailbox

ADMIN = ("admin", "admin")
ALICE = ("alice", "alice")

#: name -> the account's demo settings (the sink port is added at run time).
ACCOUNTS: dict[str, dict[str, Any]] = {
    "System (site default)": {
        "purpose": "system",
        "is_site_default": True,
        "from_email": "noreply@demo.test",
        "from_name": "Demo site",
        "username": "system",
        "password": "system-password",
        "description": "Password resets, notifications: mail that names no purpose.",
    },
    "Customer service": {
        "purpose": "customer_service",
        "from_email": "support@demo.test",
        "from_name": "Demo support",
        "reply_to": "help@demo.test",
        "username": "support",
        "password": "support-password",
        "description": "Answers to customers.",
    },
    "Campaigns": {
        "purpose": "campaigns",
        "from_email": "news@demo.test",
        "from_name": "Demo newsletter",
        "username": "campaigns",
        "password": "campaigns-password",
        "limit_per_minute": 30,
        "description": "Newsletters; limited to 30 messages a minute.",
    },
    "Alice's mailbox": {
        "purpose": "system",
        "owner": "alice",
        "from_email": "alice@demo.test",
        "from_name": "Alice",
        "username": "alice@demo.test",
        "password": "alice-mailbox-password",
        "description": "Alice's personal account: only mail sent as alice goes through it.",
    },
}


#: The account that logs in with OAuth 2.0 (XOAUTH2) through the demo's own authorization
#: server (demo_site.oauth_server): "Connect" it in the admin, then send through it.
OAUTH_ACCOUNT = "Demo OAuth mailbox"
OAUTH_SPEC: dict[str, Any] = {
    "purpose": "oauth",
    "from_email": oauth_server.MAILBOX,
    "from_name": "Demo OAuth mailbox",
    "username": oauth_server.MAILBOX,
    "description": (
        "Logs in with OAuth 2.0 (XOAUTH2), like a Microsoft 365 or Google mailbox, against "
        "the demo's own authorization server: open it and click “Connect”."
    ),
}

#: The sink port for accounts a visitor creates in the admin: any user name, this password.
OPEN_MAILBOX = "(accounts you create)"
OPEN_PASSWORD = "demo"


def mailboxes() -> list[Mailbox]:
    """What the sink must accept: one mailbox per account, same login and password, plus
    an open one for accounts created during the demo (any user name, password "demo")."""
    boxes = [Mailbox(name, spec["username"], spec["password"]) for name, spec in ACCOUNTS.items()]
    oauth = Mailbox(OAUTH_ACCOUNT, oauth_server.MAILBOX, "", bearer_check=oauth_server.check_bearer)
    return [*boxes, oauth, Mailbox(OPEN_MAILBOX, None, OPEN_PASSWORD)]


def ensure_users() -> dict[str, Any]:
    """The superuser admin/admin and the staff user alice/alice, created when missing."""
    User = get_user_model()  # noqa: N806
    users = {}
    admin = User._default_manager.filter(username=ADMIN[0]).first()
    if admin is None:
        admin = User._default_manager.create_superuser(
            ADMIN[0], email="admin@demo.test", password=ADMIN[1]
        )
    users["admin"] = admin
    alice = User._default_manager.filter(username=ALICE[0]).first()
    if alice is None:
        alice = User._default_manager.create_user(
            ALICE[0], email="alice@demo.test", password=ALICE[1], is_staff=True
        )
    users["alice"] = alice
    return users


@transaction.atomic
def ensure_accounts(ports: dict[str, int], users: dict[str, Any]) -> list[SmtpAccount]:
    """Create or update the demo accounts so they point at the sink's ``ports``.

    Re-runnable: accounts are found by name, their demo fields reset (and any failure or
    back-off state from an earlier run cleared); other accounts are left alone, except
    that another site default for a demo account's purpose is unticked.
    """
    accounts = []
    for name, spec in ACCOUNTS.items():
        values = dict(spec)
        owner = values.pop("owner", None)
        values.setdefault("is_site_default", False)
        values.setdefault("limit_per_minute", None)
        values.setdefault("reply_to", "")
        values.update(
            owner=users[owner] if owner else None,
            host=HOST,
            port=ports[name],
            security="none",
            auth_method="login",
            timeout=10,
            is_active=True,
            rate_limited_until=None,
            consecutive_throttles=0,
            last_error="",
            last_error_code=None,
            last_error_at=None,
        )
        if values["is_site_default"]:
            SmtpAccount.objects.filter(purpose=values["purpose"], is_site_default=True).exclude(
                name=name
            ).update(is_site_default=False)
        account = SmtpAccount.objects.filter(name=name).first() or SmtpAccount(name=name)
        for field, value in values.items():
            setattr(account, field, value)
        account.full_clean()
        account.save()
        accounts.append(account)
    return accounts


@transaction.atomic
def ensure_oauth_account(port: int) -> SmtpAccount:
    """Create or update the OAuth account (sink ``port``, generic provider, whose app and
    URLs come from ``MULTISMTP["OAUTH_PROVIDERS"]["generic"]``).

    Its connection (tokens, state) is kept: the demo's authorization server keeps its
    grants in the demo directory too, so a connected account stays connected across
    restarts.
    """
    account = SmtpAccount.objects.filter(name=OAUTH_ACCOUNT).first() or SmtpAccount(
        name=OAUTH_ACCOUNT
    )
    for field, value in {
        **OAUTH_SPEC,
        "owner": None,
        "is_site_default": False,
        "host": HOST,
        "port": port,
        "security": "none",
        "auth_method": "xoauth2",
        "password": "",
        "timeout": 10,
        "is_active": True,
        "rate_limited_until": None,
        "consecutive_throttles": 0,
        "last_error": "",
        "last_error_code": None,
        "last_error_at": None,
    }.items():
        setattr(account, field, value)
    account.full_clean()
    account.save()
    OAuthConnection.objects.update_or_create(
        account=account,
        defaults={
            "provider": "generic",
            "flow": "authorization_code",
            # Empty: taken from the settings, which the demo points at its own port.
            "client_id": "",
            "client_secret": "",
            "authorize_url": "",
            "token_url": "",
            "revoke_url": "",
            "scopes": "",
        },
    )
    return account
