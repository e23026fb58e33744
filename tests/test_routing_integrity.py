"""Routing integrity: an account hint means one account, and nobody can take another's mail.

The attack these tests replay: the owner of a personal account renames it to "1", the
primary key of a shared account, and so receives the mail hinted by that key (by
instance, by ``int``, by the ``X-MultiSMTP-Account`` header, or queued in the outbox,
which used to keep the hint as text). Real SMTP servers on 127.0.0.1, the real admin
and the real database throughout.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from django_multismtp import worker
from django_multismtp.exceptions import (
    AccountNotAllowed,
    MultiSMTPConfigurationError,
    UnknownAccount,
)
from django_multismtp.models import OutboxMessage, SmtpAccount
from django_multismtp.models.account import NAME_NOT_DIGITS
from tests.factories import SmtpAccountFactory, UserFactory
from tests.mailers import get_mailer
from tests.smtp_servers import SMTPTestServer
from tests.test_admin import ADD, add_data, change_data, change_url, form_errors

pytestmark = pytest.mark.django_db

DIGITS_ERROR = "An account name cannot be only digits"


def outbox_mode(settings: Any, mode: str) -> None:
    settings.MULTISMTP = {**getattr(settings, "MULTISMTP", {}), "OUTBOX": mode}


def subjects(server: SMTPTestServer) -> list[str]:
    return sorted(str(r.message()["Subject"]) for r in server.received)


def hinted(subject: str, how: str, target: SmtpAccount) -> Any:
    from django.core.mail import EmailMessage

    message = EmailMessage(subject=subject, body="b", to=["to@example.test"])
    if how == "instance":
        message.smtp_account = target  # type: ignore[attr-defined]
    elif how == "pk":
        message.smtp_account = target.pk  # type: ignore[attr-defined]
    else:
        message.extra_headers["X-MultiSMTP-Account"] = str(target.pk)
    return message


@contextlib.contextmanager
def without_name_guard() -> Iterator[None]:
    """Let a digit name into the table, as on a database migrated before the guard
    existed (or edited by hand): routing must not depend on the guard alone."""
    table = SmtpAccount._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA ignore_check_constraints = ON")
            try:
                yield
            finally:
                cursor.execute("PRAGMA ignore_check_constraints = OFF")
        elif connection.vendor == "postgresql":  # DDL inside the test's transaction
            # (ALTER TABLE waits for no deferred foreign-key check of the fixtures)
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT "{NAME_NOT_DIGITS.name}"')
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")
            yield
        else:  # pragma: no cover
            pytest.skip(f"no way to bypass a check constraint on {connection.vendor}")


@pytest.fixture
def owner() -> Any:
    return UserFactory(username="mallory", email="mallory@example.test")


@pytest.fixture
def shared(mailer, smtp_server, clock) -> SmtpAccount:  # type: ignore[no-untyped-def]
    return SmtpAccountFactory.for_server(smtp_server, name="shared", is_site_default=True)


@pytest.fixture
def mine(owner, second_server, shared) -> SmtpAccount:  # type: ignore[no-untyped-def]
    """The owner's personal account, first in every ordering (priority 0)."""
    return SmtpAccountFactory.for_server(second_server, name="mine", owner=owner, priority=0)


# -- names that look like primary keys are refused ----------------------------------------


@pytest.mark.parametrize("name", ["1", "42", " 7 ", "0001"])
def test_the_model_refuses_names_of_digits(name):
    account = SmtpAccountFactory.build(name=name)
    with pytest.raises(ValidationError) as excinfo:
        account.full_clean()
    errors = excinfo.value.message_dict
    assert list(errors) == ["name"]  # said once, on the field (not again by the constraint)
    assert DIGITS_ERROR in errors["name"][0]
    assert f"account-{name.strip()}" in errors["name"][0]


@pytest.mark.parametrize("name", ["1a", "account-1", "1 (personal)", "v2", "١"])
def test_names_with_anything_but_ascii_digits_are_fine(name):
    SmtpAccountFactory.build(name=name).full_clean()


