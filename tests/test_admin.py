"""The SMTP account admin: list, filters, the add/change form, actions, verification, scoping.

Everything goes through the Django test client against the real admin, with real SMTP
servers from ``tests.smtp_servers`` on 127.0.0.1 and the ``clock`` fixture for expiry.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from django_multismtp.models import DeliveryLog, OAuthConnection, SmtpAccount, VerificationCode
from tests.conftest import USERS
from tests.factories import SmtpAccountFactory, UserFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/django_multismtp/smtpaccount/"
ADD = CHANGELIST + "add/"
LOG_CHANGELIST = "/admin/django_multismtp/deliverylog/"
CODE_RE = re.compile(r"Confirmation code: ([A-Z0-9]{8})")

#: A public address standing in for smtp.gmail.com: the test machine may have no DNS.
GMAIL_ADDRESS = "142.250.102.108"
MICROSOFT_ADDRESS = "52.97.183.130"


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def provider_dns(monkeypatch):
    """Let the provider hosts the tests use resolve on a machine without DNS.

    The real resolver answers first; only when it fails for one of these names does a
    public address stand in (no connection is made to it).
    """
    real = socket.getaddrinfo
    names = {"smtp.gmail.com": GMAIL_ADDRESS, "smtp.office365.com": MICROSOFT_ADDRESS}

    def getaddrinfo(host, port, *args, **kwargs):
        try:
            return real(host, port, *args, **kwargs)
        except socket.gaierror:
            if isinstance(host, str) and host in names:
                return real(names[host], port, *args, **kwargs)
            raise

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def change_url(account: SmtpAccount) -> str:
    return f"{CHANGELIST}{account.pk}/change/"


def confirm_url(account: SmtpAccount) -> str:
    return f"{CHANGELIST}{account.pk}/confirm/"


def messages_of(response) -> list[str]:
    return [str(m.message) for m in get_messages(response.wsgi_request)]


def form_errors(response) -> dict[str, list[str]]:
    form = response.context["adminform"].form
    return {name: [str(e) for e in errors] for name, errors in form.errors.items()}


def add_data(**overrides: Any) -> dict[str, Any]:
    """A complete, valid POST of the admin add form (no JavaScript)."""
    data: dict[str, Any] = {
        "name": "Outgoing",
        "description": "",
        "purpose": "system",
        "owner": "",
        "priority": "100",
        "from_email": "noreply@example.test",
        "from_name": "",
        "reply_to": "",
        "allowed_senders": "",
        "preset": "",
        "host": "127.0.0.1",
        "port": "2525",
        "security": "none",
        "verify_certificates": "on",
        "ca_file": "",
        "ehlo_hostname": "",
        "timeout": "30",
        "auth_method": "none",
        "username": "",
        "password": "",
        "limit_per_second": "",
        "limit_per_minute": "",
        "limit_per_hour": "",
        "limit_per_day": "",
        "max_connections": "1",
        "max_messages_per_connection": "",
        "max_message_size": "",
        "is_active": "on",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def change_data(client: Client, account: SmtpAccount, **overrides: Any) -> dict[str, Any]:
    """The change form's current values as a browser would post them (password empty)."""
    response = client.get(change_url(account))
    assert response.status_code == 200
    form = response.context["adminform"].form
    data: dict[str, Any] = {}
    for name in form.fields:
        if name in ("password", "clear_password"):
            continue
        value = form[name].value()
        if value is None or value is False:
            continue
        data[name] = "on" if value is True else value
    data["password"] = ""
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def run_action(client: Client, action: str, *accounts: SmtpAccount, **extra: Any):
    data = {"action": action, "_selected_action": [a.pk for a in accounts], **extra}
    return client.post(CHANGELIST, data)


def auth_account(server, **kwargs: Any) -> SmtpAccount:
    """An account that logs in to ``starttls_server`` (its certificate trusted by ca_file)."""
    defaults = {"auth_method": "auto", "username": "alice", "password": USERS["alice"]}
    defaults.update(kwargs)
    return SmtpAccountFactory.for_server(server, **defaults)


def code_from(server, index: int) -> str:
    message = server.wait_for(index + 1)[index].message()
    match = CODE_RE.search(str(message["Subject"]))
    assert match, message["Subject"]
    assert match.group(1) in message.get_content()
    return match.group(1)


def send_code_via_admin(client: Client, account: SmtpAccount, to: str = "me@example.test"):
    return run_action(client, "send_test_email", account, post="yes", recipient=to)


# -- the list --------------------------------------------------------------------------


