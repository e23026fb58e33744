"""Insert or update many rows with one statement, whatever their number.

``bulk_create`` splits rows by the backend's parameter cap (Django 5.2 assumes 999 for
SQLite: 13 INSERTs for 1,000 delivery-log rows, 25 for 1,000 outbox rows), so the number
of queries would grow with the batch. ``executemany`` keeps one prepared statement per
call on every version (SQLite runs it in-process, cheaply).

On PostgreSQL ``executemany`` is still one statement *per row* for the server (psycopg 3
pipelines the round trips, not the work): a worker settling its rows one UPDATE each
spent more CPU in PostgreSQL than a direct send spends in total. There, rows go in as
one ``INSERT ... SELECT * FROM unnest(...)`` and one ``UPDATE ... FROM unnest(...)``: one
array parameter per column, so the statement's text stays short and the same for any
number of rows (a multi-row ``VALUES`` list made psycopg parse thousands of placeholders
on every call).

Those arrays are bound server-side (:func:`bound_cursor`), whatever the site's
``server_side_binding``: Django's default binds values into the statement's text, so
psycopg quoted every element of every array in Python (11 to 15% of an outbox worker's
CPU) and PostgreSQL parsed the literals back. They travel in PostgreSQL's binary format
(:func:`array_placeholder`): psycopg's text format escapes each element in Python too
(27 microseconds per row of six columns, against 5 in binary). Nothing is prepared
(unnamed statements, as with client-side binding), so PgBouncer in transaction mode
works as before.

Each value goes through its field's ``get_db_prep_save()``, as ``save()`` sends it,
except where that is known to return it unchanged (:func:`_plain_type`): a string of a
stock ``CharField`` or ``TextField``, an integer of a stock ``IntegerField``. The four
method calls per value were a third of the cost of writing a delivery log row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.db import connections, models, router, transaction


def insert_rows(model: type[models.Model], objects: Sequence[models.Model]) -> None:
    """Insert ``objects`` (unsaved, primary keys unset) with one statement, or on SQLite
    in one transaction.

    Their primary keys stay unset: callers that need the rows again find them by their
    own keys (a Message-ID), as a RETURNING clause is not available with executemany.
    """
    if not objects:
        return
    connection = connections[router.db_for_write(model)]
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    if len(objects) > 1 and connection.vendor == "postgresql":
        # One statement is atomic by itself: no BEGIN and COMMIT around it.
        sql, params = insert_statement(model, objects)
        with bound_cursor(connection) as cursor:
            cursor.execute(sql, params)
        return
    sql = _insert_head(connection, model, fields) + " VALUES ({})".format(
        ", ".join(["%s"] * len(fields))
    )
    prepare = _row_preparer(fields, connection, add=True)
    rows = [prepare(obj) for obj in objects]
    if len(rows) == 1:
        # One row (the log of a one-message send, the common case): one statement is
        # atomic by itself, so no BEGIN and COMMIT around it, and its values go in as
        # they are, not as one array per column.
        with connection.cursor() as cursor:
            cursor.execute(sql, rows[0])
        return
    # One transaction: outside one, SQLite would commit (and sync) after every row. Inside
    # one, no savepoint: a caller that wants to survive a failure has its own.
    with (
        transaction.atomic(using=connection.alias, savepoint=False),
        connection.cursor() as cursor,
    ):
        cursor.executemany(sql, rows)


def insert_statement(
    model: type[models.Model], objects: Sequence[models.Model]
) -> tuple[str, list[Any]]:
    """PostgreSQL: the SQL and parameters inserting ``objects`` (unsaved) with one
    ``INSERT ... SELECT * FROM unnest(...)``, to run with :func:`bound_cursor`, alone or
    inside a larger statement (``WITH logged AS (INSERT ...) UPDATE ...``)."""
    connection = connections[router.db_for_write(model)]
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    prepare = _row_preparer(fields, connection, add=True)
    head = _insert_head(connection, model, fields)
    sql = f"{head} SELECT * FROM {_unnest(connection, fields)}"  # noqa: S608
    return sql, _columns([prepare(obj) for obj in objects])


def _insert_head(
    connection: Any, model: type[models.Model], fields: Sequence[models.Field[Any, Any]]
) -> str:
    quote = connection.ops.quote_name
    # Only quoted table and column names of our own models are formatted in: no user data.
    return "INSERT INTO {} ({})".format(  # noqa: S608
        quote(model._meta.db_table), ", ".join(quote(str(f.column)) for f in fields)
    )


def bound_cursor(connection: Any) -> Any:
    """A cursor of ``connection`` that binds values server-side on PostgreSQL with
    psycopg 3 (see the module's docstring), Django's own cursor elsewhere. Wrapped as
    Django wraps its cursors: queries are logged and ``execute_wrapper()`` applies."""
    if connection.vendor != "postgresql":
        return connection.cursor()
    from django.db.backends.postgresql.psycopg_any import is_psycopg3  # needs a driver

    if not is_psycopg3:
        return connection.cursor()
    import psycopg

    connection.close_if_health_check_failed()
    connection.ensure_connection()
    with connection.wrap_database_errors:
        if isinstance(connection.connection.cursor_factory, type) and not issubclass(
            connection.connection.cursor_factory, psycopg.ClientCursor
        ):
            return connection.cursor()  # the site binds server-side already
        return connection._prepare_cursor(psycopg.Cursor(connection.connection))


def binary_cursor(connection: Any) -> Any | None:
    """A :func:`bound_cursor` whose results come in PostgreSQL's binary format, or None
    (not PostgreSQL with psycopg 3).

    Why: Django loads ``timestamptz`` in the text format with a loader of its own, in
    Python, which parsed every date of the outbox claim's rows (a tenth of a worker's
    CPU); in binary, psycopg's C loader reads them. They come in the session's time
    zone, which Django sets: :func:`django_times` gives them Django's ``tzinfo``, as its
    loader does. Only for statements whose columns are known: a ``jsonb``, ``inet`` or
    ``cidr`` column would load differently from Django's text loaders."""
    if connection.vendor != "postgresql":
        return None
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    if not is_psycopg3:
        return None
    from psycopg.pq import Format

    cursor = bound_cursor(connection)
    cursor.cursor.format = Format.BINARY
    return cursor


