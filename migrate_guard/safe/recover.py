"""``migrate-guard recover``: undo what a killed migrate-safe run did to *this* database, and nothing more.

The run's journal record holds the database's state before it: revision, tables, columns, and for a
run that could not be rolled back, a digest of each affected table's rows. Recover compares the
database with that state. Where the run left nothing behind (PostgreSQL and SQLite roll a killed
transaction back), it records the run as recovered and restores nothing, so rows the application
committed since survive. Otherwise it restores only the tables that differ, after a snapshot of the
current state that keeps whatever was written since.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import alembic_bridge as bridge
from ..backup import service
from ..config import Project
from ..errors import EXIT_NOT_RESTORED, EXIT_OK, UsageError
from ..schema import guard as schema_guard
from .journal import unfinished_runs
from .lock import migration_lock
from .sequence import SafeResult
from .undo import Say, fingerprints, never_fails, qualified_tables, schema_shape

Confirm = Callable[[str], bool]
DROPPED = "dropped by the run"


@dataclass
class Difference:
    """What a run left behind, compared with its state before."""

    revision: list[str]  # the database's heads now
    created: list[str] = field(default_factory=list)  # tables that did not exist before: dropped
    restore: dict[str, str] = field(default_factory=dict)  # table -> why it is restored from the snapshot

    @property
    def none(self) -> bool:
        return not self.created and not self.restore


def compare(project: Project, url: str, engine: Any, record: dict[str, Any]) -> Difference:
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
    for table in candidates:
        if table in diff.restore or table not in now_tables:
            continue
        if table in shape_before and shape_now.get(table) != shape_before[table]:
            diff.restore[table] = "its columns changed"
    content = record.get("content_before") or {}
    if content:
        now = fingerprints(url, [t for t in content if t in now_tables and t not in diff.restore])
        for table, digest in now.items():
            if digest != content[table]:
                diff.restore[table] = "its rows changed"
    if snapshot_tables:
        missing = sorted(t for t in diff.restore if t not in snapshot_tables)
        if missing:
            raise UsageError(
                f"tables {', '.join(missing)} differ but are not in the safety snapshot {record.get('snapshot')}: "
                "nothing was changed; compare them by hand"
            )
    return diff


def recover(
    project: Project,
    say: Say,
    *,
    yes: bool = False,
    dry_run: bool = False,
    abandon: bool = False,
    confirm: Confirm | None = None,
) -> SafeResult:
    """Undo the unfinished run of the current database (see the module docstring); with ``abandon``, only
    record it as given up (after a person compared the database by hand)."""
    say = never_fails(say)
    url = service.database_url(project)
    identity = service.current_database(project)
    repo = service.open_repository(project)
    engine = service.database_engine(url)
    with migration_lock(url):  # held: a run still going would hold it, so what is recorded as started has died
        pending = unfinished_runs(repo, identity)
        if not pending:
            return SafeResult(EXIT_OK, f"no unfinished migrate-safe run on {identity.describe()}")
        say(f"database: {identity.describe()}")
        record = pending[-1]
        before = list(record.get("from") or [])
        rev = ",".join(before) or "base"

        def finish(state: str, **fields: Any) -> None:
            repo.append_journal({**record, "state": state, "recovered_at": service.iso(service.utcnow()), **fields})

        if abandon:
            if dry_run:
                return SafeResult(EXIT_OK, f"dry run: run {record['run']} would be recorded as abandoned")
            finish("abandoned", restored_tables=[])
            return SafeResult(EXIT_OK, f"run {record['run']} recorded as abandoned; nothing was changed")
        diff = compare(project, url, engine, record)
        if record.get("one_transaction") and diff.revision != sorted(before):
            finish("succeeded", to=diff.revision, note="committed before it was killed")
            return SafeResult(
                EXIT_OK,
                f"run {record['run']} had committed (the database is at {','.join(diff.revision) or 'base'}): "
                "recorded as succeeded, nothing restored",
            )
        if diff.none and diff.revision == sorted(before):
            finish("recovered", restored_tables=[])
            return SafeResult(
                EXIT_OK,
                f"run {record['run']} left nothing behind (the database is at {rev}, as before it): "
                "recorded as recovered, nothing restored",
            )
        plan = [f"run {record['run']} ({rev} -> {record.get('to')}) left {identity.describe()} changed:"]
        plan += [f"  drop {t}: created by the run" for t in diff.created]
        source = record.get("snapshot")
        plan += [f"  restore {t} from safety snapshot {source}: {why}" for t, why in diff.restore.items()]
        if diff.revision != sorted(before):
            plan.append(f"  stamp alembic_version {','.join(diff.revision) or 'base'} -> {rev}")
        present = [t for t, why in diff.restore.items() if why != DROPPED]
        touched = sorted(set(diff.created) | set(present))  # what exists now and is about to change
        if touched:
            plan.append(f"  first, a snapshot of the current state of {', '.join(touched)}")
        for line in plan:
            say(line)
        if dry_run:
            return SafeResult(EXIT_OK, "dry run: nothing was changed", lines=[])
        if record["state"] == "unknown":
            raise UsageError(
                f"the journal is damaged ({record['journal_problem']}) where run {record['run']} would have ended, and "
                f"{identity.describe()} differs from its state before that run: recover restores nothing on a damaged "
                "journal's word. Compare by hand (`migrate-guard recover --dry-run`), restore what needs it "
                f"(`migrate-guard restore {record.get('snapshot')} --tables ...`), "
                "then `migrate-guard recover --abandon`"
            )

        if not record.get("snapshot") and diff.restore:
            finish("not-restored", error="no safety snapshot")
            return SafeResult(
                EXIT_NOT_RESTORED, f"run {record['run']} took no safety snapshot: nothing to restore from"
            )
        if not yes:
            if confirm is None:
                raise UsageError("recover changes the database: pass --yes to confirm (no terminal to ask on)")
            if not confirm("go ahead?"):
                return SafeResult(EXIT_OK, "nothing was changed")
        pre = None
        if touched:
            say("taking a snapshot of the current state")
            pre = service.take_snapshot(
                project, url=url, tables=touched, label=f"before recover of run {record['run']}", kind="pre-recover"
            )
        problems = _undo(project, url, engine, record, diff)
        if problems:
            finish("not-restored", error="; ".join(problems), pre_recover_snapshot=pre and pre["id"])
            return SafeResult(
                EXIT_NOT_RESTORED,
                f"NOT recovered: {'; '.join(problems)}. Restore by hand: "
                f"migrate-guard restore {record.get('snapshot')} --yes"
                + (f" (the state before recover is snapshot {pre['id']})" if pre else ""),
            )
        finish("recovered", restored_tables=sorted(diff.restore), pre_recover_snapshot=pre and pre["id"])
    kept = f"; rows written since the crash to those tables are in snapshot {pre['id']}" if pre else ""
    return SafeResult(
        EXIT_OK,
        f"recovered run {record['run']}: {len(diff.restore)} table(s) restored, {len(diff.created)} dropped, "
        f"at {rev}{kept}",
    )


def _undo(project: Project, url: str, engine: Any, record: dict[str, Any], diff: Difference) -> list[str]:
    """Drop what the run created, restore the tables that differ, stamp the revision; what still differs after."""
    before = list(record.get("from") or [])
    with schema_guard.reviewed_environment(engine.dialect):  # the run was reviewed; restoring it is too
        if diff.created:
            engine.drop_tables(diff.created)
        if diff.restore:
            repo = service.open_repository(project)
            snapshot = repo.load_manifest(record["snapshot"])
            dump = service.dump_from_manifest(snapshot)
            by_display = {service.display_name(t.schema, t.name): t.qualified for t in dump.tables}
            engine.restore(dump, repo.read_stream, tables=[by_display[t] for t in diff.restore])
        service.stamp(url, before)
    after = compare(project, url, engine, record)
    problems = []
    if after.revision != sorted(before):
        now, wanted = ",".join(after.revision) or "base", ",".join(before) or "base"
        problems.append(f"alembic_version is {now}, expected {wanted}")
    if after.created:
        problems.append(f"tables still there: {', '.join(after.created)}")
    # A restored table holds the snapshot's rows, which may differ from the digest taken a moment after it.
    left = {t: why for t, why in after.restore.items() if why != "its rows changed" or t not in diff.restore}
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
