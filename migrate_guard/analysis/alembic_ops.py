"""Alembic operation objects (``alembic.operations.ops``) -> normalised ``Operation`` records."""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic.operations import ops

from migrate_guard.config import dialect_family

from .operations import Operation
from .rules import BUILTIN_RULES_DIR


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
    if converter in _DIALECT_AWARE:
        return converter(op, dialect)
    return converter(op) if converter else None


def _create_table(op: ops.CreateTableOp) -> list[Operation]:
    table, schema = _name(op.table_name), _name(op.schema)
    result = [Operation("create_table", table, schema=schema)]
    try:
        built = op.to_table()
    except Exception:  # noqa: BLE001 - a table Alembic itself cannot build fails when it runs, not here
        return result
    result += _declared_types(built, table, schema)
    # Its constraints are part of the CREATE TABLE and its indexes cost nothing (the table is empty);
    # its foreign keys lock the tables they reference, which are not new.
    result += _implicit_ddl(built, table, schema, constraints=False)
    for fk in sorted(_foreign_keys(built), key=lambda c: str(c.name or "")):
        ref_schema, ref_table = _referenced_table(fk)
        if ref_table is None or (ref_table, ref_schema or schema) == (table, schema):
            continue  # a self-reference locks only the new table
        details = {
            "name": _constraint_name(fk),
            "referenced_by": table,
            "note": f"the referenced table of a foreign key of new table {table}",
        }
        result.append(Operation("reference_table", ref_table, schema=ref_schema or schema, details=details))
    return result


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


def _add_column(op: ops.AddColumnOp, dialect: Any = None) -> list[Operation]:
    col: sa.Column[Any] = op.column
    table, schema = _name(op.table_name), _name(op.schema)
    has_default = any(x is not None for x in (col.server_default, col.computed, col.identity))
    rewrite = _column_rewrite(col, dialect)
    details: dict[str, Any] = {
        "nullable": bool(col.nullable),
        "server_default": has_default,
        "type": str(col.type).lower() if not isinstance(col.type, sa.types.NullType) else None,
        "rewrites_table": None if dialect is None else rewrite is not None,
    }
    if rewrite:
        details["note"] = rewrite
    details["type_family"] = None if isinstance(col.type, sa.types.NullType) else type_family(col.type)
    result = [Operation("add_column", table, _name(col.name), schema, details=details)]
    # What Alembic emits after the ADD COLUMN (toimpl.add_column): the column's index, foreign key,
    # unique and check constraints, each built over the existing rows.
    try:
        # a copy, as Alembic's toimpl.add_column makes: attaching the caller's column would change it
        built = sa.Table(op.table_name, sa.MetaData(), col._copy(), schema=op.schema)
    except Exception:  # noqa: BLE001 - a column SQLAlchemy cannot attach fails when it runs, not here
        return result
    return result + _implicit_ddl(built, table, schema, column=_name(col.name), dialect=dialect)


def _declared_types(built: sa.Table, table: str | None, schema: str | None) -> list[Operation]:
    """Each column's declared type, for the hygiene rules; ``primary_key`` marks the only primary key
    column when it is no foreign key (the type is then the referenced table's choice)."""
    keys = list(built.primary_key.columns)
    only_key = keys[0] if len(keys) == 1 and not keys[0].foreign_keys else None
    return [
        Operation(
            "column_type",
            table,
            _name(c.name),
            schema,
            details={"type_family": type_family(c.type), "new_table": True, "primary_key": c is only_key},
        )
        for c in built.columns
        if not isinstance(c.type, sa.types.NullType)
    ]


def _implicit_ddl(
    built: sa.Table,
    table: str | None,
    schema: str | None,
    column: str | None = None,
    constraints: bool = True,
    dialect: Any = None,
) -> list[Operation]:
    """The CREATE INDEX (and, for a column added to a table, ADD CONSTRAINT) statements Alembic emits
    for ``index=True``, ``unique=True``, ``ForeignKey`` and ``CheckConstraint`` (primary keys are inline)."""
    where = f"column {table}.{column}" if column else f"new table {table}"
    result = []
    for index in sorted(built.indexes, key=lambda i: str(i.name or "")):
        details = {
            "name": _name(index.name),
            "unique": bool(index.unique),
            "concurrently": False,
            "note": f"built for {'unique=True, ' if index.unique else ''}index=True on {where}",
        }
        result.append(Operation("create_index", table, column, schema, details=details))
    kinds = {sa.UniqueConstraint: "unique", sa.ForeignKeyConstraint: "foreign_key", sa.CheckConstraint: "check"}
    for constraint in sorted(built.constraints, key=lambda c: (type(c).__name__, str(c.name or ""))):
        kind = kinds.get(type(constraint))
        if kind is None or not constraints:
            continue
        what = {"unique": "unique=True", "foreign_key": "ForeignKey", "check": "CheckConstraint"}[kind]
        name = _constraint_name(constraint)
        if name is None and column and _family_of(dialect) == "postgresql":  # the name the server gives it
            name = f"{table}_{column}_{_PG_NAME_SUFFIX[kind]}"
        details = {
            "constraint_type": kind,
            "name": name,
            "not_valid": False,
            "using_index": False,
            "note": f"from {what} on {where}",
        }
        result.append(Operation("add_constraint", table, column, schema, details=details))
    return result


