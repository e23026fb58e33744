"""SmtpAccount: validation a person understands, sender rules, passwords encrypted at rest."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.core import mail
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from django_multismtp.models import DeliveryLog, SmtpAccount
from tests.factories import SmtpAccountFactory, UserFactory
from tests.mailers import get_mailer

pytestmark = pytest.mark.django_db


def errors_of(account: SmtpAccount) -> dict[str, list[str]]:
    """``full_clean()``'s messages by field ({} when the account is valid)."""
    try:
        account.full_clean()
    except ValidationError as exc:
        return exc.message_dict
    return {}


def valid(**fields: Any) -> SmtpAccount:
    return SmtpAccountFactory.build(**fields)


def test_factory_account_is_valid():
    assert errors_of(valid()) == {}


# -- security and port ---------------------------------------------------------------------


@pytest.mark.parametrize("port", [25, 587])
def test_implicit_tls_on_a_starttls_port(port):
    errors = errors_of(valid(security="tls", port=port))
    assert list(errors) == ["port"]
    (message,) = errors["port"]
    assert f"Port {port} expects STARTTLS or plain SMTP, not implicit TLS" in message
    assert "465" in message


@pytest.mark.parametrize("security", ["starttls", "none", "opportunistic"])
def test_non_implicit_tls_on_port_465(security):
    errors = errors_of(valid(security=security, port=465))
    assert errors == {
        "port": ["Port 465 expects implicit TLS. Choose 'Implicit TLS', or use port 587."]
    }


@pytest.mark.parametrize(
    ("security", "port"),
    [("tls", 465), ("starttls", 587), ("none", 25), ("opportunistic", 25), ("tls", 2465)],
)
def test_matching_security_and_port(security, port):
    assert errors_of(valid(security=security, port=port)) == {}


# -- authentication ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["plain", "login", "cram-md5"])
def test_explicit_auth_needs_a_user_name(method):
    errors = errors_of(valid(auth_method=method, username=""))
    assert errors == {
        "username": ["Enter the user name to log in with, or choose no authentication."]
    }
    assert errors_of(valid(auth_method=method, username="alice", password="pw")) == {}


@pytest.mark.parametrize("method", ["auto", "none"])
def test_auto_and_no_auth_need_no_user_name(method):
    assert errors_of(valid(auth_method=method, username="")) == {}


# -- sender rules --------------------------------------------------------------------------


def test_from_address_must_be_among_the_allowed_senders():
    errors = errors_of(valid(from_email="news@example.test", allowed_senders="other.test"))
    assert errors == {
        "from_email": [
            "news@example.test is not among the allowed From addresses of this account. "
            "Add it (or its domain) there."
        ]
    }


@pytest.mark.parametrize(
    "allowed", ["example.test", "@example.test", "news@example.test", "a.test, Example.TEST"]
)
def test_from_address_covered_by_the_allowed_senders(allowed):
    assert errors_of(valid(from_email="news@example.test", allowed_senders=allowed)) == {}


@pytest.mark.parametrize("entry", ["user@@example.test", "@", "bad_domain!", "a@b@c.test"])
def test_malformed_allowed_sender_entry(entry):
    errors = errors_of(
        valid(from_email="news@example.test", allowed_senders=f"example.test\n{entry}")
    )
    assert list(errors) == ["allowed_senders"]
    (message,) = errors["allowed_senders"]
    assert repr(entry.lower()) in message
    assert "neither an email address nor a domain" in message


# -- purpose, host, site default -----------------------------------------------------------


def test_unknown_purpose_lists_the_known_ones():
    errors = errors_of(valid(purpose="marketing"))
    assert list(errors) == ["purpose"]
    (message,) = errors["purpose"]
    assert "Unknown purpose 'marketing'" in message
    for known in ("system", "customer_service", "campaigns", "billing"):
        assert known in message


def test_purpose_from_settings_is_accepted(settings):
    assert errors_of(valid(purpose="billing")) == {}
    settings.MULTISMTP = {}
    assert "purpose" in errors_of(valid(purpose="billing"))


@pytest.mark.parametrize(
    "host",
    ["smtp://mail.example.test", "mail.example.test:587", "[mail.example.test]", "mail example"],
)
def test_host_must_be_a_bare_host_name(host):
    errors = errors_of(valid(host=host))
    assert errors == {
        "host": ["Enter a host name such as smtp.example.com, without smtp:// or a port."]
    }


