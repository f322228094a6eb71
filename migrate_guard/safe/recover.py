"""``migrate-guard recover``: undo the run a killed migrate-safe left unfinished."""

from __future__ import annotations

from ..backup import service
from ..config import Project
from ..errors import EXIT_NOT_RESTORED, EXIT_OK
from .journal import unfinished_runs
from .lock import migration_lock
from .sequence import SafeResult
from .undo import Say, restore_to, state_problems


def recover(project: Project, say: Say) -> SafeResult:
    """Restore an unfinished run's safety snapshot and stamp its starting revision."""
    repo = service.open_repository(project)
    pending = unfinished_runs(repo)
    if not pending:
        return SafeResult(EXIT_OK, "no unfinished migrate-safe run")
    record = pending[-1]
    url = service.database_url(project)
    engine = service.database_engine(url)
    with migration_lock(url):
        if not record.get("snapshot"):
            repo.append_journal({**record, "state": "not-restored", "finished_at": service.iso(service.utcnow())})
            return SafeResult(
                EXIT_NOT_RESTORED, f"run {record['run']} took no safety snapshot: nothing to recover from"
            )
        snapshot = repo.load_manifest(record["snapshot"])
        say(f"recovering run {record['run']}: restoring safety snapshot {snapshot['id']}")
        restore_to(project, url, engine, snapshot, record["from"], record["tables_before"])
        problems = state_problems(
            project, url, engine, snapshot, record["from"], record["tables_before"], record.get("shape_before")
        )
        state = "recovered" if not problems else "not-restored"
        repo.append_journal({**record, "state": state, "finished_at": service.iso(service.utcnow())})
    rev = ",".join(record["from"]) or "base"
    if problems:
        return SafeResult(
            EXIT_NOT_RESTORED,
            f"NOT recovered: {'; '.join(problems)}. Restore by hand: migrate-guard restore {snapshot['id']} --yes",
        )
    return SafeResult(EXIT_OK, f"recovered run {record['run']}: restored to {rev}, snapshot {snapshot['id']}")
