"""MariaDB restore under fire: a second process writing throughout, and the restore killed with -9.

The restore loads beside the live tables and swaps them in with one RENAME, holding the writers off
(but not the readers) from the pre-snapshot to the swap; these tests check that no acknowledged write
vanishes and that a killed restore leaves the old tables or the restored ones, never a mixture."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import pymysql
import pytest
import sqlalchemy as sa
from test_engines_mysql import FakeRepo, sql

from migrate_guard.backup.engines.base import Engine
from migrate_guard.backup.engines.mysql import SCRATCH, MySQLEngine

pytestmark = pytest.mark.mariadb

REPO = Path(__file__).resolve().parents[1]
LEDGER_ROWS = 30000
WRITER_BASE = 10_000_000  # ids the writer process inserts, above every seeded one


def seed(url: str) -> None:
    sql(
        url,
        "CREATE TABLE ledger (id BIGINT PRIMARY KEY, note VARCHAR(60) NOT NULL) DEFAULT CHARSET=utf8mb4",
        "CREATE TABLE entries (id INT PRIMARY KEY, ledger_id BIGINT NOT NULL,"
        " CONSTRAINT fk_entries_ledger FOREIGN KEY (ledger_id) REFERENCES ledger (id)) DEFAULT CHARSET=utf8mb4",
        "CREATE TRIGGER ledger_bi BEFORE INSERT ON ledger FOR EACH ROW SET NEW.note = CONCAT(NEW.note, '+')",
    )
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO ledger VALUES (%s, %s)", [(i, f"row {i} " + "x" * (i % 40)) for i in range(LEDGER_ROWS)]
        )
        conn.exec_driver_sql("INSERT INTO entries VALUES (%s, %s)", [(i, i * 7) for i in range(500)])
    engine.dispose()


def contents(url: str, tables: list[str]) -> dict[str, list]:
    return {t: sql(url, f"SELECT * FROM `{t}` ORDER BY 1") for t in tables}


def scratch_tables(url: str) -> list[str]:
    return [r[0] for r in sql(url, "SHOW TABLES") if SCRATCH.match(r[0])]


def connect(url: str) -> pymysql.Connection:
    u = sa.engine.make_url(url)
    return pymysql.connect(
        host=u.host, port=u.port or 3306, user=u.username, password=u.password or "", database=u.database
    )


WRITER = """
import sys, time, pymysql
host, port, db, base = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
conn = pymysql.connect(host=host, port=port, user="root", database=db, autocommit=False)
cur = conn.cursor()
i = base
while True:
    cur.execute("INSERT INTO ledger VALUES (%s, 'live')", (i,))
    conn.commit()
    print(i, time.time(), flush=True)  # acknowledged: COMMIT returned
    i += 1
