"""Statements compiled once per connection (``django_multismtp.precompiled``).

The reads must give exactly what the querysets they replace give (values converted as
Django converts them: decrypted secrets, aware datetimes on SQLite), be compiled once,
and the updates must write and count as ``QuerySet.update()`` does.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models.signals import post_init, pre_init
from django.db.models.sql.compiler import SQLCompiler
from django.test.utils import CaptureQueriesContext

from django_multismtp import precompiled
from django_multismtp.bulk import insert_rows
from django_multismtp.engine import load_accounts
from django_multismtp.models import (
    ConnectionSlot,
    DeliveryLog,
    OAuthConnection,
    OutboxMessage,
    SmtpAccount,
)
from tests.factories import SmtpAccountFactory

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)


def field_values(account: SmtpAccount) -> dict[str, Any]:
    return {f.attname: getattr(account, f.attname) for f in SmtpAccount._meta.concrete_fields}


def test_every_row_gives_what_the_queryset_gives() -> None:
    SmtpAccountFactory(name="b", priority=5, password="s3cret-b")
    SmtpAccountFactory(
        name="a",
        priority=5,
        password="s3cret-a",
        rate_limited_until=NOW + dt.timedelta(minutes=5),
        last_success_at=NOW,
    )
    SmtpAccountFactory(name="c", priority=1, password="")

    rows = precompiled.every_row(SmtpAccount)
    expected = list(SmtpAccount.objects.all())

    assert [a.name for a in rows] == ["c", "a", "b"]  # the model's ordering
    assert [field_values(a) for a in rows] == [field_values(a) for a in expected]
    by_name = {a.name: a for a in rows}
    assert by_name["a"].password == "s3cret-a"  # decrypted, as the ORM does
    assert by_name["a"].rate_limited_until == NOW + dt.timedelta(minutes=5)  # aware
    assert not by_name["a"]._state.adding
    assert by_name["a"]._state.db == "default"


def test_a_read_is_compiled_once_per_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    SmtpAccountFactory(name="one")
    precompiled.every_row(SmtpAccount)  # compiled here (or earlier in this thread)
    compiled: list[Any] = []
    original = SQLCompiler.as_sql

    def counting(self: SQLCompiler, *args: Any, **kwargs: Any) -> Any:
        compiled.append(self.query.model)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SQLCompiler, "as_sql", counting)
    with CaptureQueriesContext(connection) as queries:
        assert [a.name for a in precompiled.every_row(SmtpAccount)] == ["one"]
    assert compiled == []
    assert len(queries) == 1


def test_load_accounts_compiles_nothing_and_fills_in_oauth(
    monkeypatch: pytest.MonkeyPatch, django_assert_num_queries: Any
) -> None:
    plain = SmtpAccountFactory(name="plain")
    bearer = SmtpAccountFactory(name="bearer", auth_method="xoauth2")
    unconnected = SmtpAccountFactory(name="unconnected", auth_method="xoauth2")
    plain.default_for.add(_user())
    OAuthConnection.objects.create(account=bearer, provider="google", state="connected")
    load_accounts()  # compiled on first use

    compiled: list[Any] = []
    original = SQLCompiler.as_sql
    monkeypatch.setattr(
        SQLCompiler, "as_sql", lambda self, *a, **k: compiled.append(1) or original(self, *a, **k)
    )
    with django_assert_num_queries(3):  # accounts, their default-for users, OAuth rows
        accounts = {a.name: a for a in load_accounts()}
    assert compiled == []
    with django_assert_num_queries(0):  # as select_related("oauth") leaves them
        assert accounts["bearer"].oauth.state == "connected"
        assert accounts["bearer"].oauth.account is accounts["bearer"]
        assert not hasattr(accounts["unconnected"], "oauth")
        assert len(accounts["plain"].default_for_ids) == 1  # type: ignore[attr-defined]
    assert unconnected.pk in {a.pk for a in accounts.values()}


def test_without_oauth_accounts_no_oauth_rows_are_read(django_assert_num_queries: Any) -> None:
    SmtpAccountFactory(name="plain")
    load_accounts()
    with django_assert_num_queries(2):
        load_accounts()


def _user() -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create(username="default-for")


def test_a_parameterised_read_takes_new_values_each_call() -> None:
    first, second = SmtpAccountFactory(name="first"), SmtpAccountFactory(name="second")
    ConnectionSlot.objects.bulk_create(
        [ConnectionSlot(account=first, slot_no=n, holder=f"h{n}") for n in range(3)]
        + [ConnectionSlot(account=second, slot_no=0, expires_at=NOW)]
    )

    def read(pk: int, size: int) -> list[list[Any]]:
        return precompiled.values_where(
            ConnectionSlot,
            "test-slots",
            lambda a, s: (
                ConnectionSlot.objects.filter(account_id=a, slot_no__lt=s)
                .order_by("slot_no")
                .values_list("slot_no", "holder", "expires_at")
            ),
            pk,
            size,
        )

    assert read(first.pk, 2) == [[0, "h0", None], [1, "h1", None]]
    assert read(first.pk, 3) == [[0, "h0", None], [1, "h1", None], [2, "h2", None]]
    assert read(second.pk, 5) == [[0, "", NOW]]  # an aware datetime, on SQLite too


def test_a_read_whose_values_are_not_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="markers"):
        precompiled.values_where(
            ConnectionSlot,
            "test-refused",
            lambda a: ConnectionSlot.objects.filter(account_id=a, holder="x").values_list("pk"),
            1,
        )


def test_update_writes_adapted_values_and_counts_rows() -> None:
    account = SmtpAccountFactory(name="a")
    ConnectionSlot.objects.bulk_create(
        [
            ConnectionSlot(account=account, slot_no=0, holder=""),
            ConnectionSlot(account=account, slot_no=1, holder="other", expires_at=NOW),
            ConnectionSlot(
                account=account, slot_no=2, holder="live", expires_at=NOW + dt.timedelta(hours=1)
            ),
        ]
    )
    until = NOW + dt.timedelta(minutes=2)

    taken = precompiled.update(
        ConnectionSlot,
        {"holder": "me", "expires_at": until},
        "{account} = %s AND ({holder} = '' OR {expires_at} < %s)",
        [account.pk, NOW + dt.timedelta(seconds=1)],
    )

    assert taken == 2  # the free one and the expired one, not the live lease
    assert dict(ConnectionSlot.objects.values_list("slot_no", "holder")) == {
        0: "me",
        1: "me",
        2: "live",
    }
    assert ConnectionSlot.objects.get(slot_no=0).expires_at == until


def test_one_log_row_is_one_statement_and_still_atomic(django_assert_num_queries: Any) -> None:
    row = DeliveryLog(account_name="a", message_id="<one@x>", outcome="sent", created_at=NOW)
    with django_assert_num_queries(1):  # no BEGIN / COMMIT around a single INSERT
        insert_rows(DeliveryLog, [row])
    assert DeliveryLog.objects.filter(message_id="<one@x>").count() == 1

    with pytest.raises(RuntimeError), transaction.atomic():  # the caller's transaction
        insert_rows(DeliveryLog, [DeliveryLog(message_id="<two@x>", created_at=NOW)])
        raise RuntimeError
    assert not DeliveryLog.objects.filter(message_id="<two@x>").exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's binding")
def test_array_statements_bind_their_values_server_side() -> None:
    import psycopg

    from django_multismtp.bulk import bound_cursor

    with bound_cursor(connection) as cursor:
        assert type(cursor.cursor) is psycopg.Cursor  # not Django's default ClientCursor
    rows = [
        DeliveryLog(account_name=f"a{n}", message_id=f"<{n}@x>", created_at=NOW, subject="it's")
        for n in range(3)
    ]
    with CaptureQueriesContext(connection) as queries:
        insert_rows(DeliveryLog, rows)
    assert any("unnest" in q["sql"] for q in queries)  # still logged, as Django logs
    stored = DeliveryLog.objects.order_by("message_id").values_list("message_id", "subject")
    assert list(stored) == [("<0@x>", "it's"), ("<1@x>", "it's"), ("<2@x>", "it's")]


def _built_alike(mine: Any, django: Any) -> None:
    assert type(mine) is type(django)
    assert {k: v for k, v in vars(mine).items() if k != "_state"} == {
        k: v for k, v in vars(django).items() if k != "_state"
    }
    assert list(vars(mine)) == list(vars(django))  # the same attributes, in the same order
    assert (mine._state.adding, mine._state.db) == (django._state.adding, django._state.db)


def test_builder_builds_what_the_model_builds() -> None:
    # Outbox rows a worker claims and the log rows it writes skip Model.__init__
    # (a third of their cost); what they get must be what Django would have built.
    assert precompiled._plain_init(DeliveryLog)
    assert precompiled._plain_init(OutboxMessage)
    account = SmtpAccountFactory(name="a")
    log = DeliveryLog(
        account=account,
        account_name="a",
        message_id="<m@x>",
        from_email="f@x.test",
        outcome="sent",
        attempt=1,
        created_at=NOW,
    )
    values = [getattr(log, f.attname) for f in DeliveryLog._meta.concrete_fields]
    _built_alike(precompiled.builder(DeliveryLog, None)(values), DeliveryLog(*values))

    row = OutboxMessage.objects.create(
        message_id="<m@x>",
        data=b"Subject: x\r\n\r\nbody\r\n",
        from_email="f@x.test",
        envelope_recipients="r@x.test",
        next_attempt_at=NOW,
        created_at=NOW,
        hinted_account=account,
    )
    values = [getattr(row, f.attname) for f in OutboxMessage._meta.concrete_fields]
    names = [f.attname for f in OutboxMessage._meta.concrete_fields]
    _built_alike(
        precompiled.builder(OutboxMessage, "default")(values),
        OutboxMessage.from_db("default", names, values),
    )


def test_a_receiver_of_the_init_signals_hears_every_instance() -> None:
    # A site (or a library it uses) listening to pre_init or post_init of our models
    # gets its signals: the builder then lets the model build each instance.
    heard: list[tuple[str, Any]] = []

    def pre(sender: Any, **kwargs: Any) -> None:
        heard.append(("pre", sender))

    def post(sender: Any, instance: Any, **kwargs: Any) -> None:
        heard.append(("post", instance))

    build = precompiled.builder(DeliveryLog, None)
    values = [None] * len(DeliveryLog._meta.concrete_fields)
    build(values)
    assert heard == []
    pre_init.connect(pre, sender=DeliveryLog)
    post_init.connect(post, sender=DeliveryLog)
    try:
        built = build(values)  # a builder made before the receivers were connected
    finally:
        pre_init.disconnect(pre, sender=DeliveryLog)
        post_init.disconnect(post, sender=DeliveryLog)
    assert heard == [("pre", DeliveryLog), ("post", built)]
