"""Small helpers the schema guard shares: quoting, reflection, JSON-safe values, the report shape."""

from __future__ import annotations

import datetime as _dt
import decimal
import re
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar

import sqlalchemy as sa

from ..config import dialect_family
from ..errors import EXIT_BLOCKED

SAMPLE_ROWS = 5


@dataclass
class GuardReport:
    """Results that each may block (``blocks``), with a few offending rows each (``sample``) out of
    ``rows`` found; subclasses say ``summary()`` and how far sample rows are indented."""

    dialect: str
    results: list[Any]
    indent: ClassVar[str] = "  "

    @property
    def blocking(self) -> list[Any]:
        return [r for r in self.results if r.blocks]

    @property
    def exit_code(self) -> int:
        return EXIT_BLOCKED if self.blocking else 0

    def summary(self) -> str:
        raise NotImplementedError

    def text_lines(self) -> list[str]:
        lines = []
        for r in self.results:
            lines.append(r.line())
            lines.extend(self.indent + ", ".join(f"{k}={v!r}" for k, v in row.items()) for row in r.sample)
            if r.sample and r.rows > len(r.sample):
                lines.append(f"{self.indent}... and {r.rows - len(r.sample)} more")
        lines.append(self.summary())
        return lines


def family(conn: sa.Connection) -> str:
    return dialect_family(conn.dialect.name)


def quote(conn: sa.Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def table_ref(conn: sa.Connection, table: str, schema: str | None = None) -> str:
    return f"{quote(conn, schema)}.{quote(conn, table)}" if schema else quote(conn, table)


def has_table(conn: sa.Connection, table: str, schema: str | None = None) -> bool:
    return sa.inspect(conn).has_table(table, schema=schema)


def columns(conn: sa.Connection, table: str, schema: str | None = None) -> list[str]:
    return [c["name"] for c in sa.inspect(conn).get_columns(table, schema=schema)]


def primary_key(conn: sa.Connection, table: str, schema: str | None = None) -> list[str]:
    return list(sa.inspect(conn).get_pk_constraint(table, schema=schema).get("constrained_columns") or [])


_LITERAL = re.compile(r"'(?:[^']|'')*'")
_IDENT = re.compile(r'"([^"]+)"|`([^`]+)`|\[([^\]]+)\]|([A-Za-z_][A-Za-z0-9_$]*)')


def referenced_columns(expression: str, table_columns: list[str]) -> list[str]:
    """The table's columns an expression names, in table order (string literals ignored)."""
    words = {next(g for g in m.groups() if g).lower() for m in _IDENT.finditer(_LITERAL.sub(" ", expression))}
    return [c for c in table_columns if c.lower() in words]


def plain(value: Any) -> Any:
    """A value as JSON can carry it."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (_dt.date, _dt.datetime, _dt.time)):
        return value.isoformat(sep=" ") if isinstance(value, _dt.datetime) else value.isoformat()
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).hex()
    return str(value)


def rows_as_dicts(result: sa.CursorResult[*tuple[Any, ...]]) -> list[dict[str, Any]]:
    keys = list(result.keys())
    return [{k: plain(v) for k, v in zip(keys, row, strict=True)} for row in result]


def isolated(conn: sa.Connection) -> AbstractContextManager[Any]:
    """A savepoint on PostgreSQL, where a failed query would abort the caller's whole transaction;
    elsewhere nothing (a failed SELECT leaves the transaction usable)."""
    import contextlib

    return conn.begin_nested() if family(conn) == "postgresql" else contextlib.nullcontext()


def run(conn: sa.Connection, sql: str) -> sa.CursorResult[*tuple[Any, ...]]:
    """Run SQL text as written: no parameters, so drivers with %-placeholders leave ``%`` alone."""
    return conn.execution_options(no_parameters=True).exec_driver_sql(sql)
