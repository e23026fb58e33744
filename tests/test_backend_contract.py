"""Django's email backend contract, as django-multismtp keeps it on 5.2 and 6.1.

Return values, ``open()``/``close()``, options (``MAILERS`` OPTIONS on 6.1,
``get_connection()`` keyword arguments before), which errors ``fail_silently`` may
swallow, sending from async code, hints from code that cannot pass them, signals, the
status left on each message, and the network-free test backend.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage
from django.db import connections

from django_multismtp import limits
from django_multismtp.backends import EmailBackend
from django_multismtp.exceptions import (
    CancelSend,
    MultiSMTPConfigurationError,
    SendFailed,
    UnknownAccount,
)
from django_multismtp.hints import sending_as
from django_multismtp.message import MultiSMTPMessage, SendStatus
from django_multismtp.models import DeliveryLog, SmtpAccount
from django_multismtp.signals import account_state_changed, post_send, pre_send
from tests.factories import SmtpAccountFactory, UserFactory
from tests.mailers import DJANGO_61, direct_construction, get_mailer, send, use_mailers
from tests.smtp_servers import Fault, SMTPTestServer

pytestmark = [pytest.mark.django_db, direct_construction]

TEST_BACKEND = "django_multismtp.backends.test.EmailBackend"
THROTTLE = "4.7.0 Throttling failure: Maximum sending rate exceeded"


def message(subject: str = "Hello", *, to: tuple[str, ...] = ("to@example.test",), **kw: Any):
    return EmailMessage(subject=subject, body=f"Body of {subject}", to=list(to), **kw)


def subjects(server: SMTPTestServer) -> list[str]:
    return [str(received.message()["Subject"]) for received in server.received]


@pytest.fixture
def account(mailer, smtp_server) -> SmtpAccount:  # type: ignore[no-untyped-def]
    """The site default, on the plain test server."""
    return SmtpAccountFactory.for_server(smtp_server, name="A", is_site_default=True)


@pytest.fixture
def signal_log() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Every post_send and account_state_changed, in order."""
    seen: list[tuple[str, dict[str, Any]]] = []

    def on_post_send(sender: Any, **kwargs: Any) -> None:
        seen.append(("post_send", kwargs))

    def on_state(sender: Any, **kwargs: Any) -> None:
        seen.append(("state", kwargs))

    post_send.connect(on_post_send, weak=False)
    account_state_changed.connect(on_state, weak=False)
    try:
        yield seen
    finally:
        post_send.disconnect(on_post_send)
        account_state_changed.disconnect(on_state)


# -- send_messages() ------------------------------------------------------------------------


def test_empty_batch_returns_zero_without_queries(account, smtp_server, django_assert_num_queries):
    backend = get_mailer()
    with django_assert_num_queries(0):
        assert backend.send_messages([]) == 0
        assert backend.send_messages(iter([])) == 0
        assert backend.send_messages(m for m in ()) == 0
    assert smtp_server.connections == 0


def test_generators_and_iterators_are_accepted(account, smtp_server):
    backend = get_mailer()
    assert backend.send_messages(message(f"g{i}") for i in range(3)) == 3
    assert backend.send_messages(iter([message("i0")])) == 1
    assert subjects(smtp_server) == ["g0", "g1", "g2", "i0"]


def test_a_message_without_recipients_is_skipped(account, smtp_server):
    backend = get_mailer()
    empty = EmailMessage(subject="nobody", body="x", to=[])
    assert backend.send_messages([empty]) == 0
    assert smtp_server.connections == 0
    assert backend.send_messages([empty, message("somebody"), empty]) == 1
    assert subjects(smtp_server) == ["somebody"]
    assert DeliveryLog.objects.count() == 1