_PG_NAME_SUFFIX = {"unique": "key", "foreign_key": "fkey", "check": "check"}


def _foreign_keys(built: sa.Table) -> list[sa.ForeignKeyConstraint]:
    return [c for c in built.constraints if isinstance(c, sa.ForeignKeyConstraint)]


def _referenced_table(fk: sa.ForeignKeyConstraint) -> tuple[str | None, str | None]:
    """(schema, table) a foreign key points at, from its target ``[schema.]table.column``."""
    if not fk.elements:
        return None, None
    parts = fk.elements[0].target_fullname.split(".")
    if len(parts) < 2:
        return None, None
    return _name(".".join(parts[:-2])) if len(parts) > 2 else None, _name(parts[-2])


def _constraint_name(constraint: sa.Constraint) -> str | None:
    name = constraint.name
    if name is None or type(name).__name__ == "_NoneName":
        return None
    return _name(name)


def column_rewrites_table(column_sql: str, dialect: Any) -> str | None:
    """Why ``ALTER TABLE ... ADD COLUMN <column_sql>`` rewrites an existing table on ``dialect``, or None.

    ``column_sql`` is the column definition as the server reads it (``x uuid DEFAULT gen_random_uuid()``).
    PostgreSQL 11+ stores a constant or STABLE default (``now()``) without touching the rows; a volatile
    default, an identity or serial column and a STORED generated column make it rewrite the table.
    MySQL rebuilds the table for a STORED generated column or an AUTO_INCREMENT column.
    """
    family = _family_of(dialect)
    text = " ".join(_strip_quoted(column_sql).split()).lower()
    if family == "postgresql":
        if re.search(r"\bgenerated\s+(?:always|by\s+default)\s+as\s+identity\b", text):
            return "an identity column fills every existing row from a sequence"
        if re.search(r"^\S+\s+(?:small|big)?serial\b", text):
            return "a serial column fills every existing row from a sequence"
        if re.search(r"\bgenerated\s+always\s+as\s*\(.*\)\s*stored\b", text):
            return "a STORED generated column is computed for every existing row"
        default = re.search(r"\bdefault\b(.*)", text)
        if default:
            for name in server_behaviour(family).get("volatile_functions", ()):
                if re.search(rf"\b{re.escape(name)}\s*\(", default.group(1)):
                    return f"the volatile default {name}() is evaluated for every existing row"
    elif family == "mysql":
        if re.search(r"\bgenerated\s+always\s+as\s*\(.*\)\s*stored\b|\bas\s*\(.*\)\s*(?:stored|persistent)\b", text):
            return "a STORED generated column rebuilds the table (ALGORITHM=COPY)"
        if re.search(r"\bauto_increment\b", text):
            return "an AUTO_INCREMENT column rebuilds the table"
    return None


def _strip_quoted(sql: str) -> str:
    """``sql`` with the contents of string literals blanked, so a quoted 'random()' is not a call."""
    return re.sub(r"'(?:[^']|'')*'", "''", sql)


def _column_rewrite(col: sa.Column[Any], dialect: Any) -> str | None:
    if dialect is None:
        return None
    try:
        if isinstance(dialect, str):
            dialect = _dialect_named(dialect_family(dialect))
        column_sql = str(sa.schema.CreateColumn(col).compile(dialect=dialect))
    except Exception:  # noqa: BLE001 - a column this dialect cannot render: nothing to classify
        return None
    return column_rewrites_table(column_sql, dialect)


def _drop_column(op: ops.DropColumnOp) -> list[Operation]:
    return [Operation("drop_column", _name(op.table_name), _name(op.column_name), _name(op.schema))]


def _alter_column(op: ops.AlterColumnOp, dialect: Any = None) -> list[Operation]:
    types = None
    if op.modify_type is not None:
        types = (op.existing_type, op.modify_type, _type_text(op.existing_type), _type_text(op.modify_type))
    return column_changes(
        _name(op.table_name),
        _name(op.column_name),
        _name(op.schema),
        dialect,
        types=types,
        nullable=op.modify_nullable,
        existing_nullable=op.existing_nullable,
        new_name=_name(op.modify_name),
    )


