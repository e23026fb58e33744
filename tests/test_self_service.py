"""The "My SMTP settings" pages (/smtp/): staff users manage, test and verify their own account.

Real SMTP servers on 127.0.0.1, so most tests set ``ALLOW_INTERNAL_HOSTS``; the SSRF
tests check what happens without it.
"""

from __future__ import annotations

import functools
import re
import socket
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.core.cache import cache
from django.test import Client

from django_multismtp import forms, netguard
from django_multismtp.models import OAuthConnection, SmtpAccount, VerificationCode
from django_multismtp.replies import HINTS
from tests.conftest import USERS
from tests.factories import SmtpAccountFactory, UserFactory
from tests.test_admin import provider_dns  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db

CODE_RE = re.compile(r"Confirmation code: ([A-Z0-9]{8})")
INTERNAL_ERROR = (
    "resolves to an internal address (loopback, private or link-local network), which is "
    "not allowed here. Use your provider's public SMTP host."
)
#: An address on the public internet (nothing connects to it here; the form only resolves).
PUBLIC_IP = "93.184.216.34"


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def allow_internal(settings):
    settings.MULTISMTP = {"PURPOSES": {"billing": "Billing"}, "ALLOW_INTERNAL_HOSTS": True}


@pytest.fixture
def user():
    return UserFactory(username="sam", email="sam@example.test")