def django_times(connection: Any, rows: list[Any], positions: Sequence[int]) -> list[list[Any]]:
    """``rows`` with the dates at ``positions`` given the connection's time zone as
    Django gives it (``None``, naive, when ``USE_TZ`` is off), as Django's loader does."""
    timezone = connection.timezone
    result = []
    for row in rows:
        row = list(row)
        for position in positions:
            value = row[position]
            if value is not None:
                row[position] = value.replace(tzinfo=timezone)
        result.append(row)
    return result


def update_rows(
    model: type[models.Model],
    objects: Sequence[models.Model],
    fields: Sequence[str],
    *,
    where: Sequence[tuple[str, str, object]] = (),
) -> int:
    """Write ``fields`` of each of ``objects`` to its row with one prepared statement
    (``bulk_update`` would split the rows by SQLite's parameter cap, so its queries
    would grow with their number); return the number of rows changed.

    ``where``: extra conditions ``(field name, "=" or "<>", value)`` every row must meet
    (a row that does not is left alone and not counted).
    """
    if not objects:
        return 0
    connection = connections[router.db_for_write(model)]
    quote = connection.ops.quote_name
    opts = model._meta
    columns = [_concrete(model, name) for name in fields]
    conditions = [(_concrete(model, name), op, value) for name, op, value in where]
    if any(op not in ("=", "<>") for _field, op, _value in conditions):
        raise ValueError("update_rows compares with = or <> only")
    # Only quoted table and column names of our own models are formatted in: no user data.
    sql = "UPDATE {} SET {} WHERE {} = %s{}".format(  # noqa: S608
        quote(opts.db_table),
        ", ".join(f"{quote(str(f.column))} = %s" for f in columns),
        quote(str(opts.pk.column)),
        "".join(f" AND {quote(str(f.column))} {op} %s" for f, op, _value in conditions),
    )
    extra = [f.get_db_prep_save(value, connection) for f, _op, value in conditions]
    if connection.vendor == "postgresql":
        return _update_from_values(connection, model, objects, columns, conditions, extra)
    rows = [
        [f.get_db_prep_save(getattr(obj, f.attname), connection) for f in columns]
        + [obj.pk, *extra]
        for obj in objects
    ]
    with (
        transaction.atomic(using=connection.alias, savepoint=False),
        connection.cursor() as cursor,
    ):
        cursor.executemany(sql, rows)
        return max(int(cursor.rowcount), 0)