def test_the_return_value_counts_sent_messages(account, smtp_server):
    backend = get_mailer()
    assert backend.send_messages([message("a"), message("b")]) == 2
    smtp_server.add_fault(Fault.reply(550, "5.7.1 Content rejected", on_message=4))
    backend.fail_silently = True
    assert backend.send_messages([message("c"), message("d"), message("e")]) == 2
    backend.fail_silently = False
    smtp_server.add_fault(Fault.reply(550, "5.7.1 Content rejected", on_message=6))
    with pytest.raises(SendFailed) as caught:
        backend.send_messages([message("f"), message("g"), message("h")])
    # A refusal of one message stops neither the batch nor the connection.
    assert caught.value.sent_count == 2
    assert len(caught.value.failures) == 1
    assert subjects(smtp_server) == ["a", "b", "c", "e", "g", "h"]


# -- open() / close() -----------------------------------------------------------------------


def test_open_and_close(account, smtp_server):
    backend = get_mailer()
    assert backend.open() is True
    assert backend.open() is False
    assert backend.send_messages([message("one")]) == 1
    assert backend.send_messages([message("two")]) == 1
    backend.close()
    backend.close()  # idempotent
    assert smtp_server.connections == 1
    assert backend.open() is True  # can be opened again
    assert backend.send_messages([message("three")]) == 1
    backend.close()
    assert smtp_server.connections == 2
    assert subjects(smtp_server) == ["one", "two", "three"]


def test_close_without_open_or_sending(account):
    backend = get_mailer()
    backend.close()
    backend.close()
    assert backend.open() is True
    backend.close()


def test_context_manager(account, smtp_server):
    backend = get_mailer()
    with backend as connection:
        assert connection is backend
        assert backend.open() is False  # already open inside the block
        connection.send_messages([message("a")])
        connection.send_messages([message("b")])
    assert backend.open() is True  # closed by __exit__
    backend.close()
    assert smtp_server.connections == 1


# -- options --------------------------------------------------------------------------------


def test_purpose_option_routes_mail(settings, smtp_server, second_server):
    use_mailers(settings, default={}, campaigns={"OPTIONS": {"purpose": "campaigns"}})
    SmtpAccountFactory.for_server(smtp_server, name="system", is_site_default=True)
    SmtpAccountFactory.for_server(second_server, name="news", purpose="campaigns")
    assert send(message("newsletter"), using="campaigns") == 1
    assert send(message("password reset")) == 1
    assert subjects(second_server) == ["newsletter"]
    assert subjects(smtp_server) == ["password reset"]


def test_account_option_routes_mail(settings, smtp_server, second_server):
    use_mailers(settings, special={"OPTIONS": {"account": "special"}})
    SmtpAccountFactory.for_server(smtp_server, name="system", is_site_default=True)
    SmtpAccountFactory.for_server(second_server, name="special")
    assert send(message("via special"), using="special") == 1
    assert subjects(second_server) == ["via special"]
    assert smtp_server.received == []


def test_user_option_routes_mail_through_the_users_account(settings, smtp_server, second_server):
    carol = UserFactory(username="carol")
    use_mailers(settings, carol={"OPTIONS": {"user": "carol"}})
    SmtpAccountFactory.for_server(smtp_server, name="system", is_site_default=True)
    SmtpAccountFactory.for_server(
        second_server, name="carol's", owner=carol, from_email="carol@example.test"
    )
    msg = message("from carol")
    assert send(msg, using="carol") == 1
    assert subjects(second_server) == ["from carol"]
    assert msg.multismtp_status.account == "carol's"


def test_unknown_purpose_option_is_a_configuration_error(settings):
    use_mailers(settings, x={"OPTIONS": {"purpose": "nope"}})
    with pytest.raises(MultiSMTPConfigurationError) as caught:
        get_mailer("x")
    error = caught.value
    assert isinstance(error, ImproperlyConfigured)
    assert "'nope'" in str(error)
    assert "billing" in str(error)  # the known purposes are listed, MULTISMTP's included
    if DJANGO_61:
        assert isinstance(error, mail.InvalidMailer)
        assert str(error).startswith("MAILERS['x']: ")
    else:
        assert not str(error).startswith("MAILERS")