@pytest.mark.parametrize("host", ["smtp.example.test", "127.0.0.1", "::1", "2001:db8::25", "mx_1"])
def test_acceptable_hosts(host):
    assert errors_of(valid(host=host)) == {}


def test_personal_account_cannot_be_a_site_default():
    owner = UserFactory()
    errors = errors_of(valid(owner=owner, is_site_default=True))
    assert errors == {
        "is_site_default": ["A personal account (with an owner) cannot be a site default."]
    }
    assert errors_of(valid(owner=owner)) == {}


def test_one_site_default_per_purpose():
    first = SmtpAccountFactory(purpose="system", is_site_default=True)
    errors = errors_of(valid(purpose="system", is_site_default=True))
    assert list(errors) == [NON_FIELD_ERRORS]
    (message,) = errors[NON_FIELD_ERRORS]
    assert "already the site default for this purpose" in message
    # Another purpose, a non-default, or the default itself: fine.
    assert errors_of(valid(purpose="billing", is_site_default=True)) == {}
    assert errors_of(valid(purpose="system")) == {}
    assert errors_of(first) == {}


def test_one_site_default_per_purpose_in_the_database():
    SmtpAccountFactory(purpose="system", is_site_default=True)
    with pytest.raises(IntegrityError), transaction.atomic():
        SmtpAccountFactory(purpose="system", is_site_default=True)
    SmtpAccountFactory(purpose="system", is_site_default=False)
    SmtpAccountFactory(purpose="billing", is_site_default=True)
    assert SmtpAccount.objects.filter(is_site_default=True).count() == 2


@pytest.mark.parametrize(("value", "ok"), [(0, False), (1, True), (50, True), (51, False)])
def test_max_connections_range(value, ok):
    errors = errors_of(valid(max_connections=value))
    if ok:
        assert errors == {}
    else:
        assert list(errors) == ["max_connections"]
        assert "Ensure this value is" in errors["max_connections"][0]


# -- may_send ------------------------------------------------------------------------------


def test_may_send():
    account = valid(
        from_email="News@Example.test", allowed_senders="billing@shop.test; @corp.test, other.test"
    )
    assert account.may_send("news@example.test")
    assert account.may_send("NEWS@EXAMPLE.TEST")
    assert account.may_send("billing@shop.test")
    assert not account.may_send("sales@shop.test")
    assert account.may_send("anyone@corp.test")
    assert account.may_send("anyone@other.test")
    assert not account.may_send("anyone@sub.other.test")
    assert not account.may_send("someone@example.test")
    assert not account.may_send("")
    assert not valid(from_email="a@example.test", allowed_senders="").may_send("b@example.test")


# -- passwords encrypted at rest -----------------------------------------------------------


