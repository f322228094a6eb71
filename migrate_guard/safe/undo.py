"""Bringing a database back to its state before a run, and telling whether it is: revision, tables,
columns and (given the safety snapshot) row counts."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .. import alembic_bridge as bridge
from ..backup import service
from ..config import Project
from ..errors import EXIT_FAILED, EXIT_NOT_RESTORED, one_line

Say = Callable[[str], None]


def never_fails(say: Say) -> Say:
    """``say`` that a closed stdout or stderr (``| tee`` killed with the run: EPIPE) cannot stop: the run
    goes on to its rollback or restore and its journal record without an audience."""

    def quiet(line: str) -> None:
        with contextlib.suppress(OSError):  # BrokenPipeError, EIO of a closed terminal
            say(line)

    return quiet


class Interrupted(KeyboardInterrupt):
    """SIGTERM during the upgrade: handled like Ctrl-C (drivers cancel the running statement on it)."""


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, Interrupted):
        return f"interrupted ({exc})"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (SIGINT)"
    return one_line(exc)


@dataclass
class Undo:
    code: int
    state: str
    message: str


def undo(
    project: Project,
    url: str,
    engine: Any,
    snapshot: dict[str, Any] | None,
    before: list[str],
    tables_before: list[str],
    shape_before: dict[str, list[str]],
    transactional: bool,
    say: Say,
) -> Undo:
    """Bring the database back to ``before``: check whether the rollback did it, else restore.
    Row counts are not compared after a rollback: the application may have written meanwhile."""
    rev = ",".join(before) or "base"
    problems = state_problems(project, url, engine, None, before, tables_before, shape_before)
    if transactional and not problems:
        return Undo(
            EXIT_FAILED, "rolled-back", f"rolled back to {rev}" + (f", snapshot {snapshot['id']}" if snapshot else "")
        )
    if snapshot is None:
        return Undo(
            EXIT_NOT_RESTORED,
            "not-restored",
            "NOT restored: no safety snapshot was taken (--backup-scope none); "
            f"the database may be between revisions ({'; '.join(problems)})",
        )
    say(f"restoring from safety snapshot {snapshot['id']}")
    try:
        restore_to(project, url, engine, snapshot, before, tables_before)
    except BaseException as exc:  # noqa: BLE001 - report, never lose the original failure
        problems = [f"restore failed: {failure_reason(exc)}"]
    else:
        problems = state_problems(project, url, engine, snapshot, before, tables_before, shape_before)
    if problems:
        return Undo(
            EXIT_NOT_RESTORED,
            "not-restored",
            f"NOT restored: {'; '.join(problems)}. Restore by hand: migrate-guard restore {snapshot['id']} --yes",
        )
    return Undo(EXIT_FAILED, "restored", f"restored to {rev}, snapshot {snapshot['id']}")


def restore_to(
    project: Project, url: str, engine: Any, snapshot: dict[str, Any], before: list[str], tables_before: list[str]
) -> None:
    """Drop tables created since, restore the snapshot's tables, stamp the revision back."""
    created = sorted(set(qualified_tables(engine.list_tables())) - set(tables_before))
    if created:
        engine.drop_tables(created)
    repo = service.open_repository(project)
    dump = service.dump_from_manifest(snapshot)
    names = [t.qualified for t in dump.tables]
    engine.restore(dump, repo.read_stream, tables=names)
    service.stamp(url, before)


def schema_shape(url: str) -> dict[str, list[str]]:
    """Every table's columns and their types: enough to see what a failed DDL statement left behind."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        inspector = sa.inspect(engine)
        return {
            t: [
                f"{c['name']} {c['type']!s} {'null' if c.get('nullable') else 'not null'}"
                for c in inspector.get_columns(t)
            ]
            for t in sorted(inspector.get_table_names())
        }
    finally:
        engine.dispose()


def state_problems(
    project: Project,
    url: str,
    engine: Any,
    snapshot: dict[str, Any] | None,
    before: list[str],
    tables_before: list[str],
    shape_before: dict[str, list[str]] | None = None,
) -> list[str]:
    """How the database differs from its state before the run: revision, tables, columns, and (given
    the snapshot) row counts."""
    problems = []
    heads, why = bridge.database_heads(project, url)
    if heads is None:
        return [f"cannot read the revision ({why})"]
    if sorted(heads) != sorted(before):
        problems.append(f"alembic_version is {','.join(heads) or 'base'}, expected {','.join(before) or 'base'}")
    now = set(qualified_tables(engine.list_tables()))
    if now != set(tables_before):
        extra, missing = sorted(now - set(tables_before)), sorted(set(tables_before) - now)
        problems.append(
            "tables differ"
            + (f": new {', '.join(extra)}" if extra else "")
            + (f": missing {', '.join(missing)}" if missing else "")
        )
    if shape_before is not None:
        shape = schema_shape(url)
        changed = sorted(t for t in shape_before if t in shape and shape[t] != shape_before[t])
        if changed:
            problems.append(f"columns differ in {', '.join(changed)}")
    if snapshot is not None:
        counts = engine.row_counts(
            [
                t["name"] if not t.get("schema") else f"{t['schema']}.{t['name']}"
                for t in snapshot["tables"]
                if t["name"] != "alembic_version"
            ]
        )
        for t in snapshot["tables"]:
            if t["name"] == "alembic_version":
                continue
            key = f"{t['schema']}.{t['name']}" if t.get("schema") else t["name"]
            got = counts.get(key, counts.get(t["name"]))
            if got != t["rows"]:
                problems.append(f"{key} has {got} rows, the snapshot {t['rows']}")
    return problems


def qualified_tables(tables: Sequence[tuple[str | None, str]]) -> list[str]:
    return sorted(service.display_name(s, n) for s, n in tables)


def fingerprints(url: str, tables: Sequence[str]) -> dict[str, str]:
    """A digest of each table's content (order-independent: MariaDB's CHECKSUM TABLE, PostgreSQL's sum of
    row hashes, on SQLite a digest of every row): what tells, after a run that could not be rolled back,
    whether it changed a table's rows."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    out: dict[str, str] = {}
    try:
        with engine.connect() as conn:
            prep = conn.dialect.identifier_preparer
            for table in tables:
                schema, _, name = table.rpartition(".")
                quoted = (prep.quote_schema(schema) + "." if schema else "") + prep.quote(name)
                family = conn.dialect.name
                if family in ("mysql", "mariadb"):
                    row = conn.exec_driver_sql(f"CHECKSUM TABLE {quoted} EXTENDED").one()
                    out[table] = str(row[1])
                elif family == "postgresql":
                    row = conn.exec_driver_sql(
                        f"SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)::numeric), 0) FROM {quoted} t"
                    ).one()
                    out[table] = f"{row[0]}:{row[1]}"
                else:
                    total, count = 0, 0
                    for r in conn.exec_driver_sql(f"SELECT * FROM {quoted}"):
                        digest = hashlib.blake2b(repr(tuple(r)).encode(), digest_size=8).digest()
                        total, count = (total + int.from_bytes(digest, "big")) % (1 << 64), count + 1
                    out[table] = f"{count}:{total:016x}"
    finally:
        engine.dispose()
    return out