@pytest.fixture
def staff(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def edit_url(account: SmtpAccount) -> str:
    return f"/smtp/{account.pk}/"


def messages_of(response) -> list[str]:
    return [str(m.message) for m in get_messages(response.wsgi_request)]


def form_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "preset": "",
        "from_email": "sam@example.test",
        "from_name": "Sam",
        "reply_to": "",
        "host": "127.0.0.1",
        "port": "2525",
        "security": "none",
        "verify_certificates": "on",
        "auth_method": "none",
        "username": "",
        "password": "",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def server_data(server, **overrides: Any) -> dict[str, Any]:
    security = {"plain": "none", "starttls": "starttls", "implicit": "tls"}[server.mode]
    return form_data(host=server.host, port=str(server.port), security=security, **overrides)


def own_account(server, user, **kwargs: Any) -> SmtpAccount:
    return SmtpAccountFactory.for_server(server, owner=user, public_host_only=True, **kwargs)


def code_from(server, index: int) -> str:
    message = server.wait_for(index + 1)[index].message()
    match = CODE_RE.search(str(message["Subject"]))
    assert match, message["Subject"]
    return match.group(1)


# -- access ----------------------------------------------------------------------------


class TestAccess:
    @pytest.mark.parametrize("path", ["/smtp/", "/smtp/1/"])
    def test_anonymous_is_sent_to_login(self, client, path):
        response = client.get(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")

    @pytest.mark.parametrize("suffix", ["test/", "send-code/", "confirm/"])
    def test_anonymous_posts_are_sent_to_login(self, client, suffix):
        account = SmtpAccountFactory()
        response = client.post(f"/smtp/{account.pk}/{suffix}", {"code": "X"})
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")

    def test_non_staff_is_sent_to_login(self):
        member = UserFactory(username="member", is_staff=False)
        client = Client()
        client.force_login(member)
        response = client.get("/smtp/")
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")

    @pytest.mark.parametrize("suffix", ["test/", "send-code/", "confirm/"])
    def test_actions_are_post_only(self, staff, user, suffix):
        account = SmtpAccountFactory(owner=user)
        assert staff.get(f"/smtp/{account.pk}/{suffix}").status_code == 405

    def test_csrf(self, user, allow_internal):
        account = SmtpAccountFactory(owner=user)
        client = Client(enforce_csrf_checks=True)
        client.force_login(user)
        assert client.post("/smtp/", form_data()).status_code == 403
        for suffix in ("", "test/", "send-code/", "confirm/"):
            response = client.post(f"/smtp/{account.pk}/{suffix}", {"code": "ABCDEFGH"})
            assert response.status_code == 403
        assert SmtpAccount.objects.count() == 1


# -- the form --------------------------------------------------------------------------


class TestSettingsForm:
    def test_empty_page(self, staff):
        response = staff.get("/smtp/")
        assert response.status_code == 200
        html = response.content.decode()
        assert "My SMTP settings" in html
        assert 'name="host"' in html
        assert 'name="preset"' in html
        assert 'value="sam@example.test"' in html  # from_email starts as the user's address
        # Nothing to test or verify yet.
        assert "Send code" not in html
        assert 'name="purpose"' not in html
        assert 'name="owner"' not in html
        assert 'name="public_host_only"' not in html

    def test_create(self, staff, user, allow_internal):
        response = staff.post("/smtp/", form_data(password="mailbox-pw", username="sam"))
        assert response.status_code == 302
        account = SmtpAccount.objects.get()
        assert response["Location"] == edit_url(account)
        assert account.owner == user
        assert account.public_host_only is True
        assert account.purpose == "system"
        assert account.name == "sam (personal)"
        assert account.password == "mailbox-pw"
        assert (account.host, account.port, account.security) == ("127.0.0.1", 2525, "none")
        assert "Your SMTP settings were saved." in messages_of(response)
        page = staff.get(response["Location"])
        html = page.content.decode()
        assert "mailbox-pw" not in html
        assert "not verified yet" in html
        assert "Send code" in html

    def test_public_host_accepted_without_allow_internal(self, staff):
        response = staff.post("/smtp/", form_data(host=PUBLIC_IP, port="587", security="starttls"))
        assert response.status_code == 302
        assert SmtpAccount.objects.get().host == PUBLIC_IP

    def test_own_account_redirects(self, staff, user):
        account = SmtpAccountFactory(owner=user)
        SmtpAccountFactory(owner=UserFactory())
        response = staff.get("/smtp/")
        assert response.status_code == 302
        assert response["Location"] == edit_url(account)
        # ?new shows an empty form for a second account.
        page = staff.get("/smtp/?new")
        assert page.status_code == 200
        assert page.context["account"] is None

    def test_second_account(self, staff, user, allow_internal):
        first = SmtpAccountFactory(owner=user, name="sam (personal)")
        response = staff.post("/smtp/?new", form_data(from_name="Second"))
        assert response.status_code == 302
        second = SmtpAccount.objects.exclude(pk=first.pk).get()
        assert response["Location"] == edit_url(second)
        assert second.owner == user
        assert second.name == "sam (personal) 2"
        html = staff.get(edit_url(second)).content.decode()
        assert "Your accounts:" in html
        assert edit_url(first) in html

    def test_name_of_another_users_account_taken(self, staff, user, allow_internal):
        SmtpAccountFactory(name="sam (personal)", owner=UserFactory(username="other-sam"))
        response = staff.post("/smtp/", form_data())
        assert response.status_code == 302
        mine = SmtpAccount.objects.get(owner=user)
        assert mine.name != "sam (personal)"
        assert mine.name.startswith("sam (personal)")

    def test_edit(self, staff, user, allow_internal):
        account = SmtpAccountFactory(owner=user, password="stored-pw", username="sam")
        response = staff.post(
            edit_url(account), form_data(from_name="Samantha", username="sam", port="2526")
        )
        assert response.status_code == 302
        assert response["Location"] == edit_url(account)
        account.refresh_from_db()
        assert account.from_name == "Samantha"
        assert account.port == 2526
        assert account.password == "stored-pw"  # empty keeps it
        assert account.owner == user

    def test_edit_password_and_clear(self, staff, user, allow_internal):
        account = SmtpAccountFactory(owner=user, password="stored-pw", username="sam")
        staff.post(edit_url(account), form_data(username="sam", password="fresh-pw"))
        account.refresh_from_db()
        assert account.password == "fresh-pw"
        staff.post(edit_url(account), form_data(username="sam", clear_password="on"))
        account.refresh_from_db()
        assert account.password == ""
        response = staff.post(
            edit_url(account), form_data(username="sam", clear_password="on", password="x")
        )
        assert response.status_code == 200
        assert "Either type a new password or clear the stored one" in response.content.decode()

    def test_edit_sets_the_public_host_guard(self, staff, user):
        # An account an administrator made for the user, without the guard.
        account = SmtpAccountFactory(
            owner=user, host=PUBLIC_IP, port=587, security="starttls", public_host_only=False
        )
        data = form_data(host=PUBLIC_IP, port="587", security="starttls", from_name="New")
        assert staff.post(edit_url(account), data).status_code == 302
        account.refresh_from_db()
        assert account.from_name == "New"
        assert account.public_host_only is True

    def test_from_name_line_break(self, staff, allow_internal):
        response = staff.post("/smtp/", form_data(from_name="Sam\r\nBcc: victim@example.test"))
        assert response.status_code == 200
        assert response.context["form"].errors["from_name"] == [
            "The from name cannot contain line breaks or other control characters."
        ]
        assert not SmtpAccount.objects.exists()

    def test_edit_clears_verification(self, staff, user, allow_internal, clock):
        account = SmtpAccountFactory(owner=user, verified_at=clock(), verified_by=user)
        staff.post(edit_url(account), form_data(port="2599"))
        account.refresh_from_db()
        assert account.verified_at is None
        assert account.verified_by is None

    def test_validation_errors(self, staff, allow_internal):
        response = staff.post("/smtp/", form_data(security="tls", port="587"))
        assert response.status_code == 200
        assert "Port 587 expects STARTTLS or plain SMTP" in response.content.decode()
        response = staff.post("/smtp/", form_data(host="no-such-host.invalid"))
        assert "The host no-such-host.invalid does not resolve" in response.content.decode()
        response = staff.post("/smtp/", form_data(host="", preset=""))
        assert "Enter the SMTP host, or choose a provider preset." in response.content.decode()
        assert not SmtpAccount.objects.exists()

    @pytest.mark.usefixtures("provider_dns")
    @pytest.mark.parametrize("site_app", [False, True])
    def test_an_oauth_preset_chooses_oauth_and_the_section_needs_the_sites_app(
        self, staff, settings, monkeypatch, site_app
    ):
        """Without JavaScript too. An owner cannot set up an OAuth app, so the account
        gets its OAuth section (and "Connect") only when the site has Google's app."""
        # The public-address check, through provider_dns's resolver (no DNS here).
        resolve = functools.partial(netguard.public_addresses, resolve=socket.getaddrinfo)
        monkeypatch.setattr(forms, "public_addresses", resolve)
        if site_app:
            settings.MULTISMTP = {"OAUTH_PROVIDERS": {"google": {"client_id": "site-app"}}}
        response = staff.post("/smtp/", form_data(preset="google_oauth", host="", port="25"))
        assert response.status_code == 302, response.context["form"].errors
        account = SmtpAccount.objects.get()
        assert (account.host, account.auth_method) == ("smtp.gmail.com", "xoauth2")
        assert OAuthConnection.objects.filter(account=account).exists() is site_app
        page = staff.get(edit_url(account)).content.decode()
        assert 'id="multismtp-oauth"' in page
        assert ('value="Connect"' in page) is site_app

    def test_user_cannot_set_owner_or_purpose(self, staff, user, allow_internal):
        other = UserFactory()
        response = staff.post(
            "/smtp/",
            form_data(owner=str(other.pk), purpose="billing", public_host_only="", name="X"),
        )
        assert response.status_code == 302
        account = SmtpAccount.objects.get()
        assert account.owner == user
        assert account.purpose == "system"
        assert account.public_host_only is True
        assert account.name != "X"


# -- SSRF: hosts on internal networks --------------------------------------------------


class TestInternalHosts:
    @pytest.mark.parametrize(
        "host",
        [
            "127.0.0.1",
            "localhost",
            "10.0.0.1",
            "169.254.1.1",
            "::1",
            "192.168.1.10",
            "0.0.0.0",  # noqa: S104 (a host typed by a user, not a bind address)
            "::ffff:127.0.0.1",
            "2130706433",  # 127.0.0.1 as one number
            "127.1",
        ],
    )
    def test_refused_in_the_form(self, staff, host):
        response = staff.post("/smtp/", form_data(host=host, port="587", security="starttls"))
        assert response.status_code == 200
        errors = response.context["form"].errors
        assert list(errors) == ["host"]
        assert errors["host"] == [f"{host} {INTERNAL_ERROR}"]
        assert INTERNAL_ERROR.replace("'", "&#x27;") in response.content.decode()
        assert not SmtpAccount.objects.exists()

    def test_refused_when_editing(self, staff, user):
        account = SmtpAccountFactory(owner=user, host=PUBLIC_IP, port=587, security="starttls")
        response = staff.post(
            edit_url(account), form_data(host="10.0.0.1", port="587", security="starttls")
        )
        assert response.status_code == 200
        assert INTERNAL_ERROR.replace("'", "&#x27;") in response.content.decode()
        account.refresh_from_db()
        assert account.host == PUBLIC_IP

    def test_allowed_with_the_setting(self, staff, allow_internal):
        response = staff.post("/smtp/", form_data(host="localhost"))
        assert response.status_code == 302
        assert SmtpAccount.objects.get().host == "localhost"

    def test_saved_account_refused_at_connect_time(self, staff, user, smtp_server):
        # Saved while internal hosts were allowed (or DNS answered differently then).
        account = own_account(smtp_server, user)
        response = staff.post(f"/smtp/{account.pk}/test/", follow=True)
        assert response.status_code == 200
        [message] = messages_of(response)
        assert message.startswith("The test failed (connection_failed")
        assert HINTS["internal_host"] in message
        assert smtp_server.connections == 0
        account.refresh_from_db()
        assert "internal address" in account.last_error

    def test_saved_account_cannot_send_a_code(self, staff, user, smtp_server):
        account = own_account(smtp_server, user)
        response = staff.post(
            f"/smtp/{account.pk}/send-code/", {"recipient": "sam@example.test"}, follow=True
        )
        [message] = messages_of(response)
        assert message.startswith("The message could not be sent")
        assert HINTS["internal_host"] in message
        assert smtp_server.connections == 0
        assert not VerificationCode.objects.exists()


# -- test, send code, confirm ----------------------------------------------------------


class TestTestAndVerify:
    def test_settings_work(self, staff, user, starttls_server, allow_internal):
        account = own_account(
            starttls_server, user, auth_method="auto", username="alice", password=USERS["alice"]
        )
        response = staff.post(f"/smtp/{account.pk}/test/")
        assert response.status_code == 302
        assert response["Location"] == edit_url(account)
        [message] = messages_of(response)
        assert message.startswith("The settings work: Connected (TLS)")
        assert starttls_server.received == []

    def test_wrong_password_hint(self, staff, user, starttls_server, allow_internal):
        account = own_account(
            starttls_server, user, auth_method="auto", username="alice", password="nope"
        )
        response = staff.post(f"/smtp/{account.pk}/test/", follow=True)
        [message] = messages_of(response)
        assert message.startswith("The test failed (auth_failed 535")
        assert HINTS["credentials"] in message
        assert "App Password" in message
        html = response.content.decode()
        assert "Last error:" in html
        assert "App Password" in html

    def test_last_error_hidden_once_a_later_test_and_confirm_succeed(
        self, staff, user, starttls_server, allow_internal, clock
    ):
        account = own_account(
            starttls_server, user, auth_method="auto", username="alice", password="nope"
        )
        failed = staff.post(f"/smtp/{account.pk}/test/", follow=True).content.decode()
        assert "Last error:" in failed and "multismtp-last-error" in failed

        clock.advance(minutes=1)
        account.refresh_from_db()
        account.password = USERS["alice"]
        account.save()
        page = staff.post(f"/smtp/{account.pk}/test/", follow=True).content.decode()
        assert "The settings work" in page
        assert "Last error:" not in page and "multismtp-last-error" not in page
        staff.post(f"/smtp/{account.pk}/send-code/", {"recipient": "sam@example.test"})
        code = code_from(starttls_server, 0)
        page = staff.post(f"/smtp/{account.pk}/confirm/", {"code": code}, follow=True)
        html = page.content.decode()
        assert "multismtp-verified" in html and "Last error:" not in html
        account.refresh_from_db()
        assert account.last_error  # kept for the record, just not shown as the state

        # A newer failure is shown again.
        clock.advance(minutes=1)
        account.password = "nope"
        account.save()
        again = staff.post(f"/smtp/{account.pk}/test/", follow=True).content.decode()
        assert "Last error:" in again

    def test_created_through_the_form_then_tested(
        self, staff, user, starttls_server, allow_internal
    ):
        # The self-signed test certificate cannot be verified without a CA file, which
        # the self-service form does not offer: certificate checks off.
        data = server_data(
            starttls_server,
            auth_method="auto",
            username="alice",
            password=USERS["alice"],
            verify_certificates=None,
        )
        response = staff.post("/smtp/", data, follow=True)
        assert response.redirect_chain
        account = SmtpAccount.objects.get()
        response = staff.post(f"/smtp/{account.pk}/test/")
        [message] = messages_of(response)
        assert message.startswith("The settings work"), message

    def test_certificate_checked_by_default(self, staff, user, starttls_server, allow_internal):
        data = server_data(
            starttls_server, auth_method="auto", username="alice", password=USERS["alice"]
        )
        assert staff.post("/smtp/", data, follow=True).redirect_chain
        account = SmtpAccount.objects.get()
        [message] = messages_of(staff.post(f"/smtp/{account.pk}/test/"))
        assert message.startswith("The test failed (tls_failed")
        assert HINTS["certificate"] in message

    def test_send_code_and_confirm(self, staff, user, starttls_server, allow_internal):
        account = own_account(
            starttls_server, user, auth_method="auto", username="alice", password=USERS["alice"]
        )
        page = staff.get(edit_url(account))
        assert 'value="sam@example.test"' in page.content.decode()
        response = staff.post(f"/smtp/{account.pk}/send-code/", {"recipient": "sam@example.test"})
        assert response.status_code == 302
        assert response["Location"] == edit_url(account)
        assert "A code was sent to sam@example.test. Paste it below to confirm." in messages_of(
            response
        )
        [received] = starttls_server.wait_for(1)
        assert received.rcpt_tos == ["sam@example.test"]
        assert received.tls is True
        code = code_from(starttls_server, 0)
        assert code in received.message().get_content()

        response = staff.post(f"/smtp/{account.pk}/confirm/", {"code": "wrongcod"})
        assert response.status_code == 200
        assert "That code is not right" in response.content.decode()

        spaced = " ".join([code[:4].lower(), code[4:]])
        response = staff.post(f"/smtp/{account.pk}/confirm/", {"code": spaced}, follow=True)
        assert response.redirect_chain == [(edit_url(account), 302)]
        assert "The code is right: the account is verified." in messages_of(response)
        assert "multismtp-verified" in response.content.decode()
        account.refresh_from_db()
        assert account.verified_at is not None
        assert account.verified_by == user

    def test_send_failure_message(self, staff, user, starttls_server, allow_internal):
        account = own_account(
            starttls_server, user, auth_method="auto", username="alice", password="bad"
        )
        response = staff.post(f"/smtp/{account.pk}/send-code/", {"recipient": "sam@example.test"})
        [message] = messages_of(response)
        assert message.startswith("The message could not be sent")
        assert "App Password" in message
        assert not VerificationCode.objects.exists()

    def test_invalid_recipient(self, staff, user, smtp_server, allow_internal):
        account = own_account(smtp_server, user)
        response = staff.post(f"/smtp/{account.pk}/send-code/", {"recipient": "nope"})
        assert response.status_code == 200
        assert "Enter a valid email address" in response.content.decode()
        assert smtp_server.received == []

    def test_expired(self, staff, user, smtp_server, allow_internal, clock):
        account = own_account(smtp_server, user)
        staff.post(f"/smtp/{account.pk}/send-code/", {"recipient": "sam@example.test"})
        code = code_from(smtp_server, 0)
        clock.advance(minutes=31)
        response = staff.post(f"/smtp/{account.pk}/confirm/", {"code": code})
        assert "That code has expired. Send a new one." in response.content.decode()
        account.refresh_from_db()
        assert account.verified_at is None

    def test_send_rate_limit(self, staff, user, smtp_server, settings):
        settings.MULTISMTP = {"ALLOW_INTERNAL_HOSTS": True, "VERIFICATION_SEND_RATE": "2/h"}
        account = own_account(smtp_server, user)
        for _ in range(2):
            response = staff.post(
                f"/smtp/{account.pk}/send-code/", {"recipient": "sam@example.test"}
            )
            assert response.status_code == 302
        response = staff.post(f"/smtp/{account.pk}/send-code/", {"recipient": "sam@example.test"})
        assert response.status_code == 200
        assert "Too many codes sent recently" in response.content.decode()
        assert len(smtp_server.wait_for(2)) == 2

    def test_confirm_rate_limit(self, staff, user, smtp_server, settings):
        settings.MULTISMTP = {"ALLOW_INTERNAL_HOSTS": True, "VERIFICATION_CONFIRM_RATE": "2/h"}
        account = own_account(smtp_server, user)
        staff.post(f"/smtp/{account.pk}/send-code/", {"recipient": "sam@example.test"})
        code = code_from(smtp_server, 0)
        for _ in range(2):
            staff.post(f"/smtp/{account.pk}/confirm/", {"code": "WRONGXXX"})
        response = staff.post(f"/smtp/{account.pk}/confirm/", {"code": code})
        assert response.status_code == 200
        assert "Too many attempts. Wait a while and try again." in response.content.decode()
        account.refresh_from_db()
        assert account.verified_at is None


# -- other users' accounts -------------------------------------------------------------


class TestOtherUsersAccounts:
    @pytest.fixture
    def theirs(self, smtp_server):
        stranger = UserFactory(username="stranger")
        return SmtpAccountFactory.for_server(smtp_server, owner=stranger, name="Stranger box")

    def test_pages_are_404(self, staff, theirs, smtp_server, allow_internal):
        assert staff.get(edit_url(theirs)).status_code == 404
        assert staff.post(edit_url(theirs), form_data(from_name="Hijack")).status_code == 404
        assert staff.post(f"/smtp/{theirs.pk}/test/").status_code == 404
        assert (
            staff.post(
                f"/smtp/{theirs.pk}/send-code/", {"recipient": "sam@example.test"}
            ).status_code
            == 404
        )
        assert staff.post(f"/smtp/{theirs.pk}/confirm/", {"code": "ABCDEFGH"}).status_code == 404
        theirs.refresh_from_db()
        assert theirs.from_name == ""
        assert theirs.last_success_at is None
        assert smtp_server.connections == 0

    def test_site_accounts_are_404(self, staff):
        site = SmtpAccountFactory(owner=None)
        assert staff.get(edit_url(site)).status_code == 404
        assert staff.post(f"/smtp/{site.pk}/test/").status_code == 404

    def test_missing_account_is_404(self, staff):
        assert staff.get("/smtp/999999/").status_code == 404

    def test_superuser_is_no_exception(self, admin_client, theirs):
        # The page is "my" settings: even a superuser sees only their own.
        assert admin_client.get(edit_url(theirs)).status_code == 404

    def test_not_listed(self, staff, user, theirs):
        SmtpAccountFactory(owner=user, name="Mine one")
        SmtpAccountFactory(owner=user, name="Mine two")
        html = staff.get("/smtp/?new").content.decode()
        assert "Mine one" in html
        assert "Mine two" in html
        assert "Stranger box" not in html