class TestChangelist:
    def test_columns(self, admin_client):
        owner = UserFactory(username="olga")
        SmtpAccountFactory(
            name="Billing box",
            purpose="billing",
            owner=owner,
            host="mail.example.test",
            port=2587,
            from_email="bills@example.test",
        )
        response = admin_client.get(CHANGELIST)
        assert response.status_code == 200
        html = response.content.decode()
        cells = dict(re.findall(r'<t[dh] class="field-([a-z_]+)[^"]*">(.*?)</t[dh]>', html, re.S))
        assert "Billing box" in cells["name"]
        assert cells["purpose_label"] == "Billing"  # the label, not the stored key
        assert cells["owner"] == "olga"
        assert cells["server"] == "mail.example.test:2587"
        assert cells["from_email"] == "bills@example.test"
        assert 'alt="True"' in cells["is_active"]
        assert "not verified" in cells["status_badge"]
        headers = [str(h["text"]) for h in response.context["result_headers"]]
        assert headers[1:] == [
            "name",
            "status",
            "purpose",
            "owner",
            "server",
            "from email",
            "active",
        ]

    def test_the_list_and_the_change_page_show_each_pool_and_its_accounts(
        self, admin_client, settings
    ):
        """Accounts the selection pools (same purpose, priority and owner, active) say
        so, with the other members and the purpose's policy; the others say nothing."""
        settings.MULTISMTP = {
            **getattr(settings, "MULTISMTP", {}),
            "POOL_POLICY": {"campaigns": "round_robin"},
        }
        bulk_a = SmtpAccountFactory(name="Bulk A", purpose="campaigns", priority=10)
        SmtpAccountFactory(name="Bulk B", purpose="campaigns", priority=10)
        SmtpAccountFactory(name="Bulk C", purpose="campaigns", priority=10, is_active=False)
        SmtpAccountFactory(name="Backup", purpose="campaigns", priority=20)
        SmtpAccountFactory(name="Billing", purpose="billing", priority=10)

        html = admin_client.get(CHANGELIST).content.decode()
        rows = dict(
            re.findall(
                r'<th class="field-name">.*?>([^<]+)</a>.*?<td class="field-purpose_label">'
                r"(.*?)</td>",
                html,
                re.S,
            )
        )
        assert "pool of 2, round_robin" in rows["Bulk A"]
        assert 'title="Shares its mail with Bulk A (POOL_POLICY round_robin)' in rows["Bulk B"]
        for alone in ("Bulk C", "Backup", "Billing"):
            assert "pool" not in rows[alone], alone

        page = admin_client.get(change_url(bulk_a)).content.decode()
        assert "Shares its mail with Bulk B (POOL_POLICY round_robin)" in page

    def test_the_change_page_shows_who_holds_the_connection_slots(self, admin_client, clock):
        """max_connections is one budget for every process: the page says how much of it
        is held, by which host and pid, and until when; an expired lease is not held."""
        import os

        from django_multismtp.slots import Holder, lease_length

        account = SmtpAccountFactory(name="Shared", max_connections=4)
        worker = Holder()
        assert worker.claim(account, 3, clock()).held == 3

        page = admin_client.get(change_url(account)).content.decode()
        until = timezone.localtime(clock() + lease_length()).strftime("%H:%M:%S")
        expected = (
            f"3 of 4: {socket.gethostname()[:120]} (pid {os.getpid()}): 3, leases until {until}"
        )
        assert expected in page

        clock.advance(seconds=lease_length().total_seconds() + 1)  # the process died
        page = admin_client.get(change_url(account)).content.decode()
        assert "0 of 4" in page
        assert f"(pid {os.getpid()})" not in page

    @pytest.mark.parametrize("state", ["verified", "unverified", "rate_limited", "error"])
    def test_status_badge_text(self, admin_client, clock, state):
        now = clock()
        fields: dict[str, Any] = {}
        expected = {"verified": "verified", "unverified": "not verified"}.get(state)
        if state == "verified":
            fields["verified_at"] = now
        elif state == "rate_limited":
            fields["rate_limited_until"] = now + dt.timedelta(hours=1)
            expected = "rate limited until " + fields["rate_limited_until"].strftime(
                "%Y-%m-%d %H:%M UTC"
            )
        elif state == "error":
            fields.update(
                last_error="535 5.7.8 Bad credentials\nhint", last_error_at=now, last_error_code=535
            )
            expected = "last error: 535"  # the whole error is the badge's tooltip
        SmtpAccountFactory(name="Badge", **fields)
        html = admin_client.get(CHANGELIST).content.decode()
        badge = re.search(
            r'class="multismtp-status multismtp-status-([a-z_]+)"[^>]*>([^<]*)<', html
        )
        assert badge is not None
        assert badge.group(1) == state
        assert badge.group(2) == expected

    def test_badge_escapes_the_error_text(self, admin_client, clock):
        SmtpAccountFactory(last_error='550 <script>alert(1)</script> "x"', last_error_at=clock())
        html = admin_client.get(CHANGELIST).content.decode()
        assert "<script>alert(1)</script>" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html

    def _names(self, client: Client, query: str) -> set[str]:
        response = client.get(CHANGELIST + query)
        assert response.status_code == 200
        return {a.name for a in response.context["cl"].result_list}

    def test_filter_by_purpose_active_and_owner(self, admin_client):
        owner = UserFactory()
        SmtpAccountFactory(name="sys", purpose="system")
        SmtpAccountFactory(name="bill", purpose="billing", is_active=False)
        SmtpAccountFactory(name="mine", purpose="system", owner=owner)
        assert self._names(admin_client, "?purpose=billing") == {"bill"}
        assert self._names(admin_client, "?purpose=system") == {"sys", "mine"}
        assert self._names(admin_client, "?is_active__exact=0") == {"bill"}
        assert self._names(admin_client, "?is_active__exact=1") == {"sys", "mine"}
        assert self._names(admin_client, f"?owner__id__exact={owner.pk}") == {"mine"}

    def test_filter_by_status(self, admin_client, clock):
        now = clock()
        SmtpAccountFactory(name="verified", verified_at=now)
        SmtpAccountFactory(name="plain")
        SmtpAccountFactory(name="limited", rate_limited_until=now + dt.timedelta(minutes=5))
        SmtpAccountFactory(name="expired-limit", rate_limited_until=now - dt.timedelta(minutes=5))
        SmtpAccountFactory(name="failing", last_error="x", last_error_at=now)
        SmtpAccountFactory(
            name="recovered",
            last_error="x",
            last_error_at=now - dt.timedelta(hours=1),
            last_success_at=now,
        )
        everyone = {"verified", "plain", "limited", "expired-limit", "failing", "recovered"}
        assert self._names(admin_client, "?status=verified") == {"verified"}
        assert self._names(admin_client, "?status=unverified") == everyone - {"verified"}
        assert self._names(admin_client, "?status=rate_limited") == {"limited"}
        assert self._names(admin_client, "?status=error") == {"failing"}
        assert self._names(admin_client, "") == everyone

    @pytest.mark.parametrize(
        ("query", "expected"),
        [("Support", {"Support desk"}), ("relay.example", {"Relay"}), ("news@", {"News"})],
    )
    def test_search(self, admin_client, query, expected):
        SmtpAccountFactory(name="Support desk")
        SmtpAccountFactory(name="Relay", host="relay.example.test")
        SmtpAccountFactory(name="News", from_email="news@example.test")
        assert self._names(admin_client, f"?q={query}") == expected


# -- the add form ----------------------------------------------------------------------


