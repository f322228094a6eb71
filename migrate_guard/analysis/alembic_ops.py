"""Alembic operation objects (``alembic.operations.ops``) -> normalised ``Operation`` records."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic.operations import ops

from .operations import Operation


def _name(value: Any) -> str | None:
    return None if value is None else str(value).lower()


def from_alembic(op: Any, dialect: Any = None) -> list[Operation] | None:
    """The operations an Alembic op object performs; ``None`` for op types we do not model
    (``op.execute`` and custom operations), whose emitted SQL is classified instead."""
    converter = _CONVERTERS.get(type(op))
    if converter is None:
        for cls, fn in _CONVERTERS.items():
            if isinstance(op, cls):
                converter = fn
                break
    if converter is _alter_column:
        return _alter_column(op, dialect)
    return converter(op) if converter else None


def _create_table(op: ops.CreateTableOp) -> list[Operation]:
    return [Operation("create_table", _name(op.table_name), schema=_name(op.schema))]


def _drop_table(op: ops.DropTableOp) -> list[Operation]:
    return [
        Operation(
            "drop_table", _name(op.table_name), schema=_name(op.schema), details={"if_exists": bool(op.if_exists)}
        )
    ]


def _rename_table(op: ops.RenameTableOp) -> list[Operation]:
    return [
        Operation(
            "rename_table",
            _name(op.table_name),
            schema=_name(op.schema),
            details={"new_name": _name(op.new_table_name)},
        )
    ]


def _add_column(op: ops.AddColumnOp) -> list[Operation]:
    col: sa.Column[Any] = op.column
    has_default = any(x is not None for x in (col.server_default, col.computed, col.identity))
    details = {
        "nullable": bool(col.nullable),
        "server_default": has_default,
        "type": str(col.type).lower() if not isinstance(col.type, sa.types.NullType) else None,
    }
    return [Operation("add_column", _name(op.table_name), _name(col.name), _name(op.schema), details=details)]


def _drop_column(op: ops.DropColumnOp) -> list[Operation]:
    return [Operation("drop_column", _name(op.table_name), _name(op.column_name), _name(op.schema))]


def _alter_column(op: ops.AlterColumnOp, dialect: Any = None) -> list[Operation]:
    table, column, schema = _name(op.table_name), _name(op.column_name), _name(op.schema)
    result: list[Operation] = []
    if op.modify_type is not None:
        change = type_change(op.existing_type, op.modify_type, dialect)
        if change != "unchanged":
            details = {
                "type_change": change,
                "old_type": _type_text(op.existing_type),
                "new_type": _type_text(op.modify_type),
            }
            result.append(Operation("alter_column_type", table, column, schema, details=details))
    if op.modify_nullable is False and op.existing_nullable is not False:
        result.append(Operation("set_not_null", table, column, schema))
    elif op.modify_nullable is True and op.existing_nullable is not True:
        result.append(Operation("drop_not_null", table, column, schema))
    if op.modify_name is not None and _name(op.modify_name) != column:
        result.append(Operation("rename_column", table, column, schema, details={"new_name": _name(op.modify_name)}))
    if not result:
        result.append(Operation("alter_column", table, column, schema))
    return result


def _create_index(op: ops.CreateIndexOp) -> list[Operation]:
    details = {
        "name": _name(op.index_name),
        "unique": bool(op.unique),
        "concurrently": bool(op.kw.get("postgresql_concurrently")),
    }
    return [Operation("create_index", _name(op.table_name), schema=_name(op.schema), details=details)]


def _drop_index(op: ops.DropIndexOp) -> list[Operation]:
    details = {"name": _name(op.index_name), "concurrently": bool(op.kw.get("postgresql_concurrently"))}
    return [Operation("drop_index", _name(op.table_name), schema=_name(op.schema), details=details)]


_CONSTRAINT_TYPES = {
    ops.CreateUniqueConstraintOp: "unique",
    ops.CreateForeignKeyOp: "foreign_key",
    ops.CreateCheckConstraintOp: "check",
    ops.CreatePrimaryKeyOp: "primary_key",
}


_CreateConstraintOp = (
    ops.CreateUniqueConstraintOp | ops.CreateForeignKeyOp | ops.CreateCheckConstraintOp | ops.CreatePrimaryKeyOp
)


def _add_constraint(op: _CreateConstraintOp) -> list[Operation]:
    kind = _CONSTRAINT_TYPES.get(type(op))
    table = getattr(op, "table_name", None) or getattr(op, "source_table", None)
    schema = getattr(op, "schema", None) or getattr(op, "source_schema", None)
    kw = getattr(op, "kw", {}) or {}
    if isinstance(op, ops.CreateForeignKeyOp):
        schema = kw.get("source_schema")
    details = {
        "constraint_type": kind,
        "name": _name(op.constraint_name),
        "not_valid": bool(kw.get("postgresql_not_valid")),
        "using_index": False,
    }
    return [Operation("add_constraint", _name(table), schema=_name(schema), details=details)]


def _drop_constraint(op: ops.DropConstraintOp) -> list[Operation]:
    details = {"name": _name(op.constraint_name), "constraint_type": op.constraint_type}
    return [Operation("drop_constraint", _name(op.table_name), schema=_name(op.schema), details=details)]


def _bulk_insert(op: ops.BulkInsertOp) -> list[Operation]:
    return [Operation("insert", _name(op.table.name), schema=_name(op.table.schema))]


def _table_comment(op: Any) -> list[Operation]:
    return [Operation("other", _name(op.table_name), schema=_name(op.schema))]


_CONVERTERS: dict[type[ops.MigrateOperation], Callable[..., list[Operation]]] = {
    ops.CreateTableOp: _create_table,
    ops.DropTableOp: _drop_table,
    ops.RenameTableOp: _rename_table,
    ops.AddColumnOp: _add_column,
    ops.DropColumnOp: _drop_column,
    ops.AlterColumnOp: _alter_column,
    ops.CreateIndexOp: _create_index,
    ops.DropIndexOp: _drop_index,
    ops.CreateUniqueConstraintOp: _add_constraint,
    ops.CreateForeignKeyOp: _add_constraint,
    ops.CreateCheckConstraintOp: _add_constraint,
    ops.CreatePrimaryKeyOp: _add_constraint,
    ops.DropConstraintOp: _drop_constraint,
    ops.BulkInsertOp: _bulk_insert,
    ops.CreateTableCommentOp: _table_comment,
    ops.DropTableCommentOp: _table_comment,
}


# --- type changes ---------------------------------------------------------------------------

_INTEGER_RANK = {sa.SmallInteger: 1, sa.Integer: 2, sa.BigInteger: 3}


def _type_text(t: Any) -> str | None:
    if t is None:
        return None
    try:
        return str(t() if isinstance(t, type) else t).lower()
    except Exception:  # noqa: BLE001 - a type that cannot render without a dialect
        return type(t).__name__.lower()


def _same_type(old: Any, new: Any) -> bool:
    """Equal in every argument (``DateTime()`` and ``DateTime(timezone=True)`` differ)."""
    try:
        return type(old) is type(new) and repr(old) == repr(new)
    except Exception:  # noqa: BLE001 - a custom type whose repr fails
        return _type_text(old) == _type_text(new)


@functools.cache
def _dialect_named(name: str) -> Any:
    from sqlalchemy.dialects import registry

    return registry.load(name)()


def _renders_alike(old: Any, new: Any, dialect: Any) -> bool:
    """The same column type on this database (MySQL's DATETIME has no time zone to change)."""
    try:
        if isinstance(dialect, str):
            dialect = _dialect_named(dialect)
        alike: bool = old.compile(dialect=dialect) == new.compile(dialect=dialect)
        return alike
    except Exception:  # noqa: BLE001 - a type this dialect cannot render
        return False


def _as_instance(t: Any) -> Any:
    return t() if isinstance(t, type) else t


def _integer_rank(t: Any) -> int | None:
    for cls in type(t).__mro__:
        if cls in _INTEGER_RANK:
            return _INTEGER_RANK[cls]
    return None


def type_change(old: Any, new: Any, dialect: Any = None) -> str:
    """Classify a column type change: ``unchanged``, ``widening`` (no value can be lost),
    ``narrowing`` (values may be cut or rejected) or ``changed`` (unknown or different family)."""
    if old is None or new is None:
        return "changed"
    old, new = _as_instance(old), _as_instance(new)
    if isinstance(old, sa.Enum) and isinstance(new, sa.Enum):
        old_values, new_values = set(old.enums), set(new.enums)
        if old_values == new_values:
            return "unchanged"
        return "widening" if old_values < new_values else "narrowing"  # a removed value rejects its rows
    if isinstance(old, sa.Enum) or isinstance(new, sa.Enum):
        return "changed"
    if _same_type(old, new) or (dialect is not None and _renders_alike(old, new, dialect)):
        return "unchanged"
    if isinstance(old, sa.String) and isinstance(new, sa.String):
        old_len, new_len = old.length, new.length
        if new_len is None or isinstance(new, sa.Text) and not isinstance(old, sa.Text):
            return "widening"
        if old_len is None:
            return "narrowing"
        return "widening" if new_len >= old_len else "narrowing"
    old_rank, new_rank = _integer_rank(old), _integer_rank(new)
    if old_rank and new_rank:
        return "widening" if new_rank >= old_rank else "narrowing"
    if isinstance(old, sa.Numeric) and isinstance(new, sa.Numeric) and not isinstance(old, sa.Float):
        if old.precision is None or new.precision is None:
            return "changed"
        old_scale, new_scale = old.scale or 0, new.scale or 0
        if new_scale >= old_scale and new.precision - new_scale >= old.precision - old_scale:
            return "widening"
        return "narrowing"
    return "changed"
