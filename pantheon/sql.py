"""Several writes in one round trip: a statement of data-modifying CTEs (PostgreSQL).

The turn's hot path — its opening and each call's write — would cost the ORM a round trip per
row and a transaction around them. Written as one statement, `WITH a AS (INSERT … RETURNING …),
b AS (UPDATE … FROM a …) SELECT …`, it is one round trip, atomic by itself. The statements are
hand-written in one module per app next to the models they write (`usage/sql.py`,
`sessions/sql.py`); this module is only their plumbing: a CTE as a value, an INSERT built from a
model instance exactly as the ORM would save it (every concrete field, prepared by its own
field), and running the statement.

PostgreSQL only: SQLite (the zero-setup first run) has no data-modifying CTEs, so callers keep
their ORM path and use this one when `available()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from django.db import connection
from django.db.models import Model
from django.db.models.fields import AutoFieldMixin


@dataclass(frozen=True)
class Cte:
    """One `name AS (sql)` of a WITH clause; `params` use `%(key)s` names unique to it."""

    name: str
    sql: str
    params: dict[str, Any] = field(default_factory=dict)


def available() -> bool:
    """Whether the database can run these statements (PostgreSQL)."""
    return connection.vendor == "postgresql"


@cache
def _columns(model: type[Model]) -> tuple[tuple[str, str, str], ...]:
    """(attname, quoted column, CAST type) of every concrete field the INSERT writes, computed
    once per model. An auto-incremented primary key is left to its sequence."""
    return tuple(
        (f.attname, connection.ops.quote_name(f.column), f.cast_db_type(connection))
        for f in model._meta.concrete_fields
        if not isinstance(f, AutoFieldMixin)
    )


def insert_cte(
    name: str,
    instance: Model,
    *,
    source: str = "",
    overrides: dict[str, str] | None = None,
    suffix: str = "",
    returning: str = "id",
) -> Cte:
    """INSERT of `instance`'s row as `INSERT … SELECT <values> [FROM source]`: each field's value
    prepared as the ORM saves it (its `pre_save`, then `get_db_prep_save`), cast to its column
    type. `overrides` maps an attname to an SQL expression — a value another CTE returns, e.g.
    `{"turn_index": "s.turn_counter"}`; `source` names those CTEs (the row is inserted once per
    row they return: none when they return none). `suffix` goes before RETURNING (e.g.
    `ON CONFLICT DO NOTHING`)."""
    overrides = overrides or {}
    model = type(instance)
    fields = {f.attname: f for f in model._meta.concrete_fields}
    columns, values, params = [], [], {}
    for attname, column, cast in _columns(model):
        columns.append(column)
        if attname in overrides:
            values.append(overrides[attname])
            continue
        model_field = fields[attname]
        key = f"{name}_{attname}"
        params[key] = model_field.get_db_prep_save(
            model_field.pre_save(instance, add=True), connection
        )
        values.append(f"CAST(%({key})s AS {cast})")
    table = connection.ops.quote_name(model._meta.db_table)
    sql = f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(values)}"
    if source:
        sql += f" FROM {source}"
    if suffix:
        sql += f" {suffix}"
    return Cte(name, f"{sql} RETURNING {returning}", params)


def run(ctes: list[Cte], select: str, params: dict[str, Any] | None = None) -> tuple[Any, ...]:
    """Run `WITH <ctes> <select>` (one round trip) and return its one row."""
    merged: dict[str, Any] = dict(params or {})
    for cte in ctes:
        merged.update(cte.params)
    sql = "WITH " + ",\n".join(f"{c.name} AS ({c.sql})" for c in ctes) + "\n" + select
    with connection.cursor() as cursor:
        cursor.execute(sql, merged)
        return cursor.fetchone()


def mark_saved(*instances: Model) -> None:
    """Instances whose rows a statement of this module wrote: to the ORM they are now saved
    (a later `save()` updates rather than inserts)."""
    for instance in instances:
        instance._state.adding = False
        instance._state.db = connection.alias
