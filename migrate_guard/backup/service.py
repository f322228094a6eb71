"""The backup use cases: backup, list, verify, restore, prune, forget. The CLI calls these."""

from __future__ import annotations

import getpass
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from ..config import Project, dialect_family
from ..errors import ConfigError, GuardError, UsageError, one_line
from ..progress import Progress
from ..times import iso as iso  # iso and utcnow are this module's API too (tests replace service.utcnow)
from ..times import parse_iso
from ..times import utcnow as utcnow
from .engines import engine_for
from .engines.base import DumpResult, Engine, StreamRef, TableDump
from .files import FilesPlan, backup_files, configured_paths, plan_files, restore_files, scan_files, verify_files
from .identity import DatabaseIdentity, belongs_to, database_identity, named_identity, recorded_identity
from .manifest import blob_owners, contents, holds_database, holds_files, manifest_blobs
from .repository import KeySource, Repository


def parse_time(text: str) -> datetime:
    """ISO 8601 (``2026-11-25T10:00``, ``2026-11-25``; UTC unless an offset is given) or a duration ago (``2h``)."""
    from .retention import parse_duration

    value = text.strip()
    parsed = parse_iso(value)
    if parsed is not None:
        return parsed
    try:
        return utcnow() - parse_duration(value)
    except GuardError:
        raise UsageError(
            f"--before {text!r}: expected an ISO 8601 time (2026-11-25T10:00Z) or a duration ago (2h, 3d)"
        ) from None


# --- repository and engine ------------------------------------------------------------------------


def repository_location(project: Project) -> str:
    return project.settings.backup.location(project.root)


def open_repository(project: Project, create: bool = False) -> Repository:
    keys = KeySource.from_environment(project.settings.backup.key_file)
    return Repository.open(
        repository_location(project), keys, create=create, compression_level=project.settings.backup.compression_level
    )


def database_url(project: Project, url: str | None = None) -> str:
    chosen = project.url if url is None else url
    if not chosen or not chosen.strip():
        raise ConfigError("no database URL: set sqlalchemy.url in alembic.ini or pass --url")
    return chosen


def current_database(project: Project, url: str | None = None) -> DatabaseIdentity:
    """The identity of the database commands act on (``--url``, else sqlalchemy.url)."""
    return database_identity(database_url(project, url))


def of_database(items: Sequence[dict[str, Any]], identity: DatabaseIdentity | None) -> list[dict[str, Any]]:
    """The manifests (or journal records) taken from ``identity``'s database; all of them when it is None."""
    if identity is None:
        return list(items)
    return [m for m in items if belongs_to(m.get("database"), m.get("dialect"), identity)]


def database_of(item: dict[str, Any]) -> dict[str, Any]:
    """A manifest's or record's ``database`` as `list --format json` shows it: dialect, host, name, id."""
    recorded = recorded_identity(item.get("database"))
    if recorded is not None:
        return {k: v for k, v in recorded.to_dict().items() if k != "file"}
    name = item.get("database")
    return {"dialect": item.get("dialect"), "host": None, "name": name if isinstance(name, str) else None, "id": None}


_TOOLS_CHECKED: set[tuple[type, str]] = set()


def database_engine(url: str) -> Engine:
    """The backup engine for ``url``, its native tools checked (once per process)."""
    engine = engine_for(url)
    if (type(engine), url) not in _TOOLS_CHECKED:
        engine.check_tools()
        _TOOLS_CHECKED.add((type(engine), url))
    return engine


def current_revision(project: Project, url: str) -> list[str]:
    from ..alembic_bridge import database_heads

    heads, _ = database_heads(project, url)
    return sorted(heads or ())


# --- manifests ----------------------------------------------------------------------------------------


def _ref(data: dict[str, Any]) -> StreamRef:
    return StreamRef(blobs=list(data["blobs"]), bytes=int(data["bytes"]))


def dump_from_manifest(manifest: dict[str, Any]) -> DumpResult:
    tables = [
        TableDump(t["name"], t.get("schema"), int(t["rows"]), _ref(t), list(t.get("depends_on", [])), t.get("marker"))
        for t in manifest["tables"]
    ]
    return DumpResult(manifest.get("engine", {}), _ref(manifest["schema"]), tables)


def _manifest(
    snapshot_id: str,
    dump: DumpResult,
    *,
    dialect: str,
    database: DatabaseIdentity,
    revision: list[str],
    label: str | None,
    pinned: bool,
    encrypted: bool,
    stored_bytes: int,
    kind: str,
) -> dict[str, Any]:
    tables = [
        {
            "name": t.name,
            "schema": t.schema,
            "rows": t.rows,
            "bytes": t.stream.bytes,
            "blobs": t.stream.blobs,
            "depends_on": t.depends_on,
            **({"marker": t.marker} if t.marker else {}),
        }
        for t in dump.tables
    ]
    return {
        "id": snapshot_id,
        "created_at": iso(utcnow()),
        "label": label,
        "kind": kind,
        "pinned": pinned,
        "dialect": dialect,
        "database": database.to_dict(),
        "revision": revision,
        "engine": dump.engine,
        "schema": {"blobs": dump.schema.blobs, "bytes": dump.schema.bytes},
        "tables": tables,
        "rows": sum(t.rows for t in dump.tables),
        "bytes": dump.schema.bytes + sum(t.stream.bytes for t in dump.tables),
        "stored_bytes": stored_bytes,
        "encrypted": encrypted,
    }


def display_name(schema: str | None, name: str) -> str:
    """How a table is shown and asked for: ``name`` in the default schema, else ``schema.name``."""
    return f"{schema}.{name}" if schema and schema != "public" else name


def table_names(manifest: dict[str, Any]) -> list[str]:
    return [display_name(t.get("schema"), t["name"]) for t in manifest["tables"]]


