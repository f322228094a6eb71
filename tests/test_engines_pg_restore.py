"""The PostgreSQL restore against a live database: writers running through it, materialized views,
partial snapshots restored into an empty database, and no secret left on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from conftest import execute, migrate_example, use_repository

from migrate_guard.backup.engines.base import StreamRef
from migrate_guard.backup.engines.postgresql import PostgreSQLEngine
from migrate_guard.backup.service import open_repository, scratch_database
from migrate_guard.config import load_project


class MemoryRepo:
    """A repository in a dict: a stream is written under a new key and read back from it."""

    def __init__(self) -> None:
        self.streams: dict[str, bytes] = {}

    def write(self, name: str, chunks) -> StreamRef:
        key = f"{len(self.streams)}:{name}"
        self.streams[key] = b"".join(chunks)
        return StreamRef(blobs=[key], bytes=len(self.streams[key]))

    def read(self, ref: StreamRef):
        for key in ref.blobs:
            yield self.streams[key]


def conninfo(url: str) -> str:
    u = sa.engine.make_url(url)
    return f"host={u.host} port={u.port} user={u.username} dbname={u.database}"


def query(url: str, sql: str, *params) -> list[tuple]:
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        return conn.execute(sql, params or None).fetchall()


# --- (a) no acknowledged write is lost -----------------------------------------------------------------

# One row per transaction; a row's tag is written to the ack file only once its COMMIT returned.
# Failed statements (the table being replaced under a waiting INSERT) are not acknowledged: the
# application would see an error and know the row is not there.
WRITER = r"""
import os, sys, time
import psycopg

dsn, acks, stop = sys.argv[1:]
conn = psycopg.connect(dsn)
n = 0
with open(acks, "a") as out:
    while not os.path.exists(stop):
        n += 1
        tag = f"w{n}"
        try:
            conn.execute("INSERT INTO ledger (tag, pad) VALUES (%s, repeat('w', 100))", (tag,))
            conn.commit()
        except psycopg.Error as exc:
            conn.rollback()
            print(f"{tag}: {exc}", file=sys.stderr, flush=True)
            time.sleep(0.01)
            continue
        out.write(f"{tag} {time.time()}\n")
        out.flush()
