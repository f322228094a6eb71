"""The schema guard inside migrate-safe: after the upgrade, on its connection and inside its run,
check the constraints and the integrity rules, then enforce the constraints. Any failure raises, so
migrate-safe's undo path (rollback, or snapshot restore) takes the whole run back."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from ..config import Project
from . import constraints, integrity, protect
from .definitions import Definitions, load
from .integrity import IntegrityFailed
from .protect import reviewed_environment, session_statements

__all__ = ["after_upgrade", "load", "reviewed_environment", "session_statements"]


def after_upgrade(
    conn: sa.Connection,
    project: Project,
    definitions: Definitions | None = None,
    say: Callable[[str], None] | None = None,
) -> None:
    """Everything is checked before anything is changed (MariaDB commits each ALTER on its own)."""
    say = say or (lambda line: None)
    definitions = load(project) if definitions is None else definitions
    plan = constraints.plan(conn, definitions)
    report = integrity.run(conn, definitions)
    for checked in plan.report.results:
        if checked.status in ("violated", "error") and not checked.blocks:
            say(f"constraint warning: {checked.line().split(None, 2)[2]}")
    for result in report.results:
        if result.status in ("failed", "error") and not result.blocks:
            say(f"integrity warning: {result.line().split(None, 2)[2]}")
    if report.blocking:
        raise IntegrityFailed(report.blocked_message())
    constraints.execute(conn, plan)
    guarded = protect.refresh(conn, project.settings)
    if guarded:
        say(f"protection: DELETE guard put back on {', '.join(guarded)}")
    if definitions.constraints:
        say(plan.summary())
    say(report.summary())


# --- the use cases the CLI calls ------------------------------------------------------------------------


def _url(project: Project) -> str:
    from ..backup.service import database_url

    return database_url(project)


def check_constraints(project: Project) -> constraints.CheckReport:
    return constraints.check_database(_url(project), load(project))


def apply_constraints(project: Project, lock_timeout: float | None = 5.0) -> constraints.Plan:
    return constraints.apply_database(_url(project), load(project), lock_timeout)


def check_integrity(project: Project) -> integrity.Report:
    return integrity.check_database(_url(project), load(project))


def protect_install(project: Project) -> list[str]:
    from . import protect

    return protect.install(_url(project), project.settings)


def protect_uninstall(project: Project) -> None:
    from . import protect

    protect.uninstall(_url(project))


def protect_status(project: Project) -> protect.Status:
    from . import protect

    return protect.status(_url(project), project.settings)