def test_unknown_option_name_is_handled_as_django_handles_it(settings):
    """As for Django's own backend: InvalidMailer under MAILERS (6.1), silently dropped by
    get_connection() before 6.1. (Was our own error on every line; the typo help is now
    the system check django_multismtp.E006, see test_checks.py.)"""
    use_mailers(settings, x={"OPTIONS": {"bogus_option": 1}})
    if DJANGO_61:
        with pytest.raises(mail.InvalidMailer) as caught:
            get_mailer("x")
        assert str(caught.value) == "MAILERS['x']: Unknown options 'bogus_option'."
    else:
        assert isinstance(get_mailer("x"), EmailBackend)


def test_unknown_keyword_when_constructed_directly():
    """6.1 warns (deprecation path) for unknown keywords and for direct construction,
    as for its own backend; older lines ignore unknown keywords."""
    if DJANGO_61:
        with pytest.warns(PendingDeprecationWarning) as caught:
            EmailBackend(purpse="campaigns")
        texts = [str(w.message) for w in caught]
        assert any("does not support 'purpse'" in text for text in texts)
        assert any(text.startswith("Directly creating EmailBackend") for text in texts)
    else:
        assert EmailBackend(purpse="campaigns").hints.purpose is None


def test_use_tls_and_use_ssl_together_is_a_configuration_error(settings):
    use_mailers(settings, x={"OPTIONS": {"use_tls": True, "use_ssl": True}})
    # Django's words on each line: "mutually exclusive" (a ValueError too) from the
    # EMAIL_* compatibility path, "incompatible" under 6.1's MAILERS.
    with pytest.raises(MultiSMTPConfigurationError, match="mutually exclusive|incompatible"):
        get_mailer("x")


def test_none_username_and_password_are_tolerated(settings, smtp_server):
    """No account matches: the fallback server from the options, without AUTH."""
    options = {"host": "127.0.0.1", "port": smtp_server.port, "username": None, "password": None}
    use_mailers(settings, default={"OPTIONS": options})
    msg = message("fallback")
    assert send(msg) == 1
    (received,) = smtp_server.received
    assert received.login is None
    assert msg.multismtp_status.account == "fallback"
    assert DeliveryLog.objects.get().account_name == "fallback"


# -- fail_silently --------------------------------------------------------------------------


def test_fail_silently_swallows_send_failures(settings, smtp_server):
    use_mailers(settings, quiet={"OPTIONS": {"fail_silently": True}})
    account = SmtpAccountFactory.for_server(smtp_server, name="A", is_site_default=True)
    smtp_server.add_fault(Fault.reply(550, "5.7.1 Message rejected as spam"))
    msg = message("spam?")
    assert send(msg, using="quiet") == 0
    assert msg.multismtp_status.outcome == "permanent"
    assert "5.7.1" in msg.multismtp_status.error
    # Loud without the option: the same failure raises.
    use_mailers(settings, loud={})
    smtp_server.add_fault(Fault.reply(550, "5.7.1 Message rejected as spam"))
    with pytest.raises(SendFailed):
        send(message("spam again"), using="loud")
    assert account.deliveries.filter(outcome="permanent").count() == 2


@pytest.mark.usefixtures("outbox_off")
def test_fail_silently_swallows_auth_failures_too(settings, starttls_server):
    use_mailers(settings, quiet={"OPTIONS": {"fail_silently": True}})
    SmtpAccountFactory.for_server(
        starttls_server, name="A", is_site_default=True, username="alice", password="nope"
    )
    assert send(message(), using="quiet") == 0
    assert DeliveryLog.objects.get().outcome == "auth_failed"


def test_fail_silently_does_not_swallow_configuration_errors(account, smtp_server):
    backend = EmailBackend(fail_silently=True)
    with pytest.raises(MultiSMTPConfigurationError, match="names no user"):
        backend.send_messages(
            [
                MultiSMTPMessage(
                    subject="s", body="b", to=["x@example.test"], smtp_user="no-such-user"
                )
            ]
        )
    with pytest.raises(MultiSMTPConfigurationError):
        EmailBackend(fail_silently=True, purpose="no-such-purpose")
    assert smtp_server.received == []


