"""The migrate-safe journal: one record per run as it starts and as it ends, in the backup repository.
Runs belong to a database (the identity in each record): one database's runs never stand in another's way."""

from __future__ import annotations

from typing import Any

from ..backup import service
from ..backup.identity import DatabaseIdentity
from ..config import Project
from ..errors import GuardError


def runs(repo: Any, database: DatabaseIdentity | None = None) -> list[dict[str, Any]]:
    """The migrate-safe runs of ``database`` (all when None), oldest first, as their latest record says they ended."""
    return service.of_database(service.runs(repo), database)


def unfinished_runs(repo: Any, database: DatabaseIdentity | None = None) -> list[dict[str, Any]]:
    """Runs recorded as started and never ended ("unknown": the journal is damaged where their end would be)."""
    return [r for r in runs(repo, database) if r.get("state") in ("started", "unknown")]


def history(project: Project, all_databases: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
    """The runs of the current database (of every one with ``all_databases``) and the journal's defects."""
    repo = service.open_repository(project)
    records, problems = service.journal_runs(repo)
    return service.of_database(records, None if all_databases else service.current_database(project)), problems


def refuse_if_unfinished(repo: Any, database: DatabaseIdentity) -> None:
    """Called under ``database``'s migration lock: a run of it still recorded as started has crashed."""
    pending = unfinished_runs(repo, database)
    if pending:
        r = pending[-1]
        if r["state"] == "unknown":
            raise GuardError(
                f"the journal is damaged ({r['journal_problem']}): whether run {r['run']} on {database.describe()} "
                f"({r.get('from')} -> {r.get('to')}, started {r['started_at']}) finished is unknown: "
                "run `migrate-guard recover` to compare the database with its state before that run"
            )
        raise GuardError(
            f"an earlier migrate-safe run on {database.describe()} ({r['run']}, {r.get('from')} -> {r.get('to')}, "
            f"started {r['started_at']} by {r.get('user')}@{r.get('host')}) did not finish: "
            "run `migrate-guard recover` to compare the database with its state before that run and undo what it did"
        )
