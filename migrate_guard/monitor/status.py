"""`migrate-guard status`: is the guard healthy? Every check gets a level; any critical one makes the
whole status unhealthy (exit 1), warnings and unknowns are reported but leave it healthy.

What is critical: no backup snapshot or the newest older than ``max_age``; the repository missing,
unreadable, or bigger than ``max_size``; its filesystem at ``disk_critical`` % used; a snapshot whose
latest verify failed, or no verify within ``verify_max_age``; the last migrate-safe run NOT restored;
an unfinished migrate-safe run; a restore that started and never finished; the database not answering;
more pending revisions than ``max_pending`` (when set); the recovery point (RPO: age of the newest snapshot
a ``verify --read-data`` restored) over ``rpo_max`` or the recovery time (RTO: how long that last restore
took) over ``rto_max``, or either not known while its threshold is set. Warnings: disk at ``disk_warning`` %, the last
migrate-safe run failed but was restored, pending revisions, a restore running. Unknown: free space of a
remote repository.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..backup import service
from ..backup.identity import DatabaseIdentity, named_identity
from ..backup.manifest import contents
from ..backup.retention import format_duration
from ..config import Project
from ..errors import GuardError
from ..progress import human_bytes
from ..times import parse_iso

OK, WARNING, CRITICAL, UNKNOWN = "ok", "warning", "critical", "unknown"
LEVEL_VALUE = {OK: 0, WARNING: 1, CRITICAL: 2, UNKNOWN: 3}  # the Nagios convention
BACKUP_KINDS = ("manual",)  # snapshots taken by `backup`; safety snapshots cover only some tables
FAILED_RUN_STATES = ("rolled-back", "restored", "not-restored")


RECOVERY = (  # the measured recovery objectives: `status --format json` gives them under "recovery"
    "rpo_seconds",  # age of the newest verified snapshot (None: none is)
    "rpo_max_seconds",  # the threshold (None: not checked)
    "verified_snapshot",
    "verified_snapshot_at",  # when it was taken
    "rto_seconds",  # how long the last successful verify --read-data restore took (None: not known)
    "rto_max_seconds",
    "last_restore_snapshot",  # the snapshot that restore was of
    "last_restore_at",
)


@dataclass
class Check:
    name: str
    level: str
    message: str


@dataclass
class Status:
    checked_at: str
    project: str
    repository: str
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    recovery: dict[str, Any] = field(default_factory=lambda: dict.fromkeys(RECOVERY))

    @property
    def healthy(self) -> bool:
        return not self.critical

    @property
    def critical(self) -> list[Check]:
        return [c for c in self.checks if c.level == CRITICAL]

    @property
    def exit_code(self) -> int:
        return 0 if self.healthy else 1

    def add(self, name: str, level: str, message: str) -> None:
        self.checks.append(Check(name, level, message))

    def to_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "checked_at": self.checked_at,
            "project": self.project,
            "repository": self.repository,
            "checks": [c.__dict__ for c in self.checks],
            "figures": self.figures,
            "recovery": self.recovery,
        }


def _age(text: Any, now: datetime) -> int | None:
    dt = parse_iso(text)
    return None if dt is None else max(0, int((now - dt).total_seconds()))


def _ago(seconds: int) -> str:
    return format_duration(timedelta(seconds=seconds)) if seconds >= 60 else f"{seconds}s"


def backup_snapshots(
    manifests: list[dict[str, Any]], label: str | None = None, holding: str = "database"
) -> list[dict[str, Any]]:
    """The snapshots `backup` took (oldest first) that hold ``holding`` (the database, or the files: a
    `backup --only-files` is no backup of the database), optionally only those with ``label``."""
    return [
        m
        for m in manifests
        if m.get("kind", "manual") in BACKUP_KINDS
        and (label is None or m.get("label") == label)
        and holding in contents(m)
    ]


FIGURES = (
    "snapshots",
    "last_snapshot_id",
    "last_snapshot_at",
    "last_snapshot_age_seconds",
    "repository_bytes",
    "disk_total_bytes",
    "disk_free_bytes",
    "disk_used_percent",
    "last_verify_at",
    "last_verify_age_seconds",
    "last_verify_ok",
    "verify_failed_snapshots",
    "last_run",
    "last_run_state",
    "last_run_at",
    "unfinished_runs",
    "unfinished_restores",
    "database_up",
    "database_revision",
    "pending_revisions",
)


def evaluate(project: Project, now: datetime | None = None) -> Status:
    """Look at the repository, the journal and the database; never raises for what it finds."""
    now = now or service.utcnow()
    cfg = project.settings.status
    location = service.repository_location(project)
    status = Status(service.iso(now), str(project.root), location, figures=dict.fromkeys(FIGURES))
    status.figures["verify_failed_snapshots"] = []
    repo = None
    try:
        repo = service.open_repository(project)
    except GuardError as exc:
        status.add("repository", CRITICAL, exc.message)
    manifests: list[dict[str, Any]] = []
    database = current_database(project)
    verified: dict[str, dict[str, Any]] = {}
    if repo is not None:
        manifests = service.of_database(_check_repository(status, repo, cfg), database)
        _check_snapshots(status, manifests, cfg, now)
        verified = _check_verify(status, repo, manifests, cfg, now)
    _check_recovery(status, manifests, verified, cfg, now)
    _check_disk(status, repo, location, cfg)
    heads = _check_database(status, project)
    if repo is not None:
        _check_runs(status, repo, project, now, database)
        _check_restores(status, repo, database)
    _check_pending(status, project, heads, cfg)
    return status


def current_database(project: Project) -> DatabaseIdentity | None:
    """The database status is about; known by name when it does not answer, None without a URL."""
    if not project.url:
        return None
    try:
        return service.current_database(project)
    except Exception:  # noqa: BLE001 - a database that does not answer is reported by its own check
        try:
            return named_identity(project.url)
        except Exception:  # noqa: BLE001 - a bad URL too
            return None


def _check_repository(status: Status, repo: Any, cfg: Any) -> list[dict[str, Any]]:
    manifests: list[dict[str, Any]] = repo.manifests()
    damaged = [w.removeprefix("skipped ") for w in repo.warnings if w.startswith("skipped ")]
    size = repo.size()
    status.figures["repository_bytes"] = size
    status.figures["snapshots"] = len(manifests)
    missing = repo.missing_manifests()
    lost = [m["id"] for m in manifests if repo.lost_data(m)]
    if damaged:
        status.add("repository", CRITICAL, f"{len(damaged)} snapshot manifest(s) cannot be read: {damaged[0]}")
    elif missing:
        status.add(
            "repository",
            CRITICAL,
            f"{len(missing)} snapshot(s) missing: the manifest of {missing[-1][0]} (taken {missing[-1][1]}) "
            "was deleted outside migrate-guard",
        )
    elif lost:
        status.add(
            "repository",
            CRITICAL,
            f"{len(lost)} snapshot(s) lost data (damaged blobs): {', '.join(lost[-3:])}; the next backup stores "
            "again what the database still holds, `migrate-guard repair` says which, `prune` removes them",
        )
    else:
        status.add(
            "repository", OK, f"{repo.location}: {len(manifests)} snapshots" + (", encrypted" if repo.encrypted else "")
        )
    if cfg.max_size is not None and size > cfg.max_size:
        status.add(
            "repository_size",
            CRITICAL,
            f"{human_bytes(size)} ({size} bytes), over max_size {human_bytes(cfg.max_size)}",
        )
    else:
        status.add(
            "repository_size",
            OK,
            f"{human_bytes(size)} ({size} bytes)"
            + (f" of max_size {human_bytes(cfg.max_size)}" if cfg.max_size is not None else ""),
        )
    return manifests


def _check_snapshots(status: Status, manifests: list[dict[str, Any]], cfg: Any, now: datetime) -> None:
    backups = backup_snapshots(manifests)
    limit = f" (max_age {format_duration(cfg.max_age)})" if cfg.max_age else ""
    if not backups:
        status.add(
            "snapshot_age", CRITICAL if cfg.max_age else OK, "no backup snapshot yet (run `migrate-guard backup`)"
        )
        return
    newest = backups[-1]
    age = _age(newest["created_at"], now) or 0
    status.figures.update(
        last_snapshot_id=newest["id"], last_snapshot_at=newest["created_at"], last_snapshot_age_seconds=age
    )
    too_old = cfg.max_age is not None and age > cfg.max_age.total_seconds()
    status.add(
        "snapshot_age", CRITICAL if too_old else OK, f"newest backup snapshot {newest['id']} is {_ago(age)} old{limit}"
    )


def _check_verify(
    status: Status, repo: Any, manifests: list[dict[str, Any]], cfg: Any, now: datetime
) -> dict[str, dict[str, Any]]:
    """The verify check; returns the latest verify record of each of ``manifests`` (by snapshot id)."""
    from ..backup.crypto import IntegrityError

    try:
        state = repo.read_state("verify") or {}
    except IntegrityError as exc:
        status.add("verify", WARNING, f"past verify results cannot be read: {exc.message}")
        return {}
    records = {m["id"]: state[m["id"]] for m in manifests if isinstance(state.get(m["id"]), dict)}
    failed = sorted(
        (sid for sid, r in records.items() if not r.get("ok")), key=lambda s: records[s].get("verified_at", "")
    )
    times = [r["verified_at"] for r in records.values() if r.get("verified_at")]
    last = max(times, key=lambda t: parse_iso(t) or datetime.min.replace(tzinfo=UTC)) if times else None
    age = _age(last, now) if last else None
    status.figures.update(
        last_verify_at=last,
        last_verify_age_seconds=age,
        verify_failed_snapshots=failed,
        last_verify_ok=(not failed) if records else None,
    )
    if failed:
        problems = records[failed[-1]].get("problems") or ["damaged"]
        status.add(
            "verify",
            CRITICAL,
            f"{len(failed)} snapshot(s) failed their latest verify: {failed[-1]} "
            f"({problems[0]}) at {records[failed[-1]].get('verified_at')}",
        )
    elif not manifests:
        status.add("verify", OK, "no snapshot to verify")
    elif last is None:
        status.add(
            "verify",
            CRITICAL if cfg.verify_max_age else WARNING,
            "no snapshot was ever verified (run `migrate-guard verify --all`)",
        )
    elif cfg.verify_max_age is not None and age is not None and age > cfg.verify_max_age.total_seconds():
        status.add(
            "verify",
            CRITICAL,
            f"last verify was {_ago(age)} ago (verify_max_age {format_duration(cfg.verify_max_age)})",
        )
    else:
        status.add("verify", OK, f"last verify ok, {_ago(age or 0)} ago")
    return records


def restored_at(record: dict[str, Any] | None) -> str | None:
    """When a verify --read-data last restored this snapshot's data successfully, from its verify record;
    None when it never did or its latest verify failed. A later passing verify without --read-data keeps
    the restore (``restored_at``); a record older than that field restored when ``read_data`` is set."""
    if not isinstance(record, dict) or not record.get("ok"):
        return None
    when = record.get("restored_at") or (record.get("verified_at") if record.get("read_data") else None)
    return when if isinstance(when, str) and parse_iso(when) is not None else None


def format_span(seconds: float) -> str:
    """``0.042s``, ``45s``, ``2m30s``, ``1d2h``: a measured or allowed duration, to the millisecond below a minute."""
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    rest = int(seconds) % 60
    return format_duration(timedelta(seconds=seconds)) + (f"{rest}s" if rest and seconds < 86400 else "")


def _check_recovery(
    status: Status,
    manifests: list[dict[str, Any]],
    records: dict[str, dict[str, Any]],
    cfg: Any,
    now: datetime,
) -> None:
    """RPO: the age of the newest snapshot taken by `backup` whose data a verify --read-data restored (and
    whose latest verify passed). RTO: how long the last successful such restore took (timed since the
    record has ``restore_seconds``; an older record gives it unknown). ``rpo_max``/``rto_max`` make them checks."""
    rec = status.recovery
    rpo_max = cfg.rpo_max.total_seconds() if cfg.rpo_max is not None else None
    rto_max = cfg.rto_max.total_seconds() if cfg.rto_max is not None else None
    rec.update(rpo_max_seconds=rpo_max, rto_max_seconds=rto_max)
    restored = [(m, when) for m in backup_snapshots(manifests) if (when := restored_at(records.get(m["id"])))]
    verified = max(restored, key=lambda mw: parse_iso(mw[0]["created_at"]) or _EPOCH, default=None)
    if verified is not None:
        m = verified[0]
        rec.update(
            rpo_seconds=_age(m["created_at"], now), verified_snapshot=m["id"], verified_snapshot_at=m["created_at"]
        )
    last = max(restored, key=lambda mw: parse_iso(mw[1]) or _EPOCH, default=None)
    if last is not None:
        seconds = records[last[0]["id"]].get("restore_seconds")
        rec.update(
            rto_seconds=float(seconds) if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else None,
            last_restore_snapshot=last[0]["id"],
            last_restore_at=last[1],
        )
    rpo, rto = rec["rpo_seconds"], rec["rto_seconds"]
    rpo_limit = f" (rpo_max {format_span(rpo_max)})" if rpo_max is not None else ""
    rto_limit = f" (rto_max {format_span(rto_max)})" if rto_max is not None else ""
    if rpo is None:
        status.add(
            "rpo",
            CRITICAL if rpo_max is not None else OK,
            "not known: no backup snapshot was restored by `migrate-guard verify --read-data` yet" + rpo_limit,
        )
    else:
        status.add(
            "rpo",
            CRITICAL if rpo_max is not None and rpo > rpo_max else OK,
            f"the newest snapshot a verify --read-data restored, {rec['verified_snapshot']}, is {format_span(rpo)} old"
            + rpo_limit,
        )
    if rto is None:
        why = (
            f"the last verify --read-data restore ({rec['last_restore_snapshot']}) was not timed (recorded by an "
            "older migrate-guard)"
            if last is not None
            else "no verify --read-data restore yet"
        )
        status.add("rto", CRITICAL if rto_max is not None else OK, f"not known: {why}" + rto_limit)
    else:
        status.add(
            "rto",
            CRITICAL if rto_max is not None and rto > rto_max else OK,
            f"the last verify --read-data restore ({rec['last_restore_snapshot']}, {rec['last_restore_at']}) "
            f"took {format_span(rto)}" + rto_limit,
        )


_EPOCH = datetime.min.replace(tzinfo=UTC)


def _filesystem_path(repo: Any, location: str) -> Path | None:
    """The local directory whose filesystem holds the repository; None for remote storage."""
    from ..backup.storage import LocalStorage

    if repo is not None:
        return Path(repo.storage.root) if isinstance(repo.storage, LocalStorage) else None
    if "://" in location and not location.startswith("file://"):
        return None
    path = Path(location.removeprefix("file://")).expanduser().absolute()
    while not path.exists() and path.parent != path:
        path = path.parent  # a repository not created yet: the filesystem it would be created on
    return path


def _check_disk(status: Status, repo: Any, location: str, cfg: Any) -> None:
    path = _filesystem_path(repo, location)
    if path is None:
        status.add("disk", UNKNOWN, "free space of a remote repository is not known")
        return
    try:
        usage = shutil.disk_usage(path)
    except OSError as exc:
        status.add("disk", UNKNOWN, f"free space of {path} is not known ({exc.strerror or exc})")
        return
    used = round(100.0 * usage.used / max(1, usage.used + usage.free), 1)  # as df shows it: reserved blocks excluded
    status.figures.update(disk_total_bytes=usage.total, disk_free_bytes=usage.free, disk_used_percent=used)
    level = CRITICAL if used >= cfg.disk_critical else WARNING if used >= cfg.disk_warning else OK
    status.add(
        "disk",
        level,
        f"{used:g}% used, {human_bytes(usage.free)} free where the repository lives"
        + (f" (warning at {cfg.disk_warning:g}%, critical at {cfg.disk_critical:g}%)" if level != OK else ""),
    )


def _check_database(status: Status, project: Project) -> tuple[str, ...] | None:
    from ..alembic_bridge import database_heads

    if not project.url:
        status.add("database", UNKNOWN, "no database URL (set sqlalchemy.url or pass --url)")
        return None
    heads, why = database_heads(project)
    status.figures["database_up"] = heads is not None
    if heads is None:
        status.add("database", CRITICAL, f"the database does not answer: {why}")
        return None
    if why == "new SQLite file":  # database_heads never creates the file; to a monitor it is missing
        status.figures["database_up"] = False
        status.add("database", CRITICAL, "the SQLite database file does not exist")
        return None
    status.figures["database_revision"] = list(heads)
    status.add("database", OK, f"answers, at revision {','.join(heads) or 'base'}")
    return heads


def _check_runs(status: Status, repo: Any, project: Project, now: datetime, database: Any) -> None:
    records, problems = service.journal_runs(repo)
    runs = service.of_database(records, database)
    if problems:
        more = f" (and {len(problems) - 1} more: `migrate-guard verify --all`)" if len(problems) > 1 else ""
        status.add("journal", CRITICAL, f"the migrate-safe journal is damaged: {problems[0]}{more}")
    else:
        status.add("journal", OK, "chained and complete")
    unfinished = [r for r in runs if r.get("state") in ("started", "unknown")]
    finished = [r for r in runs if r.get("state") not in ("started", "unknown")]
    status.figures["unfinished_runs"] = len(unfinished)
    if finished:
        last = finished[-1]
        state = last.get("state")
        when = last.get("finished_at") or last.get("started_at")
        status.figures.update(last_run=last.get("run"), last_run_state=state, last_run_at=when)
        text = (
            f"last run {last.get('run')} ({','.join(last.get('from') or []) or 'base'} -> "
            f"{last['to'] if isinstance(last.get('to'), str) else ','.join(last.get('to') or []) or 'base'}) "
            f"{state} {_ago(_age(when, now) or 0)} ago" + (f": {last['error']}" if last.get("error") else "")
        )
        level = CRITICAL if state == "not-restored" else WARNING if state in FAILED_RUN_STATES else OK
        status.add("migrate_safe", level, text)
    else:
        status.add("migrate_safe", OK, "no migrate-safe run yet")
    if not unfinished:
        status.add("unfinished_runs", OK, "none")
        return
    r = unfinished[-1]
    holder = _run_in_progress(project)
    if holder:
        status.figures["unfinished_runs"] = len(unfinished) - 1
        status.add(
            "unfinished_runs",
            WARNING if len(unfinished) == 1 else CRITICAL,
            f"migrate-safe run {r['run']} is running (started {r.get('started_at')} "
            f"by {r.get('user')}@{r.get('host')}; {holder})",
        )
        return
    status.add(
        "unfinished_runs",
        CRITICAL,
        f"{len(unfinished)} unfinished migrate-safe run(s): {r['run']} started {r.get('started_at')} by "
        f"{r.get('user')}@{r.get('host')} did not finish: run `migrate-guard recover`",
    )


def _check_restores(status: Status, repo: Any, database: DatabaseIdentity | None) -> None:
    """A restore into this database journaled as started and never ended (killed, the machine down) that
    no later restore finished over: the database may hold part of it. Critical, until it is re-run."""
    pending = service.unfinished_restores(repo, database)
    running = [r for r in pending if _restore_running(r)]
    pending = [r for r in pending if r not in running]
    status.figures["unfinished_restores"] = len(pending)
    if not pending:
        if running:
            r = running[-1]
            status.add("restores", WARNING, f"restore of snapshot {r.get('snapshot')} is running (pid {r.get('pid')})")
        else:
            status.add("restores", OK, "no interrupted restore")
        return
    r = pending[-1]
    what = "database"
    if isinstance(r.get("files"), dict):  # a files restore in place
        what = "files"
        tables = " --files" + "".join(f" --path {p}" for p in r["files"].get("paths") or [])
    else:
        tables = "" if r.get("full") else f" --tables {','.join(r.get('tables') or [])}"
    before = f"; the state before it is snapshot {r['pre_snapshot']}" if r.get("pre_snapshot") else ""
    into = f" into {described}" if what == "database" and (described := _described(r)) else ""
    more = f" ({len(pending) - 1} more)" if len(pending) > 1 else ""
    status.add(
        "restores",
        CRITICAL,
        f"restore of snapshot {r.get('snapshot')}{into} started {r.get('started_at')} by "
        f"{r.get('user')}@{r.get('host')} and did not finish{more}: the {what} may be partly restored; "
        f"re-run `migrate-guard restore {r.get('snapshot')}{tables}`{before}",
    )


def _described(record: dict[str, Any]) -> str | None:
    from ..backup.identity import recorded_identity

    identity = recorded_identity(record.get("database"))
    return identity.describe() if identity else None


def _restore_running(record: dict[str, Any]) -> bool:
    """Whether the process that journaled ``record`` still runs (on this host: another's cannot be asked)."""
    import socket

    from ..backup.repository import pid_alive

    pid = record.get("pid")
    if not isinstance(pid, int) or record.get("host") != socket.gethostname() or pid == os.getpid():
        return False
    return pid_alive(pid)


def _run_in_progress(project: Project) -> str | None:
    """Who holds the database's migration lock right now (a run in progress), or None."""
    from ..safe.lock import MigrationLocked, migration_lock

    if not project.url:
        return None
    try:
        with migration_lock(project.url, wait=0):
            return None
    except MigrationLocked as exc:
        return exc.message.split("; waited")[0]
    except Exception:  # noqa: BLE001 - a database that does not answer is reported by its own check
        return None


def _check_pending(status: Status, project: Project, heads: tuple[str, ...] | None, cfg: Any) -> None:
    from ..alembic_bridge import open_scripts, upgrade_path

    if heads is None:
        status.add("pending_revisions", UNKNOWN, "not known while the database does not answer")
        return
    try:
        pending = [s.revision for s in upgrade_path(open_scripts(project), heads or "base", "heads")]
    except GuardError as exc:
        status.add("pending_revisions", UNKNOWN, f"cannot read the revisions: {exc.message}")
        return
    except Exception as exc:  # noqa: BLE001 - alembic's own errors (multiple heads, unknown revision in the database)
        status.add("pending_revisions", UNKNOWN, f"cannot work out the pending revisions: {exc}")
        return
    status.figures["pending_revisions"] = len(pending)
    if not pending:
        status.add("pending_revisions", OK, "none: the database is at the newest revision")
        return
    over = cfg.max_pending is not None and len(pending) > cfg.max_pending
    status.add(
        "pending_revisions",
        CRITICAL if over else WARNING,
        f"{len(pending)} pending: {', '.join(pending)}" + (f" (max_pending {cfg.max_pending})" if over else ""),
    )


# --- rendering ----------------------------------------------------------------------------------


def render_text(status: Status) -> str:
    counts = {level: sum(c.level == level for c in status.checks) for level in (CRITICAL, WARNING, UNKNOWN)}
    summary = ", ".join(f"{n} {level}" for level, n in counts.items() if n)
    lines = [f"{'healthy' if status.healthy else 'UNHEALTHY'}" + (f" ({summary})" if summary else "")]
    for c in status.checks:
        lines.append(f"  {c.level.upper() if c.level in (CRITICAL, WARNING) else c.level:9} {c.name:18} {c.message}")
    return "\n".join(lines)


_METRICS = (  # name, type, help, figure (or a function of the status)
    ("healthy", "gauge", "1 when no status check is critical, else 0.", lambda s: int(s.healthy)),
    ("snapshots", "gauge", "Snapshots in the backup repository.", "snapshots"),
    ("last_snapshot_age_seconds", "gauge", "Age of the newest backup snapshot.", "last_snapshot_age_seconds"),
    (
        "last_snapshot_timestamp_seconds",
        "gauge",
        "When the newest backup snapshot was taken (Unix time).",
        lambda s: _epoch(s.figures["last_snapshot_at"]),
    ),
    ("repository_size_bytes", "gauge", "Bytes the backup repository occupies.", "repository_bytes"),
    ("disk_free_bytes", "gauge", "Free bytes on the filesystem holding the repository.", "disk_free_bytes"),
    (
        "disk_used_ratio",
        "gauge",
        "Used share (0-1) of the filesystem holding the repository.",
        lambda s: None if s.figures["disk_used_percent"] is None else s.figures["disk_used_percent"] / 100,
    ),
    ("last_verify_age_seconds", "gauge", "Age of the newest verify result.", "last_verify_age_seconds"),
    (
        "last_verify_success",
        "gauge",
        "1 when every snapshot's latest verify passed, else 0.",
        lambda s: None if s.figures["last_verify_ok"] is None else int(s.figures["last_verify_ok"]),
    ),
    (
        "last_migrate_safe_success",
        "gauge",
        "1 when the last finished migrate-safe run succeeded, else 0.",
        lambda s: (
            None
            if s.figures["last_run_state"] is None
            else int(s.figures["last_run_state"] in ("succeeded", "recovered"))
        ),
    ),
    (
        "unfinished_runs",
        "gauge",
        "migrate-safe runs that did not finish (need `migrate-guard recover`).",
        "unfinished_runs",
    ),
    (
        "unfinished_restores",
        "gauge",
        "Restores that started and never finished (re-run them).",
        "unfinished_restores",
    ),
    (
        "database_up",
        "gauge",
        "1 when the database answers, else 0.",
        lambda s: None if s.figures["database_up"] is None else int(s.figures["database_up"]),
    ),
    ("pending_revisions", "gauge", "Alembic revisions the database has not run.", "pending_revisions"),
    (
        "rpo_seconds",
        "gauge",
        "Recovery point: age of the newest snapshot a verify --read-data restored.",
        lambda s: s.recovery["rpo_seconds"],
    ),
    (
        "rto_seconds",
        "gauge",
        "Recovery time: how long the last successful verify --read-data restore took.",
        lambda s: s.recovery["rto_seconds"],
    ),
)


def _epoch(text: Any) -> float | None:
    dt = parse_iso(text) if text else None
    return None if dt is None else dt.timestamp()


def _value(v: float | int) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def render_prometheus(status: Status) -> str:
    """Prometheus text exposition format 0.0.4; an unknown figure is left out, not reported as 0."""
    lines = []
    for name, kind, help_text, source in _METRICS:
        value = source(status) if callable(source) else status.figures.get(source)
        if value is None:
            continue
        lines += [
            f"# HELP migrate_guard_{name} {help_text}",
            f"# TYPE migrate_guard_{name} {kind}",
            f"migrate_guard_{name} {_value(value)}",
        ]
    lines += [
        "# HELP migrate_guard_check_status Each status check: 0 ok, 1 warning, 2 critical, 3 unknown.",
        "# TYPE migrate_guard_check_status gauge",
    ]
    lines += [f'migrate_guard_check_status{{check="{c.name}"}} {LEVEL_VALUE[c.level]}' for c in status.checks]
    return "\n".join(lines) + "\n"


def write_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Write beside the target, then rename: the textfile collector never reads half a file."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise GuardError(f"cannot write {target}: {exc.strerror or exc}") from None
