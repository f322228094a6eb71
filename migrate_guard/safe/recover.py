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
from typing import Any

from ..backup import service
from ..config import Project
from ..errors import EXIT_FAILED, EXIT_NOT_RESTORED, EXIT_OK, UsageError
from .journal import unfinished_runs
from .lock import migration_lock
from .sequence import SafeResult
from .undo import Say, compare, never_fails, restore_differences, snapshot_current

Confirm = Callable[[str], bool]


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
        for line in engine.finish_interrupted():  # a restore killed half-way first: then compare
            say(line)
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
        plan += [
            f"  cannot restore {t} ({why}): the safety snapshot does not hold it"
            for t, why in diff.unrestorable.items()
        ]
        if diff.revision != sorted(before):
            plan.append(f"  stamp alembic_version {','.join(diff.revision) or 'base'} -> {rev}")
        touched = diff.about_to_change
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
                return SafeResult(EXIT_FAILED, "declined: nothing was changed")
        pre: dict[str, Any] | None = None

        def keep(view: Any) -> None:
            nonlocal pre
            say("taking a snapshot of the current state (writes wait until the recovery is done)")
            pre = snapshot_current(project, url, diff, f"before recover of run {record['run']}", "pre-recover", view)

        problems = restore_differences(project, url, engine, record, diff, keep)
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