"""

SEED_ROWS = 150_000  # enough that dumping and restoring them takes a good part of a second


def acknowledged(path: Path) -> dict[str, float]:
    if not path.exists():
        return {}
    lines = path.read_text().split("\n")[:-1]  # only whole lines: the writer may be half-way through one
    return {tag: float(at) for tag, at in (line.split() for line in lines)}


def wait_for(condition, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_no_acknowledged_write_is_lost_by_a_restore(postgresql_url, tmp_path):
    """A second process commits rows into the table being restored, before, during and after the
    restore. Every row whose commit was acknowledged must be in the pre-restore snapshot (taken
    through the restore's view, after it stopped the writers) or in the table after the restore:
    a row committed between the pre-snapshot and the drop would be in neither."""
    execute(
        postgresql_url,
        "CREATE TABLE ledger (id bigserial PRIMARY KEY, tag text UNIQUE NOT NULL, pad text)",
        f"INSERT INTO ledger (tag, pad) SELECT 's' || g, repeat('s', 100) FROM generate_series(1, {SEED_ROWS}) g",
    )
    engine = PostgreSQLEngine(postgresql_url)
    repo = MemoryRepo()
    snapshot = engine.dump(repo.write, tables=["ledger"])  # what the restore brings back

    acks, stop = tmp_path / "acks", tmp_path / "stop"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, conninfo(postgresql_url), str(acks), str(stop)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: len(acknowledged(acks)) >= 20, what="the writer's first rows")
        pre: dict = {}

        def pre_snapshot(view) -> None:
            pre["called"] = time.time()
            pre["dump"] = view.dump(repo.write)
            pre["counts"] = view.row_counts(["ledger"])

        started = time.time()
        engine.restore(snapshot, repo.read, tables=["ledger"], pre_snapshot=pre_snapshot)
        done = time.time()
        wait_for(
            lambda: sum(at > done for at in acknowledged(acks).values()) >= 20, what="rows written after the restore"
        )
    finally:
        stop.touch()
        _, errors = writer.communicate(timeout=60)
    assert writer.returncode == 0, errors

    acked = acknowledged(acks)
    after = {r[0] for r in query(postgresql_url, "SELECT tag FROM ledger WHERE tag LIKE 'w%'")}
    with scratch_database("postgresql", postgresql_url) as scratch:
        PostgreSQLEngine(scratch).restore(pre["dump"], repo.read)
        in_pre = {r[0] for r in query(scratch, "SELECT tag FROM ledger WHERE tag LIKE 'w%'")}
        pre_total = query(scratch, "SELECT count(*) FROM ledger")[0][0]

    lost = sorted(set(acked) - in_pre - after, key=lambda t: int(t[1:]))
    assert not lost, f"{len(lost)} acknowledged rows lost: {lost[:10]}"
    # the writes really overlapped the restore: rows from after it started are in the pre-snapshot
    # (committed before the writers were stopped), and rows it held back landed after it
    assert any(at > started for tag, at in acked.items() if tag in in_pre)
    held_back = set(acked) - in_pre
    assert held_back and held_back <= after
    assert not (in_pre & after)  # the restore replaced the table: what came before is only in the pre-snapshot
    # the pre-snapshot's row count and its rows describe the same moment
    (table,) = [t for t in pre["dump"].tables if t.name == "ledger"]
    assert table.rows == pre_total == pre["counts"]["public.ledger"] == SEED_ROWS + len(in_pre)


def test_a_failing_pre_snapshot_changes_nothing_and_lets_writers_go_on(postgresql_url):
    execute(
        postgresql_url,
        "CREATE TABLE ledger (id int PRIMARY KEY, tag text)",
        "INSERT INTO ledger VALUES (1, 'old')",
    )
    engine = PostgreSQLEngine(postgresql_url)
    repo = MemoryRepo()
    snapshot = engine.dump(repo.write)
    execute(postgresql_url, "UPDATE ledger SET tag = 'new'")

    def fail(view) -> None:
        with pytest.raises(Exception, match="read-only"):
            view.drop_tables(["ledger"])
        raise RuntimeError("the repository is full")

    with pytest.raises(RuntimeError, match="full"):
        engine.restore(snapshot, repo.read, pre_snapshot=fail)
    assert query(postgresql_url, "SELECT tag FROM ledger") == [("new",)]
    with psycopg.connect(conninfo(postgresql_url), autocommit=True) as conn:
        conn.execute("SET lock_timeout = '5s'")  # the restore's locks are gone with its transaction
        conn.execute("INSERT INTO ledger VALUES (2, 'later')")


# --- (b) materialized views ------------------------------------------------------------------------------

MATVIEWS = """
CREATE TABLE orders (id int PRIMARY KEY, amount int NOT NULL);
CREATE TABLE regions (id int PRIMARY KEY, name text);
INSERT INTO orders SELECT g, g FROM generate_series(1, 10) g;
INSERT INTO regions VALUES (1, 'north');
CREATE MATERIALIZED VIEW mv_z_totals AS SELECT sum(amount) AS total, count(*) AS n FROM orders;
CREATE MATERIALIZED VIEW mv_a_report AS SELECT total * 2 AS doubled, n FROM mv_z_totals;
CREATE MATERIALIZED VIEW mv_idle AS SELECT id FROM regions WITH NO DATA;
"""


def matviews(url: str) -> dict[str, bool]:
    return dict(query(url, "SELECT matviewname, ispopulated FROM pg_matviews ORDER BY 1"))


def test_materialized_views_are_refreshed_in_dependency_order(postgresql_url):
    """mv_a_report reads mv_z_totals: refreshed by name it would be first and fail on an unpopulated
    view. A view unpopulated in the snapshot stays so."""
    with psycopg.connect(conninfo(postgresql_url), autocommit=True) as conn:
        conn.execute(MATVIEWS)
    engine = PostgreSQLEngine(postgresql_url)
    repo = MemoryRepo()
    snapshot = engine.dump(repo.write)
    expected = {"mv_a_report": True, "mv_idle": False, "mv_z_totals": True}

    with scratch_database("postgresql", postgresql_url) as scratch:
        PostgreSQLEngine(scratch).restore(snapshot, repo.read)
        assert matviews(scratch) == expected
        assert query(scratch, "SELECT doubled, n FROM mv_a_report") == [(110, 10)]

    execute(postgresql_url, "DELETE FROM orders WHERE id > 5", "REFRESH MATERIALIZED VIEW mv_z_totals")
    engine.restore(snapshot, repo.read, tables=["orders"])  # partial: the views over it come back
    assert matviews(postgresql_url) == expected
    assert query(postgresql_url, "SELECT total, n FROM mv_z_totals") == [(55, 10)]
    assert query(postgresql_url, "SELECT doubled, n FROM mv_a_report") == [(110, 10)]

    execute(postgresql_url, "DELETE FROM orders WHERE id > 2")
    engine.restore(snapshot, repo.read)  # full, into the same database
    assert matviews(postgresql_url) == expected
    assert query(postgresql_url, "SELECT doubled FROM mv_a_report") == [(110,)]


# --- (c) a partial snapshot ----------------------------------------------------------------------------


def fk_validated(url: str, name: str) -> bool:
    return query(url, "SELECT convalidated FROM pg_constraint WHERE conname = %s", name)[0][0]


def test_a_partial_snapshot_restores_into_an_empty_database(postgresql_url, example):
    """customer_services references customers and service_packages, which the snapshot does not
    hold: in an empty database they are created empty (with what they need: their sequences,
    keys) and the foreign keys to them are NOT VALID; in the real database nothing of theirs changes."""
    migrate_example(example, postgresql_url, customers=10)
    engine = PostgreSQLEngine(postgresql_url)
    repo = MemoryRepo()
    dump = engine.dump(repo.write, tables=["customer_services"])
    rows = dump.tables[0].rows
    packages_seq = query(postgresql_url, "SELECT last_value + 1 FROM service_packages_id_seq")[0][0]
    assert [t.name for t in dump.tables] == ["customer_services"] and rows > 0

    with scratch_database("postgresql", postgresql_url) as scratch:
        scratch_engine = PostgreSQLEngine(scratch)
        scratch_engine.restore(dump, repo.read)
        counts = scratch_engine.row_counts()
        assert counts["public.customer_services"] == rows
        assert counts["public.service_packages"] == counts["public.customers"] == 0
        assert "public.family_members" not in counts  # nothing the snapshot's tables do not need
        assert not fk_validated(scratch, "fk_customer_services_package_id_service_packages")
        # the empty table is a real one: its id sequence and its key came along (its own foreign key did not)
        insert = "INSERT INTO service_packages (category_id, name, price, duration_months) VALUES (7, 'p', 1, 1)"
        assert query(scratch, insert + " RETURNING id") == [(packages_seq,)]
        with pytest.raises(psycopg.errors.UniqueViolation):
            query(scratch, "INSERT INTO service_packages SELECT * FROM service_packages")

    packages = query(postgresql_url, "SELECT * FROM service_packages ORDER BY id")
    services = query(postgresql_url, "SELECT * FROM customer_services ORDER BY id")
    execute(postgresql_url, "DELETE FROM customer_services WHERE mod(id, 2) = 0")
    engine.restore(dump, repo.read, tables=["customer_services"])
    assert query(postgresql_url, "SELECT * FROM customer_services ORDER BY id") == services
    assert query(postgresql_url, "SELECT * FROM service_packages ORDER BY id") == packages
    assert fk_validated(postgresql_url, "fk_customer_services_package_id_service_packages")


def test_verify_read_data_of_a_partial_snapshot(run_cli, example, postgresql_url, monkeypatch):
    """The safety snapshot migrate-safe takes holds only the affected tables: verify --read-data
    restores it into an empty database and must call it healthy, a restore into the real database
    must leave the tables it references alone, and real damage must still be found."""
    migrate_example(example, postgresql_url, customers=20)
    use_repository(example, example / "repo", monkeypatch)
    args = ("--url", postgresql_url, "-c", str(example / "alembic.ini"))
    result = run_cli(*args, "backup", "--tables", "customer_services", "--format", "json")
    assert result.exit_code == 0, result.output
    snapshot = json.loads(result.stdout)["id"]

    result = run_cli(*args, "verify", snapshot, "--read-data")
    assert result.exit_code == 0, result.output

    packages = query(postgresql_url, "SELECT * FROM service_packages ORDER BY id")
    services = query(postgresql_url, "SELECT * FROM customer_services ORDER BY id")
    execute(postgresql_url, "DELETE FROM customer_services WHERE mod(id, 3) = 0")
    result = run_cli(*args, "restore", snapshot, "--tables", "customer_services", "--yes")
    assert result.exit_code == 0, result.output
    assert query(postgresql_url, "SELECT * FROM customer_services ORDER BY id") == services
    assert query(postgresql_url, "SELECT * FROM service_packages ORDER BY id") == packages

    entry = open_repository(load_project(example / "alembic.ini", postgresql_url)).load_manifest(snapshot)
    (table,) = [t for t in entry["tables"] if t["name"] == "customer_services"]
    blob = example / "repo" / "blobs" / table["blobs"][0][:2] / table["blobs"][0]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    os.chmod(blob, 0o600)
    blob.write_bytes(bytes(data))
    result = run_cli(*args, "verify", snapshot, "--read-data")
    assert result.exit_code != 0 and table["blobs"][0] in result.output, result.output


# --- (d) secrets ------------------------------------------------------------------------------------------


def test_password_file_lives_in_the_private_directory_and_is_gone_after(postgresql_url, monkeypatch):
    from migrate_guard.backup.engines.postgresql import connection
    from migrate_guard.private import private_dir

    url = sa.engine.make_url(postgresql_url).set(password="pw").render_as_string(hide_password=False)
    seen = []
    real = connection.ConnectionSettings.tool_env

    def recording(self):
        with real(self) as env:
            seen.append(Path(env["PGPASSFILE"]))
            assert seen[-1].is_file() and seen[-1].is_relative_to(private_dir())
            yield env

    monkeypatch.setattr(connection.ConnectionSettings, "tool_env", contextmanager(recording))
    execute(postgresql_url, "CREATE TABLE t (id int PRIMARY KEY)", "INSERT INTO t VALUES (1)")
    engine = PostgreSQLEngine(url)
    repo = MemoryRepo()
    engine.restore(engine.dump(repo.write), repo.read)
    assert len(seen) == 2 and not any(p.exists() or p.parent.exists() for p in seen)
    assert not list(private_dir().glob("pg-restore-*"))  # the restore's list file went too