"""


def test_no_acknowledged_write_is_lost_while_another_process_writes(mariadb_url: str, tmp_path: Path):
    """A second process commits one row per transaction into the table being restored, before, during
    and after the restore. Every id it acknowledged is in the pre-snapshot or in the restored table."""
    seed(mariadb_url)
    sql(
        mariadb_url,
        "CREATE TABLE audit (id INT PRIMARY KEY, ledger_id BIGINT,"
        " CONSTRAINT fk_audit_ledger FOREIGN KEY (ledger_id) REFERENCES ledger (id))",
    )
    engine = MySQLEngine(mariadb_url)
    repo, pre_repo = FakeRepo(), FakeRepo()
    dump = engine.dump(repo.write, tables=["ledger", "entries"])
    url = sa.engine.make_url(mariadb_url)
    path = tmp_path / "acks"
    # The writer appends (O_APPEND) to a file description of its own; the test reads the file through
    # another. (One shared description, read with seek(0), moved the writer's offset: its lines were
    # written over each other.)
    with open(path, "ab") as out:
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, url.host, str(url.port or 3306), url.database, str(WRITER_BASE)], stdout=out
        )
    seen: dict[str, object] = {}

    def acked() -> list[tuple[int, float]]:
        lines = path.read_text().split("\n")[:-1]  # whole lines: the writer may be half-way through one
        return [(int(a), float(b)) for a, b in (line.split() for line in lines)]

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 30
        while len(acked()) < count:
            assert writer.poll() is None, "the writer died"
            assert time.monotonic() < deadline, "the writer made no progress"
            time.sleep(0.02)

    def pre_snapshot(view: Engine) -> None:
        seen["locked_at"] = time.time()
        # readers are not held off; a writer is (it waits for the restore's lock)
        other = connect(mariadb_url)
        try:
            with other.cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM ledger")
                seen["read"] = cur.fetchone()[0]
                cur.execute("SET SESSION lock_wait_timeout = 1")
                with pytest.raises(pymysql.err.OperationalError, match="Lock wait timeout"):
                    cur.execute("INSERT INTO ledger VALUES (1, 'blocked')")
        finally:
            other.close()
        time.sleep(0.3)  # the writer queues up behind the lock
        seen["pre"] = view.dump(pre_repo.write, tables=["ledger"])

    try:
        wait_for(30)
        engine.restore(dump, repo.read, tables=["ledger"], pre_snapshot=pre_snapshot)
        done_at = time.time()
        wait_for(len(acked()) + 30)
    finally:
        writer.kill()
        writer.wait()
    acks_done = acked()
    pre = seen["pre"]
    pre_ids = {int(m) for m in re.findall(rb"\((\d+),'", pre_repo.data(pre.tables[0].stream))}
    after_ids = {r[0] for r in sql(mariadb_url, "SELECT id FROM ledger")}
    lost = [i for i, _t in acks_done if i not in pre_ids and i not in after_ids]
    assert lost == [], f"{len(lost)} acknowledged rows vanished"
    # the writes really overlapped the restore: acknowledged before its lock and after it finished
    assert any(t < seen["locked_at"] for _i, t in acks_done)
    assert any(t > done_at for _i, t in acks_done)
    assert seen["read"] >= LEDGER_ROWS
    # those before the lock are in the pre-snapshot, the restored table has the snapshot's rows plus later ones
    assert {i for i, t in acks_done if t < seen["locked_at"]} <= pre_ids
    assert set(range(LEDGER_ROWS)) <= after_ids
    assert not {i for i in after_ids if i >= WRITER_BASE} & pre_ids  # nothing acked before the lock survived
    # foreign keys of the tables not restored were pointed back at the restored table, and work
    refs = sql(
        mariadb_url,
        "SELECT TABLE_NAME, REFERENCED_TABLE_NAME, CONSTRAINT_NAME FROM information_schema."
        "REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = DATABASE() ORDER BY 1",
    )
    assert refs == [("audit", "ledger", "fk_audit_ledger"), ("entries", "ledger", "fk_entries_ledger")]
    with pytest.raises(sa.exc.IntegrityError):
        sql(mariadb_url, "INSERT INTO audit VALUES (1, -5)")
    assert scratch_tables(mariadb_url) == []
    assert [r[0] for r in sql(mariadb_url, "SHOW TRIGGERS")] == ["ledger_bi"]


CHILD = """
import pickle, sys, time
from migrate_guard.backup.engines import mysql
url, path, moment = sys.argv[1], sys.argv[2], sys.argv[3]
with open(path, "rb") as f:
    dump, blobs, big = pickle.load(f)

def at(name):
    if name == moment:
        print("AT", name, flush=True)
        time.sleep(600)

def read(ref):
    data = b"".join(b"".join(blobs[k]) for k in ref.blobs)
    for n, start in enumerate(range(0, len(data), 1 << 16)):
        if ref.blobs == big and n == 3:
            at("load")
        yield data[start:start + (1 << 16)]

real_swap = mysql.MySQLEngine._swap
def swap(self, *args):
    real_swap(self, *args)
    at("finish")
