"""Bulk writes for the hot paths, on PostgreSQL in one statement each:

- `rows_insert` / `rows_insert_many`: COPY, the fastest way rows get in (about four times
  `bulk_create` here), or for a few rows multi-row INSERTs sent in one round trip; for
  rows whose primary key is set in Python (UUIDs) or not needed back.
- `rows_update`: one `UPDATE ... FROM (VALUES ...)`, optionally only where a column still
  has an expected value, returning the keys it updated. Django's `bulk_update` builds a
  `CASE WHEN` per row and field, whose compilation cost more than the dispatch it records.
- `rows_insert_returning`: one multi-row INSERT ... RETURNING, optionally skipping rows
  that conflict, giving back the rows it inserted with their keys.
- `rows_upsert`: one multi-row INSERT ... ON CONFLICT DO UPDATE.

Other databases (SQLite in the unit tests) fall back to the ORM's bulk methods.
"""

from __future__ import annotations

import io
import json

from django.db import connection, models
from django.utils import timezone
from psycopg2.extras import Json


def rows_insert(model: type[models.Model], rows: list) -> None:
    """Insert model instances, or dicts of attribute name -> value (cheaper to build)."""
    rows_insert_many([(model, rows)])


# Up to this many rows in all, inserts go out as multi-row INSERTs sent together in one
# round trip (a single send's notification, delivery and event); beyond it, one COPY each.
SMALL_INSERT_ROWS = 50


def rows_insert_many(batches: list[tuple[type[models.Model], list]]) -> None:
    """Insert several models' rows (instances or attribute dicts), in the order given."""
    batches = [(model, rows) for model, rows in batches if rows]
    if not batches:
        return
    if connection.vendor != "postgresql":
        for model, rows in batches:
            model.objects.bulk_create([model(**row) if isinstance(row, dict) else row for row in rows])
        return
    small = sum(len(rows) for _, rows in batches) <= SMALL_INSERT_ROWS
    now = timezone.now()
    statements = []
    with connection.cursor() as cursor:
        for model, rows in batches:
            fields, values = _row_values(model, rows, now)
            columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
            if small:
                adapters = [(_adapter(field), field.attname) for field in fields]
                template = "(" + ", ".join(["%s"] * len(fields)) + ")"
                mogrify = cursor.cursor.mogrify
                rendered = b",".join(
                    mogrify(template, [adapt(v.get(name)) for adapt, name in adapters]) for v in values
                )
                statements.append(f"INSERT INTO {model._meta.db_table} ({columns}) VALUES {rendered.decode()}")
            else:
                cursor.copy_expert(
                    f"COPY {model._meta.db_table} ({columns}) FROM STDIN WITH (FORMAT csv)", _csv_rows(fields, values)
                )
        if statements:
            cursor.execute(";\n".join(statements))
    for _, rows in batches:
        for row in rows:
            if not isinstance(row, dict):
                row._state.adding, row._state.db = False, connection.alias


def _row_values(model, rows: list, now) -> tuple[list, list[dict]]:
    """The columns to write (a primary key left to the database is left out) and each
    row's values by attribute name, with auto_now / auto_now_add stamps filled in."""
    values = [row if isinstance(row, dict) else row.__dict__ for row in rows]
    fields = [
        field
        for field in model._meta.concrete_fields
        if not (field.primary_key and values[0].get(field.attname) is None)
    ]
    stamped = [f.attname for f in fields if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)]
    for row in values:
        for name in stamped:
            if row.get(name) is None:
                row[name] = now
    return fields, values


def _csv_rows(fields, values: list[dict]) -> io.StringIO:
    converters = [(_converter(field), field.attname) for field in fields]
    buffer = io.StringIO()
    for row in values:
        buffer.write(",".join(convert(row.get(name)) for convert, name in converters))
        buffer.write("\n")
    buffer.seek(0)
    return buffer


def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _converter(field):
    """The field's values as CSV: NULL is an unquoted empty field, everything else quoted."""
    if isinstance(field, models.JSONField):
        encoder = field.encoder

        def convert(value):
            return "" if value is None else _quote(json.dumps(value, cls=encoder))

    elif isinstance(field, models.BooleanField):

        def convert(value):
            return "" if value is None else ("t" if value else "f")

    elif isinstance(field, (models.DateTimeField, models.DateField)):

        def convert(value):
            return "" if value is None else value.isoformat()

    elif isinstance(field, (models.UUIDField, models.IntegerField, models.FloatField)) or (
        field.is_relation and not isinstance(field.target_field, models.CharField)
    ):

        def convert(value):
            return "" if value is None else str(value)

    else:

        def convert(value):
            return "" if value is None else _quote(str(value))

    return convert


