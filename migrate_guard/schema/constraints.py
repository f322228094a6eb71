"""CHECK constraints from definitions: count the rows that violate them, then enforce them in the database.

Per database:

* **PostgreSQL**: ``ADD CONSTRAINT ... NOT VALID`` (checks new rows at once, holds its exclusive lock
  only for a catalog change), commit, then ``VALIDATE CONSTRAINT`` (scans under SHARE UPDATE
  EXCLUSIVE: reads and writes go on). Inside migrate-safe both run in its one transaction.
* **MariaDB/MySQL**: ``ADD CONSTRAINT ... CHECK``; the server checks every row while it copies the
  table (reads go on, writes wait). A changed definition is dropped and re-added in one ALTER.
* **SQLite**: ``BEFORE INSERT`` / ``BEFORE UPDATE OF <columns>`` triggers that ``RAISE(ABORT)`` when
  the expression is false. A CHECK would need a table rebuild (a full copy, foreign keys switched
  off, which SQLite cannot do inside migrate-safe's transaction); triggers are added in place and
  keep CHECK's meaning (NULL passes).

Idempotent: a constraint present with the same definition is left alone, a changed one replaced.
"Same" is decided by the database itself: the new expression is added to an empty temporary copy of
the table and the server's rendering of both is compared (on SQLite, the trigger's SQL).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import sqlalchemy as sa

from ..errors import EXIT_BLOCKED, GuardError, one_line
from . import sqlutil as q
from .definitions import Constraint, Definitions
from .sqlutil import GuardReport


class ConstraintsBlocked(GuardError):
    """Rows violate a constraint about to be enforced; ``report`` says which and shows some."""

    exit_code = EXIT_BLOCKED

    def __init__(self, message: str, report: CheckReport):
        super().__init__(message)
        self.report = report


class ConstraintError(GuardError):
    """A constraint could not be applied (bad expression, a race with a writer, a conflicting definition)."""

    exit_code = EXIT_BLOCKED


@dataclass
class CheckResult:
    constraint: Constraint
    expression: str
    status: str  # ok | violated | skipped | error
    violations: int = 0
    sample: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""

    @property
    def blocks(self) -> bool:
        return self.constraint.severity == "error" and self.status in ("violated", "error")

    @property
    def rows(self) -> int:  # the rows ``sample`` shows a few of
        return self.violations

    def to_dict(self) -> dict[str, Any]:
        c = self.constraint
        return {
            "name": c.name,
            "table": c.table,
            "schema": c.schema,
            "severity": c.severity,
            "expression": self.expression,
            "status": self.status,
            "violations": self.violations,
            "sample": self.sample,
            "note": self.note or None,
        }

    def line(self) -> str:
        c = self.constraint
        head = f"{self.status:9} {c.severity:8} {c.name} on {c.table}"
        if self.status == "violated":
            return f"{head}: {self.violations} row{'s' if self.violations != 1 else ''} violate {self.expression}"
        if self.status in ("skipped", "error"):
            return f"{head}: {self.note}"
        return f"{head}: {self.expression}"


@dataclass
class CheckReport(GuardReport):
    indent: ClassVar[str] = " " * 10

    def summary(self) -> str:
        violated = [r for r in self.results if r.status == "violated"]
        rows = sum(r.violations for r in violated)
        return (
            f"checked {len(self.results)} constraint{'s' if len(self.results) != 1 else ''} ({self.dialect}): "
            f"{len(violated)} violated ({rows} row{'s' if rows != 1 else ''}), "
            f"{sum(r.status == 'skipped' for r in self.results)} skipped, "
            f"{sum(r.status == 'error' for r in self.results)} failed to run"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "dialect": self.dialect,
            "constraints": [r.to_dict() for r in self.results],
            "summary": {
                "constraints": len(self.results),
                "violated": sum(r.status == "violated" for r in self.results),
                "rows": sum(r.violations for r in self.results),
                "blocking": len(self.blocking),
            },
        }

    def blocked_message(self) -> str:
        parts = [
            f"{r.constraint.name}: {r.violations} row{'s' if r.violations != 1 else ''} "
            f"of {r.constraint.table} violate it"
            if r.status == "violated"
            else f"{r.constraint.name}: {r.note}"
            for r in self.blocking
        ]
        return "rows violate constraints to enforce: " + "; ".join(parts)


# --- checking ----------------------------------------------------------------------------------------


def check(conn: sa.Connection, constraints: tuple[Constraint, ...] | list[Constraint]) -> CheckReport:
    """Count the rows violating each constraint and keep a few (primary key and the values the
    expression reads). Changes nothing."""
    dialect = q.family(conn)
    return CheckReport(dialect, [check_one(conn, c) for c in constraints])


def check_one(conn: sa.Connection, c: Constraint) -> CheckResult:
    expression = c.sql(q.family(conn))
    if not q.has_table(conn, c.table, c.schema):
        return CheckResult(c, expression, "skipped", note=f"table {c.table} does not exist (yet)")
    cols = q.columns(conn, c.table, c.schema)
    shown = list(dict.fromkeys(q.primary_key(conn, c.table, c.schema) + q.referenced_columns(expression, cols))) or cols
    target = q.table_ref(conn, c.table, c.schema)
    where = f"NOT ({expression})"
    select = ", ".join(q.quote(conn, col) for col in shown)
    try:
        with q.isolated(conn):
            count = q.run(conn, f"SELECT COUNT(*) FROM {target} WHERE {where}").scalar() or 0
            sample = (
                q.rows_as_dicts(
                    q.run(conn, f"SELECT {select} FROM {target} WHERE {where} ORDER BY {select} LIMIT {q.SAMPLE_ROWS}")
                )
                if count
                else []
            )
    except sa.exc.DBAPIError as exc:
        if _missing_column(exc):  # migrating to a revision before the column exists: not applicable yet
            return CheckResult(
                c, expression, "skipped", note=f"a column it reads does not exist (yet): {one_line(exc.orig or exc)}"
            )
        return CheckResult(
            c, expression, "error", note=f"the expression cannot be evaluated: {one_line(exc.orig or exc)}"
        )
    return CheckResult(c, expression, "violated" if count else "ok", int(count), sample)


def _missing_column(exc: sa.exc.DBAPIError) -> bool:
    orig = exc.orig
    return (
        getattr(orig, "sqlstate", None) == "42703"
        or getattr(orig, "pgcode", None) == "42703"  # PostgreSQL
        or (getattr(orig, "args", None) or [None])[0] == 1054  # MariaDB/MySQL: Unknown column
        or "no such column" in str(orig)
    )  # SQLite


# --- applying ---------------------------------------------------------------------------------------------


@dataclass
class Action:
    constraint: Constraint
    action: str  # add | replace | validate | unchanged | skipped | report-only
    statements: list[list[str]] = field(default_factory=list)  # groups: each group is one transaction standalone
    note: str = ""

    def line(self) -> str:
        c = self.constraint
        verb = {
            "add": "added",
            "replace": "replaced",
            "validate": "validated",
            "unchanged": "unchanged",
            "skipped": "skipped",
            "report-only": "not enforced (severity warning)",
        }[self.action]
        return f"{verb:14} {c.name} on {c.table}" + (f" ({self.note})" if self.note else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.constraint.name,
            "table": self.constraint.table,
            "action": self.action,
            "statements": [s for group in self.statements for s in group],
            "note": self.note or None,
        }


@dataclass
class Plan:
    report: CheckReport
    actions: list[Action]

    @property
    def changes(self) -> list[Action]:
        return [a for a in self.actions if a.statements]

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for a in self.actions:
            counts[a.action] = counts.get(a.action, 0) + 1
        order = ("add", "replace", "validate", "unchanged", "skipped", "report-only")
        words = {
            "add": "added",
            "replace": "replaced",
            "validate": "validated",
            "unchanged": "unchanged",
            "skipped": "skipped",
            "report-only": "report-only",
        }
        return "constraints: " + (", ".join(f"{counts[k]} {words[k]}" for k in order if k in counts) or "none defined")


def plan(conn: sa.Connection, definitions: Definitions) -> Plan:
    """Validate every constraint, then work out the statements that enforce the enforceable ones.
    Raises ``ConstraintsBlocked`` (the report in its message) when rows violate one; changes nothing."""
    report = check(conn, definitions.constraints)
    if report.blocking:
        raise ConstraintsBlocked(report.blocked_message(), report)
    actions = []
    for result in report.results:
        c = result.constraint
        if result.status == "skipped":
            actions.append(Action(c, "skipped", note=result.note))
        elif c.severity != "error":
            actions.append(Action(c, "report-only"))
        else:
            planner = _PLANNERS.get(q.family(conn))
            if planner is None:
                raise ConstraintError(
                    f"constraints cannot be applied on {conn.dialect.name} (PostgreSQL, MariaDB/MySQL and SQLite can)"
                )
            actions.append(planner(conn, c, result.expression))
    return Plan(report, actions)


def execute(conn: sa.Connection, the_plan: Plan, commit: Callable[[], None] | None = None) -> None:
    """Run the plan's statements. ``commit`` between groups when standalone (PostgreSQL: the
    ``NOT VALID`` add is committed before ``VALIDATE`` scans); inside migrate-safe, ``None``."""
    for action in the_plan.changes:
        for step, group in enumerate(action.statements):
            try:
                for statement in group:
                    q.run(conn, statement)
            except sa.exc.DBAPIError as exc:
                if commit and step and action.action == "add":  # VALIDATE lost a race: take the NOT VALID one back
                    conn.rollback()
                    c = action.constraint
                    with contextlib.suppress(sa.exc.DBAPIError):
                        q.run(
                            conn,
                            f"ALTER TABLE {q.table_ref(conn, c.table, c.schema)} "
                            f"DROP CONSTRAINT IF EXISTS {q.quote(conn, c.name)}",
                        )
                        commit()
                raise ConstraintError(
                    f"constraint {action.constraint.name} on {action.constraint.table} was not applied: "
                    f"{one_line(exc.orig or exc)}"
                ) from None
            if commit:
                commit()


def _postgresql(conn: sa.Connection, c: Constraint, expression: str) -> Action:
    target = q.table_ref(conn, c.table, c.schema)
    name = q.quote(conn, c.name)
    current = conn.execute(
        sa.text(
            "SELECT pg_get_constraintdef(oid), convalidated, contype FROM pg_constraint "
            "WHERE conrelid = CAST(:t AS regclass) AND conname = :n"
        ),
        {"t": target, "n": c.name},
    ).first()
    add = [f"ALTER TABLE {target} ADD CONSTRAINT {name} CHECK ({expression}) NOT VALID"]
    validate = [f"ALTER TABLE {target} VALIDATE CONSTRAINT {name}"]
    if current is None:
        return Action(c, "add", [add, validate])
    if current.contype != "c":
        raise ConstraintError(f"constraint {c.name}: {c.table} already has a non-CHECK constraint of that name")
    with q.isolated(conn):
        q.run(conn, f"CREATE TEMPORARY TABLE mg_probe (LIKE {target})")
        try:
            q.run(conn, f"ALTER TABLE mg_probe ADD CONSTRAINT {name} CHECK ({expression})")
            wanted = conn.execute(
                sa.text(
                    "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = "
                    "CAST('pg_temp.mg_probe' AS regclass) AND conname = :n"
                ),
                {"n": c.name},
            ).scalar()
        finally:
            q.run(conn, "DROP TABLE pg_temp.mg_probe")
    have = current[0].removesuffix(" NOT VALID")
    if have == wanted:
        return (
            Action(c, "unchanged") if current.convalidated else Action(c, "validate", [validate], note="was NOT VALID")
        )
    return Action(
        c,
        "replace",
        [
            [f"ALTER TABLE {target} DROP CONSTRAINT {name}, ADD CONSTRAINT {name} CHECK ({expression}) NOT VALID"],
            validate,
        ],
        note=f"was {have}",
    )


def _mysql_checks(conn: sa.Connection, target: str) -> dict[str, str]:
    """``name -> clause`` of a table's CHECK constraints, as the server renders them."""
    created = q.run(conn, f"SHOW CREATE TABLE {target}").first()
    assert created is not None  # SHOW CREATE TABLE answers with one row or an error
    ddl = created[1]
    found = {}
    for line in ddl.splitlines():
        m = re.match(r"\s*CONSTRAINT `((?:[^`]|``)+)` CHECK \((.*)\),?$", line)
        if m:
            found[m[1].replace("``", "`").lower()] = m[2]
    return found


