"""The migrate-safe journal: one record per run as it starts and as it ends, in the backup repository."""

from __future__ import annotations

from typing import Any

from ..backup import service
from ..config import Project
from ..errors import GuardError


def runs(repo: Any) -> list[dict[str, Any]]:
    """Every migrate-safe run in the journal, oldest first, as its latest record says it ended."""
    latest: dict[str, dict[str, Any]] = {}
    for record in repo.journal():
        if "run" in record:
            latest[record["run"]] = record
    return list(latest.values())


def unfinished_runs(repo: Any) -> list[dict[str, Any]]:
    return [r for r in runs(repo) if r.get("state") == "started"]


def history(project: Project) -> list[dict[str, Any]]:
    return runs(service.open_repository(project))


def refuse_if_unfinished(repo: Any) -> None:
    pending = unfinished_runs(repo)
    if pending:
        r = pending[-1]
        raise GuardError(
            f"an earlier migrate-safe run ({r['run']}, {r.get('from')} -> {r.get('to')}, started {r['started_at']} by "
            f"{r.get('user')}@{r.get('host')}) did not finish: "
            "run `migrate-guard recover` to restore its safety snapshot"
        )