@pytest.mark.parametrize("name", ["1", "007", ""])
def test_the_database_refuses_names_of_digits_from_code_that_skips_validation(name):
    with pytest.raises(IntegrityError), transaction.atomic():
        SmtpAccountFactory(name=name)
    account = SmtpAccountFactory(name="fine")
    with pytest.raises(IntegrityError), transaction.atomic():
        SmtpAccount.objects.filter(pk=account.pk).update(name=name)


def test_an_owner_cannot_rename_their_account_to_another_accounts_id(settings, mine, shared, owner):
    settings.MULTISMTP = {"ALLOW_INTERNAL_HOSTS": True}  # the test server's 127.0.0.1
    browser = Client()
    browser.force_login(owner)
    data = change_data(browser, mine, name=str(shared.pk))
    response = browser.post(change_url(mine), data)
    assert response.status_code == 200
    errors = form_errors(response)
    assert list(errors) == ["name"]
    assert DIGITS_ERROR in errors["name"][0]
    mine.refresh_from_db()
    assert mine.name == "mine"
    # Any other new name is still theirs to choose.
    data = change_data(browser, mine, name=f"{shared.pk} mine")
    assert browser.post(change_url(mine), data).status_code == 302


def test_the_admin_add_form_refuses_a_name_of_digits(admin_client):
    response = admin_client.post(ADD, add_data(name="12"))
    assert response.status_code == 200
    assert DIGITS_ERROR in form_errors(response)["name"][0]
    assert not SmtpAccount.objects.exists()


def test_the_self_service_form_never_makes_a_name_of_digits(settings):
    settings.MULTISMTP = {"ALLOW_INTERNAL_HOSTS": True}
    user = UserFactory(username="7")
    browser = Client()
    browser.force_login(user)
    data = {
        "from_email": "seven@example.test",
        "host": "127.0.0.1",
        "port": "2525",
        "security": "none",
        "auth_method": "none",
        "password": "",
    }
    assert browser.post("/smtp/", data).status_code == 302
    assert browser.post("/smtp/?new", data).status_code == 302
    assert sorted(SmtpAccount.objects.values_list("name", flat=True)) == [
        "7 (personal)",
        "7 (personal) 2",
    ]


# -- the attack, end to end ---------------------------------------------------------------


@pytest.mark.parametrize("how", ["instance", "pk", "header"])
@pytest.mark.parametrize("mode", ["retry", "always"], ids=["direct", "outbox"])
def test_mail_hinted_by_a_key_reaches_that_account_even_if_another_is_named_so(
    settings, shared, mine, smtp_server, second_server, how, mode
):
    outbox_mode(settings, mode)
    with without_name_guard():
        SmtpAccount.objects.filter(pk=mine.pk).update(name=str(shared.pk))
    assert get_mailer().send_messages([hinted("for shared", how, shared)]) == 1
    if mode == "always":
        row = OutboxMessage.objects.get()
        assert (row.hinted_account_id, row.account_hint) == (shared.pk, "shared")
        assert worker.drain().sent == 1
    assert subjects(smtp_server) == ["for shared"]
    assert second_server.received == []


def test_queued_mail_keeps_its_account_when_names_change_before_it_is_sent(
    settings, mailer, smtp_server, second_server, clock
):
    outbox_mode(settings, "always")
    newsletter = SmtpAccountFactory.for_server(smtp_server, name="newsletter")
    other = SmtpAccountFactory.for_server(second_server, name="other", is_site_default=True)
    message = hinted("news", "pk", newsletter)
    message.smtp_account = "newsletter"  # by name this time
    get_mailer().send_messages([message])
    # While it waits, the names are swapped.
    SmtpAccount.objects.filter(pk=newsletter.pk).update(name="newsletter-old")
    SmtpAccount.objects.filter(pk=other.pk).update(name="newsletter")
    assert worker.drain().sent == 1
    assert subjects(smtp_server) == ["news"]
    assert second_server.received == []


# -- personal accounts carry only their owner's mail -------------------------------------