class TestAddForm:
    def test_fieldsets(self, admin_client):
        response = admin_client.get(ADD)
        assert response.status_code == 200
        names = [fieldset.name for fieldset in response.context["adminform"]]
        # Starts with the preset; no State, nor "keep the stored password", for a new one.
        assert names == ["Provider", "Identity", "Sender", "Server", "Authentication", "Limits"]
        html = response.content.decode()
        assert 'name="preset"' in html
        assert html.index('name="preset"') < html.index('name="name"')
        assert 'id="multismtp-presets"' in html
        assert 'name="clear_password"' not in html
        assert "Owner: the one user whose personal account" in html
        assert "Default for users: a shared account" in html
        assert 'id="multismtp-test_connection"' not in html  # nothing to test yet

    def test_plain_create(self, admin_client):
        response = admin_client.post(ADD, add_data())
        assert response.status_code == 302, form_errors(response)
        account = SmtpAccount.objects.get(name="Outgoing")
        assert (account.host, account.port, account.security) == ("127.0.0.1", 2525, "none")

    def test_preset_fills_an_empty_host(self, admin_client, provider_dns):
        # The browser sent the form without JavaScript: port and security as they were.
        data = add_data(preset="gmail", host="", port="25", security="none", auth_method="auto")
        response = admin_client.post(ADD, data, follow=True)
        assert response.redirect_chain, form_errors(response)
        account = SmtpAccount.objects.get(name="Outgoing")
        assert (account.host, account.port, account.security) == ("smtp.gmail.com", 587, "starttls")
        warnings = [m for m in messages_of(response) if m.startswith("Gmail")]
        assert len(warnings) == 1
        assert "App Password" in warnings[0]

    @pytest.mark.parametrize(
        ("preset", "provider", "label"),
        [
            ("microsoft365_oauth", "microsoft", "Microsoft 365"),
            ("google_oauth", "google", "Google"),
        ],
    )
    def test_an_oauth_preset_saved_without_javascript_logs_in_with_oauth(
        self, admin_client, provider_dns, preset, provider, label
    ):
        """What presets.js does at once, the form does on submit: the OAuth presets choose
        XOAUTH2, and the saved account has its OAuth section with the provider's button."""
        data = add_data(preset=preset, host="", port="25", security="none", auth_method="auto")
        response = admin_client.post(ADD, data)
        assert response.status_code == 302, form_errors(response)
        account = SmtpAccount.objects.get(name="Outgoing")
        assert (account.auth_method, account.port, account.security) == ("xoauth2", 587, "starttls")
        assert OAuthConnection.objects.get(account=account).provider == provider
        page = admin_client.get(change_url(account)).content.decode()
        assert 'id="oauth-group"' in page and f"Connect with {label}" in page

    @pytest.mark.parametrize("method", ["xoauth2", "oauthbearer"])
    def test_a_password_preset_saved_without_javascript_takes_oauth_back(
        self, admin_client, provider_dns, method
    ):
        data = add_data(preset="gmail", host="", auth_method=method, username="me")
        response = admin_client.post(ADD, data)
        assert response.status_code == 302, form_errors(response)
        account = SmtpAccount.objects.get(name="Outgoing")
        assert account.auth_method == "auto"
        assert not OAuthConnection.objects.filter(account=account).exists()

    def test_a_password_preset_keeps_a_password_method(self, admin_client, provider_dns):
        data = add_data(preset="gmail", host="", auth_method="login", username="me")
        assert admin_client.post(ADD, data).status_code == 302
        assert SmtpAccount.objects.get(name="Outgoing").auth_method == "login"

    def test_an_oauth_preset_with_a_typed_host_changes_nothing(self, admin_client):
        """As for host, port and security: a typed host means the person chose by hand
        (with JavaScript the method was switched already and is posted as chosen)."""
        data = add_data(preset="google_oauth", host="localhost", auth_method="login", username="me")
        assert admin_client.post(ADD, data).status_code == 302
        account = SmtpAccount.objects.get(name="Outgoing")
        assert account.auth_method == "login"
        assert not OAuthConnection.objects.filter(account=account).exists()

    def test_preset_keeps_a_typed_host(self, admin_client):
        data = add_data(preset="gmail", host="localhost", port="2525", security="none")
        response = admin_client.post(ADD, data)
        assert response.status_code == 302, form_errors(response)
        account = SmtpAccount.objects.get(name="Outgoing")
        assert (account.host, account.port, account.security) == ("localhost", 2525, "none")

    def test_no_host_and_no_preset(self, admin_client):
        response = admin_client.post(ADD, add_data(host=""))
        assert response.status_code == 200
        assert form_errors(response)["host"] == [
            "Enter the SMTP host, or choose a provider preset."
        ]
        assert not SmtpAccount.objects.exists()

    @pytest.mark.parametrize(
        ("overrides", "field", "text"),
        [
            (
                {"security": "tls", "port": "587"},
                "port",
                "Port 587 expects STARTTLS or plain SMTP, not implicit TLS",
            ),
            ({"security": "starttls", "port": "465"}, "port", "Port 465 expects implicit TLS"),
            (
                {"auth_method": "plain", "username": ""},
                "username",
                "Enter the user name to log in with",
            ),
            (
                {"from_email": "me@elsewhere.test", "allowed_senders": "example.test"},
                "from_email",
                "me@elsewhere.test is not among the allowed From addresses",
            ),
            (
                {"host": "no-such-host.invalid"},
                "host",
                "The host no-such-host.invalid does not resolve. Check its spelling.",
            ),
            (
                {"host": "smtp://mail.example.test:25"},
                "host",
                "Enter a host name such as smtp.example.com, without smtp:// or a port.",
            ),
            ({"purpose": "nonsense"}, "purpose", "Select a valid choice"),
            (
                {"port": "99999999999999999999"},
                "port",
                "Ensure this value is less than or equal to 65535.",
            ),
            (
                {"from_name": "Support\r\nBcc: victim@example.test"},
                "from_name",
                "The from name cannot contain line breaks or other control characters.",
            ),
            (
                {"ehlo_hostname": "my host\r\nRSET"},
                "ehlo_hostname",
                "Enter a host name such as mail.example.com, without spaces",
            ),
            ({"default_for": "99999999999999999999"}, "default_for", "is not a valid value"),
        ],
    )
    def test_validation_errors_in_the_form(self, admin_client, overrides, field, text):
        response = admin_client.post(ADD, add_data(**overrides))
        assert response.status_code == 200
        errors = form_errors(response)
        assert field in errors, errors
        assert any(text in e for e in errors[field]), errors
        assert 'class="errorlist' in response.content.decode()
        assert not SmtpAccount.objects.exists()

    def test_two_site_defaults_for_one_purpose(self, admin_client):
        SmtpAccountFactory(name="first", purpose="billing", is_site_default=True)
        response = admin_client.post(
            ADD, add_data(purpose="billing", is_site_default="on", name="second")
        )
        assert response.status_code == 200
        html = response.content.decode()
        assert "Another account is already the site default for this purpose" in html
        assert not SmtpAccount.objects.filter(name="second").exists()
        # Another purpose may have its own default.
        response = admin_client.post(
            ADD, add_data(purpose="system", is_site_default="on", name="second")
        )
        assert response.status_code == 302, form_errors(response)