def _mysql(conn: sa.Connection, c: Constraint, expression: str) -> Action:
    target = q.table_ref(conn, c.table, c.schema)
    name = q.quote(conn, c.name)
    have = _mysql_checks(conn, target).get(c.name.lower())
    if have is None:
        return Action(c, "add", [[f"ALTER TABLE {target} ADD CONSTRAINT {name} CHECK ({expression})"]])
    q.run(conn, f"CREATE TEMPORARY TABLE mg_probe AS SELECT * FROM {target} LIMIT 0")
    try:
        q.run(conn, f"ALTER TABLE mg_probe ADD CONSTRAINT {name} CHECK ({expression})")
        wanted = _mysql_checks(conn, "mg_probe").get(c.name.lower())
    finally:
        q.run(conn, "DROP TEMPORARY TABLE mg_probe")
    if have == wanted:
        return Action(c, "unchanged")
    return Action(
        c,
        "replace",
        [[f"ALTER TABLE {target} DROP CONSTRAINT {name}, ADD CONSTRAINT {name} CHECK ({expression})"]],
        note=f"was {have}",
    )


def sqlite_triggers(conn: sa.Connection, c: Constraint, expression: str) -> dict[str, str]:
    """The two triggers that enforce ``c`` on SQLite: trigger name -> its CREATE statement."""
    target = q.table_ref(conn, c.table, c.schema)
    cols = q.referenced_columns(expression, q.columns(conn, c.table, c.schema)) or q.columns(conn, c.table, c.schema)
    row = ", ".join(f"NEW.{q.quote(conn, col)} AS {q.quote(conn, col)}" for col in cols)
    message = f"CHECK constraint failed: {c.name}".replace("'", "''")
    body = f"BEGIN SELECT RAISE(ABORT, '{message}') FROM (SELECT {row}) WHERE NOT ({expression}); END"
    of = ", ".join(q.quote(conn, col) for col in cols)
    return {
        f"{c.name}_insert": (
            f"CREATE TRIGGER {q.quote(conn, c.name + '_insert')} BEFORE INSERT ON {target} FOR EACH ROW {body}"
        ),
        f"{c.name}_update": (
            f"CREATE TRIGGER {q.quote(conn, c.name + '_update')} BEFORE UPDATE OF {of} ON {target} FOR EACH ROW {body}"
        ),
    }