def raw_password(account: SmtpAccount) -> bytes:
    table = connection.ops.quote_name(SmtpAccount._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT password FROM {table} WHERE id = %s", [account.pk])  # noqa: S608
        (value,) = cursor.fetchone()
    return bytes(value)


def reload(account: SmtpAccount) -> SmtpAccount:
    return SmtpAccount.objects.get(pk=account.pk)


def test_password_is_encrypted_at_rest():
    account = SmtpAccountFactory(password="correct horse battery")
    raw = raw_password(account)
    assert b"correct horse" not in raw
    assert raw.startswith(b"gAAAAA")
    assert reload(account).password == "correct horse battery"


def test_key_rotation(settings):
    settings.FERNET_KEYS = ["test-key-one"]
    old = SmtpAccountFactory(password="old-secret")

    settings.FERNET_KEYS = ["new", "test-key-one"]
    assert reload(old).password == "old-secret"
    new = SmtpAccountFactory(password="new-secret")
    resaved = reload(old)
    resaved.save()

    settings.FERNET_KEYS = ["new"]
    assert reload(new).password == "new-secret"
    assert reload(old).password == "old-secret"  # re-encrypted with the new key on save
    settings.FERNET_KEYS = ["test-key-one"]
    assert reload(new).has_undecryptable_password


def test_undecryptable_password_is_kept_and_reported(settings):
    account = SmtpAccountFactory(password="old-secret", host="smtp.example.test")
    ciphertext = raw_password(account)

    settings.FERNET_KEYS = ["a-key-that-never-wrote-it"]
    (loaded,) = list(SmtpAccount.objects.all())  # loading the table does not raise
    assert loaded.has_undecryptable_password
    assert str(loaded.password) == ""
    assert "old-secret" not in repr(loaded.password)
    config = loaded.server_config()
    assert config.password_error is True
    assert config.password == ""

    # Editing something else keeps the stored secret as it was.
    loaded.host = "smtp2.example.test"
    loaded.full_clean()
    loaded.save()
    assert raw_password(account) == ciphertext

    settings.FERNET_KEYS = ["test-key-one"]
    restored = reload(account)
    assert restored.password == "old-secret"
    assert restored.host == "smtp2.example.test"
    assert not restored.has_undecryptable_password
    assert restored.server_config().password_error is False


def test_sending_fails_over_from_an_account_with_an_undecryptable_password(
    settings, mailer, smtp_server, second_server
):
    locked = SmtpAccountFactory.for_server(
        smtp_server,
        name="locked",
        from_email="sender@example.test",
        priority=1,
        auth_method="auto",
        username="alice",
        password="pw",
    )
    spare = SmtpAccountFactory.for_server(
        second_server, name="spare", allowed_senders="example.test", priority=2
    )
    settings.FERNET_KEYS = ["a-key-that-never-wrote-it"]

    message = mail.EmailMessage("Hi", "Body", "sender@example.test", ["to@example.test"])
    assert get_mailer().send_messages([message]) == 1

    (received,) = second_server.wait_for(1)
    assert received.mail_from == "sender@example.test"
    assert smtp_server.received == [] and smtp_server.connections == 0
    assert message.multismtp_status.account == "spare"  # type: ignore[attr-defined]

    locked = reload(locked)
    assert "FERNET_KEYS" in locked.last_error
    assert locked.last_error_at is not None
    log = sorted(DeliveryLog.objects.values_list("account_name", "outcome", "attempt"))
    assert log == [("locked", "config_error", 1), ("spare", "sent", 2)]
    assert reload(spare).last_success_at is not None


@pytest.mark.django_db
def test_stored_bad_ehlo_name_is_a_config_error_not_a_crash(smtp_server):
    """Rows written outside the forms (or before a check existed) must not break sending."""
    from django_multismtp import ops

    account = SmtpAccountFactory.for_server(smtp_server, ehlo_hostname="bad name\r\nX")
    with pytest.raises(ValidationError) as caught:
        account.full_clean()
    assert "ehlo_hostname" in caught.value.message_dict
    result = ops.test_connection(account)
    assert not result.ok and result.outcome == "config_error"
    assert "stored setting" in result.hint


@pytest.mark.django_db
def test_from_name_with_line_break_is_refused():
    account = SmtpAccountFactory.build(from_name="Evil\r\nBcc: x@y")
    with pytest.raises(ValidationError) as caught:
        account.full_clean()
    assert "from_name" in caught.value.message_dict


@pytest.mark.django_db
def test_a_success_on_record_is_not_written_again(django_assert_num_queries):
    """A draining worker's batches follow each other within tenths of a second: an
    account whose row already says it succeeded less than a second ago, with no error
    since and no throttle counted, is not written again (one statement per batch,
    issue #17). Any of those three not so, and it is."""
    from django_multismtp import state

    now = timezone.now()
    fresh = SmtpAccountFactory(name="fresh", last_success_at=now - dt.timedelta(seconds=0.5))
    old = SmtpAccountFactory(name="old", last_success_at=now - dt.timedelta(seconds=2))
    erred = SmtpAccountFactory(
        name="erred",
        last_success_at=now - dt.timedelta(seconds=0.5),
        last_error_at=now - dt.timedelta(seconds=0.2),
    )
    throttled = SmtpAccountFactory(
        name="throttled", last_success_at=now - dt.timedelta(seconds=0.5), consecutive_throttles=2
    )
    with django_assert_num_queries(0):
        state.record_successes([fresh], now)
    for account in (old, erred, throttled):
        with django_assert_num_queries(1):
            state.record_successes([account], now)
        account.refresh_from_db()
        assert (account.last_success_at, account.consecutive_throttles) == (now, 0)
    fresh.refresh_from_db()
    assert fresh.last_success_at == now - dt.timedelta(seconds=0.5)
