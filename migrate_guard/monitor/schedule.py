"""Scheduling without a daemon: `backup --if-older-than D` takes a snapshot only when the newest one
(with the same label, when one is given) is older than D, so a cron line every few minutes is idempotent."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ..backup import service
from ..backup.repository import RepositoryLocked
from ..backup.retention import parse_duration
from ..config import Project
from ..errors import GuardError
from .status import _age, _ago, backup_snapshots


@dataclass
class Skipped:
    reason: str


def backup(
    project: Project, *, if_older_than: str | None, warn: Callable[[str], None], **snapshot: Any
) -> dict[str, Any] | Skipped:
    """`backup`: take a snapshot (only when the newest is older than ``if_older_than``, when given); a
    failure alerts through [alerts] and is raised unchanged, whether or not the alert went out."""
    from . import alerts

    older_than = (
        parse_duration(if_older_than) if if_older_than else None
    )  # a bad duration is a usage error, not an alert

    def take(repo: Any = None) -> dict[str, Any]:
        return service.take_snapshot(project, repo=repo, **snapshot)

    try:
        result = (
            backup_if_older(
                project,
                older_than,
                snapshot.get("label"),
                take,
                snapshot.get("url"),
                "database" if snapshot.get("database", True) else "files",
            )
            if older_than
            else take()
        )
    except Exception as exc:
        from ..backup.storage import describe_os_error, refused

        if isinstance(exc, GuardError):
            why = exc.message
        elif isinstance(exc, OSError) and refused(exc):  # a full disk, read-only media: as the CLI says it
            why = describe_os_error(exc)
        else:
            why = f"internal error: {exc}"
        alerts.backup_failed(project, why, warn)
        raise
    if not isinstance(result, Skipped):
        alerts.backup_succeeded(project)
    return result


def backup_if_older(
    project: Project,
    older_than: timedelta,
    label: str | None,
    take: Callable[[Any], dict[str, Any]],
    snapshot_url: str | None = None,
    holding: str = "database",
) -> dict[str, Any] | Skipped:
    """Call ``take(repo)`` under the repository lock unless a recent enough snapshot exists. The check
    is made under that lock, so two cron runs at once never both take one."""
    repo = service.open_repository(project, create=True)
    try:
        with repo.lock(f"backup {label or ''}".strip()):  # re-entrant: take_snapshot takes it again
            recent = _recent(repo, older_than, label, service.current_database(project, snapshot_url), holding)
            if recent is not None:
                return recent
            return take(repo)
    except RepositoryLocked as exc:
        return Skipped(f"skipped: another command holds the repository ({exc.message})")


def _recent(repo: Any, older_than: timedelta, label: str | None, database: Any, holding: str) -> Skipped | None:
    """The newest backup of ``database`` (with ``label``, holding what this one would), when recent enough;
    another database's does not count."""
    backups = backup_snapshots(service.of_database(repo.manifests(), database), label, holding)
    if not backups:
        return None
    newest = backups[-1]
    age = _age(newest["created_at"], service.utcnow())
    if age is None or age >= older_than.total_seconds():
        return None
    return Skipped(
        f"skipped: snapshot {newest['id']}"
        + (f" ({label})" if label else "")
        + f" is {_ago(age)} old, newer than {_ago(int(older_than.total_seconds()))}"
    )
