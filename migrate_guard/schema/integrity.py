"""Integrity checks: orphaned rows along every foreign key, duplicates where the rules declare values
unique, and rule-defined queries that must return no rows. Read-only.

Foreign keys are reflected from the database and checked whether or not the engine enforces them
(SQLite with ``PRAGMA foreign_keys`` off, MySQL/MariaDB with ``foreign_key_checks = 0`` during a
load, PostgreSQL ``NOT VALID``); MyISAM keeps no foreign keys at all, so those are declared in the
definitions (``[[foreign_key]]``) and checked the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import sqlalchemy as sa

from ..errors import EXIT_BLOCKED, GuardError, one_line
from . import sqlutil as q
from .definitions import Definitions
from .sqlutil import GuardReport


class IntegrityFailed(GuardError):
    """An error-level integrity check found rows."""

    exit_code = EXIT_BLOCKED


@dataclass
class Result:
    kind: str  # foreign_key | unique | check
    name: str
    severity: str
    status: str  # ok | failed | skipped | error
    detail: str
    table: str | None = None
    count: int = 0
    sample: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""

    @property
    def blocks(self) -> bool:
        return self.severity == "error" and self.status in ("failed", "error")

    @property
    def rows(self) -> int:  # the rows ``sample`` shows a few of
        return self.count if self.status == "failed" else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "table": self.table,
            "severity": self.severity,
            "status": self.status,
            "detail": self.detail,
            "count": self.count,
            "sample": self.sample,
            "note": self.note or None,
        }

    def line(self) -> str:
        what = {"foreign_key": "orphaned row", "unique": "duplicated value", "check": "row"}[self.kind]
        head = f"{self.status:8} {self.severity:8} {self.kind:12} {self.name}: {self.detail}"
        if self.status == "failed":
            head += f": {self.count} {what}{'s' if self.count != 1 else ''}"
        if self.note:
            head += f" ({self.note})"
        return head


@dataclass
class Report(GuardReport):
    indent: ClassVar[str] = " " * 9

    def summary(self) -> str:
        failed = [r for r in self.results if r.status in ("failed", "error")]
        return (
            f"integrity ({self.dialect}): {len(self.results)} checks, "
            f"{sum(r.severity == 'error' for r in failed)} errors, "
            f"{sum(r.severity == 'warning' for r in failed)} warnings, "
            f"{sum(r.status == 'skipped' for r in self.results)} skipped"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "dialect": self.dialect,
            "checks": [r.to_dict() for r in self.results],
            "summary": {
                "checks": len(self.results),
                "errors": len(self.blocking),
                "warnings": sum(r.severity == "warning" and r.status in ("failed", "error") for r in self.results),
            },
        }

    def blocked_message(self) -> str:
        return "integrity check failed: " + "; ".join(
            f"{r.kind} {r.name} ({r.detail}): {r.count} row{'s' if r.count != 1 else ''}"
            if r.status == "failed"
            else f"{r.kind} {r.name}: {r.note}"
            for r in self.blocking
        )


def run(conn: sa.Connection, definitions: Definitions) -> Report:
    results: list[Result] = []
    inspector = sa.inspect(conn)
    tables = sorted(inspector.get_table_names())
    existing = {t.lower() for t in tables}
    unenforced = _unenforced(conn, tables)
    for table in tables:
        for fk in inspector.get_foreign_keys(table):
            if not fk.get("referred_table") or fk.get("referred_schema"):
                continue
            name = fk.get("name") or f"{table}({', '.join(fk['constrained_columns'])})"
            results.append(
                _orphans(
                    conn,
                    name,
                    definitions.reflected_fk_severity,
                    table,
                    fk["constrained_columns"],
                    fk["referred_table"],
                    fk["referred_columns"],
                    existing,
                    unenforced.get(table, ""),
                )
            )
    for declared in definitions.foreign_keys:
        results.append(
            _orphans(
                conn,
                declared.name,
                declared.severity,
                declared.table,
                list(declared.columns),
                declared.references,
                list(declared.referenced_columns),
                existing,
                "; ".join(filter(None, ["declared in the definitions", unenforced.get(declared.table, "")])),
            )
        )
    for u in definitions.uniques:
        results.append(_duplicates(conn, u.name, u.severity, u.table, list(u.columns), u.schema, existing))
    for c in definitions.checks:
        missing = [t for t in c.tables if t.lower() not in existing]
        if missing:
            results.append(
                Result(
                    "check",
                    c.name,
                    c.severity,
                    "skipped",
                    c.description or "query",
                    note=f"table {missing[0]} does not exist (yet)",
                )
            )
            continue
        results.append(
            _query(conn, c.name, c.severity, c.description or "query must return no rows", c.sql(q.family(conn)))
        )
    return Report(q.family(conn), results)


def _unenforced(conn: sa.Connection, tables: list[str]) -> dict[str, str]:
    """Tables whose foreign keys the engine does not enforce right now, and why."""
    dialect = q.family(conn)
    if dialect == "sqlite" and not q.run(conn, "PRAGMA foreign_keys").scalar():
        return {t: "not enforced: PRAGMA foreign_keys is off" for t in tables}
    if dialect == "mysql":
        if not q.run(conn, "SELECT @@foreign_key_checks").scalar():
            return {t: "not enforced: foreign_key_checks is off" for t in tables}
        engines = dict(
            q.run(
                conn, "SELECT table_name, engine FROM information_schema.tables WHERE table_schema = DATABASE()"
            ).all()
        )
        return {t: f"not enforced: {e} table" for t, e in engines.items() if e and e.lower() != "innodb"}
    return {}


def _orphans(
    conn: sa.Connection,
    name: str,
    severity: str,
    table: str,
    columns: list[str],
    parent: str,
    parent_columns: list[str],
    existing: set[str],
    note: str,
) -> Result:
    detail = f"{table}({', '.join(columns)}) -> {parent}({', '.join(parent_columns)})"
    if table.lower() not in existing or parent.lower() not in existing:
        return Result("foreign_key", name, severity, "skipped", detail, table, note="table does not exist (yet)")
    c, p = q.quote, q.quote
    not_null = " AND ".join(f"c.{c(conn, col)} IS NOT NULL" for col in columns)
    match = " AND ".join(
        f"p.{p(conn, pc)} = c.{c(conn, col)}" for col, pc in zip(columns, parent_columns, strict=False)
    )
    where = f"{not_null} AND NOT EXISTS (SELECT 1 FROM {q.table_ref(conn, parent)} p WHERE {match})"
    shown = list(dict.fromkeys(q.primary_key(conn, table) + columns))
    select = ", ".join(f"c.{c(conn, col)}" for col in shown)
    return _counted(
        conn,
        "foreign_key",
        name,
        severity,
        detail,
        table,
        note,
        f"SELECT COUNT(*) FROM {q.table_ref(conn, table)} c WHERE {where}",
        f"SELECT {select} FROM {q.table_ref(conn, table)} c WHERE {where} ORDER BY {select} LIMIT {q.SAMPLE_ROWS}",
    )


def _duplicates(
    conn: sa.Connection,
    name: str,
    severity: str,
    table: str,
    columns: list[str],
    schema: str | None,
    existing: set[str],
) -> Result:
    detail = f"{table}({', '.join(columns)}) unique"
    if table.lower() not in existing and not q.has_table(conn, table, schema):
        return Result("unique", name, severity, "skipped", detail, table, note="table does not exist (yet)")
    cols = ", ".join(q.quote(conn, col) for col in columns)
    not_null = " AND ".join(f"{q.quote(conn, col)} IS NOT NULL" for col in columns)
    groups = (
        f"SELECT {cols}, COUNT(*) AS n FROM {q.table_ref(conn, table, schema)} WHERE {not_null} "
        f"GROUP BY {cols} HAVING COUNT(*) > 1"
    )
    return _counted(
        conn,
        "unique",
        name,
        severity,
        detail,
        table,
        "",
        f"SELECT COUNT(*) FROM ({groups}) d",
        f"{groups} ORDER BY n DESC, {cols} LIMIT {q.SAMPLE_ROWS}",
    )


def _query(conn: sa.Connection, name: str, severity: str, detail: str, sql: str) -> Result:
    return _counted(
        conn,
        "check",
        name,
        severity,
        detail,
        None,
        "",
        f"SELECT COUNT(*) FROM ({sql}) q",
        f"SELECT * FROM ({sql}) q LIMIT {q.SAMPLE_ROWS}",
    )


def _counted(
    conn: sa.Connection,
    kind: str,
    name: str,
    severity: str,
    detail: str,
    table: str | None,
    note: str,
    count_sql: str,
    sample_sql: str,
) -> Result:
    try:
        with q.isolated(conn):
            count = int(q.run(conn, count_sql).scalar() or 0)
            sample = q.rows_as_dicts(q.run(conn, sample_sql)) if count else []
    except sa.exc.DBAPIError as exc:
        return Result(
            kind, name, severity, "error", detail, table, note=f"the query failed: {one_line(exc.orig or exc)}"
        )
    return Result(kind, name, severity, "failed" if count else "ok", detail, table, count, sample, note)


def check_database(url: str, definitions: Definitions) -> Report:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            report = run(conn, definitions)
            conn.rollback()
            return report
    finally:
        engine.dispose()
