"""The fallback server: what the backend uses when the database holds no SMTP account.

It makes the backend a drop-in for Django's SMTP backend, so it must behave like it in
both configuration styles: Django 6.1's ``MAILERS`` OPTIONS, and the ``EMAIL_*``
settings (the only style before 6.1, deprecated in 6.1). The last part ports the
behaviours of Django's own ``SMTPBackendTests`` to our backend, over the wire to real
servers on 127.0.0.1.
"""

from __future__ import annotations

import smtplib
import socket
import warnings
from typing import Any

import django
import pytest
from django.core import mail
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.utils.translation import gettext_lazy

from django_multismtp.backends import EmailBackend
from django_multismtp.exceptions import MultiSMTPConfigurationError, MultiSMTPError, SendFailed
from django_multismtp.models import DeliveryLog
from django_multismtp.replies import HINTS, Outcome
from tests.conftest import USERS
from tests.mailers import direct_construction
from tests.smtp_servers import Fault, SMTPTestServer

OURS = "django_multismtp.backends.EmailBackend"
DJANGO_60 = django.VERSION >= (6, 0)
DJANGO_61 = django.VERSION >= (6, 1)

only_61 = pytest.mark.skipif(not DJANGO_61, reason="MAILERS is new in Django 6.1")

pytestmark = [pytest.mark.django_db, direct_construction]


