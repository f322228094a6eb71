"""Bringing a database back to its state before a run, and telling how it differs from it: revision,
tables, columns, and (for a run that could not be rolled back) a digest of each affected table's rows."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from .. import alembic_bridge as bridge
from ..backup import service
from ..config import Project
from ..errors import EXIT_FAILED, EXIT_NOT_RESTORED, UsageError, one_line
from ..schema import guard as schema_guard

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
    record: dict[str, Any],
    transactional: bool,
    say: Say,
) -> Undo:
    """Bring the database back to the state ``record`` (the run's "started" journal record) holds: check
    whether the rollback did it, else restore the tables that differ, and only those (rows the
    application wrote meanwhile to tables the run did not change stay). Row counts are not compared
    after a rollback: the application may have written meanwhile."""
    before, tables_before = list(record["from"]), list(record["tables_before"])
    rev = ",".join(before) or "base"
    problems = state_problems(project, url, engine, before, tables_before, record.get("shape_before"))
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
    pre = None
    try:
        diff = compare(project, url, engine, record, rows_unknown_changed=True if transactional else None)

        def keep(view: Any) -> None:
            nonlocal pre
            try:  # what the application wrote to those tables during the run is kept; a failure stops nothing
                pre = snapshot_current(project, url, diff, f"before undo of run {record['run']}", "pre-undo", view)
            except Exception as exc:  # noqa: BLE001 - the restore matters more than this snapshot
                say(f"no snapshot of the current state: {failure_reason(exc)}")

        problems = restore_differences(project, url, engine, record, diff, keep)
    except BaseException as exc:  # noqa: BLE001 - report, never lose the original failure
        problems = [f"restore failed: {failure_reason(exc)}"]
    kept = f"; the state before the undo is snapshot {pre['id']}" if pre else ""
    if problems:
        return Undo(
            EXIT_NOT_RESTORED,
            "not-restored",
            f"NOT restored: {'; '.join(problems)}. Restore by hand: migrate-guard restore {snapshot['id']} --yes"
            + kept,
        )
    return Undo(EXIT_FAILED, "restored", f"restored to {rev}, snapshot {snapshot['id']}{kept}")


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
    project: Project, url: str, engine: Any, before: list[str], tables_before: list[str], shape_before: Any = None
) -> list[str]:
    """How the database differs from its state before the run: revision, tables, columns."""
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


DROPPED = "dropped by the run"
NO_DIGEST = "no digest of its rows was recorded"


@dataclass
class Difference:
    """What a run left behind, compared with its state before."""

    revision: list[str]  # the database's heads now
    created: list[str] = field(default_factory=list)  # tables that did not exist before: dropped
    restore: dict[str, str] = field(default_factory=dict)  # table -> why it is restored from the snapshot
    unrestorable: dict[str, str] = field(default_factory=dict)  # differs, but the snapshot does not hold it

    @property
    def none(self) -> bool:
        return not self.created and not self.restore and not self.unrestorable

    @property
    def about_to_change(self) -> list[str]:
        """The tables that exist now and an undo drops or overwrites."""
        return sorted(set(self.created) | {t for t, why in self.restore.items() if why != DROPPED})


def snapshot_current(
    project: Project, url: str, diff: Difference, label: str, kind: str, view: Any = None
) -> dict[str, Any] | None:
    """A snapshot of the tables an undo is about to drop or overwrite (None when there are none): rows
    the application wrote to them since the run began are kept there. ``view``: the engine to dump
    through (``Engine.restore``'s pre_snapshot view, while writers are stopped)."""
    tables = diff.about_to_change
    if not tables:
        return None
    return service.take_snapshot(project, url=url, tables=tables, label=label, kind=kind, engine=view)


def compare(
    project: Project, url: str, engine: Any, record: dict[str, Any], rows_unknown_changed: bool | None = None
) -> Difference:
    """How the database differs from the state ``record`` (a run's "started" journal record) holds. Rows
    count as changed where no digest of them was recorded, unless the run was one transaction (rolled
    back whole) -- or as ``rows_unknown_changed`` says."""
    heads, why = bridge.database_heads(project, url)
    if heads is None:
        raise UsageError(f"cannot read the database's revision ({why}): nothing was changed")
    before_tables = set(record.get("tables_before") or [])
    now_tables = set(qualified_tables(engine.list_tables()))
    diff = Difference(sorted(heads), created=sorted(now_tables - before_tables))
    scope = record.get("scope")
    snapshot_tables = set(record.get("snapshot_tables") or [])
    candidates = sorted((before_tables if scope is None else set(scope)) - {"alembic_version"})
    for table in sorted(before_tables - now_tables):
        diff.restore[table] = DROPPED
    shape_before = record.get("shape_before") or {}
    shape_now = schema_shape(url)
    for table in sorted(shape_before):  # every table: the analysis may not have seen what the run altered
        if table in diff.restore or table not in now_tables or table == "alembic_version":
            continue
        if shape_now.get(table) != shape_before[table]:
            diff.restore[table] = "its columns changed"
    content = record.get("content_before") or {}
    if content:
        now = fingerprints(url, [t for t in content if t in now_tables and t not in diff.restore])
        for table, digest in now.items():
            if digest != content[table]:
                diff.restore[table] = "its rows changed"
    if rows_unknown_changed is None:
        rows_unknown_changed = not record.get("one_transaction")
    if rows_unknown_changed:
        for table in candidates:
            if table in now_tables and table not in diff.restore and table not in content:
                diff.restore[table] = NO_DIGEST
    if snapshot_tables:
        for table in sorted(t for t in diff.restore if t not in snapshot_tables):
            diff.unrestorable[table] = diff.restore.pop(table)
    return diff


def restore_differences(
    project: Project,
    url: str,
    engine: Any,
    record: dict[str, Any],
    diff: Difference,
    keep: Callable[[Any], None] | None = None,
) -> list[str]:
    """Restore the tables that differ, drop what the run created, stamp the revision; what still differs
    after. ``keep(view)`` takes the snapshot of the current state: once the engine has stopped writers to
    the tables it restores (``Engine.restore``'s pre_snapshot), so no write falls between the two."""
    before = list(record.get("from") or [])
    with schema_guard.reviewed_environment(engine.dialect):  # the run was reviewed; restoring it is too
        if diff.restore:
            repo = service.open_repository(project)
            snapshot = repo.load_manifest(record["snapshot"])
            dump = service.dump_from_manifest(snapshot)
            by_display = {service.display_name(t.schema, t.name): t.qualified for t in dump.tables}
            engine.restore(dump, repo.read_stream, tables=[by_display[t] for t in diff.restore], pre_snapshot=keep)
        elif keep is not None:
            keep(engine)
        if diff.created:
            engine.drop_tables(diff.created)
        service.stamp(url, before)
    after = compare(project, url, engine, record)
    problems = []
    if after.revision != sorted(before):
        now, wanted = ",".join(after.revision) or "base", ",".join(before) or "base"
        problems.append(f"alembic_version is {now}, expected {wanted}")
    if after.created:
        problems.append(f"tables still there: {', '.join(after.created)}")
    # A restored table holds the snapshot's rows, which may differ from the digest taken a moment after it.
    by_rows = ("its rows changed", NO_DIGEST)
    left = {t: why for t, why in after.restore.items() if why not in by_rows or t not in diff.restore}
    left |= {t: f"{why}, and the safety snapshot does not hold it" for t, why in after.unrestorable.items()}
    problems += [f"{t} still differs ({why})" for t, why in left.items()]
    if diff.restore:
        snapshot = service.open_repository(project).load_manifest(record["snapshot"])
        rows = {service.display_name(t.get("schema"), t["name"]): t["rows"] for t in snapshot["tables"]}
        counts = engine.row_counts([t for t in diff.restore])
        for table in diff.restore:
            got = counts.get(table, counts.get(table.rpartition(".")[2]))
            if got != rows.get(table):
                problems.append(f"{table} has {got} rows after the restore, the snapshot {rows.get(table)}")
    return problems