@pytest.mark.parametrize("how", ["instance", "pk", "header"])
@pytest.mark.parametrize("mode", ["retry", "always"], ids=["direct", "outbox"])
def test_a_hint_naming_a_personal_account_is_refused_for_other_peoples_mail(
    settings, mine, owner, smtp_server, second_server, how, mode
):
    outbox_mode(settings, mode)
    for sender in (None, UserFactory(username="victim")):
        message = hinted("not theirs", how, mine)
        if sender is not None:
            message.smtp_user = sender  # type: ignore[attr-defined]
        with pytest.raises(AccountNotAllowed, match="'mine' is personal"):
            get_mailer().send_messages([message])
    assert not OutboxMessage.objects.exists()
    assert smtp_server.received == [] and second_server.received == []


@pytest.mark.parametrize("mode", ["retry", "always"], ids=["direct", "outbox"])
def test_a_hint_naming_a_personal_account_works_for_its_owners_mail(
    settings, mine, owner, second_server, mode
):
    outbox_mode(settings, mode)
    message = hinted("mine", "instance", mine)
    message.smtp_user = owner  # type: ignore[attr-defined]
    assert get_mailer().send_messages([message]) == 1
    if mode == "always":
        assert worker.drain().sent == 1
    assert subjects(second_server) == ["mine"]


def test_the_worker_refuses_a_queued_row_for_a_personal_account_not_sent_as_its_owner(
    settings, mine, owner, smtp_server, second_server
):
    # A row that names a personal account without its owner (queued before the rule,
    # or its user since deleted) is reported, never sent through it or another account.
    outbox_mode(settings, "always")
    message = hinted("orphan", "instance", mine)
    message.smtp_user = owner  # type: ignore[attr-defined]
    get_mailer().send_messages([message])
    OutboxMessage.objects.update(user=None)
    assert worker.drain().sent == 0
    row = OutboxMessage.objects.get()
    assert row.status == OutboxMessage.Status.QUEUED
    assert "'mine' is personal" in row.last_error
    assert smtp_server.received == [] and second_server.received == []


@pytest.mark.parametrize("deleted", [False, True], ids=["kept", "deleted"])
def test_the_outbox_page_shows_the_hinted_account_even_once_deleted(
    settings, admin_client, shared, deleted
):
    outbox_mode(settings, "always")
    newsletter = SmtpAccountFactory(name="newsletter")
    get_mailer().send_messages([hinted("news", "instance", newsletter)])
    row = OutboxMessage.objects.get()
    pk = newsletter.pk
    if deleted:
        newsletter.delete()
    page = admin_client.get(f"/admin/django_multismtp/outboxmessage/{row.pk}/change/")
    assert page.status_code == 200
    body = page.content.decode()
    assert 'name="hinted_account"' not in body  # read-only: nobody re-routes a message
    assert "newsletter" in body
    row.refresh_from_db()
    assert row.hinted_account_id == pk  # kept: the worker reports it, never re-routes


# -- rows queued before this release ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "error"),
    [("987654", "with id 987654 exists"), ("renamed-away", "is named 'renamed-away'")],
)
def test_an_unresolved_text_hint_of_an_old_row_is_reported_by_the_worker(
    shared, smtp_server, clock, text, error
):
    row = OutboxMessage.objects.create(
        message_id="<old@example.test>",
        from_email="webmaster@localhost",
        envelope_recipients="to@example.test",
        data=b"Subject: old\r\nMessage-ID: <old@example.test>\r\n\r\nold\r\n",
        account_hint=text,
        created_at=clock(),
        next_attempt_at=clock(),
    )
    assert worker.drain().sent == 0
    row.refresh_from_db()
    assert error in row.last_error
    assert smtp_server.received == []


# -- the migration ----------------------------------------------------------------------

MIGRATION = ("django_multismtp", "0005_outbox_account_ref")


