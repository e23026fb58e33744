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

from django_multismtp.models import DeliveryLog

pytestmark = pytest.mark.django_db


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
    logs = DeliveryLog.objects.all()
    # "Did this message go out?"
    assert "multismtp_log_message_id" in plan(logs.filter(message_id="<a@b.test>"))
    # The admin's filter on a failure outcome: the partial index applies to it...
    assert "multismtp_log_not_sent" in plan(logs.filter(outcome="throttled"))
    # ...not to "sent", nearly every row, which an index would not make cheaper.
    assert "multismtp_log_not_sent" not in plan(logs.filter(outcome="sent"))