# -- the change form: password, verification state --------------------------------------


class TestPassword:
    def test_never_rendered(self, admin_client):
        account = SmtpAccountFactory(password="pa55-Stored-Secret", username="u")
        html = admin_client.get(change_url(account)).content.decode()
        assert "pa55-Stored-Secret" not in html
        assert 'name="password"' in html
        assert "A password is stored" in html

    def test_empty_keeps_the_stored_one(self, admin_client):
        account = SmtpAccountFactory(password="keep-me", username="u", description="old")
        data = change_data(admin_client, account, description="new", password="")
        response = admin_client.post(change_url(account), data)
        assert response.status_code == 302, form_errors(response)
        account.refresh_from_db()
        assert account.description == "new"
        assert account.password == "keep-me"

    def test_not_in_the_form_and_not_logged_as_changed(self, admin_client):
        from django.contrib.admin.models import LogEntry

        account = SmtpAccountFactory(password="keep-me-2", username="u", description="old")
        page = admin_client.get(change_url(account))
        assert "password" not in page.context["adminform"].form.initial
        data = change_data(admin_client, account, description="new")
        assert admin_client.post(change_url(account), data).status_code == 302
        entry = LogEntry.objects.get(object_id=str(account.pk))
        assert entry.get_change_message() == "Changed Description."
        assert "password" not in entry.get_change_message().lower()
        data = change_data(admin_client, account, password="another-one")
        assert admin_client.post(change_url(account), data).status_code == 302
        latest = LogEntry.objects.filter(object_id=str(account.pk)).latest("action_time", "pk")
        assert "password" in latest.get_change_message().lower()
        assert "another-one" not in latest.change_message

    def test_new_one_replaces_it(self, admin_client):
        account = SmtpAccountFactory(password="old-one", username="u")
        data = change_data(admin_client, account, password="brand-new")
        assert admin_client.post(change_url(account), data).status_code == 302
        account.refresh_from_db()
        assert account.password == "brand-new"
        html = admin_client.get(change_url(account)).content.decode()
        assert "brand-new" not in html

    def test_clear(self, admin_client):
        account = SmtpAccountFactory(password="old-one", username="u")
        data = change_data(admin_client, account, clear_password="on")
        assert admin_client.post(change_url(account), data).status_code == 302
        account.refresh_from_db()
        assert account.password == ""

    def test_new_and_clear_at_once(self, admin_client):
        account = SmtpAccountFactory(password="old-one", username="u")
        data = change_data(admin_client, account, clear_password="on", password="Typed-N3w-pw")
        response = admin_client.post(change_url(account), data)
        assert response.status_code == 200
        assert form_errors(response)["clear_password"] == [
            "Either type a new password or clear the stored one, not both."
        ]
        html = response.content.decode()
        assert "Typed-N3w-pw" not in html
        assert "old-one" not in html
        account.refresh_from_db()
        assert account.password == "old-one"


class TestVerifiedState:
    @pytest.mark.parametrize(
        "change",
        [
            {"host": "localhost"},
            {"port": "2526"},
            {"username": "somebody-else"},
            {"password": "a-new-password"},
            {"security": "opportunistic"},
        ],
        ids=lambda c: next(iter(c)),
    )
    def test_connection_change_clears_it(self, admin_client, admin_user, change):
        account = SmtpAccountFactory(username="u", password="p")
        SmtpAccount.objects.filter(pk=account.pk).update(
            verified_at=timezone.now(), verified_by=admin_user
        )
        data = change_data(admin_client, account, **change)
        response = admin_client.post(change_url(account), data)
        assert response.status_code == 302, form_errors(response)
        account.refresh_from_db()
        assert account.verified_at is None
        assert account.verified_by is None

    def test_description_change_keeps_it(self, admin_client, admin_user):
        account = SmtpAccountFactory(username="u", password="p")
        SmtpAccount.objects.filter(pk=account.pk).update(
            verified_at=timezone.now(), verified_by=admin_user
        )
        data = change_data(admin_client, account, description="only words")
        assert admin_client.post(change_url(account), data).status_code == 302
        account.refresh_from_db()
        assert account.description == "only words"
        assert account.verified_at is not None
        assert account.verified_by == admin_user
        assert account.password == "p"


# -- actions ---------------------------------------------------------------------------


class TestTestConnection:
    def test_ok(self, admin_client, starttls_server):
        account = auth_account(starttls_server, name="Good box")
        response = run_action(admin_client, "test_connection", account)
        assert response.status_code == 200
        html = response.content.decode()
        assert "Connection test results" in html
        row = re.search(r'<tr class="multismtp-ok">(.*?)</tr>', html, re.S)
        assert row is not None
        assert "Good box" in row.group(1)
        assert "OK" in row.group(1)
        assert "Connected (TLS)" in row.group(1)
        account.refresh_from_db()
        assert account.last_success_at is not None
        assert starttls_server.received == []

    def test_wrong_password(self, admin_client, starttls_server):
        account = auth_account(starttls_server, name="Bad box", password="wrong")
        response = run_action(admin_client, "test_connection", account)
        assert response.status_code == 200
        html = response.content.decode()
        row = re.search(r'<tr class="multismtp-failed">(.*?)</tr>', html, re.S)
        assert row is not None
        assert "Authentication failed" in row.group(1)
        assert "535" in row.group(1)
        assert "App Password" in row.group(1)
        account.refresh_from_db()
        assert account.last_error_code == 535
        html = admin_client.get(CHANGELIST).content.decode()
        assert "multismtp-status-error" in html

    def test_internal_host_refused_for_public_only_account(self, admin_client, smtp_server):
        account = SmtpAccountFactory.for_server(smtp_server, public_host_only=True)
        response = run_action(admin_client, "test_connection", account)
        html = response.content.decode()
        assert "Connection failed" in html
        assert "internal address" in html
        assert smtp_server.connections == 0