def test_fail_silently_does_not_swallow_invalid_addresses(account, smtp_server):
    backend = EmailBackend(fail_silently=True)
    with pytest.raises(ValueError):
        backend.send_messages([message(to=("a@example.test\r\nBcc: b@example.test",))])
    with pytest.raises(ValueError):
        backend.send_messages([message(from_email="me@example.test\nX-Evil: 1")])
    assert smtp_server.connections == 0


def test_unknown_account_hint_raises_even_when_failing_silently(account, smtp_server):
    backend = EmailBackend(fail_silently=True)
    ghost = MultiSMTPMessage(subject="s", body="b", to=["x@example.test"], smtp_account="ghost")
    with pytest.raises(UnknownAccount, match="ghost"):
        backend.send_messages([message("fine"), ghost])
    assert isinstance(UnknownAccount("x"), MultiSMTPConfigurationError)
    # The batch is refused as a whole, before anything goes out.
    assert smtp_server.received == []


# -- async ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_sync_send_messages_inside_a_running_event_loop(mailer, smtp_server):
    SmtpAccountFactory.for_server(smtp_server, name="A", is_site_default=True)
    backend = get_mailer()

    async def view() -> int:
        # What an async view calling mail.send_mail() (sync) ends up doing.
        with sending_as(purpose="system"):
            return int(backend.send_messages([message("from a coroutine")]))

    assert asyncio.run(view()) == 1
    assert subjects(smtp_server) == ["from a coroutine"]
    assert DeliveryLog.objects.get().outcome == "sent"


@pytest.mark.django_db(transaction=True)
def test_send_mail_inside_a_running_event_loop_keeps_context_hints(
    mailer, smtp_server, second_server
):
    SmtpAccountFactory.for_server(smtp_server, name="A", is_site_default=True)
    SmtpAccountFactory.for_server(second_server, name="billing", purpose="billing")

    async def view() -> int:
        with sending_as(purpose="billing"):
            return mail.send_mail("Invoice", "Body", None, ["to@example.test"])

    assert asyncio.run(view()) == 1
    assert subjects(second_server) == ["Invoice"]
    assert smtp_server.received == []


@pytest.mark.django_db(transaction=True)
def test_asend_messages(mailer, smtp_server):
    SmtpAccountFactory.for_server(smtp_server, name="A", is_site_default=True)
    backend = get_mailer()
    msgs = [message("async 1"), message("async 2")]

    async def main() -> int:
        try:
            return int(await backend.asend_messages(msgs))
        finally:
            # asend_messages ran the ORM in asgiref's worker thread: close its connection.
            await sync_to_async(connections.close_all)()

    assert asyncio.run(main()) == 2
    assert subjects(smtp_server) == ["async 1", "async 2"]
    assert [m.multismtp_status.outcome for m in msgs] == ["sent", "sent"]
    assert DeliveryLog.objects.count() == 2


# -- hints from code that cannot pass them --------------------------------------------------


@pytest.fixture
def routed(mailer, smtp_server, second_server, third_server):  # type: ignore[no-untyped-def]
    """A site default, a billing account and a personal account, on three servers."""
    dana = UserFactory(username="dana")
    SmtpAccountFactory.for_server(smtp_server, name="site", is_site_default=True)
    SmtpAccountFactory.for_server(second_server, name="billing", purpose="billing")
    SmtpAccountFactory.for_server(
        third_server, name="dana's", owner=dana, from_email="dana@example.test"
    )
    return dana


@pytest.fixture
def third_server() -> Iterator[SMTPTestServer]:
    with SMTPTestServer(mode="plain") as server:
        yield server


def test_sending_as_routes_send_mail(routed, smtp_server, second_server, third_server):
    dana = routed
    with sending_as(purpose="billing"):
        mail.send_mail("Invoice", "Body", None, ["to@example.test"])
    with sending_as(user=dana):
        mail.send_mail("From Dana", "Body", None, ["to@example.test"])
    with sending_as(account="billing"):
        mail.send_mail("By name", "Body", None, ["to@example.test"])
    mail.send_mail("Outside", "Body", None, ["to@example.test"])
    assert subjects(second_server) == ["Invoice", "By name"]
    assert subjects(third_server) == ["From Dana"]
    assert subjects(smtp_server) == ["Outside"]
    # Mail sent as Dana through her account carries her From address.
    assert third_server.received[0].mail_from == "dana@example.test"