def _update_from_values(
    connection: Any,
    model: type[models.Model],
    objects: Sequence[models.Model],
    columns: list[models.Field[Any, Any]],
    conditions: list[tuple[models.Field[Any, Any], str, object]],
    extra: list[Any],
) -> int:
    """PostgreSQL: ``UPDATE t SET c = v.c ... FROM unnest(...) v WHERE t.pk = v.pk``."""
    quote = connection.ops.quote_name
    opts = model._meta
    pk = opts.pk
    assert pk is not None
    names = [f"c{index}" for index in range(len(columns))]
    table = quote(opts.db_table)
    assignments = ", ".join(
        f"{quote(str(f.column))} = v.{name}" for f, name in zip(columns, names, strict=True)
    )
    where = "".join(f" AND {table}.{quote(str(f.column))} {op} %s" for f, op, _v in conditions)
    prepare = _row_preparer(columns, connection, add=False)
    rows = [[*prepare(obj), obj.pk] for obj in objects]
    # Only quoted table and column names and our own types are formatted in.
    sql = (
        f"UPDATE {table} SET {assignments} "  # noqa: S608
        f"FROM {_unnest(connection, [*columns, pk])} AS v({', '.join([*names, 'pk'])}) "
        f"WHERE {table}.{quote(str(pk.column))} = v.pk{where}"
    )
    with (
        transaction.atomic(using=connection.alias, savepoint=False),
        bound_cursor(connection) as cursor,
    ):
        cursor.execute(sql, _columns(rows) + extra)
        return max(int(cursor.rowcount), 0)


def array_placeholder(connection: Any) -> str:
    """The placeholder of an array parameter for :func:`bound_cursor`: ``%b`` (binary
    format) with psycopg 3, ``%s`` with psycopg2, which has no binary parameters."""
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return "%b" if is_psycopg3 else "%s"


def _unnest(connection: Any, fields: Sequence[models.Field[Any, Any]]) -> str:
    """``unnest(%b::type[], ...)``: one array parameter per column, so the statement's
    text (parsed and cached by the driver) is the same for any number of rows."""
    mark = array_placeholder(connection)
    return "unnest({})".format(", ".join(f"{mark}::{f.db_type(connection)}[]" for f in fields))


#: Field classes whose stock methods send a value of the given type to the database
#: as it is (``to_python()`` of a ``str`` is the ``str``, ``int()`` of an ``int`` the
#: ``int``; the adapters of every backend take them as they are).
_PLAIN_TYPES: tuple[tuple[type[models.Field[Any, Any]], type], ...] = (
    (models.CharField, str),
    (models.TextField, str),
    (models.IntegerField, int),
)
_PREPARING = ("pre_save", "get_db_prep_save", "get_db_prep_value", "get_prep_value")


def _plain_type(field: models.Field[Any, Any]) -> type | None:
    """The type of value ``field`` sends unchanged, or None. A subclass that overrides
    any preparing method (our reply fields clean what a server said) has none."""
    for base, kind in _PLAIN_TYPES:
        if isinstance(field, base) and all(
            getattr(type(field), name) is getattr(base, name) for name in _PREPARING
        ):
            return kind
    return None


def _row_preparer(
    fields: Sequence[models.Field[Any, Any]], connection: Any, *, add: bool
) -> Callable[[models.Model], list[Any]]:
    """A function giving an object's values of ``fields`` as the database takes them:
    each through its field's ``pre_save()`` and ``get_db_prep_save()``, but a plain
    value of a plain field (:func:`_plain_type`) as it is."""
    plan = [(f.attname, _plain_type(f), f) for f in fields]

    def prepare(obj: models.Model) -> list[Any]:
        row = []
        for attname, kind, field in plan:
            if kind is not None:
                value = getattr(obj, attname)
                if value is None or type(value) is kind:
                    row.append(value)
                    continue
            value = field.pre_save(obj, add) if add else getattr(obj, attname)
            row.append(field.get_db_prep_save(value, connection))
        return row

    return prepare


def _columns(rows: list[list[Any]]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)]


def _concrete(model: type[models.Model], name: str) -> models.Field[Any, Any]:
    field = model._meta.get_field(name)
    if not isinstance(field, models.Field) or not field.concrete:
        raise ValueError(f"{model.__name__}.{name} is not a column")
    return field