mysql.MySQLEngine._swap = swap
mysql.MySQLEngine(url).restore(dump, read, before_commit=lambda: at("swap"))
print("DONE", flush=True)
"""


def quiet(url: str) -> None:
    """Wait until no other session uses the database (a killed restore's client ends on its own)."""
    deadline = time.monotonic() + 30
    while sql(
        url, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = DATABASE() AND ID <> CONNECTION_ID()"
    )[0][0]:
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.parametrize("moment", ["load", "swap", "finish"])
def test_restore_killed_with_9_leaves_old_or_restored_tables(mariadb_url: str, tmp_path: Path, moment: str):
    """kill -9 while loading, right before the RENAME, right after it: the tables are all old or all
    restored, the scratch tables are never listed, and the next restore cleans up and succeeds."""
    seed(mariadb_url)
    engine = MySQLEngine(mariadb_url)
    repo = FakeRepo()
    dump = engine.dump(repo.write)
    names = [t.name for t in dump.tables]
    restored = contents(mariadb_url, names)
    sql(
        mariadb_url,
        "DELETE FROM entries WHERE id < 100",
        "DELETE FROM ledger WHERE id < 50",
        "UPDATE ledger SET note = 'changed' WHERE id < 1000",
        "INSERT INTO ledger VALUES (-1, 'new')",
        # created after the snapshot, so not restored, and its foreign key points at a restored table
        "CREATE TABLE audit (id INT PRIMARY KEY, ledger_id BIGINT,"
        " CONSTRAINT fk_audit_ledger FOREIGN KEY (ledger_id) REFERENCES ledger (id))",
        "INSERT INTO audit VALUES (1, 2000)",
    )
    old = contents(mariadb_url, names)
    assert old != restored
    big = next(t for t in dump.tables if t.name == "ledger").stream.blobs
    with open(tmp_path / "dump.pickle", "wb") as f:
        pickle.dump((dump, repo.blobs, big), f)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, mariadb_url, str(tmp_path / "dump.pickle"), moment],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    line = child.stdout.readline().decode()
    assert line == f"AT {moment}\n", line
    child.kill()
    child.wait()
    quiet(mariadb_url)

    now = contents(mariadb_url, names)
    assert now == (restored if moment == "finish" else old)
    assert scratch_tables(mariadb_url), "the killed restore left nothing to clean (killed too late?)"
    assert sorted(n for _s, n in engine.list_tables()) == sorted([*names, "audit"])

    # what any next command does first (recover, migrate-safe, a backup): finish or undo it, as it stood
    assert MySQLEngine(mariadb_url).finish_interrupted()
    assert contents(mariadb_url, names) == (restored if moment == "finish" else old)
    assert scratch_tables(mariadb_url) == []
    refs = sql(
        mariadb_url,
        "SELECT TABLE_NAME, REFERENCED_TABLE_NAME FROM information_schema."
        "REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = DATABASE() ORDER BY 1",
    )
    assert refs == [("audit", "ledger"), ("entries", "ledger")]  # never the old table's scratch name

    engine.restore(dump, repo.read)
    assert contents(mariadb_url, names) == restored
    assert scratch_tables(mariadb_url) == []
    refs = sql(
        mariadb_url,
        "SELECT TABLE_NAME, REFERENCED_TABLE_NAME, CONSTRAINT_NAME FROM information_schema."
        "REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = DATABASE() ORDER BY 1",
    )
    assert refs == [("audit", "ledger", "fk_audit_ledger"), ("entries", "ledger", "fk_entries_ledger")]
    assert [r[0] for r in sql(mariadb_url, "SHOW TRIGGERS")] == ["ledger_bi"]


def test_snapshot_manifest_names_what_it_lacks(mariadb_url: str):
    """Views, sequences, routines and events are not in a MariaDB snapshot: the engine record says so,
    one "kind name" each, so a restore can say what it did not bring back."""
    seed(mariadb_url)
    sql(
        mariadb_url,
        "CREATE VIEW ledger_notes AS SELECT note FROM ledger",
        "CREATE SEQUENCE invoice_no START WITH 100",
        "CREATE PROCEDURE clear_entries() DELETE FROM entries",
        "CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN 2 * x",
        "CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY DO DELETE FROM entries WHERE id < 0",
    )
    dump = MySQLEngine(mariadb_url).dump(FakeRepo().write)
    assert dump.engine["lacks"] == [
        "event nightly",
        "function twice",
        "procedure clear_entries",
        "sequence invoice_no",
        "view ledger_notes",
    ]
    assert [t.name for t in dump.tables] == ["entries", "ledger"]  # the sequence is not dumped as a table
    sql(
        mariadb_url,
        "DROP VIEW ledger_notes",
        "DROP SEQUENCE invoice_no",
        "DROP PROCEDURE clear_entries",
        "DROP FUNCTION twice",
        "DROP EVENT nightly",
    )
    assert "lacks" not in MySQLEngine(mariadb_url).dump(FakeRepo().write).engine  # complete: nothing to say