class TestSendAndConfirm:
    def test_first_post_shows_the_recipient_form(self, admin_client, starttls_server):
        account = auth_account(starttls_server, name="Mailbox")
        response = run_action(admin_client, "send_test_email", account)
        assert response.status_code == 200
        html = response.content.decode()
        assert 'name="recipient"' in html
        assert 'value="admin@example.com"' in html
        assert 'name="post" value="yes"' in html
        assert f'name="_selected_action" value="{account.pk}"' in html
        assert starttls_server.received == []

    def test_invalid_recipient_shows_the_form_again(self, admin_client, smtp_server):
        account = SmtpAccountFactory.for_server(smtp_server)
        response = send_code_via_admin(admin_client, account, to="not an address")
        assert response.status_code == 200
        assert "Enter a valid email address" in response.content.decode()
        assert not VerificationCode.objects.exists()

    def test_send_then_confirm(self, admin_client, admin_user, starttls_server):
        account = auth_account(starttls_server, name="Mailbox")
        response = send_code_via_admin(admin_client, account, "me@example.test")
        assert response.status_code == 302
        assert response["Location"] == confirm_url(account)
        assert "Code sent to me@example.test. Paste it below." in messages_of(response)
        [received] = starttls_server.wait_for(1)
        assert received.rcpt_tos == ["me@example.test"]
        assert received.login == "alice"
        code = code_from(starttls_server, 0)

        page = admin_client.get(confirm_url(account))
        assert page.status_code == 200
        assert 'name="code"' in page.content.decode()

        response = admin_client.post(confirm_url(account), {"code": code.lower()})
        assert response.status_code == 302
        assert response["Location"] == CHANGELIST
        account.refresh_from_db()
        assert account.verified_at is not None
        assert account.verified_by == admin_user
        html = admin_client.get(CHANGELIST).content.decode()
        assert re.search(r'multismtp-status-verified"[^>]*>verified<', html)

    def test_wrong_code(self, admin_client, smtp_server):
        account = SmtpAccountFactory.for_server(smtp_server)
        send_code_via_admin(admin_client, account)
        code = code_from(smtp_server, 0)
        wrong = "ABCDEFGH" if code != "ABCDEFGH" else "HGFEDCBA"
        response = admin_client.post(confirm_url(account), {"code": wrong})
        assert response.status_code == 200
        assert "That code is not right" in response.content.decode()
        account.refresh_from_db()
        assert account.verified_at is None

    def test_expired_code(self, admin_client, smtp_server, clock):
        account = SmtpAccountFactory.for_server(smtp_server)
        send_code_via_admin(admin_client, account)
        code = code_from(smtp_server, 0)
        clock.advance(minutes=31)
        response = admin_client.post(confirm_url(account), {"code": code})
        assert response.status_code == 200
        assert "That code has expired. Send a new one." in response.content.decode()
        account.refresh_from_db()
        assert account.verified_at is None

    def test_code_still_good_just_before_expiry(self, admin_client, smtp_server, clock):
        account = SmtpAccountFactory.for_server(smtp_server)
        send_code_via_admin(admin_client, account)
        code = code_from(smtp_server, 0)
        clock.advance(minutes=29)
        assert admin_client.post(confirm_url(account), {"code": code}).status_code == 302
        account.refresh_from_db()
        assert account.verified_at is not None

    def test_too_many_attempts(self, admin_client, smtp_server):
        account = SmtpAccountFactory.for_server(smtp_server)
        send_code_via_admin(admin_client, account)
        code = code_from(smtp_server, 0)
        wrong = "ABCDEFGH" if code != "ABCDEFGH" else "HGFEDCBA"
        for _ in range(5):
            response = admin_client.post(confirm_url(account), {"code": wrong})
            assert "That code is not right" in response.content.decode()
        response = admin_client.post(confirm_url(account), {"code": code})
        assert response.status_code == 200
        assert "Too many wrong attempts for this code" in response.content.decode()
        account.refresh_from_db()
        assert account.verified_at is None

    def test_new_code_invalidates_the_older_one(self, admin_client, smtp_server):
        account = SmtpAccountFactory.for_server(smtp_server)
        send_code_via_admin(admin_client, account)
        send_code_via_admin(admin_client, account)
        first, second = code_from(smtp_server, 0), code_from(smtp_server, 1)
        assert first != second
        response = admin_client.post(confirm_url(account), {"code": first})
        assert response.status_code == 200
        assert "That code is not right" in response.content.decode()
        assert admin_client.post(confirm_url(account), {"code": second}).status_code == 302
        account.refresh_from_db()
        assert account.verified_at is not None

    def test_confirm_without_a_code(self, admin_client, smtp_server):
        account = SmtpAccountFactory.for_server(smtp_server)
        response = admin_client.post(confirm_url(account), {"code": "ABCDEFGH"})
        assert "No code is waiting for this account" in response.content.decode()

    def test_failed_send_shows_the_results_page(self, admin_client, starttls_server):
        account = auth_account(starttls_server, name="Broken", password="wrong")
        response = send_code_via_admin(admin_client, account)
        assert response.status_code == 200
        html = response.content.decode()
        assert "Test email results" in html
        assert "Authentication failed" in html
        assert "App Password" in html
        assert "Enter the code" not in html
        assert not VerificationCode.objects.exists()

    def test_several_accounts_get_a_results_page(self, admin_client, smtp_server, second_server):
        one = SmtpAccountFactory.for_server(smtp_server, name="One")
        two = SmtpAccountFactory.for_server(second_server, name="Two")
        response = run_action(
            admin_client, "send_test_email", one, two, post="yes", recipient="x@example.test"
        )
        assert response.status_code == 200
        html = response.content.decode()
        assert html.count("Enter the code") == 2
        assert confirm_url(one) in html
        assert confirm_url(two) in html
        second_server.wait_for(1)


