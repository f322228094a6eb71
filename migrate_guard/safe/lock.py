"""One migration at a time per database: a PostgreSQL advisory lock, MySQL/MariaDB GET_LOCK, a lock
file beside a SQLite database. A second run waits ``wait`` seconds, then fails naming the holder."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from ..errors import GuardError

PG_LOCK_KEY = 0x6D6967726174650A  # "migrate\n": one lock per database, shared by every migrate-safe
MYSQL_LOCK_NAME = "migrate-guard"
_POLL = 0.2


class MigrationLocked(GuardError):
    """Another run holds the migration lock."""


def _who() -> str:
    from ..backup.service import who

    me = who()
    return f"migrate-safe pid {os.getpid()} {me['user']}@{me['host']}"


@contextmanager
def migration_lock(url: str, wait: float = 0) -> Iterator[None]:
    backend = make_url(url).get_backend_name()
    if backend == "postgresql":
        lock = _postgresql
    elif backend in ("mysql", "mariadb"):
        lock = _mysql
    elif backend == "sqlite":
        lock = _sqlite
    else:
        raise GuardError(f"no migration lock for {backend!r} databases")
    with lock(url, wait):
        yield


@contextmanager
def _postgresql(url: str, wait: float) -> Iterator[None]:
    engine = sa.create_engine(
        url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT", connect_args={"application_name": _who()[:63]}
    )
    try:
        with engine.connect() as conn:
            deadline = time.monotonic() + wait
            while not conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": PG_LOCK_KEY}).scalar():
                if time.monotonic() >= deadline:
                    holder = conn.execute(
                        sa.text(
                            "SELECT a.pid, a.application_name, a.usename, a.client_addr, a.backend_start "
                            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                            "WHERE l.locktype = 'advisory' AND l.granted "
                            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                            "AND ((l.classid::int8 << 32) | l.objid::int8) = :k"
                        ),
                        {"k": PG_LOCK_KEY},
                    ).first()
                    who = (
                        (
                            f"backend pid {holder.pid} ({holder.application_name or holder.usename}"
                            f"{' from ' + str(holder.client_addr) if holder.client_addr else ''}), connected since "
                            f"{holder.backend_start:%Y-%m-%d %H:%M:%S}"
                        )
                        if holder
                        else "another session"
                    )
                    raise MigrationLocked(f"the migration lock is held by {who}; waited {wait:g}s (--lock-wait)")
                time.sleep(_POLL)
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LOCK_KEY})
    finally:
        engine.dispose()


@contextmanager
def _mysql(url: str, wait: float) -> Iterator[None]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    name = f"{MYSQL_LOCK_NAME}:{make_url(url).database}"
    try:
        with engine.connect() as conn:
            got = conn.execute(sa.text("SELECT GET_LOCK(:n, :w)"), {"n": name, "w": max(0, int(wait))}).scalar()
            if got != 1:
                holder = conn.execute(
                    sa.text(
                        "SELECT p.ID, p.USER, p.HOST, p.TIME FROM information_schema.PROCESSLIST p "
                        "WHERE p.ID = IS_USED_LOCK(:n)"
                    ),
                    {"n": name},
                ).first()
                who = (
                    f"connection {holder.ID} ({holder.USER}@{holder.HOST}, {holder.TIME}s)"
                    if holder
                    else "another session"
                )
                raise MigrationLocked(f"the migration lock is held by {who}; waited {wait:g}s (--lock-wait)")
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": name})
    finally:
        engine.dispose()


@contextmanager
def _sqlite(url: str, wait: float) -> Iterator[None]:
    database = make_url(url).database or ""
    if database in ("", ":memory:"):
        yield  # an in-memory database belongs to this process alone
        return
    path = Path(f"{database}.migrate-guard.lock")
    if not path.parent.is_dir():
        raise GuardError(f"database error: unable to open database file (no directory {path.parent})")
    record = json.dumps(
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "who": _who(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    deadline = time.monotonic() + wait
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            holder = _read(path)
            if _stale(holder):
                path.unlink(missing_ok=True)
                continue
            if time.monotonic() >= deadline:
                raise MigrationLocked(
                    f"the migration lock {path} is held by {holder.get('who', 'another run')} "
                    f"since {holder.get('since', '?')}; "
                    f"waited {wait:g}s (--lock-wait)"
                ) from None
            time.sleep(_POLL)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(record)
        break
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _read(path: Path) -> dict[str, Any]:
    try:
        holder: dict[str, Any] = json.loads(path.read_text())
        return holder
    except (OSError, ValueError):
        return {}


def _stale(holder: dict[str, Any]) -> bool:
    """A lock whose process is gone (on this host) no longer protects anything."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