def _normal(sql: str) -> str:
    return " ".join(sql.replace("(", " ( ").replace(")", " ) ").split()).lower()


def _sqlite(conn: sa.Connection, c: Constraint, expression: str) -> Action:
    for ck in sa.inspect(conn).get_check_constraints(c.table, schema=c.schema):
        if (ck.get("name") or "").lower() == c.name.lower():  # a CHECK in the table's own CREATE TABLE
            if _normal(ck["sqltext"]) == _normal(expression):
                return Action(c, "unchanged", note="a CHECK in the table definition")
            raise ConstraintError(
                f"constraint {c.name}: {c.table}'s CREATE TABLE has a CHECK of that name with another "
                f"expression ({ck['sqltext']}); change it in a migration"
            )
    wanted = sqlite_triggers(conn, c, expression)
    have = {
        name: sql
        for name, sql in conn.execute(
            sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name IN (:a, :b)"),
            dict(zip("ab", wanted, strict=True)),
        ).all()
    }
    if have == wanted:
        return Action(c, "unchanged")
    statements = [f"DROP TRIGGER IF EXISTS {q.quote(conn, n)}" for n in have] + list(wanted.values())
    return Action(c, "replace" if have else "add", [statements])


_PLANNERS = {"postgresql": _postgresql, "mysql": _mysql, "sqlite": _sqlite}


# --- the use cases -----------------------------------------------------------------------------------------


def check_database(url: str, definitions: Definitions) -> CheckReport:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            report = check(conn, definitions.constraints)
            conn.rollback()
            return report
    finally:
        engine.dispose()


def apply_database(url: str, definitions: Definitions, lock_timeout: float | None = 5.0) -> Plan:
    """Validate, then enforce: each change committed on its own so no lock is held longer than its step.
    A busy table is given up on after ``lock_timeout`` seconds instead of queueing everyone behind us."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if lock_timeout and q.family(conn) == "postgresql":
                q.run(conn, f"SET lock_timeout = '{int(lock_timeout * 1000)}ms'")
            elif lock_timeout and q.family(conn) == "mysql":
                q.run(conn, f"SET SESSION lock_wait_timeout = {max(1, round(lock_timeout))}")
            the_plan = plan(conn, definitions)
            conn.commit()
            try:
                execute(conn, the_plan, commit=conn.commit)
            except GuardError:
                conn.rollback()
                raise
            return the_plan
    finally:
        engine.dispose()