def test_message_attributes_beat_the_context(routed, smtp_server, second_server, third_server):
    with sending_as(purpose="billing"):
        sent = send(
            MultiSMTPMessage(subject="attr", body="b", to=["t@example.test"], smtp_account="site"),
        )
        sent += send(MultiSMTPMessage(subject="ctx", body="b", to=["t@example.test"]))
        sent += send(
            MultiSMTPMessage(subject="user", body="b", to=["t@example.test"], smtp_user="dana")
        )
    assert sent == 3
    assert subjects(smtp_server) == ["attr"]
    assert subjects(second_server) == ["ctx"]
    assert subjects(third_server) == ["user"]


# -- signals --------------------------------------------------------------------------------


def test_pre_send_receiver_can_cancel_one_message(account, smtp_server, signal_log, clock):
    account.limit_per_minute = 10
    account.save()

    def veto(sender: Any, message: EmailMessage, account: Any, backend: Any, **kw: Any) -> None:
        if message.subject == "cancel me":
            raise CancelSend

    pre_send.connect(veto, weak=False)
    try:
        keep, drop = message("keep"), message("cancel me")
        assert get_mailer().send_messages([keep, drop]) == 1  # no exception
    finally:
        pre_send.disconnect(veto)
    assert subjects(smtp_server) == ["keep"]
    assert drop.multismtp_status.outcome == "cancelled"
    assert drop.multismtp_status.attempts == 0
    assert keep.multismtp_status.outcome == "sent"
    # The cancelled message's reservation was given back.
    assert limits.usage(account, clock())["minute"] == (1, 10)
    statuses = [kw["status"].outcome for name, kw in signal_log if name == "post_send"]
    assert statuses == ["sent", "cancelled"]


def test_post_send_gets_the_status(account, smtp_server, signal_log):
    msg = message("watched")
    assert get_mailer().send_messages([msg]) == 1
    ((name, kwargs),) = [entry for entry in signal_log if entry[0] == "post_send"]
    status = kwargs["status"]
    assert isinstance(status, SendStatus)
    assert kwargs["message"] is msg
    assert kwargs["account"] == account
    assert kwargs["failure"] is None
    assert (status.account, status.account_id, status.outcome) == ("A", account.pk, "sent")


def test_account_state_changed_on_throttle_failover_and_recovery(
    mailer, smtp_server, second_server, signal_log, clock
):
    a = SmtpAccountFactory.for_server(smtp_server, name="A", is_site_default=True, priority=1)
    SmtpAccountFactory.for_server(second_server, name="B", priority=2)
    smtp_server.add_fault(Fault.reply(454, THROTTLE, on_message=2))
    assert get_mailer().send_messages([message("m1"), message("m2")]) == 2
    changes = [(kw["account"].name, kw["change"]) for name, kw in signal_log if name == "state"]
    # A sent m1 before it was throttled: it did not "recover" in the same batch.
    assert changes == [("A", "rate_limited"), ("A", "failed_over")]
    rate_limited = next(kw for n, kw in signal_log if n == "state")
    assert rate_limited["failure"].code == 454
    assert rate_limited["account"].rate_limited_until == clock() + dt.timedelta(minutes=1)
    failed_over = [kw for n, kw in signal_log if n == "state"][1]
    assert failed_over["detail"] == "message moved to B"

    signal_log.clear()
    clock.advance(minutes=2)
    assert get_mailer().send_messages([message("m3")]) == 1
    assert subjects(smtp_server) == ["m1", "m3"]
    changes = [(kw["account"].name, kw["change"]) for name, kw in signal_log if name == "state"]
    assert changes == [("A", "recovered")]
    a.refresh_from_db()
    assert a.consecutive_throttles == 0