class TestRateLimits:
    @pytest.fixture(autouse=True, params=["m", "h"])
    def _low_rates(self, settings, request):
        # django-ratelimit counts in fixed wall-clock windows (not our clock). With "/m"
        # a window may roll over during a test, but the limit counts per IP *and* per
        # user, in windows that start at different offsets, so both would have to.
        settings.MULTISMTP = {
            "PURPOSES": {"billing": "Billing"},
            "VERIFICATION_SEND_RATE": f"2/{request.param}",
            "VERIFICATION_CONFIRM_RATE": f"2/{request.param}",
        }

    def test_third_send_refused(self, admin_client, smtp_server):
        account = SmtpAccountFactory.for_server(smtp_server)
        for _ in range(2):
            assert send_code_via_admin(admin_client, account).status_code == 302
        smtp_server.wait_for(2)
        response = send_code_via_admin(admin_client, account)
        assert response.status_code == 302
        assert response["Location"] == CHANGELIST
        assert "Too many codes sent recently. Wait a while and try again." in messages_of(response)
        assert len(smtp_server.received) == 2
        assert VerificationCode.objects.count() == 2

    def test_send_limit_also_per_user_from_other_addresses(
        self, admin_client, smtp_server, settings
    ):
        # Only the per-user count applies here: an hour window cannot roll over mid-test.
        settings.MULTISMTP = {"VERIFICATION_SEND_RATE": "2/h"}
        account = SmtpAccountFactory.for_server(smtp_server)
        data = {
            "action": "send_test_email",
            "_selected_action": [account.pk],
            "post": "yes",
            "recipient": "me@example.test",
        }
        for address in ("10.1.1.1", "10.1.1.2"):
            response = admin_client.post(CHANGELIST, data, REMOTE_ADDR=address)
            assert response.status_code == 302
            assert response["Location"] == confirm_url(account)
        response = admin_client.post(CHANGELIST, data, REMOTE_ADDR="10.1.1.3")
        assert "Too many codes sent recently. Wait a while and try again." in messages_of(response)
        assert len(smtp_server.wait_for(2)) == 2

    def test_confirm_limited(self, admin_client, smtp_server):
        account = SmtpAccountFactory.for_server(smtp_server)
        send_code_via_admin(admin_client, account)
        code = code_from(smtp_server, 0)
        wrong = "ABCDEFGH" if code != "ABCDEFGH" else "HGFEDCBA"
        for _ in range(2):
            response = admin_client.post(confirm_url(account), {"code": wrong})
            assert "That code is not right" in response.content.decode()
        response = admin_client.post(confirm_url(account), {"code": code})
        assert response.status_code == 200
        assert "Too many attempts. Wait a while and try again." in response.content.decode()
        account.refresh_from_db()
        assert account.verified_at is None
        # The refused try did not count against the code itself.
        assert VerificationCode.objects.get().attempts == 2


class TestOtherActions:
    def test_clear_rate_limit(self, admin_client, clock):
        account = SmtpAccountFactory(
            rate_limited_until=clock() + dt.timedelta(hours=1), consecutive_throttles=3
        )
        other = SmtpAccountFactory(rate_limited_until=clock() + dt.timedelta(hours=1))
        response = run_action(admin_client, "clear_rate_limit", account)
        assert response.status_code == 302
        assert "Rate limit cleared." in messages_of(response)
        account.refresh_from_db()
        other.refresh_from_db()
        assert account.rate_limited_until is None
        assert account.consecutive_throttles == 0
        assert other.rate_limited_until is not None

    def test_activate_and_deactivate(self, admin_client):
        one = SmtpAccountFactory(is_active=True)
        two = SmtpAccountFactory(is_active=True)
        untouched = SmtpAccountFactory(is_active=True)
        response = run_action(admin_client, "deactivate", one, two)
        assert "2 account(s) deactivated." in messages_of(response)
        assert set(SmtpAccount.objects.filter(is_active=False)) == {one, two}
        response = run_action(admin_client, "activate", one)
        assert "1 account(s) activated." in messages_of(response)
        assert set(SmtpAccount.objects.filter(is_active=False)) == {two}
        untouched.refresh_from_db()
        assert untouched.is_active
        html = admin_client.get(CHANGELIST).content.decode()
        assert "multismtp-status-inactive" in html


# -- the confirm page: login, CSRF ------------------------------------------------------


class TestConfirmPageProtection:
    def test_login_required(self, client):
        account = SmtpAccountFactory()
        response = client.get(confirm_url(account))
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
        response = client.post(confirm_url(account), {"code": "ABCDEFGH"})
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")

    def test_csrf(self, admin_user, smtp_server):
        account = SmtpAccountFactory.for_server(smtp_server)
        browser = Client(enforce_csrf_checks=True)
        browser.force_login(admin_user)
        response = browser.post(confirm_url(account), {"code": "ABCDEFGH"})
        assert response.status_code == 403
        page = browser.get(confirm_url(account))
        token = page.context["csrf_token"]
        response = browser.post(
            confirm_url(account), {"code": "ABCDEFGH", "csrfmiddlewaretoken": str(token)}
        )
        assert response.status_code == 200
        assert "No code is waiting for this account" in response.content.decode()

    def test_actions_need_csrf(self, admin_user, smtp_server):
        account = SmtpAccountFactory.for_server(smtp_server)
        browser = Client(enforce_csrf_checks=True)
        browser.force_login(admin_user)
        response = browser.post(
            CHANGELIST,
            {
                "action": "send_test_email",
                "_selected_action": [account.pk],
                "post": "yes",
                "recipient": "me@example.test",
            },
        )
        assert response.status_code == 403
        assert smtp_server.received == []

    @pytest.mark.parametrize("selected", ["abc", "", "99999999999999999999", "-1", "1 OR 1=1"])
    def test_malformed_action_selection(self, admin_client, selected):
        account = SmtpAccountFactory()
        response = admin_client.post(
            CHANGELIST, {"action": "deactivate", "_selected_action": [account.pk, selected]}
        )
        assert response.status_code == 302
        assert "The selection is not valid. No items have been changed." in messages_of(response)
        account.refresh_from_db()
        assert account.is_active is True

    @pytest.mark.parametrize("object_id", ["abc", "99999", "1/../2"])
    def test_unknown_account(self, admin_client, object_id):
        assert admin_client.get(f"{CHANGELIST}{object_id}/confirm/").status_code == 404


# -- the delivery log -------------------------------------------------------------------