@pytest.mark.django_db(transaction=True)
def test_the_migration_renames_digit_names_and_resolves_text_hints():
    executor = MigrationExecutor(connection)
    before = list(executor.loader.graph.node_map[MIGRATION].parents)
    after = executor.loader.graph.leaf_nodes()
    executor.migrate([parent.key for parent in before])
    try:
        apps = (
            MigrationExecutor(connection)
            .loader.project_state([parent.key for parent in before])
            .apps
        )
        Account = apps.get_model("django_multismtp", "SmtpAccount")
        Outbox = apps.get_model("django_multismtp", "OutboxMessage")

        owner = apps.get_model("auth", "User").objects.create(username="seven")

        def account(pk: int, name: str, **fields: Any) -> None:
            Account.objects.create(
                pk=pk, name=name, from_email="a@example.test", host="127.0.0.1", **fields
            )

        account(101, "news")
        # A digit name; "account-7" is taken, so it gets "-2". Rows refer to it (its
        # owner, an outbox row it sent): renaming must not trip their foreign keys.
        account(102, "7", owner=owner)
        account(103, "account-7")
        account(104, "5")
        now = "2026-01-01T00:00:00Z"
        for hint in ("101", "news", "102", "7", "999", "gone", ""):
            Outbox.objects.create(
                message_id=f"<{hint}@x>",
                from_email="a@example.test",
                envelope_recipients="to@example.test",
                data=b"x",
                account_hint=hint,
                created_at=now,
                next_attempt_at=now,
                sent_by_id=102,
            )
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(after)

    names = dict(SmtpAccount.objects.values_list("pk", "name"))
    assert names == {101: "news", 102: "account-7-2", 103: "account-7", 104: "account-5"}
    rows = {
        r.message_id: (r.hinted_account_id, r.account_hint) for r in OutboxMessage.objects.all()
    }
    assert rows == {
        "<101@x>": (101, "news"),  # digits that are a primary key: that account
        "<news@x>": (101, "news"),  # a name: that account
        "<102@x>": (102, "account-7-2"),
        "<7@x>": (None, "7"),  # digits that were only a name: unresolved, reported
        "<999@x>": (None, "999"),
        "<gone@x>": (None, "gone"),
        "<@x>": (None, ""),
    }
    with pytest.raises(IntegrityError), transaction.atomic():
        SmtpAccount.objects.filter(pk=101).update(name="8")


def test_an_unknown_account_hint_is_still_an_unknown_account(shared):
    # Code written for UnknownAccount keeps catching every refused hint.
    assert issubclass(AccountNotAllowed, UnknownAccount)


def test_a_user_hint_of_digits_is_a_user_name_never_a_primary_key(
    settings, mine, owner, smtp_server, second_server
):
    # Someone registers the user name "<owner's id>": text hints are user names only, so
    # their mail never counts as sent by the owner (whose personal account it would use).
    impostor = UserFactory(username=str(owner.pk))
    outbox_mode(settings, "retry")
    message = hinted("impostor", "instance", mine)
    message.smtp_user = str(owner.pk)  # type: ignore[attr-defined]
    with pytest.raises(AccountNotAllowed):
        get_mailer().send_messages([message])
    # The header is text too: the impostor's name, not the owner's key.
    plain = hinted("by header", "pk", mine)
    del plain.smtp_account  # type: ignore[attr-defined]
    plain.extra_headers["X-MultiSMTP-User"] = str(owner.pk)
    assert get_mailer().send_messages([plain]) == 1
    assert subjects(smtp_server) == ["by header"] and second_server.received == []
    # A digit string that names no user is an error, not a lookup by primary key.
    impostor.delete()
    lost = hinted("lost", "pk", mine)
    del lost.smtp_account  # type: ignore[attr-defined]
    lost.smtp_user = str(owner.pk)  # type: ignore[attr-defined]
    with pytest.raises(MultiSMTPConfigurationError, match="names no user"):
        get_mailer().send_messages([lost])
    # The owner's own mail by primary key (an int) still uses their account.
    theirs = hinted("theirs", "instance", mine)
    theirs.smtp_user = owner.pk  # type: ignore[attr-defined]
    assert get_mailer().send_messages([theirs]) == 1
    assert subjects(second_server) == ["theirs"]