def test_a_failing_post_send_receiver_does_not_break_sending(account, smtp_server):
    def broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    post_send.connect(broken, weak=False)
    try:
        assert get_mailer().send_messages([message("robust")]) == 1
    finally:
        post_send.disconnect(broken)
    assert subjects(smtp_server) == ["robust"]


# -- the status on the message --------------------------------------------------------------


def test_multismtp_status_after_sending(account, smtp_server):
    msg = message("status")
    assert get_mailer().send_messages([msg]) == 1
    status = msg.multismtp_status
    (received,) = smtp_server.received
    assert status.account == "A"
    assert status.account_id == account.pk
    assert status.outcome == "sent"
    assert status.attempts == 1
    assert status.error == ""
    assert status.message_id == received.message()["Message-ID"]


def test_multismtp_status_after_a_failure(account, smtp_server):
    smtp_server.add_fault(Fault.reply(550, "5.7.1 Policy rejection"))
    msg = message("refused")
    with pytest.raises(SendFailed) as caught:
        get_mailer().send_messages([msg])
    status = msg.multismtp_status
    assert status.outcome == "permanent"
    # The account that failed last is named, so the status says where it went wrong.
    assert status.account == "A"
    assert status.attempts == 1
    assert "Policy rejection" in status.error
    assert caught.value.failures == [(status.message_id, caught.value.failure)]


# -- the test backend -----------------------------------------------------------------------


@pytest.fixture
def test_backend(settings) -> None:  # type: ignore[no-untyped-def]
    # Port 9 (discard) on loopback: nothing listens in this sandbox, so any attempt to
    # really connect would fail the send.
    use_mailers(
        settings, default={"BACKEND": TEST_BACKEND, "OPTIONS": {"host": "127.0.0.1", "port": 9}}
    )


def test_the_test_backend_records_the_chosen_account(test_backend, mailoutbox, clock):
    SmtpAccountFactory(name="site", is_site_default=True, port=9, priority=1)
    SmtpAccountFactory(name="spare", port=9, priority=2)
    SmtpAccountFactory(name="billing", purpose="billing", port=9)
    assert send(message("plain")) == 1
    assert (
        send(
            MultiSMTPMessage(
                subject="bill", body="b", to=["t@example.test"], smtp_purpose="billing"
            )
        )
        == 1
    )
    SmtpAccount.objects.filter(name="site").update(
        rate_limited_until=clock() + dt.timedelta(minutes=5)
    )
    assert send(message("while paused")) == 1
    assert [(m.subject, m.multismtp_account) for m in mailoutbox] == [
        ("plain", "site"),
        ("bill", "billing"),
        ("while paused", "spare"),
    ]
    assert b"Subject: plain" in mailoutbox[0].multismtp_wire
    assert DeliveryLog.objects.filter(outcome="sent").count() == 3


def test_the_test_backend_falls_back_when_nothing_matches(test_backend, mailoutbox):
    msg = message("nobody matches")
    assert send(msg) == 1
    (recorded,) = mailoutbox
    assert recorded.multismtp_account == "fallback"
    assert msg.multismtp_status.account == "fallback"


def test_the_test_backend_serves_send_mail(test_backend, mailoutbox):
    SmtpAccountFactory(name="site", is_site_default=True, port=9)
    assert mail.send_mail("Via send_mail", "Body", None, ["to@example.test"]) == 1
    assert [(m.subject, m.multismtp_account) for m in mailoutbox] == [("Via send_mail", "site")]


# -- nothing to send through ----------------------------------------------------------------


def test_no_account_and_no_fallback_server(settings, mailer):
    settings.MULTISMTP = {"PURPOSES": {"billing": "Billing"}, "USE_FALLBACK_SERVER": False}
    msg = message("lost?")
    # A configuration problem, not a transport one: raised even with fail_silently.
    connection = get_mailer()
    connection.fail_silently = True
    with pytest.raises(MultiSMTPConfigurationError) as caught:
        connection.send_messages([msg])
    assert "Create an SMTP account" in str(caught.value)
    assert "no fallback server" in str(caught.value)
    assert msg.multismtp_status.outcome == "config_error"
    assert msg.multismtp_status.attempts == 0