class TestDeliveryLog:
    @pytest.fixture
    def logs(self):
        account = SmtpAccountFactory(name="Logger")
        other = SmtpAccountFactory(name="Other")
        when = timezone.make_aware(dt.datetime(2024, 3, 5, 12, 0))
        sent = DeliveryLog.objects.create(
            account=account,
            account_name=account.name,
            message_id="<abc123@site.test>",
            recipient_count=1,
            recipient_domains="example.org",
            outcome="sent",
            reply_code=250,
            created_at=when,
        )
        refused = DeliveryLog.objects.create(
            account=other,
            account_name=other.name,
            message_id="<zzz999@site.test>",
            recipient_count=2,
            recipient_domains="corp.example.net",
            outcome="permanent",
            reply_code=550,
            created_at=when + dt.timedelta(days=40),
        )
        return account, sent, refused

    def _ids(self, client: Client, query: str) -> set[int]:
        response = client.get(LOG_CHANGELIST + query)
        assert response.status_code == 200
        return {row.pk for row in response.context["cl"].result_list}

    def test_read_only(self, admin_client, logs):
        _, sent, _ = logs
        assert admin_client.get(LOG_CHANGELIST + "add/").status_code == 403
        html = admin_client.get(LOG_CHANGELIST).content.decode()
        assert "abc123@site.test" in html
        assert LOG_CHANGELIST + "add/" not in html
        page = admin_client.get(f"{LOG_CHANGELIST}{sent.pk}/change/")
        assert page.status_code == 200
        body = page.content.decode()
        assert 'name="_save"' not in body
        assert 'name="_continue"' not in body
        assert 'name="message_id"' not in body
        assert "abc123@site.test" in body
        response = admin_client.post(
            f"{LOG_CHANGELIST}{sent.pk}/change/",
            {"message_id": "<changed@x>", "outcome": "sent", "account_name": "x"},
        )
        assert response.status_code == 403
        sent.refresh_from_db()
        assert sent.message_id == "<abc123@site.test>"

    def test_filters(self, admin_client, logs):
        account, sent, refused = logs
        assert self._ids(admin_client, "?outcome=sent") == {sent.pk}
        assert self._ids(admin_client, "?outcome=permanent") == {refused.pk}
        assert self._ids(admin_client, f"?account__id__exact={account.pk}") == {sent.pk}
        assert self._ids(
            admin_client,
            "?created_at__gte=2024-03-01+00:00:00%2B00:00&created_at__lt=2024-04-01+00:00:00%2B00:00",
        ) == {sent.pk}
        assert self._ids(admin_client, "?created_at__year=2024&created_at__month=4") == {refused.pk}

    @pytest.mark.parametrize(
        ("query", "which"),
        [("abc123", "sent"), ("zzz999@site", "refused"), ("corp.example", "refused")],
    )
    def test_search(self, admin_client, logs, query, which):
        _, sent, refused = logs
        expected = {"sent": sent, "refused": refused}[which]
        assert self._ids(admin_client, f"?q={query}") == {expected.pk}


# -- who sees what ----------------------------------------------------------------------


