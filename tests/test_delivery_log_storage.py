"""The delivery log's indexes (migration 0015_delivery_log_indexes): a worker writes one
log row per message it sends, so the table keeps only the indexes something looks rows
up by, and each of those lookups still finds its rows through an index.

The plans are asked for with sequential scans switched off: on a small test table the
planner would rightly prefer reading the table, and the question here is whether an
index *can* serve the lookup, not which plan wins at this size.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection, transaction
from django.urls import reverse

from django_multismtp import state, worker
from django_multismtp.engine import SettleEvery
from django_multismtp.models import DeliveryLog, OutboxMessage, SmtpAccount
from tests.factories import SmtpAccountFactory
from tests.test_outbox import message, outbox_mode, send

pytestmark = pytest.mark.django_db


def queue(settings: Any, count: int) -> list[str]:
    """``count`` messages in the outbox ("always"); their Message-IDs."""
    outbox_mode(settings, "always")
    messages = [message(f"m{i}") for i in range(count)]
    assert send(*messages) == count
    return [m.multismtp_status.message_id for m in messages]


def indexes() -> dict[str, dict[str, Any]]:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, DeliveryLog._meta.db_table)
    return {
        name: info
        for name, info in constraints.items()
        if info["index"] and not info["primary_key"]
    }


def plan(queryset: Any) -> str:
    """The plan of ``queryset`` with sequential scans switched off (PostgreSQL)."""
    sql, params = queryset.query.sql_with_params()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        return "\n".join(row[0] for row in cursor.fetchall())


def test_the_log_has_four_indexes_besides_its_key():
    """Account, Message-ID, time, and outcome for the rows not sent: no ``LIKE`` twins
    (PostgreSQL), and no entry in the outcome index for a sent row."""
    found = indexes()
    columns = sorted(tuple(info["columns"]) for info in found.values())
    assert columns == [("account_id",), ("created_at",), ("message_id",), ("outcome",)]
    assert not [name for name in found if name.endswith("_like")]


def test_the_lookups_of_the_log_still_use_an_index():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's planner")
    logs = DeliveryLog.objects.order_by()  # the index chosen for the filter, not the order
    # "Did this message go out?"
    assert "multismtp_log_message_id" in plan(logs.filter(message_id="<a@b.test>"))
    # The admin's filter on a failure outcome: the partial index applies to it...
    assert "multismtp_log_not_sent" in plan(logs.filter(outcome="throttled"))
    # ...not to "sent", nearly every row, which an index would not make cheaper.
    assert "multismtp_log_not_sent" not in plan(logs.filter(outcome="sent"))


def test_deleting_an_account_still_empties_the_references_to_it(
    settings, mailer, smtp_server, clock
):
    """Without the constraints, Django's ``on_delete`` still sets the log's account and
    the outbox's ``sent_by`` to NULL; the log keeps the account's name."""
    account = SmtpAccountFactory.for_server(smtp_server, name="A", is_site_default=True)
    queue(settings, 1)
    assert worker.drain().sent == 1
    account.delete()
    assert list(DeliveryLog.objects.values_list("account", "account_name")) == [(None, "A")]
    assert list(OutboxMessage.objects.values_list("status", "sent_by")) == [("sent", None)]


@pytest.mark.django_db(transaction=True)
def test_an_account_deleted_while_its_messages_are_settled_sends_nothing_twice(
    settings, monkeypatch, mailer, smtp_server, clock, admin_client
):
    """The account goes (the admin deleting it) after its messages went out and before
    the worker writes their outcome. With foreign-key constraints on the log's account
    and the outbox's ``sent_by``, the database refused the commit of that write, the
    rows stayed claimed, and the next drain sent every message again."""
    account = SmtpAccountFactory.for_server(smtp_server, name="A", is_site_default=True)
    ids = queue(settings, 5)
    write_log = state.write_log

    def deleted_first(entries: list[DeliveryLog], **kwargs: Any) -> Any:
        SmtpAccount.objects.filter(pk=account.pk).delete()
        return write_log(entries, **kwargs)

    monkeypatch.setattr(state, "write_log", deleted_first)
    result = worker.drain(every=SettleEvery(replies=None, seconds=None))
    monkeypatch.undo()

    assert (result.sent, result.retrying, result.failed) == (5, 0, 0)
    assert set(OutboxMessage.objects.values_list("status", "locked_by")) == {("sent", "")}
    assert sorted(DeliveryLog.objects.values_list("message_id", flat=True)) == sorted(ids)
    clock.advance(hours=2)  # past any lease
    assert worker.drain().sent == 0
    assert sorted(str(r.message()["Message-ID"]) for r in smtp_server.received) == sorted(ids)
    # The log rows keep the deleted account's key: the admin shows them all the same.
    row = DeliveryLog.objects.first()
    assert row is not None and row.account_id == account.pk
    changelist = reverse("admin:django_multismtp_deliverylog_changelist")
    assert admin_client.get(changelist).status_code == 200
    assert admin_client.get(f"{changelist}?account__id__exact={account.pk}").status_code == 200
    change = reverse("admin:django_multismtp_deliverylog_change", args=[row.pk])
    response = admin_client.get(change)
    assert response.status_code == 200
    assert '<div class="readonly">A</div>' in response.content.decode()  # account_name
