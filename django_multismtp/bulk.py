"""Insert many rows with one statement, whatever their number.

``bulk_create`` splits rows by the backend's parameter cap (Django 5.2 assumes 999 for
SQLite: 13 INSERTs for 1,000 delivery-log rows, 25 for 1,000 outbox rows), so the number
of queries would grow with the batch. ``executemany`` keeps one prepared statement per
call on every version, and psycopg 3 pipelines it into one round trip.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connections, models, router, transaction


def insert_rows(model: type[models.Model], objects: Sequence[models.Model]) -> None:
    """Insert ``objects`` (unsaved, primary keys unset) in one transaction.

    Their primary keys stay unset: callers that need the rows again find them by their
    own keys (a Message-ID), as a RETURNING clause is not available with executemany.
    """
    if not objects:
        return
    connection = connections[router.db_for_write(model)]
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    # Only quoted table and column names of our own models are formatted in: no user data.
    sql = "INSERT INTO {} ({}) VALUES ({})".format(  # noqa: S608
        quote(model._meta.db_table),
        ", ".join(quote(str(f.column)) for f in fields),
        ", ".join(["%s"] * len(fields)),
    )
    rows = [
        [f.get_db_prep_save(f.pre_save(obj, add=True), connection) for f in fields]
        for obj in objects
    ]
    # One transaction: outside one, SQLite would commit (and sync) after every row.
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        cursor.executemany(sql, rows)