class TestOwnerScoping:
    @pytest.fixture
    def owner(self):
        return UserFactory(username="owner", email="owner@example.test")

    @pytest.fixture
    def owner_client(self, owner):
        browser = Client()
        browser.force_login(owner)
        return browser

    @pytest.fixture
    def accounts(self, owner):
        mine = SmtpAccountFactory(name="Mine", owner=owner, limit_per_day=100)
        theirs = SmtpAccountFactory(name="Theirs", owner=UserFactory(username="stranger"))
        shared = SmtpAccountFactory(name="Shared")
        return mine, theirs, shared

    def test_changelist_shows_only_own(self, owner_client, accounts):
        response = owner_client.get(CHANGELIST)
        assert response.status_code == 200
        assert [a.name for a in response.context["cl"].result_list] == ["Mine"]
        html = response.content.decode()
        assert "Theirs" not in html
        assert "Shared" not in html

    def test_index_lists_the_model(self, owner_client, accounts):
        html = owner_client.get("/admin/").content.decode()
        assert CHANGELIST in html

    def test_own_change_page(self, owner_client, accounts):
        mine, _, _ = accounts
        response = owner_client.get(change_url(mine))
        assert response.status_code == 200
        html = response.content.decode()
        assert 'name="host"' in html
        assert 'name="password"' in html
        for readonly in ("purpose", "owner", "limit_per_day", "priority", "public_host_only"):
            assert f'name="{readonly}"' not in html

    def test_readonly_fields_cannot_be_posted(self, owner_client, accounts, settings):
        settings.MULTISMTP = {"ALLOW_INTERNAL_HOSTS": True}  # the factory's 127.0.0.1
        mine, _, _ = accounts
        data = change_data(
            owner_client,
            mine,
            description="changed by owner",
            purpose="billing",
            limit_per_day="999999",
            priority="1",
            public_host_only="",
            is_site_default="on",
        )
        response = owner_client.post(change_url(mine), data)
        assert response.status_code == 302, form_errors(response)
        mine.refresh_from_db()
        assert mine.description == "changed by owner"
        assert mine.purpose == "system"
        assert mine.limit_per_day == 100
        assert mine.priority == 100
        assert mine.is_site_default is False

    def test_owner_filter_lists_only_visible_owners(self, owner_client, accounts):
        UserFactory(username="unrelated-login")
        response = owner_client.get(CHANGELIST)
        html = response.content.decode()
        assert "unrelated-login" not in html
        assert "stranger" not in html

    @pytest.mark.parametrize("host", ["127.0.0.1", "10.0.0.1", "169.254.1.1", "::1"])
    def test_owner_cannot_point_an_account_inside(self, owner_client, owner, host):
        mine = SmtpAccountFactory(
            name="Mine", owner=owner, host="93.184.216.34", port=587, security="starttls"
        )
        data = change_data(owner_client, mine, host=host)
        response = owner_client.post(change_url(mine), data)
        assert response.status_code == 200
        [error] = form_errors(response)["host"]
        assert error.startswith(f"{host} resolves to an internal address")
        mine.refresh_from_db()
        assert mine.host == "93.184.216.34"

    def test_owner_save_keeps_the_public_host_guard(self, owner_client, owner, settings):
        settings.MULTISMTP = {"ALLOW_INTERNAL_HOSTS": True}
        mine = SmtpAccountFactory(name="Mine", owner=owner, public_host_only=False)
        data = change_data(owner_client, mine, description="mine now")
        assert owner_client.post(change_url(mine), data).status_code == 302
        mine.refresh_from_db()
        assert mine.public_host_only is True

    def test_global_admin_may_use_internal_hosts(self, admin_client):
        account = SmtpAccountFactory(public_host_only=False)
        data = change_data(admin_client, account, host="10.0.0.1", port="25")
        assert admin_client.post(change_url(account), data).status_code == 302
        account.refresh_from_db()
        assert account.host == "10.0.0.1"
        assert account.public_host_only is False

    def test_other_change_page_is_not_shown(self, owner_client, accounts):
        _, theirs, shared = accounts
        for account in (theirs, shared):
            response = owner_client.get(change_url(account))
            assert response.status_code in (302, 404)
            assert account.name not in response.content.decode()
            response = owner_client.post(change_url(account), {"name": "hijacked"})
            assert response.status_code in (302, 403, 404)
            account.refresh_from_db()
            assert account.name != "hijacked"

    def test_other_confirm_page_is_404(self, owner_client, accounts):
        mine, theirs, shared = accounts
        assert owner_client.get(confirm_url(theirs)).status_code == 404
        assert owner_client.post(confirm_url(theirs), {"code": "ABCDEFGH"}).status_code == 404
        assert owner_client.get(confirm_url(shared)).status_code == 404
        assert owner_client.get(confirm_url(mine)).status_code == 200

    def test_actions_only_touch_own(self, owner_client, accounts):
        mine, theirs, _ = accounts
        response = run_action(owner_client, "deactivate", mine, theirs)
        assert response.status_code == 302
        mine.refresh_from_db()
        theirs.refresh_from_db()
        assert mine.is_active is False
        assert theirs.is_active is True

    def test_owner_verifies_own_account(self, owner_client, owner, smtp_server):
        mine = SmtpAccountFactory.for_server(smtp_server, owner=owner)
        response = send_code_via_admin(owner_client, mine, "owner@example.test")
        assert response.status_code == 302
        code = code_from(smtp_server, 0)
        assert owner_client.post(confirm_url(mine), {"code": code}).status_code == 302
        mine.refresh_from_db()
        assert mine.verified_by == owner

    def test_staff_without_accounts_sees_no_module(self, accounts):
        nobody = UserFactory(username="nobody")
        browser = Client()
        browser.force_login(nobody)
        assert browser.get(CHANGELIST).status_code == 403
        assert CHANGELIST not in browser.get("/admin/").content.decode()

    @pytest.fixture
    def viewer_client(self, owner):
        """The owner, also holding the global *view* (not change) permission."""
        owner.user_permissions.add(Permission.objects.get(codename="view_smtpaccount"))
        browser = Client()
        browser.force_login(owner)
        return browser

    def test_view_permission_sees_all_but_changes_own(self, viewer_client, accounts):
        mine, theirs, shared = accounts
        response = viewer_client.get(CHANGELIST)
        assert {a.name for a in response.context["cl"].result_list} == {"Mine", "Theirs", "Shared"}
        page = viewer_client.get(change_url(theirs))
        assert page.status_code == 200
        assert 'name="_save"' not in page.content.decode()
        assert 'name="host"' not in page.content.decode()
        assert viewer_client.get(confirm_url(theirs)).status_code == 404

    @pytest.mark.parametrize("action", ["deactivate", "clear_rate_limit"])
    def test_view_permission_actions_touch_own_only(self, viewer_client, accounts, clock, action):
        mine, theirs, shared = accounts
        later = clock() + dt.timedelta(hours=1)
        SmtpAccount.objects.update(rate_limited_until=later)
        response = run_action(viewer_client, action, mine, theirs, shared)
        assert response.status_code == 302
        for account in (mine, theirs, shared):
            account.refresh_from_db()
        if action == "deactivate":
            assert (mine.is_active, theirs.is_active, shared.is_active) == (False, True, True)
        else:
            assert mine.rate_limited_until is None
            assert theirs.rate_limited_until == later
            assert shared.rate_limited_until == later

    def test_view_permission_cannot_test_or_mail_through_others(
        self, viewer_client, accounts, smtp_server
    ):
        theirs = SmtpAccountFactory.for_server(smtp_server, name="Their box")
        response = run_action(viewer_client, "test_connection", theirs)
        assert response.status_code == 200
        html = response.content.decode()
        assert "Connection test results" in html
        assert "Their box" not in html.split('class="multismtp-results"', 1)[1]
        response = run_action(
            viewer_client, "send_test_email", theirs, post="yes", recipient="x@example.test"
        )
        assert response.status_code == 200
        assert "Their box" not in response.content.decode().split("Test email results", 1)[1]
        assert smtp_server.connections == 0
        theirs.refresh_from_db()
        assert theirs.last_success_at is None
        assert theirs.last_error_at is None
        assert not VerificationCode.objects.exists()

    def test_global_change_permission_sees_all(self, accounts):
        manager = UserFactory(username="manager")
        manager.user_permissions.add(
            Permission.objects.get(codename="change_smtpaccount"),
            Permission.objects.get(codename="view_smtpaccount"),
        )
        browser = Client()
        browser.force_login(manager)
        response = browser.get(CHANGELIST)
        assert {a.name for a in response.context["cl"].result_list} == {"Mine", "Theirs", "Shared"}
        _, theirs, _ = accounts
        page = browser.get(change_url(theirs))
        assert page.status_code == 200
        assert 'name="purpose"' in page.content.decode()


# -- the change page's own buttons ----------------------------------------------------------


def test_the_change_page_tests_the_connection_and_sends_a_test_email(admin_client, smtp_server):
    account = SmtpAccountFactory.for_server(smtp_server, name="Buttons")
    page = admin_client.get(f"{CHANGELIST}{account.pk}/change/")
    html = page.content.decode()
    assert 'id="multismtp-test_connection"' in html and 'id="multismtp-send_test_email"' in html
    names = [fieldset.name for fieldset in page.context["adminform"]]
    assert names[-1] == "State" and 'name="clear_password"' in html
    # What the buttons post: the list action with this one account selected.
    tested = admin_client.post(
        CHANGELIST, {"action": "test_connection", "_selected_action": [str(account.pk)]}
    )
    assert tested.status_code == 200
    assert [(a.name, r.ok) for a, r in tested.context["results"]] == [("Buttons", True)]
    asked = admin_client.post(
        CHANGELIST, {"action": "send_test_email", "_selected_action": [str(account.pk)]}
    )
    assert asked.status_code == 200 and asked.context["accounts"] == [account]


def test_names_pluralise_and_breadcrumbs_read_home_smtp_accounts_accounts(admin_client):
    from django_multismtp.models import DeliveryLog, OutboxMessage

    assert str(OutboxMessage._meta.verbose_name_plural) == "outbox messages"
    assert str(DeliveryLog._meta.verbose_name_plural) == "delivery log entries"
    html = admin_client.get(CHANGELIST).content.decode()
    trail = re.search(r'class="breadcrumbs">(.*?)</(?:div|ol)>', html, re.S)
    assert trail is not None
    words = re.sub(r"<[^>]+>|&rsaquo;|\u203a", "|", trail.group(1)).split("|")
    assert [w.strip() for w in words if w.strip()] == ["Home", "SMTP accounts", "Accounts"]