def free_port() -> int:
    """A port nothing listens on: bind to get one from the kernel, then let it go."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def message(**kwargs: Any) -> EmailMessage:
    kwargs.setdefault("subject", "Subject")
    kwargs.setdefault("body", "Content")
    kwargs.setdefault("from_email", "from@example.com")
    to = kwargs.pop("to", ["to@example.com"])
    return EmailMessage(to=to, **kwargs)


def backend(server: SMTPTestServer, **options: Any) -> EmailBackend:
    """Our backend pointed at ``server`` through keyword options (no settings involved)."""
    options.setdefault("timeout", 5)
    return EmailBackend(host=server.host, port=server.port, **options)


def default_mailer_to(settings: Any, server: SMTPTestServer, **options: Any) -> None:
    """Make the default mailer our backend with ``server`` as fallback, warning-free.

    MAILERS OPTIONS on Django 6.1, the (not yet deprecated) EMAIL_* settings before.
    """
    if DJANGO_61:
        settings.MAILERS = {
            "default": {
                "BACKEND": OURS,
                "OPTIONS": {"host": server.host, "port": server.port, **options},
            }
        }
    else:
        settings.EMAIL_BACKEND = OURS
        settings.EMAIL_HOST = server.host
        settings.EMAIL_PORT = server.port
        for name, value in options.items():
            setattr(settings, f"EMAIL_{name.upper()}", value)


def admins_setting(*addresses: str) -> list[Any]:
    """ADMINS/MANAGERS: address strings since Django 6.0, (name, address) pairs before."""
    if DJANGO_60:
        return list(addresses)
    return [(address.partition("@")[0], address) for address in addresses]


# ---------------------------------------------------------------------------------------
# MAILERS style (Django 6.1)
# ---------------------------------------------------------------------------------------


def use_mailers(settings: Any, **options: Any) -> None:
    settings.MAILERS = {"default": {"BACKEND": OURS, "OPTIONS": options}}


@only_61
class TestMailersOptions:
    def test_send_mail_goes_to_the_options_server(self, settings, smtp_server):
        use_mailers(settings, host="127.0.0.1", port=smtp_server.port)
        assert mail.send_mail("Hi", "Body", "from@example.com", ["to@example.com"]) == 1
        (received,) = smtp_server.wait_for(1)
        assert received.mail_from == "from@example.com"
        assert received.rcpt_tos == ["to@example.com"]
        assert received.message()["Subject"] == "Hi"
        (row,) = DeliveryLog.objects.all()
        assert (row.account_id, row.account_name, row.outcome) == (None, "fallback", "sent")

    def test_message_status_names_the_fallback(self, settings, smtp_server):
        use_mailers(settings, host="127.0.0.1", port=smtp_server.port)
        email = message()
        assert email.send() == 1
        assert email.multismtp_status.account == "fallback"
        assert email.multismtp_status.outcome == "sent"

    def test_use_tls_starttls_and_login(self, settings, starttls_server, tls_files, monkeypatch):
        # The fallback verifies certificates with ssl.create_default_context(), as
        # Django's backend does; SSL_CERT_FILE makes that context trust the test cert.
        monkeypatch.setenv("SSL_CERT_FILE", tls_files.cert_path)
        use_mailers(
            settings,
            host="127.0.0.1",
            port=starttls_server.port,
            use_tls=True,
            username="alice",
            password=USERS["alice"],
        )
        assert mail.send_mail("Hi", "Body", "from@example.com", ["to@example.com"]) == 1
        (received,) = starttls_server.wait_for(1)
        assert received.tls and received.login == "alice"

    def test_use_ssl_implicit_tls_and_login(
        self, settings, implicit_server, tls_files, monkeypatch
    ):
        monkeypatch.setenv("SSL_CERT_FILE", tls_files.cert_path)
        use_mailers(
            settings,
            host="127.0.0.1",
            port=implicit_server.port,
            use_ssl=True,
            username="bob",
            password=USERS["bob"],
        )
        assert mail.send_mail("Hi", "Body", "from@example.com", ["to@example.com"]) == 1
        (received,) = implicit_server.wait_for(1)
        assert received.tls and received.login == "bob"
        assert [(login, ok) for _, login, ok in implicit_server.auth_attempts] == [("bob", True)]

    @pytest.mark.usefixtures("outbox_off")
    def test_untrusted_certificate_is_refused(self, settings, implicit_server, monkeypatch):
        """Without trusting the test certificate the default context must refuse it."""
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        use_mailers(
            settings,
            host="127.0.0.1",
            port=implicit_server.port,
            use_ssl=True,
            username="bob",
            password=USERS["bob"],
            timeout=5,
        )
        with pytest.raises(SendFailed) as caught:
            mail.send_mail("Hi", "Body", "from@example.com", ["to@example.com"])
        assert caught.value.failure.outcome == Outcome.TLS_FAILED
        assert caught.value.hint == HINTS["certificate"]
        assert implicit_server.received == []

    @pytest.mark.usefixtures("outbox_off")
    def test_wrong_password_fails_with_a_hint(
        self, settings, starttls_server, tls_files, monkeypatch
    ):
        monkeypatch.setenv("SSL_CERT_FILE", tls_files.cert_path)
        use_mailers(
            settings,
            host="127.0.0.1",
            port=starttls_server.port,
            use_tls=True,
            username="alice",
            password="wrong",
        )
        with pytest.raises(SendFailed) as caught:
            mail.send_mail("Hi", "Body", "from@example.com", ["to@example.com"])
        assert caught.value.failure.outcome == Outcome.AUTH_FAILED
        assert caught.value.smtp_code == 535
        assert "App Password" in caught.value.hint
        assert starttls_server.received == []
        assert starttls_server.auth_attempts and not starttls_server.auth_attempts[-1][2]

    def test_email_settings_are_never_read(self, settings, smtp_server):
        """Django 6.1 raises AttributeError for any EMAIL_* read while MAILERS is defined,
        so a backend that looked at them could not send at all."""
        use_mailers(settings, host="127.0.0.1", port=smtp_server.port)
        with pytest.raises(AttributeError, match="not available when MAILERS is defined"):
            settings.EMAIL_HOST  # noqa: B018
        assert mail.mailers["default"].send_messages([message()]) == 1
        assert len(smtp_server.wait_for(1)) == 1

    def test_missing_host_is_invalid_mailer_as_in_django(self, settings):
        """No "localhost" default under MAILERS (that came from EMAIL_HOST): like Django's
        backend, ours refuses a mailer without host when it is created, and says how a
        mailer that sends through accounts only declares it. (Before this contract the
        error came at the first send.)"""
        use_mailers(settings)  # no OPTIONS at all
        with pytest.raises(mail.InvalidMailer) as caught:
            mail.mailers["default"]  # noqa: B018
        assert isinstance(caught.value, MultiSMTPConfigurationError)
        error = str(caught.value)
        assert error.startswith("MAILERS['default']: OPTIONS must define 'host'.")
        assert '"fallback": False' in error

    def test_accounts_only_mailer_without_accounts_is_an_error_with_a_hint(self, settings):
        use_mailers(settings, fallback=False)
        email = message()
        # Nowhere to send is a configuration error (InvalidMailer, ImproperlyConfigured),
        # not a transport failure: no back-off or retry would help.
        with pytest.raises(MultiSMTPConfigurationError) as caught:
            email.send()
        error = str(caught.value)
        assert error.startswith("MAILERS['default']: ")
        assert "no fallback server" in error
        assert "set the mailer's host" in error  # the hint
        assert email.multismtp_status.outcome == "config_error"
        assert DeliveryLog.objects.count() == 0

    def test_accounts_only_mailer_error_is_not_hidden_by_fail_silently(self, settings):
        use_mailers(settings, fallback=False, fail_silently=True)
        with pytest.raises(MultiSMTPConfigurationError, match="no fallback server"):
            mail.mailers["default"].send_messages([message()])

    def test_options_of_a_named_alias(self, settings, smtp_server, second_server):
        settings.MAILERS = {
            "default": {
                "BACKEND": OURS,
                "OPTIONS": {"host": "127.0.0.1", "port": smtp_server.port},
            },
            "other": {
                "BACKEND": OURS,
                "OPTIONS": {"host": "127.0.0.1", "port": second_server.port},
            },
        }
        assert message().send(using="other") == 1
        assert len(second_server.wait_for(1)) == 1
        assert smtp_server.received == []


def test_fallback_turned_off_without_accounts_is_an_error(settings, smtp_server):
    settings.MULTISMTP = {"PURPOSES": {"billing": "Billing"}, "USE_FALLBACK_SERVER": False}
    connection = backend(smtp_server)
    assert connection.fallback is None
    # A configuration error (ImproperlyConfigured), never swallowed by fail_silently.
    with pytest.raises(MultiSMTPConfigurationError) as caught:
        connection.send_messages([message()])
    assert "Create an SMTP account" in str(caught.value)
    assert smtp_server.connections == 0


def test_unreachable_fallback_is_queued_by_the_outbox_not_raised(clock):
    """open() raises what Django's backend raises, but send_messages() with the outbox
    on (the default) keeps the mail for later instead of losing it."""
    connection = EmailBackend(host="127.0.0.1", port=free_port())
    with pytest.raises(ConnectionRefusedError):
        connection.open()
    email = message()
    assert connection.send_messages([email]) == 1
    assert email.multismtp_status.outcome == "queued"
    (row,) = DeliveryLog.objects.all()
    assert (row.account_name, row.outcome) == ("fallback", "connection_failed")


def test_worker_settles_rows_while_the_fallback_is_unreachable(settings, clock):
    """The worker never calls open(): a server that is down fails each row (logged,
    retried later); it must not raise and leave the batch claimed."""
    from django_multismtp import worker
    from django_multismtp.models import OutboxMessage

    port = free_port()
    if DJANGO_61:
        settings.MAILERS = {
            "default": {"BACKEND": OURS, "OPTIONS": {"host": "127.0.0.1", "port": port}}
        }
    else:
        settings.EMAIL_BACKEND, settings.EMAIL_HOST, settings.EMAIL_PORT = OURS, "127.0.0.1", port
    assert mail.send_mail("Hi", "Body", "from@example.com", ["to@example.com"]) == 1
    clock.advance(hours=3)
    worker.drain()  # must not raise
    (row,) = OutboxMessage.objects.all()
    assert row.status == OutboxMessage.Status.QUEUED and row.attempts == 2
    assert DeliveryLog.objects.filter(outcome="connection_failed").count() == 2


@pytest.mark.usefixtures("outbox_off")
def test_unreachable_fallback_raises_at_once_with_the_outbox_off():
    connection = EmailBackend(host="127.0.0.1", port=free_port())
    with pytest.raises(ConnectionRefusedError) as caught:
        connection.send_messages([message()])
    assert isinstance(caught.value, SendFailed)


# ---------------------------------------------------------------------------------------
# EMAIL_BACKEND + EMAIL_* style (every version)
# ---------------------------------------------------------------------------------------


def use_email_settings(settings: Any, **values: Any) -> None:
    """Configure mail the pre-6.1 way; on 6.1 MAILERS must go first (they conflict)."""
    if DJANGO_61:
        del settings.MAILERS
    settings.EMAIL_BACKEND = OURS
    for name, value in values.items():
        setattr(settings, name, value)


# Django 6.1 deprecates the EMAIL_* settings and get_connection(): setting or reading
# them emits RemovedInDjango2028Warning (a PendingDeprecationWarning), which the pytest
# configuration turns into errors. These tests exercise exactly that deprecated style on
# purpose, so they ignore those two messages, and nothing else. Older Djangos emit none.
legacy_style = [
    pytest.mark.filterwarnings(
        r"ignore:The EMAIL_\w+ setting is deprecated:PendingDeprecationWarning"
    ),
    pytest.mark.filterwarnings(
        r"ignore:get_connection\(\) is deprecated:PendingDeprecationWarning"
    ),
]


class TestEmailSettings:
    pytestmark = legacy_style

    def test_send_mail_uses_email_host_and_port(self, settings, smtp_server):
        use_email_settings(settings, EMAIL_HOST="127.0.0.1", EMAIL_PORT=smtp_server.port)
        assert mail.send_mail("Hi", "Body", "from@example.com", ["to@example.com"]) == 1
        (received,) = smtp_server.wait_for(1)
        assert received.rcpt_tos == ["to@example.com"] and not received.tls

    def test_use_tls_user_and_password(self, settings, starttls_server, tls_files, monkeypatch):
        monkeypatch.setenv("SSL_CERT_FILE", tls_files.cert_path)
        use_email_settings(
            settings,
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=starttls_server.port,
            EMAIL_USE_TLS=True,
            EMAIL_HOST_USER="alice",
            EMAIL_HOST_PASSWORD=USERS["alice"],
            EMAIL_TIMEOUT=5,
        )
        assert mail.send_mail("Hi", "Body", "from@example.com", ["to@example.com"]) == 1
        (received,) = starttls_server.wait_for(1)
        assert received.tls and received.login == "alice"

    def test_use_ssl_user_and_password(self, settings, implicit_server, tls_files, monkeypatch):
        monkeypatch.setenv("SSL_CERT_FILE", tls_files.cert_path)
        use_email_settings(
            settings,
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=implicit_server.port,
            EMAIL_USE_SSL=True,
            EMAIL_HOST_USER="bob",
            EMAIL_HOST_PASSWORD=USERS["bob"],
        )
        assert mail.send_mail("Hi", "Body", "from@example.com", ["to@example.com"]) == 1
        (received,) = implicit_server.wait_for(1)
        assert received.tls and received.login == "bob"

    @pytest.mark.usefixtures("outbox_off")
    def test_email_timeout_setting(self, settings, smtp_server):
        smtp_server.add_fault(Fault.stall(5, stage="MAIL"))
        use_email_settings(
            settings, EMAIL_HOST="127.0.0.1", EMAIL_PORT=smtp_server.port, EMAIL_TIMEOUT=0.3
        )
        connection = mail.get_connection()
        assert connection.fallback.timeout == 0.3
        with pytest.raises(SendFailed) as caught:
            connection.send_messages([message()])
        assert caught.value.failure.outcome == Outcome.CONNECTION_FAILED
        assert caught.value.hint == HINTS["timeout"]

    def test_get_connection_options_override_settings(self, settings, smtp_server):
        use_email_settings(
            settings,
            EMAIL_HOST="nowhere.invalid",
            EMAIL_PORT=free_port(),
            EMAIL_USE_TLS=True,
            EMAIL_HOST_USER="alice",
            EMAIL_HOST_PASSWORD="secret",
        )
        connection = mail.get_connection(
            host="127.0.0.1", port=smtp_server.port, use_tls=False, username="", password=""
        )
        assert connection.send_messages([message()]) == 1
        (received,) = smtp_server.wait_for(1)
        assert received.login is None and not received.tls

    def test_send_mail_auth_user_and_password(
        self, settings, implicit_server, tls_files, monkeypatch
    ):
        """send_mail(auth_user=..., auth_password=...) reach the fallback login."""
        monkeypatch.setenv("SSL_CERT_FILE", tls_files.cert_path)
        use_email_settings(
            settings,
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=implicit_server.port,
            EMAIL_USE_SSL=True,
        )
        with warnings.catch_warnings():
            # Django 6.1 deprecates these two arguments as well; they still work.
            warnings.filterwarnings(
                "ignore",
                "The 'auth_user' and 'auth_password' arguments are deprecated",
                PendingDeprecationWarning,
            )
            sent = mail.send_mail(
                "Hi",
                "Body",
                "from@example.com",
                ["to@example.com"],
                auth_user="alice",
                auth_password=USERS["alice"],
            )
        assert sent == 1
        assert implicit_server.wait_for(1)[0].login == "alice"

    def test_default_host_is_localhost(self, settings):
        """Django's EMAIL_HOST default, "localhost", port 25, like Django's backend."""
        use_email_settings(settings)
        connection = mail.get_connection()
        assert (connection.fallback.host, connection.fallback.port) == ("localhost", 25)

    def test_tls_and_ssl_are_mutually_exclusive(self, settings):
        use_email_settings(settings, EMAIL_USE_TLS=True, EMAIL_USE_SSL=True)
        with pytest.raises(django.core.exceptions.ImproperlyConfigured, match="mutually"):
            mail.get_connection()


# ---------------------------------------------------------------------------------------
# Django's SMTPBackendTests, ported to the fallback over the wire
# ---------------------------------------------------------------------------------------


@pytest.mark.usefixtures("outbox_off")
class TestDjangoSMTPBehaviours:
    def test_send_simple_message(self, smtp_server):
        email = message(headers={"X-Custom": "yes"})
        assert backend(smtp_server).send_messages([email]) == 1
        (received,) = smtp_server.wait_for(1)
        parsed = received.message()
        assert parsed["Subject"] == "Subject"
        assert parsed["From"] == "from@example.com"
        assert parsed["To"] == "to@example.com"
        assert parsed["X-Custom"] == "yes"
        assert parsed["Message-ID"]
        assert parsed.get_content() == "Content\n"
        # RFC 5321: CRLF only on the wire (Django's #23063).
        assert b"\n" not in received.data.replace(b"\r\n", b"")
        assert b"\r" not in received.data.replace(b"\r\n", b"")

    def test_send_unicode(self, smtp_server):
        email = message(
            subject="Chère maman, ça va? ✓",
            body="Jeden Tag ein Äpfelchen; 日本語のテキスト.",
            from_email="Jérôme Léger <from@example.com>",
            to=["Zoë Ångström <to@example.com>"],
        )
        assert backend(smtp_server).send_messages([email]) == 1
        (received,) = smtp_server.wait_for(1)
        parsed = received.message()
        assert parsed["Subject"] == "Chère maman, ça va? ✓"
        assert parsed["From"].addresses[0].display_name == "Jérôme Léger"
        assert parsed["To"].addresses[0].display_name == "Zoë Ångström"
        assert parsed.get_content() == "Jeden Tag ein Äpfelchen; 日本語のテキスト.\n"
        assert received.mail_from == "from@example.com"
        assert received.rcpt_tos == ["to@example.com"]

    def test_html_alternative(self, smtp_server):
        email = EmailMultiAlternatives(
            to=["to@example.com"], subject="Subject", body="plain", from_email="f@example.com"
        )
        email.attach_alternative("<p>html</p>", "text/html")
        assert backend(smtp_server).send_messages([email]) == 1
        parsed = smtp_server.wait_for(1)[0].message()
        assert parsed.get_content_type() == "multipart/alternative"
        assert parsed.get_body(("html",)).get_content().strip() == "<p>html</p>"

    def test_idn_domains_are_punycoded_in_the_envelope(self, smtp_server):
        email = EmailMessage(
            to=["To Example <to@漢字.example.com>"],
            from_email="lists@discussão.example.org",
            bcc=["monitor@discussão.example.org"],
            subject="IDN",
            body="Content",
        )
        assert backend(smtp_server).send_messages([email]) == 1
        (received,) = smtp_server.wait_for(1)
        assert received.mail_from == "lists@xn--discusso-xza.example.org"
        assert received.rcpt_tos == [
            "to@xn--p8s937b.example.com",
            "monitor@xn--discusso-xza.example.org",
        ]

    def test_idna_2008_is_not_reencoded(self, smtp_server):
        email = EmailMessage(
            to=['"faß" <to@xn--10cl1a0b660p.example.com>'],
            from_email='"βόλος" <from@xn--fa-hia.example.com>',
            cc=['"ශ්රී" <cc@xn--nxasmm1c.example.com>'],
            bcc=['"نامهای." <bcc@xn--mgba3gch31f060k.example.com>'],
        )
        assert backend(smtp_server).send_messages([email]) == 1
        (received,) = smtp_server.wait_for(1)
        assert received.mail_from == "from@xn--fa-hia.example.com"
        assert received.rcpt_tos == [
            "to@xn--10cl1a0b660p.example.com",
            "cc@xn--nxasmm1c.example.com",
            "bcc@xn--mgba3gch31f060k.example.com",
        ]

    @pytest.mark.parametrize(
        "address",
        [
            "to@other.com@example.com",
            "to@other.com <to@example.com>",
            "to@example.com, other@example.com",
            "@",
            "to@",
            "@example.com",
            '"evil@example.com\r\nto"@example.com',
            "to\nevil@example.com",
            "nø@example.dk",
        ],
    )
    def test_invalid_addresses_never_reach_the_server(self, smtp_server, address):
        with pytest.raises(ValueError, match="Invalid address"):
            backend(smtp_server).send_messages([EmailMessage(bcc=[address])])
        # Like Django's backend, send_messages() connects (open()) before it looks at
        # the addresses; nothing reaches the server.
        assert smtp_server.received == []

    def test_lazy_addresses_and_subject(self, smtp_server):
        _ = gettext_lazy
        email = EmailMessage(
            to=[_("to@example.com")],
            subject=_("Lazy subject"),
            body="Content",
            from_email=_("from@example.com"),
            cc=[_("cc@example.com")],
            bcc=[_("bcc@example.com")],
            reply_to=[_("reply@example.com")],
        )
        assert backend(smtp_server).send_messages([email]) == 1
        (received,) = smtp_server.wait_for(1)
        parsed = received.message()
        assert parsed["Subject"] == "Lazy subject"
        assert parsed["Reply-To"] == "reply@example.com"
        assert received.mail_from == "from@example.com"
        assert received.rcpt_tos == ["to@example.com", "cc@example.com", "bcc@example.com"]

    def test_lazy_addresses_without_domain_and_with_display_names(self, smtp_server):
        """Django's test_lazy_addresses: local names and lazy display names (#24416)."""
        _ = gettext_lazy
        emails = [
            EmailMessage(to=[_("django")], from_email=_("tester"), subject="1"),
            EmailMessage(
                to=[_("Django <django@example.com>")],
                from_email=_("Firstname Sürname <tester@example.com>"),
                subject="2",
            ),
        ]
        assert backend(smtp_server).send_messages(emails) == 2
        first, second = smtp_server.wait_for(2)
        assert (first.mail_from, first.rcpt_tos) == ("tester", ["django"])
        assert first.message()["To"] == "django"
        assert (second.mail_from, second.rcpt_tos) == ("tester@example.com", ["django@example.com"])
        assert second.message()["From"].addresses[0].display_name == "Firstname Sürname"

    def test_bcc_is_not_a_header(self, smtp_server):
        email = message(cc=["cc@example.com"], bcc=["hidden@example.com"])
        assert backend(smtp_server).send_messages([email]) == 1
        (received,) = smtp_server.wait_for(1)
        assert "hidden@example.com" in received.rcpt_tos
        assert received.message()["Bcc"] is None
        assert b"hidden@example.com" not in received.data
        assert received.message()["Cc"] == "cc@example.com"

    def test_use_ssl_against_a_plain_server_fails(self, smtp_server):
        with pytest.raises(SendFailed) as caught:
            backend(smtp_server, use_ssl=True, timeout=2).send_messages([message()])
        assert caught.value.failure.outcome == Outcome.TLS_FAILED
        assert caught.value.hint == HINTS["tls_mismatch"]
        assert smtp_server.received == []

    def test_use_tls_against_an_implicit_tls_server_fails(self, implicit_server):
        # The client waits for a plain greeting, the server for a TLS hello: a time-out,
        # whose hint names exactly this mix-up.
        with pytest.raises(SendFailed) as caught:
            backend(implicit_server, use_tls=True, timeout=0.3).send_messages([message()])
        failure = caught.value.failure
        assert failure.outcome == Outcome.CONNECTION_FAILED
        assert failure.hint == HINTS["timeout"]
        assert "implicit TLS" in failure.hint
        assert implicit_server.received == []

    def test_use_tls_against_a_plain_server_without_starttls_fails(self, smtp_server):
        with pytest.raises(SendFailed) as caught:
            backend(smtp_server, use_tls=True).send_messages([message()])
        assert caught.value.failure.outcome == Outcome.TLS_FAILED
        assert "STARTTLS" in caught.value.failure.text
        assert smtp_server.received == []

    def test_auth_against_a_server_without_auth_fails(self, smtp_server):
        """Django: non-empty username/password make the backend try to log in."""
        with pytest.raises(SendFailed) as caught:
            backend(smtp_server, username="user", password="pw").send_messages([message()])
        assert caught.value.failure.outcome == Outcome.AUTH_FAILED
        # The hint names what the server's EHLO offered: no AUTH at all.
        assert caught.value.hint == (
            f"{HINTS['auth_not_offered']} The server offered no login method (no AUTH)."
        )
        assert smtp_server.received == []

    def test_empty_username_and_password_disable_login(self, smtp_server):
        assert backend(smtp_server, username="", password="").send_messages([message()]) == 1
        assert smtp_server.wait_for(1)[0].login is None

    def test_tls_and_ssl_options_are_mutually_exclusive(self, smtp_server):
        # Django's words: "mutually exclusive" from the EMAIL_* path, "incompatible"
        # where 6.1's MAILERS is configured.
        with pytest.raises(
            django.core.exceptions.ImproperlyConfigured, match="mutually|incompatible"
        ):
            backend(smtp_server, use_tls=True, use_ssl=True)

    def test_timeout_raises_an_smtp_exception(self, smtp_server):
        smtp_server.add_fault(Fault.stall(5))
        connection = backend(smtp_server, timeout=1)
        with pytest.raises(smtplib.SMTPException) as caught:
            connection.send_messages([message()])
        assert isinstance(caught.value, SendFailed) and isinstance(caught.value, MultiSMTPError)
        assert caught.value.failure.outcome == Outcome.CONNECTION_FAILED
        assert caught.value.hint == HINTS["timeout"]
        assert smtp_server.received == []

    def test_fail_silently_on_connection_refused(self):
        port = free_port()
        connection = EmailBackend(host="127.0.0.1", port=port, fail_silently=True)
        email = message()
        assert connection.send_messages([email]) == 0
        assert email.multismtp_status.outcome == Outcome.CONNECTION_FAILED
        (row,) = DeliveryLog.objects.all()
        assert row.outcome == "connection_failed" and row.account_name == "fallback"

    def test_connection_refused_raises_without_fail_silently(self):
        connection = EmailBackend(host="127.0.0.1", port=free_port())
        with pytest.raises(SendFailed) as caught:
            connection.send_messages([message()])
        assert caught.value.hint == HINTS["refused"]
        assert caught.value.sent_count == 0

    def test_fail_silently_does_not_hide_invalid_addresses(self, smtp_server):
        with pytest.raises(ValueError, match="Invalid address"):
            backend(smtp_server, fail_silently=True).send_messages([message(to=["to@"])])

    def test_send_many_returns_the_count(self, smtp_server):
        emails = [message(subject=f"n{i}", to=[f"to{i}@example.com"]) for i in range(3)]
        assert backend(smtp_server).send_messages(emails) == 3
        received = smtp_server.wait_for(3)
        assert sorted(r.message()["Subject"] for r in received) == ["n0", "n1", "n2"]
        assert smtp_server.connections == 1

    def test_send_messages_empty_list(self, smtp_server):
        assert backend(smtp_server).send_messages([]) == 0
        assert smtp_server.connections == 0

    def test_send_messages_accepts_an_iterator(self, smtp_server):
        emails = (message(subject=f"it{i}") for i in range(2))
        assert backend(smtp_server).send_messages(emails) == 2
        assert len(smtp_server.wait_for(2)) == 2

    def test_message_without_recipients_is_not_sent(self, smtp_server):
        email = EmailMessage(to=[], subject="Subject", body="Content", from_email="f@example.com")
        assert backend(smtp_server).send_messages([email]) == 0
        assert email.send() == 0  # Django's own shortcut: no recipients, no connection
        assert smtp_server.connections == 0
        assert DeliveryLog.objects.count() == 0

    def test_recipientless_message_does_not_stop_the_others(self, smtp_server):
        emails = [EmailMessage(to=[], subject="none"), message(subject="one")]
        assert backend(smtp_server).send_messages(emails) == 1
        assert smtp_server.wait_for(1)[0].message()["Subject"] == "one"

    def test_server_disconnect_is_an_error(self, smtp_server):
        smtp_server.add_fault(Fault.disconnect())
        with pytest.raises(SendFailed) as caught:
            backend(smtp_server).send_messages([message()])
        assert caught.value.failure.outcome == Outcome.CONNECTION_FAILED
        assert caught.value.hint == HINTS["disconnected"]
        assert smtp_server.received == []

    def test_server_disconnect_after_greeting(self, smtp_server):
        smtp_server.add_fault(Fault.disconnect(stage="EHLO"))
        with pytest.raises(smtplib.SMTPException):
            backend(smtp_server).send_messages([message()])

    def test_connection_is_reused_between_open_and_close(self, smtp_server):
        connection = backend(smtp_server)
        assert connection.open() is True
        assert connection.open() is False  # already open: Django's contract
        try:
            assert connection.send_messages([message(subject="1")]) == 1
            assert connection.send_messages([message(subject="2")]) == 1
            assert connection.send_messages([message(subject="3"), message(subject="4")]) == 2
        finally:
            connection.close()
        assert len(smtp_server.wait_for(4)) == 4
        assert smtp_server.connections == 1

    def test_context_manager_reuses_the_connection(self, smtp_server):
        with backend(smtp_server) as connection:
            connection.send_messages([message()])
            connection.send_messages([message()])
        assert len(smtp_server.wait_for(2)) == 2
        assert smtp_server.connections == 1

    def test_without_open_each_call_connects(self, smtp_server):
        connection = backend(smtp_server)
        connection.send_messages([message()])
        connection.send_messages([message()])
        assert len(smtp_server.wait_for(2)) == 2
        assert smtp_server.connections == 2

    def test_reconnects_after_the_server_dropped_the_connection(self, smtp_server):
        smtp_server.add_fault(Fault.disconnect(on_message=1))
        with backend(smtp_server) as connection:
            with pytest.raises(SendFailed):
                connection.send_messages([message(subject="lost")])
            assert connection.send_messages([message(subject="kept")]) == 1
        (received,) = smtp_server.wait_for(1)
        assert received.message()["Subject"] == "kept"
        assert smtp_server.connections == 2

    def test_close_twice_and_close_unopened(self, smtp_server):
        connection = backend(smtp_server)
        connection.close()
        connection.open()
        connection.send_messages([message()])
        connection.close()
        connection.close()
        assert len(smtp_server.wait_for(1)) == 1

    def test_close_after_server_stopped(self, tls_files):
        server = SMTPTestServer().start()
        try:
            connection = backend(server)
            connection.open()
            connection.send_messages([message()])
        finally:
            server.stop()
        connection.close()  # must not raise, like Django's test_server_stopped
        assert len(server.received) == 1

    def test_send_mail_and_mass_mail(self, settings, smtp_server):
        default_mailer_to(settings, smtp_server)
        assert mail.send_mail("Subject", "Content", "from@example.com", ["a@example.com"]) == 1
        datatuple = (
            ("S1", "C1", "from@example.com", ["b@example.com"]),
            ("S2", "C2", "from@example.com", ["c@example.com"]),
        )
        assert mail.send_mass_mail(datatuple) == 2
        received = smtp_server.wait_for(3)
        assert [r.rcpt_tos for r in received] == [
            ["a@example.com"],
            ["b@example.com"],
            ["c@example.com"],
        ]

    def test_default_from_email(self, settings, smtp_server):
        default_mailer_to(settings, smtp_server)
        settings.DEFAULT_FROM_EMAIL = "Site <site@example.com>"
        assert mail.send_mail("Subject", "Content", None, ["to@example.com"]) == 1
        (received,) = smtp_server.wait_for(1)
        assert received.mail_from == "site@example.com"
        assert received.message()["From"] == "Site <site@example.com>"

    def test_mail_admins_and_managers(self, settings, smtp_server):
        default_mailer_to(settings, smtp_server)
        settings.ADMINS = admins_setting("admin1@example.com", "admin2@example.com")
        settings.MANAGERS = admins_setting("manager@example.com")
        settings.SERVER_EMAIL = "server@example.com"
        settings.EMAIL_SUBJECT_PREFIX = "[Site] "
        mail.mail_admins("Broken", "Content", html_message="<p>Content</p>")
        mail.mail_managers("Report", "Content")
        admins, managers = smtp_server.wait_for(2)
        assert admins.rcpt_tos == ["admin1@example.com", "admin2@example.com"]
        assert admins.mail_from == "server@example.com"
        assert admins.message()["Subject"] == "[Site] Broken"
        assert admins.message().get_content_type() == "multipart/alternative"
        assert managers.rcpt_tos == ["manager@example.com"]
        assert managers.message()["Subject"] == "[Site] Report"

    def test_mail_admins_without_admins_sends_nothing(self, settings, smtp_server):
        default_mailer_to(settings, smtp_server)
        settings.ADMINS = []
        mail.mail_admins("Broken", "Content")
        assert smtp_server.connections == 0

    def test_long_lines_survive(self, smtp_server):
        body = "Comment ça va? " * 100
        assert backend(smtp_server).send_messages([message(body=body)]) == 1
        (received,) = smtp_server.wait_for(1)
        assert max(len(line) for line in received.data.split(b"\r\n")) <= 998
        assert received.message().get_content().rstrip("\n") == body

    def test_reply_refused_at_rcpt_is_permanent(self, smtp_server):
        smtp_server.add_fault(Fault.reply(550, "5.1.1 No such user", stage="RCPT"))
        with pytest.raises(SendFailed) as caught:
            backend(smtp_server).send_messages([message()])
        assert caught.value.failure.outcome == Outcome.PERMANENT
        assert caught.value.smtp_code == 550
        assert caught.value.hint == HINTS["recipient_refused"]
