"""Statements whose SQL is compiled once per database connection.

Every ``send_messages()`` call reads the accounts (and the users each is the default
for) before it can choose one. Through the ORM that read cost more CPU than the rest of
a one-message send together: Django compiles the queryset anew on every call, and the
account table has some 60 columns (measured on PostgreSQL: 2.7 ms of CPU per call, of
which the rows themselves took 0.3 ms). A site that sends one message per request
paid it on every request, and ten concurrent ``asend_messages()`` calls queued for it
under the GIL.

The connection slots' statements, run two or three times per call, cost as much
again, and are the same but for their values.

So the SQL of such a statement is made once per connection (each thread has its own,
and the SQL is the database vendor's) and run again with new values:

* reads are compiled by Django's own compiler from a queryset, on first use, with
  marker values where the values go (:data:`MARKERS`: integers no caller passes); the
  values still go through the converters Django applies (decryption of the secret
  fields, SQLite's dates), taken from the same compiler, and model instances are built
  with ``Model.from_db()`` as a queryset builds them, so a caller gets what the
  queryset would give;
* updates are written out (:func:`update`), their values adapted as Django adapts them.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from django.db import connections, models, router
from django.db.models.base import ModelState
from django.db.models.fields.related_descriptors import ForeignKeyDeferredAttribute
from django.db.models.signals import post_init, pre_init

M = TypeVar("M", bound=models.Model)

#: The attribute of a connection (``connections[alias]``) that holds its compiled reads.
_CACHE = "_django_multismtp_precompiled"
#: Stand-ins for the values of a parameterised read while it is compiled: integers
#: (Django passes them to the database unchanged), within the range of every integer
#: field (Django turns a comparison with a value out of a column's range into "no
#: rows" or "every row" while compiling).
MARKERS = (32_741, 32_743, 32_749, 32_759)


class _Compiled:
    """One read: its SQL, and for each column the converters Django would apply."""

    def __init__(self, queryset: models.QuerySet[Any], connection: Any) -> None:
        compiler = queryset.query.get_compiler(connection=connection)
        sql, params = compiler.as_sql()
        if any(p not in MARKERS for p in params):
            raise ValueError(f"a precompiled read takes its values as markers, not {params!r}")
        self.sql = sql
        #: For each placeholder, which of the caller's values goes there.
        self.positions = [MARKERS.index(p) for p in params]
        columns = [column for column, _sql, _alias in compiler.select]
        #: Model instances need the attribute names (``owner_id``), in select order.
        self.attnames = [getattr(getattr(c, "target", None), "attname", "") for c in columns]
        self.converters = [
            (position, functions, expression)
            for position, (functions, expression) in compiler.get_converters(columns).items()
        ]
        self.connection = connection

    def rows(self, values: tuple[Any, ...] = ()) -> list[list[Any]]:
        with self.connection.cursor() as cursor:
            cursor.execute(self.sql, [values[i] for i in self.positions])
            return self.convert(cursor.fetchall())

    def convert(self, fetched: list[Any]) -> list[list[Any]]:
        """``fetched`` rows (of this read's columns) with Django's converters applied."""
        rows = [list(row) for row in fetched]
        for row in rows:
            for position, functions, expression in self.converters:
                value = row[position]
                for function in functions:
                    value = function(value, expression, self.connection)
                row[position] = value
        return rows


def _compiled(
    key: str, model: type[models.Model], build: Callable[[], Any], alias: str | None = None
) -> _Compiled:
    connection = connections[alias or router.db_for_read(model)]
    cache: dict[str, _Compiled] = connection.__dict__.setdefault(_CACHE, {})
    compiled = cache.get(key)
    if compiled is None:
        compiled = cache[key] = _Compiled(build(), connection)
    return compiled


def every_row(model: type[M]) -> list[M]:
    """Every row of ``model``'s default manager, in its ordering, as instances."""
    compiled = _compiled(f"rows:{model._meta.label}", model, model._default_manager.all)
    alias = compiled.connection.alias
    return [model.from_db(alias, compiled.attnames, row) for row in compiled.rows()]


def builder(model: type[M], db: str | None) -> Callable[[Sequence[Any]], M]:
    """A function building an instance of ``model`` from the values of all its concrete
    fields, in their order: what ``model.from_db(db, ...)`` builds (``db`` None: what
    ``model(*values)`` builds, an unsaved instance).

    ``Model.__init__`` was a third of the cost of an outbox row a worker claims and of
    a delivery log row it writes: it sends ``pre_init`` and ``post_init``, and setting
    a foreign key's ``_id`` goes through a descriptor that looks for a cached related
    object the new instance cannot have. Where the model leaves all of that as Django
    wrote it (no ``__init__`` or ``from_db`` of its own, no field whose attribute is set
    through a descriptor other than a foreign key's, and no receiver of either signal,
    looked up for every instance as ``__init__`` does), the values go into the
    instance's ``__dict__`` as ``__init__`` would put them; otherwise the model builds
    the instance itself."""
    attnames = tuple(f.attname for f in model._meta.concrete_fields)
    if not _plain_init(model):
        if db is None:
            return lambda values: model(*values)
        return lambda values: model.from_db(db, attnames, values)
    new, adding = model.__new__, db is None
    heard = (pre_init.has_listeners, post_init.has_listeners)

    def build(values: Sequence[Any]) -> M:
        if heard[0](model) or heard[1](model):
            return model(*values) if adding else model.from_db(db, attnames, values)
        instance = new(model)
        state = ModelState()
        if not adding:
            state.adding, state.db = False, db
        instance.__dict__["_state"] = state
        instance.__dict__.update(zip(attnames, values, strict=True))
        return instance

    return build


@functools.cache
def _plain_init(model: type[models.Model]) -> bool:
    """Whether ``Model.__init__`` would only store the values (see :func:`builder`),
    its signals aside."""
    if model._meta.abstract or model.__init__ is not models.Model.__init__:
        return False
    if inspect.getattr_static(model, "from_db") is not models.Model.__dict__["from_db"]:
        return False
    for field in model._meta.concrete_fields:
        attribute = inspect.getattr_static(model, field.attname, None)
        if hasattr(type(attribute), "__set__") and type(attribute) is not (
            ForeignKeyDeferredAttribute
        ):
            return False
    return True


def from_rows(model: type[M], alias: str, rows: list[Any]) -> list[M]:
    """Instances of ``model`` from ``rows`` of every concrete column in the model's
    order (what ``RETURNING`` the model's columns gives) read from database ``alias``,
    with the converters the model's queryset applies: what ``Model.objects.raw()``
    builds, without resolving the raw query's columns anew for every statement."""
    compiled = _compiled(
        f"rows:{model._meta.label}", model, model._default_manager.using(alias).all, alias
    )
    attnames = [f.attname for f in model._meta.concrete_fields]
    if compiled.attnames != attnames:  # a queryset that selects otherwise: not this shape
        raise ValueError(f"{model.__name__}'s default queryset does not select its columns")
    build = builder(model, compiled.connection.alias)
    return [build(row) for row in compiled.convert(rows)]


def every_value(model: type[models.Model], *fields: str) -> list[list[Any]]:
    """``fields`` of every row of ``model``, as ``values_list(*fields)`` gives them."""
    compiled = _compiled(
        f"values:{model._meta.label}:{','.join(fields)}",
        model,
        lambda: model._default_manager.values_list(*fields),
    )
    return compiled.rows()


def values_where(
    model: type[models.Model],
    name: str,
    build: Callable[..., models.QuerySet[Any]],
    *values: int,
) -> list[list[Any]]:
    """The rows of ``build(*markers)`` (a ``values_list()`` queryset of ``model``) with
    ``values`` in the markers' places; ``name`` names the read (one SQL per name)."""
    compiled = _compiled(f"where:{name}", model, lambda: build(*MARKERS[: len(values)]))
    return compiled.rows(values)


def placeholders(count: int) -> str:
    """``%s, %s, ...``: the parameters of an ``IN (...)`` of ``count`` values."""
    return ", ".join(["%s"] * count)


def update(
    model: type[models.Model],
    assignments: dict[str, Any],
    conditions: str,
    values: list[Any],
) -> int:
    """``UPDATE`` ``model``'s table: set each field of ``assignments`` to its value
    (adapted by the field, as ``QuerySet.update()`` does) where ``conditions`` hold;
    return the number of rows changed.

    ``conditions``: SQL over ``{column}`` names (``"{holder} = %s"``), filled in with
    the quoted columns; ``values``: its parameters. Only names of our own models are
    formatted in, never a value."""
    connection = connections[router.db_for_write(model)]
    cache: dict[str, Any] = connection.__dict__.setdefault(_CACHE, {})
    key = f"columns:{model._meta.label}"
    if key not in cache:
        quote = connection.ops.quote_name
        fields = {f.attname: f for f in model._meta.concrete_fields}
        fields |= {f.name: f for f in model._meta.concrete_fields}
        columns = {name: quote(str(field.column)) for name, field in fields.items()}
        cache[key] = (quote(model._meta.db_table), fields, columns)
    table, fields, columns = cache[key]
    setters = ", ".join(f"{columns[name]} = %s" for name in assignments)
    sql = f"UPDATE {table} SET {setters} WHERE {conditions.format(**columns)}"  # noqa: S608
    params = [
        fields[name].get_db_prep_save(value, connection) for name, value in assignments.items()
    ]
    params += [
        connection.ops.adapt_datetimefield_value(v) if isinstance(v, dt.datetime) else v
        for v in values
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return int(cursor.rowcount)