def column_changes(
    table: str | None,
    column: str | None,
    schema: str | None,
    dialect: Any,
    *,
    types: tuple[Any, Any, str | None, str | None] | None,
    nullable: bool | None,
    existing_nullable: bool | None,
    new_name: str | None,
    renamed: bool | None = None,
) -> list[Operation]:
    """What ``alter_column`` changes: type, nullability and name, else a plain alter (the offline
    capture and the static reader alike). ``types`` is (old, new, old text, new text) when a new type
    is given; a type the caller could not evaluate is None, its text the source's. ``renamed``
    defaults to ``new_name`` differing from ``column``."""
    result: list[Operation] = []
    if types is not None:
        old, new, old_text, new_text = types
        if old is None and new is None and old_text is not None and old_text == new_text:
            change = "unchanged"  # the same expression, which could not be evaluated
        else:
            change = type_change(old, new, dialect)
        if change != "unchanged":
            details: dict[str, Any] = {"type_change": change, "old_type": old_text, "new_type": new_text}
            if old is not None and new is not None and _charset(old) != _charset(new):
                details["charset_change"] = True
            if {_family(old), _family(new)} == {"timestamp", "timestamptz"}:
                details["time_zone_dependent"] = True  # in place while the session's zone is UTC
            note = type_change_note(change, old_text, dialect)
            if note:
                details["note"] = note
            result.append(Operation("alter_column_type", table, column, schema, details=details))
    if nullable is False and existing_nullable is not False:
        result.append(Operation("set_not_null", table, column, schema))
    elif nullable is True and existing_nullable is not True:
        result.append(Operation("drop_not_null", table, column, schema))
    if renamed if renamed is not None else (new_name is not None and new_name != column):
        result.append(Operation("rename_column", table, column, schema, details={"new_name": new_name}))
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
_DIALECT_AWARE: frozenset[Callable[..., list[Operation]]] = frozenset({_alter_column, _add_column})


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
            dialect = _dialect_named(dialect_family(dialect))
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
    """Classify a column type change: ``unchanged``, ``widening`` (no value can be lost and the server
    changes it in place), ``rewrite`` (no value can be lost, but the server rewrites or scans the
    table), ``narrowing`` (values may be cut or rejected) or ``changed`` (unknown or different family).

    Without a ``dialect`` only the values are judged (``rewrite`` is never returned)."""
    change = _value_change(old, new, dialect)
    if change == "widening" and dialect is not None and not changes_in_place(old, new, dialect):
        return "rewrite"
    return change


def type_change_note(change: str, old_type: str | None, dialect: Any) -> str | None:
    """Why a type change is reported, for the finding's message."""
    if change == "rewrite":
        return f"{_family_of(dialect) or 'the database'} rewrites the table to change the type"
    if change == "narrowing":
        return "existing values may not fit"
    if change == "changed":
        if old_type is None:
            return "the old type is unknown: pass existing_type= so the change can be judged"
        return "a cast to another type family: it rewrites the table and may fail or change values"
    return None


def _value_change(old: Any, new: Any, dialect: Any = None) -> str:
    if old is None or new is None:
        return "changed"
    old, new = _as_instance(old), _as_instance(new)
    if isinstance(old, sa.Enum) and isinstance(new, sa.Enum):
        if list(old.enums) == list(new.enums) and old.name == new.name:
            return "unchanged"
        # reordered values, or another enum type with the same ones, keep every value: whether the server
        # does it in place is changes_in_place's question (it does not: order and type are stored)
        return "widening" if set(old.enums) <= set(new.enums) else "narrowing"  # a removed value rejects rows
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


# --- what the server does: rules/data/server-behaviour.toml ------------------------------------------

SERVER_BEHAVIOUR = BUILTIN_RULES_DIR / "data" / "server-behaviour.toml"


@functools.cache
def server_behaviour(family: str) -> dict[str, Any]:
    """The ``family`` (or ``mariadb``) table of rules/data/server-behaviour.toml; empty when none."""
    with SERVER_BEHAVIOUR.open("rb") as f:
        table: dict[str, Any] = tomllib.load(f).get(family, {})
    return table


def _family_of(dialect: Any) -> str | None:
    if dialect is None:
        return None
    return dialect_family(dialect if isinstance(dialect, str) else str(getattr(dialect, "name", "")))


def type_family(t: Any) -> str:
    """The name a type goes by in ``in_place_type_changes``: ``varchar``, ``text``, ``integer``, ..."""
    t = _as_instance(t)
    if isinstance(t, sa.Enum):
        return "enum"
    if type(t).__name__ == "SET":  # sqlalchemy.dialects.mysql.SET
        return "set"
    if isinstance(t, sa.Text):
        return "text"
    if isinstance(t, (sa.CHAR, sa.NCHAR)):
        return "char"
    if isinstance(t, sa.String):
        return "varchar"
    rank = _integer_rank(t)
    if rank:
        return {1: "smallint", 2: "integer", 3: "bigint"}[rank]
    if isinstance(t, sa.Float):
        return "float"
    if isinstance(t, sa.Numeric):
        return "numeric"
    if isinstance(t, sa.DateTime):
        return "timestamptz" if t.timezone else "timestamp"
    return str(getattr(t, "__visit_name__", type(t).__name__)).lower()


