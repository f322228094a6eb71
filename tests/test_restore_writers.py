"""Issue 14, point 4: no committed write is lost by a restore.

A restore takes its pre-restore snapshot after the engine stopped writers, and keeps them stopped until
it has committed: every write an application committed (and saw acknowledged) is in the pre-snapshot or
in the table after the restore. A restore killed half-way is journaled as started: `status` says so
until a restore covering it finishes.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import KEY, execute, migrate_example, use_repository

from migrate_guard.backup.engines import engine_for
from migrate_guard.errors import GuardError

MIGRATE_GUARD = Path(sys.executable).with_name("migrate-guard")
BASE_IDS = 1_000_000  # the writer's ids: far above the seeded ones

WRITER = textwrap.dedent(
    """
    import sys, time
    import sqlalchemy as sa

    url, acked, stop, first = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    args = {"timeout": 120} if url.startswith("sqlite") else {}
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args=args)
    failures = 0
    with open(acked, "a", buffering=1) as out:
        next_id = first
        while True:
            try:
                with engine.begin() as conn:  # one row per transaction
                    conn.execute(sa.text("INSERT INTO events (id, payload) VALUES (:i, 'written')"), {"i": next_id})
                out.write(f"{next_id} {time.time():.6f}\\n")  # acked: COMMIT returned
            except Exception as exc:  # a table being replaced, a lock timeout: not acked, go on
                failures += 1
                print(f"not acked {next_id}: {str(exc).splitlines()[0]}", file=sys.stderr, flush=True)
                time.sleep(0.01)
            next_id += 1
            try:
                open(stop).close()
                break
            except FileNotFoundError:
                pass
    print(f"failures {failures}", file=sys.stderr, flush=True)
    """
)


def _dialect(url: str) -> str:
    return sa.engine.make_url(url).get_backend_name()


def seed_events(url: str, rows: int) -> None:
    """A big ``events`` table (the restore has to take a while), ids 1..rows, with an index."""
    dialect = _dialect(url)
    series = f"WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {rows})"
    statements = ["CREATE TABLE events (id BIGINT NOT NULL PRIMARY KEY, payload TEXT NOT NULL)"]
    if dialect == "postgresql":
        statements.append(f"INSERT INTO events SELECT n, repeat('x', 200) || n FROM generate_series(1, {rows}) n")
    elif dialect == "sqlite":
        statements.append(f"INSERT INTO events {series} SELECT n, hex(zeroblob(100)) || n FROM s")
    else:
        statements.append(f"SET SESSION max_recursive_iterations = {rows + 10}")
        statements.append(f"INSERT INTO events (id, payload) {series} SELECT n, CONCAT(REPEAT('x', 200), n) FROM s")
    prefix = "(20)" if dialect == "mysql" else ""
    execute(url, *statements, f"CREATE INDEX ix_events_payload ON events (payload{prefix})")


def event_ids(url: str) -> set[int]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return {int(r[0]) for r in conn.execute(sa.text("SELECT id FROM events"))}
    finally:
        engine.dispose()


def cli_env(tmp_path: Path) -> dict[str, str]:
    private = tmp_path / "tmpdir"  # the subprocesses' TMPDIR: where their private directories go
    private.mkdir(exist_ok=True)
    env = {**os.environ, "MIGRATE_GUARD_KEY": KEY, "TMPDIR": str(private)}
    env.pop("MIGRATE_GUARD_PASSPHRASE", None)
    return env


def guard(example: Path, url: str, *args: str) -> list[str]:
    return [str(MIGRATE_GUARD), "--url", url, "-c", str(example / "alembic.ini"), *args]


def snapshots(run_cli, example: Path, url: str) -> list[dict]:
    result = run_cli("--url", url, "-c", str(example / "alembic.ini"), "list", "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def events_project(example: Path, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    migrate_example(example, db_url, customers=50)
    seed_events(db_url, 150_000)
    use_repository(example, tmp_path / "repo", monkeypatch)
    return example, db_url


def test_no_acked_write_is_lost_by_a_restore_while_a_process_writes(events_project, run_cli, tmp_path):
    example, url = events_project
    args = ("--url", url, "-c", str(example / "alembic.ini"))
    result = run_cli(*args, "backup", "--label", "base")
    assert result.exit_code == 0, result.output
    (base,) = snapshots(run_cli, example, url)
    base_ids = event_ids(url)
    assert len(base_ids) == 150_000

    acked_file, stop = tmp_path / "acked.txt", tmp_path / "stop"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    writer = subprocess.Popen(
        [sys.executable, str(script), url, str(acked_file), str(stop), str(BASE_IDS)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (acked_file.exists() and acked_file.read_text().count("\n") >= 20):
            assert writer.poll() is None, writer.stderr.read() if writer.stderr else ""
            assert time.monotonic() < deadline, "the writer acked nothing"
            time.sleep(0.05)
        started = time.time()
        restore = subprocess.run(
            guard(example, url, "restore", base["id"], "--tables", "events", "--yes"),
            env=cli_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=300,
        )
        ended = time.time()
        time.sleep(0.5)  # the writes that waited land, and a few more after them
    finally:
        stop.touch()
        _, writer_err = writer.communicate(timeout=120)
    assert restore.returncode == 0, restore.stdout + restore.stderr
    assert "restored snapshot" in restore.stdout

    acked = {}
    for line in acked_file.read_text().splitlines():
        ident, at = line.split()
        acked[int(ident)] = float(at)
    during = [i for i, at in acked.items() if started <= at <= ended]
    after_ids = event_ids(url)

    pre = next(s for s in snapshots(run_cli, example, url) if s["kind"] == "pre-restore")
    assert pre["label"] == f"before restore of {base['id']}"
    pre_ids = read_pre_snapshot(run_cli, example, url, pre["id"], tmp_path)

    lost = sorted(set(acked) - pre_ids - after_ids)
    in_pre, in_after = set(acked) & pre_ids, set(acked) & after_ids
    figures = (
        f"{_dialect(url)}: {len(acked)} acked, {len(during)} acked while the restore ran "
        f"({started:.3f}..{ended:.3f}), {len(in_pre)} in the pre-snapshot, {len(in_after)} in the table after, "
        f"{len(lost)} lost; writer: {writer_err.strip().splitlines()[-1] if writer_err.strip() else ''}"
    )
    print(figures)
    assert not lost, f"acked writes in neither the pre-snapshot nor the table: {lost[:20]}; {figures}"
    assert during, f"no write was acked while the restore ran: {figures}"
    assert in_pre and in_after, figures  # the writes straddled the restore's lock
    # The restored table is the snapshot's rows plus what was written after the restore, nothing else.
    assert after_ids - base_ids == in_after
    assert base_ids <= after_ids
    # The pre-snapshot holds every write acked before it, in order: it is a cut of the writer's sequence.
    assert all(i in pre_ids for i in acked if i < max(in_pre))


def read_pre_snapshot(run_cli, example: Path, url: str, snapshot_id: str, tmp_path: Path) -> set[int]:
    """The events ids of a snapshot, restored (without a pre-snapshot of its own) into a scratch database."""
    from migrate_guard.backup.service import scratch_database

    dialect = _dialect(url)
    if dialect == "sqlite":
        scratch_url = f"sqlite:///{tmp_path / 'scratch.db'}"
        return _restore_and_read(run_cli, example, url, snapshot_id, scratch_url)
    with scratch_database(dialect, url) as scratch_url:
        return _restore_and_read(run_cli, example, url, snapshot_id, scratch_url)


def _restore_and_read(run_cli, example: Path, url: str, snapshot_id: str, scratch_url: str) -> set[int]:
    result = run_cli(
        "--url", url, "-c", str(example / "alembic.ini"), "restore", snapshot_id,
        "--to-url", scratch_url, "--into-other-database", "--no-pre-snapshot", "--yes",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return event_ids(scratch_url)


# --- SQLite: the engine's lock, seen from another connection ------------------------------------------------


class _Repo:
    def __init__(self) -> None:
        self.streams: dict[str, list[bytes]] = {}

    def write(self, name: str, chunks):  # noqa: ANN001
        from migrate_guard.backup.engines.base import StreamRef

        data = list(chunks)
        key = f"s{len(self.streams)}"
        self.streams[key] = data
        return StreamRef(blobs=[key], bytes=sum(len(c) for c in data))

    def read(self, ref):  # noqa: ANN001
        for blob in ref.blobs:
            yield from self.streams[blob]


def _count(path: Path, table: str = "events") -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


@pytest.mark.parametrize("tables", [["events"], None], ids=["partial", "full"])
def test_sqlite_pre_snapshot_sees_the_locked_state_and_writers_wait_until_the_commit(tmp_path, tables):
    path = tmp_path / "app.db"
    url = f"sqlite:///{path}"
    seed_events(url, 1000)
    engine = engine_for(url)
    repo = _Repo()
    dump = engine.dump(repo.write)
    execute(url, "INSERT INTO events VALUES (5000, 'after the snapshot')")

    seen: dict[str, object] = {}
    landed = threading.Event()

    def late_writer() -> None:  # another connection: waits on the lock, lands after the restore
        with sqlite3.connect(path, timeout=60, isolation_level=None) as conn:
            conn.execute("INSERT INTO events VALUES (6000, 'written during the restore')")
        landed.set()

    thread = threading.Thread(target=late_writer)

    def pre_snapshot(view) -> None:  # noqa: ANN001
        with sqlite3.connect(path, timeout=0.2, isolation_level=None) as other, pytest.raises(sqlite3.OperationalError):
            other.execute("INSERT INTO events VALUES (7000, 'must wait')")  # writers are stopped
        seen["counts"] = view.row_counts(["events"])
        pre = _Repo()
        seen["dump"] = view.dump(pre.write)
        seen["pre"] = pre
        with pytest.raises(GuardError, match="can only be read"):
            view.drop_tables(["events"])
        thread.start()
        time.sleep(0.3)
        seen["landed early"] = landed.is_set()

    engine.restore(dump, repo.read, tables=tables, pre_snapshot=pre_snapshot)
    thread.join(30)
    assert seen["counts"] == {"events": 1001}  # the state the lock froze, 5000 included
    assert seen["landed early"] is False
    assert landed.is_set()
    assert event_ids(url) == set(range(1, 1001)) | {6000}  # the restore, then the write that waited
    pre_dump = seen["dump"]
    restored = tmp_path / "pre.db"
    engine_for(f"sqlite:///{restored}").restore(pre_dump, seen["pre"].read)  # type: ignore[attr-defined]
    assert event_ids(f"sqlite:///{restored}") == set(range(1, 1001)) | {5000}


def test_sqlite_a_failing_pre_snapshot_changes_nothing_and_releases_the_lock(tmp_path):
    path = tmp_path / "app.db"
    url = f"sqlite:///{path}"
    seed_events(url, 100)
    engine = engine_for(url)
    repo = _Repo()
    dump = engine.dump(repo.write)
    execute(url, "DELETE FROM events WHERE id > 50")

    def pre_snapshot(view) -> None:  # noqa: ANN001
        raise GuardError("the repository is full")

    with pytest.raises(GuardError, match="repository is full"):
        engine.restore(dump, repo.read, tables=["events"], pre_snapshot=pre_snapshot)
    assert _count(path) == 50
    execute(url, "INSERT INTO events VALUES (999, 'not locked')")  # the lock went with the rollback
    with pytest.raises(GuardError, match="repository is full"):
        engine.restore(dump, repo.read, pre_snapshot=pre_snapshot)  # a full restore too
    assert _count(path) == 51


def test_sqlite_temporary_copies_go_to_the_private_directory(tmp_path, monkeypatch):
    import tempfile

    from migrate_guard import private

    path = tmp_path / "app.db"
    url = f"sqlite:///{path}"
    seed_events(url, 100)
    engine = engine_for(url)
    seen: list[Path] = []
    real = private.private_tempdir

    def spying(prefix: str = "tmp-"):  # noqa: ANN202
        cm = real(prefix)
        directory = cm.__enter__()
        seen.append(directory)

        class _Wrap:
            def __enter__(self):  # noqa: ANN204
                return directory

            def __exit__(self, *exc):  # noqa: ANN204, ANN002
                return cm.__exit__(*exc)

        return _Wrap()

    monkeypatch.setattr("migrate_guard.backup.engines.sqlite.private_tempdir", spying)
    monkeypatch.setattr(tempfile, "TemporaryDirectory", None)  # no stray use of /tmp by the engine
    repo = _Repo()
    dump = engine.dump(repo.write)
    engine.restore(dump, repo.read, tables=["events"], pre_snapshot=lambda view: None)
    engine.restore(dump, repo.read)
    assert len(seen) == 3
    for directory in seen:
        assert directory.parent == private.private_dir()
        assert not directory.exists()  # removed when the block ended


# --- a restore killed half-way -------------------------------------------------------------------------------


def test_a_killed_restore_is_reported_by_status_until_it_is_run_again(example, run_cli, tmp_path, monkeypatch):
    path = tmp_path / "guarded.db"
    url = f"sqlite:///{path}"
    migrate_example(example, url, customers=50)
    seed_events(url, 400_000)
    use_repository(example, tmp_path / "repo", monkeypatch)
    args = ("--url", url, "-c", str(example / "alembic.ini"))
    assert run_cli(*args, "backup").exit_code == 0
    (base,) = snapshots(run_cli, example, url)
    execute(url, "DELETE FROM events WHERE id > 1000", "INSERT INTO events VALUES (9999999, 'kept')")
    before = event_ids(url)

    env = cli_env(tmp_path)
    proc = subprocess.Popen(
        guard(example, url, "restore", base["id"], "--yes"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    hot_journal = Path(f"{path}-journal")
    deadline = time.monotonic() + 120
    while not hot_journal.exists():  # the restore's transaction has begun changing the database
        assert proc.poll() is None, f"the restore ended before it could be killed: {proc.communicate()}"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    killed_dirs = [
        d for d in (Path(env["TMPDIR"]) / f"migrate-guard-{os.getuid()}").iterdir() if d.name.startswith(f"{proc.pid}-")
    ]
    assert killed_dirs  # what kill -9 left: the plaintext copies, in the private directory only
    assert event_ids(url) == before  # SQLite rolled the killed transaction back

    status = run_cli(*args, "status", "--format", "json")
    report = json.loads(status.stdout)
    check = next(c for c in report["checks"] if c["name"] == "restores")
    assert check["level"] == "critical", check
    assert base["id"] in check["message"] and "did not finish" in check["message"], check
    assert f"re-run `migrate-guard restore {base['id']}`" in check["message"], check
    assert "the state before it is snapshot" in check["message"], check
    assert report["figures"]["unfinished_restores"] == 1
    assert not report["healthy"] and status.exit_code == 1
    # the migrate-safe readers of the journal do not take the restore for a run
    assert next(c for c in report["checks"] if c["name"] == "unfinished_runs")["level"] == "ok"
    history = run_cli(*args, "history", "--format", "json")
    assert history.exit_code == 0 and json.loads(history.stdout) == [], history.output

    again = subprocess.run(
        guard(example, url, "restore", base["id"], "--yes"), env=env, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"an earlier restore of snapshot {base['id']} into it" in again.stdout, again.stdout
    assert f"the interrupted restore of snapshot {base['id']}" in again.stdout, again.stdout
    assert event_ids(url) == set(range(1, 400_001))
    assert all(not d.exists() for d in killed_dirs)  # removed by the next process's private_dir()

    report = json.loads(run_cli(*args, "status", "--format", "json").stdout)
    check = next(c for c in report["checks"] if c["name"] == "restores")
    assert check["level"] == "ok", check
    assert report["figures"]["unfinished_restores"] == 0


def test_which_later_restore_completes_an_interrupted_one(example, tmp_path, monkeypatch):
    from migrate_guard.backup import service
    from migrate_guard.config import load_project

    url = f"sqlite:///{tmp_path / 'guarded.db'}"
    other = f"sqlite:///{tmp_path / 'other.db'}"
    migrate_example(example, url, customers=5)
    use_repository(example, tmp_path / "repo", monkeypatch)
    project = load_project(example / "alembic.ini", url)
    repo = service.open_repository(project, create=True)
    here, there = service.database_identity(url), service.database_identity(other)

    def record(rid: str, state: str, tables: list[str] | None, database=here) -> None:  # noqa: ANN001
        repo.append_journal(
            {
                "kind": "restore",
                "restore": rid,
                "state": state,
                "snapshot": "s1",
                "full": tables is None,
                "tables": tables,
                "started_at": service.iso(service.utcnow()),
                "dialect": "sqlite",
                "database": database.to_dict(),
            }
        )

    def pending() -> list[str]:
        return [r["restore"] for r in service.unfinished_restores(repo, here)]

    record("a", "started", ["customers", "family_members"])
    assert pending() == ["a"]
    record("b", "started", ["customers"])
    record("b", "finished", ["customers"])  # fewer tables: does not cover a
    record("c", "started", ["Family_Members", "customers"], database=there)
    record("c", "finished", ["Family_Members", "customers"], database=there)  # another database's
    record("d", "started", None)
    record("d", "failed", None)  # failed: covers nothing, and is not unfinished itself
    assert pending() == ["a"]
    record("e", "started", ["FAMILY_MEMBERS", "customers", "family_accounts"])
    record("e", "finished", ["FAMILY_MEMBERS", "customers", "family_accounts"])
    assert pending() == []
    record("f", "started", None)
    record("g", "started", ["customers"])
    record("g", "finished", ["customers"])  # a partial one does not complete a full one
    assert pending() == ["f"]
    record("h", "started", None)
    record("h", "finished", None)
    assert pending() == []
    assert service.journal_runs(repo) == ([], [])  # migrate-safe's readers see no run in these records