def rows_insert_returning(
    model: type[models.Model], objs: list[models.Model], *, ignore_conflicts: bool = False
) -> list[models.Model]:
    """Insert the objects; returns those inserted, with their primary keys set. With
    `ignore_conflicts`, rows that break a unique constraint are skipped and not returned."""
    if not objs:
        return []
    meta = model._meta
    if connection.vendor != "postgresql":
        if not ignore_conflicts:
            return model.objects.bulk_create(objs)
        model.objects.bulk_create(objs, ignore_conflicts=True)  # no keys come back: the caller reads them
        return []
    now = timezone.now()
    fields = [field for field in meta.concrete_fields if not field.primary_key]
    for obj in objs:
        for field in fields:
            if getattr(field, "auto_now", False) or (
                getattr(field, "auto_now_add", False) and getattr(obj, field.attname) is None
            ):
                setattr(obj, field.attname, now)
    quote = connection.ops.quote_name
    template = "(" + ", ".join(["%s"] * len(fields)) + ")"
    with connection.cursor() as cursor:
        # Quoted by psycopg2 itself, then run as one statement through Django's cursor (so
        # that it is logged and counted like any other).
        values = b",".join(
            cursor.cursor.mogrify(template, [f.get_db_prep_save(getattr(obj, f.attname), connection) for f in fields])
            for obj in objs
        ).decode()
        cursor.execute(
            f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) VALUES {values}"
            + (" ON CONFLICT DO NOTHING" if ignore_conflicts else "")
            + f" RETURNING {quote(meta.pk.column)}, "
            + ", ".join(quote(f.column) for f in fields)
        )
        returned = cursor.fetchall()
    names = [meta.pk.attname, *(field.attname for field in fields)]
    return [model(**dict(zip(names, row, strict=True))) for row in returned]


def _adapter(field):
    """How psycopg2 is to be given the field's Python value (it adapts most of them itself)."""
    if isinstance(field, models.JSONField):
        encoder = field.encoder
        return lambda value: None if value is None else Json(value, dumps=lambda v: json.dumps(v, cls=encoder))
    return lambda value: value


def rows_upsert(
    model: type[models.Model], objs: list[models.Model], *, unique_fields: list[str], update_fields: list[str]
) -> None:
    """Insert the objects, or where one's `unique_fields` exist already, update its
    `update_fields`: one INSERT ... ON CONFLICT DO UPDATE."""
    if not objs:
        return
    meta = model._meta
    if connection.vendor != "postgresql":
        for obj in objs:
            obj.pk = None
        model.objects.bulk_create(objs, update_conflicts=True, unique_fields=unique_fields, update_fields=update_fields)
        return
    quote = connection.ops.quote_name
    fields = [field for field in meta.concrete_fields if not field.primary_key]
    adapters = [(_adapter(field), field.attname) for field in fields]
    template = "(" + ", ".join(["%s"] * len(fields)) + ")"
    conflict = ", ".join(quote(meta.get_field(name).column) for name in unique_fields)
    updates = ", ".join(
        f"{quote(meta.get_field(name).column)} = EXCLUDED.{quote(meta.get_field(name).column)}"
        for name in update_fields
    )
    with connection.cursor() as cursor:
        values = b",".join(
            cursor.cursor.mogrify(template, [adapt(getattr(obj, name)) for adapt, name in adapters]) for obj in objs
        ).decode()
        cursor.execute(
            f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) VALUES {values} "
            f"ON CONFLICT ({conflict}) DO UPDATE SET {updates}"
        )


def rows_update(model: type[models.Model], objs: list[models.Model], fields: list[str], *, only_where=None) -> set:
    """Write `fields` of each object to its row; with `only_where` (a dict of column ->
    value), only to the rows that still match it. Returns the primary keys updated."""
    if not objs:
        return set()
    meta = model._meta
    pk = meta.pk
    if connection.vendor != "postgresql":
        queryset = model.objects.filter(pk__in=[obj.pk for obj in objs], **(only_where or {}))
        matched = set(queryset.select_for_update().values_list("pk", flat=True))
        matching = [obj for obj in objs if obj.pk in matched]
        if matching:
            model.objects.bulk_update(matching, fields)
        return matched
    columns = [pk, *(meta.get_field(name) for name in fields)]
    casts = ", ".join(f"%s::{field.db_type(connection)}" for field in columns)
    rows = ", ".join(f"({casts})" for _ in objs)
    adapters = [(_adapter(field), field.attname) for field in columns]
    params = [adapt(getattr(obj, name)) for obj in objs for adapt, name in adapters]
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(field.column)} = v.{quote(field.column)}" for field in columns[1:])
    condition = ""
    for column, value in (only_where or {}).items():
        condition += f" AND t.{quote(meta.get_field(column).column)} = %s"
        params.append(value)
    sql = (
        f"UPDATE {quote(meta.db_table)} AS t SET {assignments} FROM (VALUES {rows}) "
        f"AS v({', '.join(quote(field.column) for field in columns)}) "
        f"WHERE t.{quote(pk.column)} = v.{quote(pk.column)}{condition} RETURNING t.{quote(pk.column)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {pk.to_python(row[0]) for row in cursor.fetchall()}