def _charset(t: Any) -> str:
    """A MySQL string type's character set as written (``""``: the table's)."""
    return str(getattr(_as_instance(t), "charset", None) or "").lower()


def _charset_bytes(t: Any) -> int:
    """Bytes a character takes on MySQL; utf8mb4 (the default since MySQL 8) unless the type says."""
    charset = _charset(t)
    return {"latin1": 1, "ascii": 1, "binary": 1, "utf8": 3, "utf8mb3": 3}.get(charset, 4)


def _longer(old: Any, new: Any) -> bool:
    return bool(new.length is None or (old.length is not None and new.length >= old.length))


def _longer_same_length_bytes(old: Any, new: Any) -> bool:
    # MySQL stores a VARCHAR's length in 1 byte up to 255 bytes, else 2; changing that rebuilds.
    if old.length is None or new.length is None or new.length < old.length:
        return False
    old_bytes: int = old.length * _charset_bytes(old)
    new_bytes: int = new.length * _charset_bytes(new)
    return (old_bytes <= 255) == (new_bytes <= 255)


def _longer_from_short_or_same_length_bytes(old: Any, new: Any) -> bool:
    # MariaDB also extends a VARCHAR of at most 127 bytes in place, whatever its new length (measured on
    # 10.11: VARCHAR(100) latin1 -> VARCHAR(300) and VARCHAR(30) utf8mb4 -> VARCHAR(100) are INSTANT).
    if old.length is None or new.length is None or new.length < old.length:
        return False
    return old.length * _charset_bytes(old) <= 127 or _longer_same_length_bytes(old, new)


def _more_precision_same_scale(old: Any, new: Any) -> bool:
    if (old.scale or 0) != (new.scale or 0):
        return False
    return new.precision is None or (old.precision is not None and new.precision >= old.precision)


def _same_type_values_appended(old: Any, new: Any) -> bool:
    # PostgreSQL: ALTER TYPE ... ADD VALUE changes the column's own type; a column moved to ANOTHER enum
    # type (even with the same values) is rewritten.
    return getattr(old, "name", None) == getattr(new, "name", None) and _values_appended(old, new)


def _values_appended(old: Any, new: Any) -> bool:
    old_values, new_values = list(_members(old)), list(_members(new))
    if new_values[: len(old_values)] != old_values:
        return False
    if type_family(new) == "set":  # a SET stores one bit a member, in whole bytes
        return (len(old_values) + 7) // 8 == (len(new_values) + 7) // 8
    return (len(old_values) <= 255) == (len(new_values) <= 255)


def _members(t: Any) -> tuple[str, ...]:
    return tuple(getattr(t, "enums", None) or getattr(t, "values", None) or ())


_CONDITIONS: dict[str, Callable[[Any, Any], bool]] = {
    "always": lambda old, new: True,
    "unbounded": lambda old, new: getattr(new, "length", 0) is None,
    "longer": _longer,
    "longer_same_length_bytes": _longer_same_length_bytes,
    "longer_from_short_or_same_length_bytes": _longer_from_short_or_same_length_bytes,
    "same_type_values_appended": _same_type_values_appended,
    "more_precision_same_scale": _more_precision_same_scale,
    "values_appended": _values_appended,
}


def _is_mariadb(dialect: Any) -> bool:
    if isinstance(dialect, str):
        return dialect.split("+", 1)[0].strip().lower() == "mariadb"
    return bool(getattr(dialect, "is_mariadb", False)) or str(getattr(dialect, "name", "")) == "mariadb"


def _family(t: Any) -> str | None:
    return type_family(t) if t is not None else None


def changes_in_place(old: Any, new: Any, dialect: Any) -> bool:
    """True if ``dialect`` changes a column from ``old`` to ``new`` without rewriting or scanning the table."""
    family = _family_of(dialect)
    if family is None or old is None or new is None:
        return False
    old, new = _as_instance(old), _as_instance(new)
    if family == "mysql" and _charset(old) != _charset(new):
        return False  # every value is converted to the new character set
    old_family, new_family = type_family(old), type_family(new)
    table = server_behaviour(family)
    if family == "mysql" and _is_mariadb(dialect) and "in_place_type_changes" in server_behaviour("mariadb"):
        table = server_behaviour("mariadb")
    for entry in table.get("in_place_type_changes", ()):
        if (entry["from"], entry["to"]) == (old_family, new_family):
            try:
                if _CONDITIONS[entry.get("when", "always")](old, new):
                    return True
            except (AttributeError, TypeError):
                continue  # a type without the arguments the condition compares
    return False