# --- backup -----------------------------------------------------------------------------------------------


def take_snapshot(
    project: Project,
    *,
    url: str | None = None,
    tables: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    label: str | None = None,
    pin: bool = False,
    kind: str = "manual",
    repo: Repository | None = None,
    progress: Progress | None = None,
    engine: Engine | None = None,
    database: bool = True,
    files: bool = False,
    paths: Sequence[str] | None = None,
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """Dump the database (``database``) and the configured files (``files``; ``paths`` instead of
    ``[backup] paths``) into the repository; the manifest is written last, so the snapshot exists only
    when whole.

    ``engine`` is the engine to dump through: a restore's ``pre_snapshot`` view (the database as its
    write lock froze it), or one the caller has made ready; else ``url``'s, once it has finished what an
    interrupted restore left. The repository lock is re-entrant within ``repo``: a
    restore holding it takes its pre-snapshot under it. ``warnings`` receives what the files backup
    reports (a file changed while read, a configured path not found)."""
    url = database_url(project, url)
    progress = progress or Progress()
    settings = project.settings.backup
    if paths is not None:
        settings = replace(settings, paths=tuple(paths))
    if not database and not files:
        raise UsageError("nothing to back up: neither the database nor files")
    if files and not settings.paths and not settings.secret_paths:
        raise UsageError("no files to back up: set [backup] paths in migrate-guard.toml or pass --paths")
    if not database:
        engine = None  # files only
    elif engine is None:
        engine = database_engine(url)
        for line in engine.finish_interrupted():  # never a snapshot of a half-swapped database
            progress.step(line)
    identity = database_identity(url) if database else _files_identity(url)
    repo = repo or open_repository(project, create=True)
    with repo.lock(f"backup {label or ''}".strip()):
        scan = scan_files(project.root, settings, repo.encrypted, repo.location) if files else None
        revision = current_revision(project, url) if database else []  # files-only: no database was read
        before = repo.added_bytes
        snapshot_id = repo.new_snapshot_id()
        earlier = repo.manifests()

        def write(name: str, chunks: Any) -> StreamRef:
            progress.stream(name)
            return repo.write_stream(name, progress.counted(chunks))

        if engine is not None:  # the database is backed up
            previous = _previous_dumps(repo, identity, earlier)
            dump = engine.dump(write, tables=tables, exclude=exclude, previous=previous)
        else:
            dump = DumpResult({}, StreamRef(blobs=[], bytes=0), [])
        stored = None
        if scan is not None:
            stored = backup_files(repo, scan, earlier, on_file=progress.stream)
            if warnings is not None:
                warnings.extend(stored.warnings)
        manifest = _manifest(
            snapshot_id,
            dump,
            dialect=engine.dialect if engine is not None else identity.dialect,
            database=identity,
            revision=revision,
            label=label,
            pinned=pin,
            encrypted=repo.encrypted,
            stored_bytes=repo.added_bytes - before,
            kind=kind,
        )
        manifest["contents"] = (["database"] if database else []) + (["files"] if files else [])
        if stored is not None:
            manifest["files"] = stored.section
            manifest["bytes"] += stored.section["bytes"]
        repo.save_manifest(manifest)
    return manifest


def _files_identity(url: str) -> DatabaseIdentity:
    """The project's database a files-only snapshot is filed under: its identity, or its name when it does
    not answer."""
    try:
        return database_identity(url)
    except Exception as exc:  # noqa: BLE001 - the files do not need the database
        from sqlalchemy.exc import DBAPIError

        if not isinstance(exc, (DBAPIError, GuardError)):
            raise
        return named_identity(url)


def _previous_dumps(
    repo: Repository, identity: DatabaseIdentity, manifests: list[dict[str, Any]] | None = None
) -> dict[str, TableDump]:
    """Each table's newest earlier dump of this same database that carries a marker and whose blobs
    are all present: what the engine may reuse when the table has not changed since."""
    found: dict[str, TableDump] = {}
    known: set[str] | None = None
    for manifest in reversed(repo.manifests() if manifests is None else manifests):  # newest first
        if not identity.same_database(recorded_identity(manifest.get("database"))):
            continue  # another database's (or one from before identities): its markers say nothing of this one
        for table in dump_from_manifest(manifest).tables:
            if table.marker and table.qualified not in found:
                known = repo.known_blobs() if known is None else known
                if all(b in known for b in table.stream.blobs):
                    found[table.qualified] = table
    return found


# --- list -------------------------------------------------------------------------------------------------


def _damaged_manifests(repo: Repository) -> list[str]:
    """Notes about manifests ``repo.manifests()`` had to skip (after it ran)."""
    return [w.removeprefix("skipped ") for w in repo.warnings if w.startswith("skipped ")]


def _verify_state(repo: Repository, warnings: list[str]) -> dict[str, Any]:
    """Past verify results; a damaged record of them is a warning, not a failure (it holds no data)."""
    from .crypto import IntegrityError

    try:
        return repo.read_state("verify") or {}
    except IntegrityError as exc:
        warnings.append(f"{exc.message}; past verify results are ignored and will be rewritten")
        return {}


def list_snapshots(project: Project, all_databases: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
    """The `list --format json` records of the current database (every database's with ``all_databases``),
    oldest first, and warnings (damaged manifests or state, snapshots of other databases not shown)."""
    repo = open_repository(project)
    warnings: list[str] = []
    verified = _verify_state(repo, warnings)
    manifests = repo.manifests()
    warnings += [f"snapshot not listed: {note}" for note in _damaged_manifests(repo)]
    warnings += [
        f"snapshot {sid} (taken {at}) is missing: its manifest was deleted outside migrate-guard"
        for sid, at in repo.missing_manifests()
    ]
    lost_data = {m["id"]: repo.lost_data(m) for m in manifests}
    lost = [sid for sid, blobs in lost_data.items() if blobs]
    if lost:
        warnings.append(
            f"{len(lost)} snapshot{'s' if len(lost) != 1 else ''} lost data (damaged blobs; flag L): "
            f"{', '.join(lost[:5])}{' …' if len(lost) > 5 else ''}; the next backup stores what the database "
            "still holds again, `migrate-guard repair` says more, `prune` removes them"
        )
    if not all_databases:
        current = current_database(project)
        mine = of_database(manifests, current)
        others = len(manifests) - len(mine)
        if others:
            warnings.append(
                f"{others} snapshot{'s' if others != 1 else ''} of other databases not shown "
                f"(this is {current.describe()}; --all-databases lists every database)"
            )
        manifests = mine
    return [
        {
            "id": m["id"],
            "created_at": m["created_at"],
            "label": m.get("label"),
            "kind": m.get("kind", "manual"),
            "revision": m.get("revision", []),
            "dialect": m.get("dialect"),
            "database": database_of(m),
            "contents": contents(m),
            "tables": table_names(m),
            "files": m["files"].get("count") if holds_files(m) else None,
            "rows": m.get("rows", 0),
            "bytes": m.get("bytes", 0),
            "encrypted": m.get("encrypted", False),
            "pinned": m.get("pinned", False),
            "lost_data": lost_data[m["id"]],
            "verified_at": (verified.get(m["id"]) or {}).get("verified_at")
            if (verified.get(m["id"]) or {}).get("ok")
            else None,
        }
        for m in manifests
    ], warnings


# --- verify -------------------------------------------------------------------------------------------------


@dataclass
class VerifyResult:
    snapshot: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    read_data: bool = False
    seconds: float = 0.0
    restore_seconds: float | None = None  # how long the scratch restore (and its row count) took, when it passed


def verify(
    project: Project,
    snapshot_ids: Sequence[str] | None,
    read_data: bool = False,
    progress: Progress | None = None,
    *,
    repo: Repository | None = None,
    warnings: list[str] | None = None,
    no_lock: bool = False,
) -> list[VerifyResult]:
    """Check every blob of the snapshots (all when None); with read_data, restore each into a scratch
    database and compare per-table row counts with the manifest. Results are recorded in the repository
    (where it can be written; else ``warnings`` says so), and so is every damaged blob: no backup reuses it."""
    repo = repo or open_repository(project)
    repo.no_lock = repo.no_lock or no_lock
    manifests = repo.manifests() if snapshot_ids is None else [repo.load_manifest(i) for i in snapshot_ids]
    damaged = _damaged_manifests(repo) if snapshot_ids is None else []
    missing = repo.missing_manifests() if snapshot_ids is None else []
    if not manifests and not damaged and not missing:
        raise UsageError("the repository has no snapshot to verify")
    results = [VerifyResult("manifest", False, [note]) for note in damaged]
    results += [
        VerifyResult(
            sid, False, [f"the manifest is missing: snapshot {sid} (taken {at}) was deleted outside migrate-guard"]
        )
        for sid, at in missing
    ]
    if snapshot_ids is None:  # the whole repository: its journal too
        journal_problems = repo.journal_problems()
        if journal_problems:
            results.append(VerifyResult("journal", False, journal_problems))
    progress = progress or Progress()
    checked: dict[str, str | None] = {}
    for manifest in manifests:
        started = time.monotonic()
        result = VerifyResult(manifest["id"], True, read_data=read_data)
        progress.step(f"verifying {manifest['id']}")
        checked.update(repo.check_blobs(b for b in manifest_blobs(manifest) if b not in checked))
        owners = blob_owners(manifest)
        for blob in dict.fromkeys(manifest_blobs(manifest)):
            if checked[blob]:
                held = owners.get(blob, [])
                shown = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
                result.problems.append(f"{checked[blob]} (it holds part of {shown})" if held else str(checked[blob]))
        if read_data and not result.problems:
            restore_started = time.monotonic()
            if holds_database(manifest):
                result.problems.extend(_restore_and_count(project, repo, manifest, progress))
            result.problems.extend(verify_files(repo, manifest))
            if not result.problems:  # the measured recovery time (RTO) of `status`
                result.restore_seconds = round(time.monotonic() - restore_started, 3)
        result.ok = not result.problems
        result.seconds = round(time.monotonic() - started, 3)
        results.append(result)
    state = _verify_state(repo, [])
    for r in results:
        if r.snapshot in ("manifest", "journal"):
            continue
        previous = state.get(r.snapshot)
        before: dict[str, Any] = previous if isinstance(previous, dict) else {}
        record: dict[str, Any] = {
            "verified_at": iso(utcnow()),
            "ok": r.ok,
            "read_data": r.read_data,
            "problems": r.problems[:20],
            "seconds": r.seconds,
        }
        if r.restore_seconds is not None:
            record.update(restored_at=record["verified_at"], restore_seconds=r.restore_seconds)
        elif r.ok and before.get("ok") and (before.get("restored_at") or before.get("read_data")):
            # a passing blob check keeps the earlier successful restore of the same data (older records
            # have no restored_at: their restore is the verify itself, of unknown duration)
            record["restored_at"] = before.get("restored_at") or before.get("verified_at")
            if before.get("restore_seconds") is not None:
                record["restore_seconds"] = before["restore_seconds"]
        state[r.snapshot] = record
    notes = warnings if warnings is not None else []
    if repo.read_only:
        notes.append(f"{repo.location} is read-only: these results are not recorded in it")
    elif repo.no_lock:
        notes.append(f"--no-lock: these results are not recorded in {repo.location}")
    else:
        try:
            repo.write_state("verify", state)
        except OSError as exc:
            notes.append(f"the results are not recorded in {repo.location}: {exc.strerror or exc}")
    notes.extend(w for w in repo.warnings if w.startswith("damaged blobs not recorded") and w not in notes)
    return results


def _restore_and_count(project: Project, repo: Repository, manifest: dict[str, Any], progress: Progress) -> list[str]:
    dump = dump_from_manifest(manifest)
    with scratch_database(manifest["dialect"], project.url) as url:
        progress.step(f"restoring {manifest['id']} into a scratch database")
        engine = database_engine(url)
        try:
            engine.restore(dump, lambda ref: progress.counted(repo.read_stream(ref)))
        except GuardError as exc:
            return [f"restore into a scratch database failed: {exc.message}"]
        counts = engine.row_counts()
    problems = []
    for table in dump.tables:
        got = counts.get(table.qualified, counts.get(table.name))
        if got != table.rows:
            problems.append(f"table {table.qualified}: {got} rows restored, manifest says {table.rows}")
    return problems


@contextmanager
def scratch_database(dialect: str, server_url: str | None) -> Iterator[str]:
    """A temporary empty database of ``dialect``: a temp SQLite file, or a new database on the
    server of ``server_url``; always removed afterwards."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    if dialect == "sqlite":
        from ..private import private_tempdir

        with private_tempdir("verify-") as tmp:  # plaintext user data: never left in /tmp by a kill
            yield f"sqlite:///{tmp / 'scratch.db'}"
        return
    if not server_url:
        raise ConfigError(f"verify --read-data of a {dialect} snapshot needs a {dialect} server: pass --url")
    base = make_url(server_url)
    if dialect_family(base.get_backend_name()) != dialect_family(dialect):
        raise ConfigError(
            f"verify --read-data of a {dialect} snapshot needs a {dialect} server, not {base.get_backend_name()}"
        )
    name = f"mg_verify_{uuid.uuid4().hex[:12]}"
    quote = '"' if dialect == "postgresql" else "`"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {quote}{name}{quote}")
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            force = " WITH (FORCE)" if dialect == "postgresql" else ""
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quote}{name}{quote}{force}")
        admin.dispose()


# --- restore ---------------------------------------------------------------------------------------------


@dataclass
class RestorePlan:
    snapshot: dict[str, Any]
    tables: list[dict[str, Any]]  # manifest entries to restore
    target: str  # the database, as DatabaseIdentity.describe() names it
    full: bool
    pre_snapshot: bool

    def describe(self) -> list[str]:
        rows = sum(t["rows"] for t in self.tables)
        lines = [
            f"restore snapshot {self.snapshot['id']} ({self.snapshot['created_at']}, "
            f"revision {','.join(self.snapshot.get('revision') or []) or 'none'})",
            f"into {self.target}: {'all' if self.full else len(self.tables)} "
            f"table{'s' if len(self.tables) != 1 else ''}, {rows} rows",
        ]
        lines += [f"  {t['name']}: {t['rows']} rows" for t in self.tables]
        lacks = (self.snapshot.get("engine") or {}).get("lacks") or []
        if lacks:
            lines.append(f"not in this snapshot, so not restored: {', '.join(lacks)}")
        if self.pre_snapshot:
            lines.append("a snapshot of the current state is taken first")
        if self.full:
            lines.append(f"alembic_version is stamped to {','.join(self.snapshot.get('revision') or []) or 'base'}")
        return lines


def select_snapshot(
    repo: Repository,
    snapshot_id: str | None,
    before: str | None,
    at_revision: str | None,
    database: DatabaseIdentity | None = None,
    files: bool = False,
) -> dict[str, Any]:
    """The snapshot named by id, or the newest of ``database`` (holding files, with ``files``) taken
    before a time or at a revision."""
    given = [x for x in (snapshot_id, before, at_revision) if x]
    if len(given) != 1:
        raise UsageError("name exactly one of: a snapshot ID, --before TIME, --at-revision REV")
    if snapshot_id:
        return repo.load_manifest(snapshot_id)
    manifests = of_database(repo.manifests(), database)
    if files:
        manifests = [m for m in manifests if holds_files(m)]
    of = (f" of {database.describe()}" if database else "") + (" with files" if files else "")
    if before:
        limit = parse_time(before)
        chosen = [m for m in manifests if (parse_iso(m["created_at"]) or limit) < limit]
        if not chosen:
            raise UsageError(f"no snapshot{of} taken before {iso(limit)}")
        return chosen[-1]
    chosen = [
        m
        for m in manifests
        if at_revision in (m.get("revision") or [])
        or any(r.startswith(at_revision or "\0") for r in m.get("revision") or [])
    ]
    if not chosen:
        raise UsageError(f"no snapshot{of} taken at revision {at_revision}")
    return chosen[-1]


def refuse_other_database(snapshot: dict[str, Any], target: DatabaseIdentity, into_other: bool) -> None:
    """A snapshot goes back into the database it was taken from, unless ``--into-other-database`` says otherwise."""
    if into_other or belongs_to(snapshot.get("database"), snapshot.get("dialect"), target):
        return
    source = recorded_identity(snapshot.get("database"))
    taken = source.describe() if source else f"database {snapshot.get('database') or '(unrecorded)'}"
    raise UsageError(
        f"snapshot {snapshot['id']} was taken from {taken}, not from {target.describe()}: "
        "pass --into-other-database to restore it there"
    )


def plan_restore(
    project: Project,
    snapshot: dict[str, Any],
    tables: Sequence[str] | None,
    to_url: str | None,
    pre_snapshot: bool,
    into_other_database: bool = False,
) -> RestorePlan:
    target = database_url(project, to_url)
    identity = database_identity(target)
    refuse_other_database(snapshot, identity, into_other_database)
    entries = snapshot["tables"]
    if tables:
        wanted = {t.lower() for t in tables}
        by_display_name = {n.lower(): e for n, e in zip(table_names(snapshot), entries, strict=True)}
        known = by_display_name | {e["name"].lower(): e for e in entries}
        missing = sorted(wanted - set(known))
        if missing:
            raise UsageError(f"not in snapshot {snapshot['id']}: {', '.join(missing)}")
        entries = [
            e for e in entries if e["name"].lower() in wanted or f"{e.get('schema')}.{e['name']}".lower() in wanted
        ]
    return RestorePlan(snapshot, entries, identity.describe(), full=not tables, pre_snapshot=pre_snapshot)


def restore(
    project: Project, plan: RestorePlan, to_url: str | None = None, progress: Progress | None = None
) -> dict[str, Any] | None:
    """Carry out a plan: pre-snapshot, restore, stamp. Returns the pre-snapshot's manifest, if one was taken.

    One hold of the repository lock covers it all. Every blob is checked before anything is committed.
    With a pre-snapshot the check comes first (a damaged snapshot takes no pre-snapshot), then the engine
    stops writers and the pre-snapshot is taken through its view of that moment (``Engine.restore``'s
    ``pre_snapshot``): a write lands in the pre-snapshot or after the restore, never in neither. Without
    one the check runs beside the restore, which the engine commits only once the check passed (engines
    that cannot roll back wait for it first). The journal records the restore as started before anything
    changes, and as finished or failed: `status` reports one that never ended (see ``unfinished_restores``)."""
    from concurrent.futures import ThreadPoolExecutor

    from ..schema.protect import reviewed_environment

    target = database_url(project, to_url)
    engine = database_engine(target)
    snapshot_dialect = plan.snapshot.get("dialect")
    if dialect_family(engine.dialect) != dialect_family(snapshot_dialect or ""):
        raise UsageError(
            f"snapshot {plan.snapshot['id']} is a {snapshot_dialect} snapshot; the target is {engine.dialect}"
        )
    repo = open_repository(project)
    progress = progress or Progress()
    pre: dict[str, Any] | None = None
    taking_pre_snapshot = plan.pre_snapshot and not _is_missing_sqlite_file(target)
    if taking_pre_snapshot and repo.read_only:
        raise UsageError(
            f"{repo.location} is read-only: the snapshot of the current state cannot be stored in it; "
            "take one elsewhere, then pass --no-pre-snapshot"
        )
    if plan.pre_snapshot and not taking_pre_snapshot:
        progress.step("the target database does not exist yet: no snapshot of it is needed")
    dump = dump_from_manifest(plan.snapshot)
    names = [f"{t['schema']}.{t['name']}" if t.get("schema") else t["name"] for t in plan.tables]

    def take_pre_snapshot(view: Engine) -> None:
        nonlocal pre
        progress.step("taking a snapshot of the current state (writes wait until the restore is done)")
        pre = take_snapshot(
            project,
            url=target,
            label=f"before restore of {plan.snapshot['id']}",
            kind="pre-restore",
            repo=repo,
            progress=Progress(),  # its bytes are not the restore's: the bar counts the restore's
            engine=view,
        )
        record.update(pre_snapshot=pre["id"])
        repo.append_journal(record)

    with (
        repo.lock(f"restore {plan.snapshot['id']}"),
        ThreadPoolExecutor(1, thread_name_prefix="migrate-guard-check") as pool,
    ):
        if taking_pre_snapshot:
            progress.step(f"checking snapshot {plan.snapshot['id']}")
            _raise_if_damaged(plan, _damage(repo, plan))
        checking = pool.submit(lambda: None if taking_pre_snapshot else _damage(repo, plan))
        record = _restore_started(repo, plan, target, engine.dialect, names)
        progress.step(f"restoring snapshot {plan.snapshot['id']}")
        progress.set_total(plan.snapshot["schema"]["bytes"] + sum(t["bytes"] for t in plan.tables))
        try:
            try:
                with reviewed_environment(engine.dialect):  # confirmed, with a pre-snapshot: past the protection
                    engine.restore(
                        dump,
                        lambda ref: progress.counted(repo.read_stream(ref)),
                        tables=None if plan.full else names,
                        before_commit=lambda: _raise_if_damaged(plan, checking.result()),
                        pre_snapshot=take_pre_snapshot if taking_pre_snapshot else None,
                    )
            except GuardError:
                _raise_if_damaged(plan, checking.result())  # the check names the blob better than a failed read does
                raise
            if plan.full:
                stamp(target, plan.snapshot.get("revision") or [])
        except BaseException as exc:
            _restore_ended(repo, record, "failed", error=one_line(exc))
            raise
        _restore_ended(repo, record, "finished")
    return pre


def plan_files_restore(
    project: Project, snapshot: dict[str, Any], to_dir: str | None, paths: Sequence[str] = ()
) -> FilesPlan:
    """What restoring ``snapshot``'s files would do: in place (beneath the paths configured now) or into ``to_dir``."""
    settings = project.settings.backup
    if to_dir is None and not configured_paths(settings):
        raise UsageError("no [backup] paths configured: restore the files elsewhere with --to DIR")
    return plan_files(snapshot, project.root, settings, Path(to_dir).resolve() if to_dir else None, paths)


def restore_files_of(
    project: Project,
    snapshot: dict[str, Any],
    plan: FilesPlan,
    *,
    pre_snapshot: bool,
    to_dir: str | None,
    paths: Sequence[str] = (),
) -> tuple[int, dict[str, Any] | None]:
    """Carry out a files plan. In place, the files it would replace are first kept in a files snapshot of
    the current state (kind ``pre-restore``), so a restore loses nothing, and the restore is journaled
    like a database's (``files`` in the record: `status` reports one that never ended until a files
    restore covering it finishes). Returns (entries written, that snapshot)."""
    repo = open_repository(project)
    with repo.lock(f"restore files {snapshot['id']}"):
        pre = _keep_replaced(repo, project, snapshot, plan, pre_snapshot and to_dir is None)
        record = None
        if to_dir is None:  # into another directory: nothing the application uses is changed
            record = _files_restore_started(repo, snapshot, paths, pre)
        try:
            written = restore_files(repo, plan)
        except BaseException as exc:
            if record is not None:
                _restore_ended(repo, record, "failed", error=one_line(exc))
            raise
        if record is not None:
            _restore_ended(repo, record, "finished")
        return written, pre


def _files_restore_started(
    repo: Repository, snapshot: dict[str, Any], paths: Sequence[str], pre: dict[str, Any] | None
) -> dict[str, Any]:
    """Journal a files restore in place as started, right before its first write."""
    return _journal_started(
        repo,
        snapshot["id"],
        files={"paths": list(paths) or None},  # None: all of the snapshot's files
        full=False,
        tables=[],
        pre_snapshot=pre["id"] if pre else None,
        dialect=snapshot.get("dialect"),
        database=snapshot.get("database"),
    )


def _keep_replaced(
    repo: Repository, project: Project, snapshot: dict[str, Any], plan: FilesPlan, wanted: bool
) -> dict[str, Any] | None:
    """The files snapshot of what a restore in place will replace (None when it replaces nothing)."""
    if not (plan.replaces and wanted):
        return None
    if repo.read_only:
        raise UsageError(
            f"{repo.location} is read-only: the files restore would replace cannot be kept in it; "
            "restore with --to DIR, or pass --no-pre-snapshot"
        )
    return take_snapshot(
        project,
        label=f"files before restore of {snapshot['id']}",
        kind="pre-restore",
        repo=repo,
        database=False,
        files=True,
    )


def _restore_started(repo: Repository, plan: RestorePlan, url: str, dialect: str, names: list[str]) -> dict[str, Any]:
    """Journal a restore as started (before it changes anything); returns the record to end it with.
    Restore records carry ``restore``, never ``run``: the migrate-safe readers (``journal_runs``) skip them."""
    return _journal_started(
        repo,
        plan.snapshot["id"],
        full=plan.full,
        tables=None if plan.full else names,
        pre_snapshot=None,
        dialect=dialect,
        database=database_identity(url).to_dict(),
    )


def _journal_started(repo: Repository, snapshot_id: str, **fields: Any) -> dict[str, Any]:
    record = {
        "kind": "restore",
        "restore": uuid.uuid4().hex[:12],
        **who(),
        "pid": os.getpid(),
        "started_at": iso(utcnow()),
        "state": "started",
        "snapshot": snapshot_id,
        **fields,
    }
    if repo.records:  # a restore from read-only media cannot be recorded there
        repo.append_journal(record)
    return record


def _restore_ended(repo: Repository, record: dict[str, Any], state: str, error: str | None = None) -> None:
    """Journal a restore's end. A failure to write it does not hide the restore's own outcome (or error):
    the restore then stays "started", which `status` reports until a restore covering it finishes."""
    ended = {**record, "state": state, "finished_at": iso(utcnow()), **({"error": error} if error else {})}
    if not repo.records:
        return
    try:
        repo.append_journal(ended)
    except Exception:
        if state != "failed":
            raise


def restore_records(repo: Repository) -> tuple[list[dict[str, Any]], list[str]]:
    """Every restore in the journal, oldest first, as its latest record says it ended, and the journal's
    defects. As in ``journal_runs``, a "started" restore before a break in the chain is "unknown"."""
    return _latest_records(
        repo, lambda r: r["restore"] if r.get("kind") == "restore" and isinstance(r.get("restore"), str) else None
    )


def _covers(later: dict[str, Any], record: dict[str, Any]) -> bool:
    """Whether the restore ``later`` finished over ``record``: of the same database, the same kind (files
    or database), and of as much: all of it, or at least its tables (its paths)."""
    if later.get("state") != "finished" or database_key(later) != database_key(record):
        return False
    files = isinstance(record.get("files"), dict)
    if files != isinstance(later.get("files"), dict):
        return False
    if files:
        return _files_cover(later["files"].get("paths"), record["files"].get("paths"))
    if later.get("full"):
        return True
    wanted = None if record.get("full") else {t.lower() for t in record.get("tables") or []}
    return wanted is not None and wanted <= {t.lower() for t in later.get("tables") or []}


def _files_cover(later: Any, earlier: Any) -> bool:
    """Whether a files restore of ``later`` paths (None: all) covers one of ``earlier`` paths."""
    if later is None:
        return True
    if earlier is None:
        return False
    return all(any(e == p or e.startswith(p.rstrip("/") + "/") for p in later) for e in earlier)


def unfinished_restores(repo: Repository, identity: DatabaseIdentity | None) -> list[dict[str, Any]]:
    """Restores into ``identity``'s database (every database's when None) that started and never ended
    (killed, or the machine went down), oldest first, leaving out each one a later restore of the same
    database finished over: a full one, or one of at least its tables."""
    records = of_database(restore_records(repo)[0], identity)
    pending = []
    for i, record in enumerate(records):
        # a files restore that failed has written the files before the failure: partly restored too
        ended = ("started", "unknown", "failed") if isinstance(record.get("files"), dict) else ("started", "unknown")
        if record.get("state") not in ended:
            continue
        covered = any(_covers(later, record) for later in records[i + 1 :])
        if not covered:
            pending.append(record)
    return pending


def _is_missing_sqlite_file(url: str) -> bool:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database
    return (
        parsed.get_backend_name() == "sqlite"
        and database is not None
        and database not in ("", ":memory:")
        and not Path(database).exists()
    )


def _damage(repo: Repository, plan: RestorePlan) -> str | None:
    """The first problem among the blobs the restore needs (each whole and authentic), or None."""
    needed = list(plan.snapshot["schema"]["blobs"]) + [b for t in plan.tables for b in t["blobs"]]
    return next((problem for _blob, problem in repo.check_blobs(needed) if problem), None)


def _raise_if_damaged(plan: RestorePlan, problem: str | None) -> None:
    from .crypto import IntegrityError

    if problem:
        raise IntegrityError(f"snapshot {plan.snapshot['id']} is damaged, nothing was restored: {problem}")


def stamp(url: str, revision: Sequence[str]) -> None:
    """Set alembic_version to exactly ``revision`` (the heads a snapshot was taken at)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            inspector = sa.inspect(conn)
            if not inspector.has_table("alembic_version"):
                if not revision:
                    return
                conn.exec_driver_sql("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
            conn.exec_driver_sql("DELETE FROM alembic_version")
            for rev in revision:
                conn.execute(sa.text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": rev})
    finally:
        engine.dispose()


# --- prune / forget -------------------------------------------------------------------------------------


@dataclass
class PruneResult:
    keep: dict[str, list[str]]
    remove: list[str]
    freed_blobs: int = 0
    freed_bytes: int = 0
    dry_run: bool = False
    notes: list[str] = field(default_factory=list)


def journal_runs(repo: Repository) -> tuple[list[dict[str, Any]], list[str]]:
    """Every migrate-safe run in the journal, oldest first, as its latest record says it ended, and the
    journal's defects. Where the chain is broken after a run's "started" record, its end may be what is
    missing: such a run is "unknown", never "started" (a damaged journal is no reason to restore anything)."""
    return _latest_records(repo, lambda r: r.get("run"))


def _latest_records(repo: Repository, key: Callable[[dict[str, Any]], Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """The latest journal record of each thing ``key`` names (None: not one of them), ordered by that
    record, and the journal's defects; "started" before a break in the chain reads "unknown"."""
    check = repo.journal_checked()
    latest: dict[Any, tuple[int, dict[str, Any]]] = {}
    for index, record in enumerate(check.records):
        name = key(record)
        if name is not None:
            latest.pop(name, None)
            latest[name] = (index, record)
    found = []
    for index, record in latest.values():
        if record.get("state") == "started" and check.problems and index < check.sound_from:
            record = {**record, "state": "unknown", "journal_problem": check.problems[0]}
        found.append(record)
    return found, check.problems


def runs(repo: Repository) -> list[dict[str, Any]]:
    return journal_runs(repo)[0]


def database_key(item: dict[str, Any]) -> str:
    """What groups manifests and runs by database: the identity, else (before identities) dialect and name."""
    recorded = recorded_identity(item.get("database"))
    return recorded.id if recorded else f"unidentified:{item.get('dialect')}:{item.get('database')}"


def needed_for_recovery(repo: Repository) -> tuple[dict[str, str], list[str]]:
    """Snapshots recovery may still need (id -> why), whatever retention says: the safety snapshot of every
    run that did not finish or was not restored. When the journal cannot be read, every safety snapshot."""
    records, problems = journal_runs(repo)
    if problems:
        why = "a safety snapshot, and the journal is damaged"
        return {m["id"]: why for m in repo.manifests() if m.get("kind") == "safety"}, [
            f"the journal is damaged ({problems[0]}): every safety snapshot is kept"
        ]
    needed = {}
    for r in records:
        if r.get("snapshot") and r.get("state") == "started":
            needed[r["snapshot"]] = f"safety snapshot of unfinished run {r['run']}"
        elif r.get("snapshot") and r.get("state") == "not-restored":
            needed[r["snapshot"]] = f"safety snapshot of run {r['run']}, which was NOT restored"
    return needed, []


def prune(
    project: Project, overrides: dict[str, Any], dry_run: bool = False, all_databases: bool = False
) -> PruneResult:
    """Apply the retention policy to the current database's snapshots (every database's, each on its own,
    with ``all_databases``); what recovery needs is always kept."""
    from .retention import RetentionPolicy, parse_duration, parse_size

    settings = {**project.settings.backup.retention, **{k: v for k, v in overrides.items() if v is not None}}
    policy = RetentionPolicy(
        **{k: v for k, v in settings.items() if k not in ("keep_within", "max_size")},
        keep_within=parse_duration(settings["keep_within"]) if settings.get("keep_within") else None,
        max_size=parse_size(str(settings["max_size"])) if settings.get("max_size") else None,
    )
    if policy.empty:
        raise UsageError("no retention rule: pass --keep-last/--keep-daily/... or set [backup.retention] in the config")
    repo = open_repository(project)
    url = database_url(project)
    notes = []
    try:
        current = database_identity(url)
        revision = tuple(current_revision(project, url))
    except Exception as exc:  # noqa: BLE001 - a backup host may not reach the database: prune goes by name
        from sqlalchemy.exc import DBAPIError

        if not isinstance(exc, (DBAPIError, GuardError)):
            raise
        current, revision = named_identity(url), ()
        notes.append(
            f"the database does not answer ({one_line(exc)}): its snapshots are chosen by name, and its "
            "newest snapshot's revision stands in for its current one"
        )
    if dry_run:
        result = _plan_prune(repo, policy, current, revision, all_databases, dry_run=True)
        result.notes[:0] = notes
        if not _damaged_manifests(repo):  # what would be freed: the blobs no snapshot kept names
            kept = {b for m in repo.manifests() if m["id"] not in result.remove for b in manifest_blobs(m)}
            unreferenced = repo.blob_ids() - kept
            result.freed_blobs, result.freed_bytes = len(unreferenced), sum(map(repo.blob_size, unreferenced))
        return result
    # Under the lock: a snapshot or run recorded meanwhile is seen, and no backup is writing. A backup holds
    # the lock from its first blob to its manifest, so a blob no manifest names now is one no backup will
    # name: left by an interrupted backup (or by snapshots removed), and reclaimed even when no snapshot goes.
    with repo.lock("prune"):
        result = _plan_prune(repo, policy, current, revision, all_databases, dry_run=False)
        result.notes[:0] = notes
        damaged = _damaged_manifests(repo)
        if damaged and not result.remove:
            result.notes.append(f"unreferenced blobs not removed: {damaged[0]} (it may still own some)")
            return result
        if damaged:
            collect_garbage(repo)  # raises, before any snapshot is removed
        repo.delete_manifests(result.remove)
        result.freed_blobs, result.freed_bytes = collect_garbage(repo)
    return result


def _plan_prune(
    repo: Repository,
    policy: Any,
    current: DatabaseIdentity,
    revision: tuple[str, ...],
    all_databases: bool,
    dry_run: bool,
) -> PruneResult:
    from .retention import SnapshotInfo, plan_prune

    manifests = repo.manifests()
    needed, notes = needed_for_recovery(repo)
    # Each database's snapshots are pruned on their own, and its files-only snapshots (`backup --only-files`)
    # apart from those holding it: keeping the last 3 never means keeping 3 of files and no database.
    groups: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    for m in manifests:
        key = current.id if belongs_to(m.get("database"), m.get("dialect"), current) else database_key(m)
        groups.setdefault((key, holds_database(m)), []).append(m)
    result = PruneResult({}, [], dry_run=dry_run, notes=notes)
    for (key, _), group in groups.items():
        if key != current.id and not all_databases:
            continue
        # another database's current revision is not known here: its newest snapshot's stands in
        at = revision if key == current.id and revision else tuple(group[-1].get("revision") or ())
        infos = [
            SnapshotInfo(
                m["id"],
                cast(datetime, parse_iso(m["created_at"])),  # written by the repository: manifests are authenticated
                int(m.get("stored_bytes", 0)),
                bool(m.get("pinned")),
                tuple(m.get("revision") or ()),
            )
            for m in group
        ]
        plan = plan_prune(infos, policy, now=utcnow(), current_revision=at, needed=needed)
        for m in group:  # a snapshot that lost data goes, unless recovery needs what is left of it
            if m["id"] in plan.keep and m["id"] not in needed and not m.get("pinned") and repo.lost_data(m):
                del plan.keep[m["id"]]
                plan.remove.append(m["id"])
                notes.append(f"snapshot {m['id']} lost data (damaged blobs): removed whatever the rules say")
        result.keep.update(plan.keep)
        result.remove.extend(plan.remove)
    others = sum(len(g) for (k, _), g in groups.items() if k != current.id)
    if others and not all_databases:
        result.notes.append(
            f"{others} snapshot{'s' if others != 1 else ''} of other databases left alone "
            f"(this is {current.describe()}; --all-databases prunes each database by the same rules)"
        )
    return result


def forget(project: Project, snapshot_id: str) -> tuple[str, int, int]:
    """Remove one snapshot and the blobs only it named; returns (id, blobs, bytes) freed. Blobs other
    snapshots name stay, and so do unreferenced blobs it never named (``prune`` reclaims those)."""
    repo = open_repository(project)
    sid = repo.load_manifest(snapshot_id)["id"]
    with repo.lock("forget"):
        manifest = repo.load_manifest(sid)  # read again under the lock: pinned meanwhile?
        if manifest.get("pinned"):
            raise UsageError(f"snapshot {sid} is pinned; unpin it first (`migrate-guard unpin {sid}`)")
        repo.manifests()
        if _damaged_manifests(repo):
            collect_garbage(repo)  # raises, before the snapshot is removed
        repo.delete_manifest(sid)
        blobs, freed = collect_garbage(repo, only=set(manifest_blobs(manifest)))
    return sid, blobs, freed


def collect_garbage(repo: Repository, only: set[str] | None = None) -> tuple[int, int]:
    """Delete blobs no manifest names (of ``only``, when given); returns (blobs, bytes) removed. Call it
    under the repository lock (no backup is then between its first blob and its manifest). Refuses while
    any manifest cannot be read: its snapshot still owns blobs nobody can see."""
    from .crypto import IntegrityError

    live = {b for m in repo.manifests() for b in manifest_blobs(m)}
    damaged = _damaged_manifests(repo)
    if damaged:
        raise IntegrityError(
            f"blobs not removed: {damaged[0]} "
            "(repair that manifest from a copy, or delete it by hand once its snapshot is given up)"
        )
    present = repo.blob_ids()
    removed = freed = 0
    for blob in sorted((present if only is None else present & only) - live):
        freed += repo.blob_size(blob)
        repo.delete_blob(blob)
        removed += 1
    return removed, freed


def set_pinned(project: Project, snapshot_id: str, pinned: bool) -> tuple[str, bool]:
    """Pin (retention never removes it) or unpin a snapshot; returns its id and whether it changed."""
    repo = open_repository(project)
    sid = repo.load_manifest(snapshot_id)["id"]
    with repo.lock("pin" if pinned else "unpin"):
        changed = bool(repo.load_manifest(sid).get("pinned")) != pinned
        if changed:
            repo.update_manifest(sid, pinned=pinned)
    return sid, changed


def who() -> dict[str, str]:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        user = "unknown"
    return {"user": user, "host": socket.gethostname()}
