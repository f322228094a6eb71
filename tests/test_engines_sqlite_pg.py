"""The SQLite and PostgreSQL backup engines against real databases, through an in-memory repository."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from migrate_guard.backup.engines import engine_for
from migrate_guard.backup.engines.base import StreamRef, ToolMissing
from migrate_guard.backup.engines.postgresql import PostgreSQLEngine
from migrate_guard.backup.engines.sqlite import SQLiteEngine
from migrate_guard.errors import GuardError

MIB = 1 << 20

UNICODE = ["Jürgen Größe", "Nguyễn Văn Ánh", "emoji 😀🚀 ok", "Ærøskøbing ß"]
AWKWARD = "tab\there\nnew line\\backslash \\N and \r carriage"
BIG = 2**60 + 12345  # > 2^53: would lose digits through a float


class FakeRepo:
    """write -> keep the pieces under a key; read -> give them back."""

    def __init__(self) -> None:
        self.blobs: dict[str, list[bytes]] = {}
        self.pieces: dict[str, list[int]] = {}

    def write(self, name: str, chunks) -> StreamRef:
        pieces = [bytes(c) for c in chunks]
        key = f"{len(self.blobs):04d}:{name}"
        self.blobs[key] = pieces
        self.pieces[key] = [len(p) for p in pieces]
        return StreamRef(blobs=[key], bytes=sum(map(len, pieces)))

    def read(self, ref: StreamRef):
        for key in ref.blobs:
            yield from self.blobs[key]

    def data(self, ref: StreamRef) -> bytes:
        return b"".join(self.read(ref))


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text, text
    return text


# =================================================================================================
# SQLite
# =================================================================================================

SQLITE_SCHEMA = """
CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY);
CREATE TABLE customers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    balance NUMERIC(20, 4),
    created_at TIMESTAMP,
    profile JSON,
    avatar BLOB,
    big BIGINT,
    notes TEXT,
    obsolete TEXT
);
CREATE INDEX ix_customers_name ON customers (name);
CREATE TABLE audit (id INTEGER PRIMARY KEY, what TEXT);
CREATE TRIGGER customers_audit AFTER INSERT ON customers BEGIN
    INSERT INTO audit (what) VALUES ('insert ' || NEW.id);
END;
CREATE TABLE customer_services (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers (id),
    service TEXT,
    price NUMERIC
);
"""


def sqlite_path(url: str) -> Path:
    return Path(sa.engine.make_url(url).database)


def sqlite_conn(url: str) -> sqlite3.Connection:
    conn = sqlite3.connect(sqlite_path(url), isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def sqlite_seed(url: str) -> None:
    with sqlite_conn(url) as conn:
        conn.executescript(SQLITE_SCHEMA)
        conn.execute("INSERT INTO alembic_version VALUES ('0004')")
        rows = [
            (
                UNICODE[0],
                "12345678901234.5678",
                "2024-03-01T12:34:56.789+05:30",
                '{"k": [1, 2.5, {"ü": null}]}',
                b"\x00\xff\x10bin",
                BIG,
                AWKWARD,
                "old",
            ),
            (UNICODE[1], "-0.0001", "1999-12-31T23:59:59+00:00", '{"s": "😀"}', b"", -(2**63), "plain", None),
            (UNICODE[2], None, None, None, None, None, None, None),
            (UNICODE[3], "7", "2030-01-01T00:00:00-08:00", "[]", bytes(range(256)), 2**53 + 1, "", "x"),
        ]
        conn.executemany(
            "INSERT INTO customers (name, balance, created_at, profile, avatar, big, notes, obsolete) "
            "VALUES (?,?,?,?,?,?,?,?)",
            rows,
        )
        conn.executemany(
            "INSERT INTO customer_services (customer_id, service, price) VALUES (?,?,?)",
            [(1, "hosting", "9.99"), (1, "mail 📧", "1.5"), (2, "dns", None), (4, "tab\tsvc", "0")],
        )


def sqlite_state(url: str) -> dict:
    with sqlite_conn(url) as conn:
        listed = "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY 1"
        tables = [r[0] for r in conn.execute(listed)]
        data = {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}
        schema = sorted(
            conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name <> 'sqlite_sequence'")
        )
        seq = sorted(conn.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
    return {"data": data, "schema": schema, "seq": seq}


def sqlite_mutate(url: str) -> None:
    with sqlite_conn(url) as conn:
        conn.execute("UPDATE customers SET name = 'renamed', big = 1 WHERE id = 1")
        conn.execute("DELETE FROM customers WHERE id = 3")  # nothing references it
        conn.execute("INSERT INTO customers (name) VALUES ('newcomer')")
        conn.execute("UPDATE customer_services SET price = 99 WHERE id = 1")
        conn.execute("DELETE FROM customer_services WHERE id = 3")
        conn.execute("INSERT INTO customer_services (customer_id, service) VALUES (1, 'added')")
        conn.execute("ALTER TABLE customers DROP COLUMN obsolete")
        conn.execute("CREATE TABLE extra (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers (id))")
        conn.execute("INSERT INTO extra VALUES (1, 1)")


def test_sqlite_dump_lists_tables_with_exact_counts_and_dependencies(sqlite_url):
    sqlite_seed(sqlite_url)
    engine = engine_for(sqlite_url)
    assert isinstance(engine, SQLiteEngine)
    engine.check_tools()
    repo = FakeRepo()
    dump = engine.dump(repo.write)

    assert dump.engine["format"] == "image" and dump.engine["tool"] == "sqlite3"
    by_name = {t.qualified: t for t in dump.tables}
    assert set(by_name) == {"alembic_version", "audit", "customers", "customer_services"}
    assert by_name["customers"].rows == 4 and by_name["customer_services"].rows == 4
    assert by_name["alembic_version"].rows == 1 and by_name["audit"].rows == 4
    assert by_name["customer_services"].depends_on == ["customers"]
    assert by_name["customers"].depends_on == []
    assert engine.row_counts() == {t: by_name[t].rows for t in by_name}
    assert engine.row_counts(["customers", "main.audit"]) == {"customers": 4, "audit": 4}
    assert (None, "alembic_version") in engine.list_tables()

    # one stream, the database image, in page-aligned pieces of at most 1 MiB
    assert [k.split(":", 1)[1] for k in repo.blobs] == ["image"]
    image = repo.data(dump.schema)
    assert image.startswith(b"SQLite format 3\x00") and dump.schema.bytes == len(image)
    page_size = int.from_bytes(image[16:18], "big")
    assert len(image) % page_size == 0
    assert all(t.stream.blobs == [] for t in dump.tables)

    # tables / exclude choose what the manifest lists
    only = engine.dump(FakeRepo().write, tables=["customers", "main.customer_services"], exclude=["customer_services"])
    assert [t.name for t in only.tables] == ["customers"]
    with pytest.raises(GuardError, match="no table 'nope'"):
        engine.dump(FakeRepo().write, tables=["nope"])


def test_sqlite_full_restore_brings_back_data_and_schema(sqlite_url):
    sqlite_seed(sqlite_url)
    engine = engine_for(sqlite_url)
    before = sqlite_state(sqlite_url)
    repo = FakeRepo()
    dump = engine.dump(repo.write)

    watcher = sqlite3.connect(sqlite_path(sqlite_url))  # an open connection must stay valid
    assert watcher.execute("SELECT count(*) FROM customers").fetchone() == (4,)
    sqlite_mutate(sqlite_url)
    assert sqlite_state(sqlite_url) != before

    engine.restore(dump, repo.read)
    after = sqlite_state(sqlite_url)
    assert after["data"] == before["data"]
    assert after["schema"] == before["schema"]  # the dropped column is back, 'extra' is gone
    assert after["seq"] == before["seq"]
    assert watcher.execute("SELECT name FROM customers WHERE id = 1").fetchone() == (UNICODE[0],)
    watcher.close()
    row = sqlite_conn(sqlite_url).execute("SELECT balance, avatar, big, notes FROM customers WHERE id = 1").fetchone()
    assert row[1:] == (b"\x00\xff\x10bin", BIG, AWKWARD)


def test_sqlite_partial_restore_touches_only_the_named_table(sqlite_url):
    sqlite_seed(sqlite_url)
    engine = engine_for(sqlite_url)
    before = sqlite_state(sqlite_url)
    repo = FakeRepo()
    dump = engine.dump(repo.write)
    sqlite_mutate(sqlite_url)
    mutated = sqlite_state(sqlite_url)

    engine.restore(dump, repo.read, tables=["customers"])
    after = sqlite_state(sqlite_url)
    assert after["data"]["customers"] == before["data"]["customers"]
    assert [s for s in after["schema"] if s[2] == "customers"] == [s for s in before["schema"] if s[2] == "customers"]
    assert after["seq"] == before["seq"]  # AUTOINCREMENT counter back too
    # the others keep their mutations; no trigger fired while rows were copied back
    for table in ("customer_services", "audit", "extra", "alembic_version"):
        assert after["data"][table] == mutated["data"][table], table

    conn = sqlite_conn(sqlite_url)
    assert conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO customer_services (customer_id) VALUES (9999)")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("DELETE FROM customers WHERE id = 1")  # still referenced
    conn.execute("INSERT INTO customers (name) VALUES ('after restore')")  # the trigger is back
    assert conn.execute("SELECT what FROM audit ORDER BY id DESC LIMIT 1").fetchone() == ("insert 5",)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    with pytest.raises(GuardError, match="no table 'extra'"):
        engine.restore(dump, repo.read, tables=["extra"])


def test_sqlite_partial_restore_refuses_to_break_a_foreign_key(sqlite_url):
    sqlite_seed(sqlite_url)
    engine = engine_for(sqlite_url)
    repo = FakeRepo()
    dump = engine.dump(repo.write)
    with sqlite_conn(sqlite_url) as conn:
        conn.execute("INSERT INTO customers (id, name) VALUES (50, 'late')")
        conn.execute("INSERT INTO customer_services (customer_id, service) VALUES (50, 'needs 50')")
    mutated = sqlite_state(sqlite_url)
    with pytest.raises(GuardError) as info:
        engine.restore(dump, repo.read, tables=["customers"])
    assert "foreign key" in one_line(info.value) and "nothing was changed" in str(info.value)
    assert sqlite_state(sqlite_url) == mutated
    assert sqlite_conn(sqlite_url).execute("PRAGMA foreign_keys").fetchone() == (1,)


def test_sqlite_image_is_byte_identical_when_unchanged_and_mostly_so_after_a_small_change(sqlite_url):
    sqlite_seed(sqlite_url)
    with sqlite_conn(sqlite_url) as conn:
        conn.execute("CREATE TABLE bulk (id INTEGER PRIMARY KEY, payload TEXT)")
        conn.executemany("INSERT INTO bulk (payload) VALUES (?)", [(f"{i:08d}" * 64,) for i in range(6000)])
    engine = engine_for(sqlite_url)
    repo = FakeRepo()
    first = repo.data(engine.dump(repo.write).schema)
    second_dump = engine.dump(repo.write)
    assert repo.data(second_dump.schema) == first
    assert max(max(p) for p in repo.pieces.values()) <= MIB and len(first) > 3 * MIB

    with sqlite_conn(sqlite_url) as conn:
        conn.execute("UPDATE customers SET name = 'changed' WHERE id = 2")
    third = repo.data(engine.dump(repo.write).schema)
    page = int.from_bytes(first[16:18], "big")
    assert len(third) == len(first)
    changed = sum(first[i : i + page] != third[i : i + page] for i in range(0, len(first), page))
    assert 0 < changed <= 4, changed  # header page + the customers page(s): the rest dedupes


def test_sqlite_dump_is_consistent_while_another_connection_writes(sqlite_url):
    sqlite_seed(sqlite_url)
    writer = sqlite3.connect(sqlite_path(sqlite_url), isolation_level=None)
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO customers (name) VALUES ('uncommitted')")
    engine = engine_for(sqlite_url)
    repo = FakeRepo()
    dump = engine.dump(repo.write)  # must not wait for, nor see, the open write transaction
    writer.execute("COMMIT")
    assert {t.name: t.rows for t in dump.tables}["customers"] == 4
    assert engine.row_counts(["customers"]) == {"customers": 5}
    engine.restore(dump, repo.read)  # into a WAL database
    assert engine.row_counts(["customers"]) == {"customers": 4}
    assert writer.execute("SELECT count(*) FROM customers").fetchone() == (4,)
    writer.close()


def test_sqlite_drop_tables_and_errors(sqlite_url, tmp_path):
    sqlite_seed(sqlite_url)
    engine = engine_for(sqlite_url)
    engine.drop_tables(["customers", "nope"])  # referenced by customer_services: still dropped
    assert (None, "customers") not in engine.list_tables()
    assert sqlite_conn(sqlite_url).execute("PRAGMA foreign_keys").fetchone() == (1,)
    with pytest.raises(GuardError, match="in-memory"):
        SQLiteEngine("sqlite://")
    with pytest.raises(GuardError, match="does not exist") as info:
        SQLiteEngine(f"sqlite:///{tmp_path / 'missing.db'}").dump(FakeRepo().write)
    one_line(info.value)
    assert not (tmp_path / "missing.db").exists()


def test_sqlite_needs_no_tools(sqlite_url, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    SQLiteEngine(sqlite_url).check_tools()


# =================================================================================================
# PostgreSQL
# =================================================================================================

PG_SCHEMA = """
CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);
CREATE TYPE tier AS ENUM ('free', 'pro');
CREATE SCHEMA billing;
CREATE TABLE customers (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    balance numeric(20, 4),
    created_at timestamptz,
    profile jsonb,
    settings json,
    avatar bytea,
    big bigint,
    notes text,
    tier tier DEFAULT 'free',
    obsolete text,
    doubled bigint GENERATED ALWAYS AS (big * 2) STORED
);
CREATE INDEX ix_customers_name ON customers (name);
COMMENT ON TABLE customers IS 'people who pay';
CREATE TABLE customer_services (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id),
    service text,
    price numeric
);
CREATE TABLE billing.invoices (
    id serial PRIMARY KEY,
    customer_id bigint REFERENCES customers (id),
    amount numeric(12, 2)
);
CREATE TABLE events (payload text, at timestamptz);
CREATE TABLE audit (id serial PRIMARY KEY, what text);
CREATE FUNCTION audit_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit (what) VALUES ('insert ' || NEW.id); RETURN NEW; END $$;
CREATE TRIGGER customers_audit AFTER INSERT ON customers FOR EACH ROW EXECUTE FUNCTION audit_insert();
CREATE VIEW customer_names AS SELECT id, name FROM customers;
"""


def pg(url: str):
    import psycopg

    params = sa.engine.make_url(url)
    return psycopg.connect(
        host=params.host, port=params.port, user=params.username, dbname=params.database, autocommit=True
    )


def with_database(url: str, database: str) -> str:
    return sa.engine.make_url(url).set(database=database).render_as_string(hide_password=False)


def pg_seed(url: str) -> None:
    with pg(url) as conn:
        conn.execute(PG_SCHEMA)
        conn.execute("INSERT INTO alembic_version VALUES ('0004')")
        rows = [
            (
                UNICODE[0],
                "12345678901234.5678",
                "2024-03-01 12:34:56.789+05:30",
                '{"k": [1, 2.5, {"ü": null}]}',
                '{ "spaced" :  true }',
                b"\x00\xff\x10bin",
                BIG,
                AWKWARD,
                "pro",
                "old",
            ),
            (
                UNICODE[1],
                "-0.0001",
                "1999-12-31 23:59:59+00",
                '{"s": "😀"}',
                "[]",
                b"",
                -(2**61),
                "plain",
                "free",
                None,
            ),
            (UNICODE[2], None, None, None, None, None, None, None, None, None),
            (UNICODE[3], "7", "infinity", "[]", "null", bytes(range(256)), 2**53 + 1, "", "free", "x"),
        ]
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO customers "
                "(name, balance, created_at, profile, settings, avatar, big, notes, tier, obsolete) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                rows,
            )
            cur.executemany(
                "INSERT INTO customer_services (customer_id, service, price) VALUES (%s, %s, %s)",
                [(1, "hosting", "9.99"), (1, "mail 📧", "1.5"), (2, "dns", None), (4, "tab\tsvc", "0")],
            )
            invoices = [(1, "10.00"), (2, "20.50")]
            cur.executemany("INSERT INTO billing.invoices (customer_id, amount) VALUES (%s, %s)", invoices)
            events = [("b", "2024-01-01"), ("a", None), (AWKWARD, "2024-01-02")]
            cur.executemany("INSERT INTO events VALUES (%s, %s)", events)


def pg_older_transactions_ended(url: str, timeout: float = 60.0) -> None:
    """Return once every transaction that was running anywhere on the server when called has ended
    (later ones do not matter).

    A dump's markers count xids from its snapshot's xmin: the oldest transaction then running on
    the whole server, in any database (tests alongside create and drop databases). A table with rows
    written after that transaction began gets a small distance, so the next dump reads it again:
    needless, but by design (never a missed change). A test that asserts exactly which tables a dump
    reads again calls this after seeding, so that its first dump's xmin is past every seeded row."""
    with pg(url) as conn:
        seeded = conn.execute("SELECT txid_snapshot_xmax(txid_current_snapshot())").fetchone()[0]
        deadline = time.monotonic() + timeout
        while conn.execute("SELECT txid_snapshot_xmin(txid_current_snapshot())").fetchone()[0] < seeded:
            if time.monotonic() > deadline:
                held = conn.execute(
                    "SELECT pid, datname, backend_xid, left(query, 60) FROM pg_stat_activity"
                    " WHERE backend_xid IS NOT NULL"
                ).fetchall()
                pytest.fail(f"transactions older than the seed still run after {timeout:.0f}s: {held}")
            time.sleep(0.01)


PG_TABLES = ["alembic_version", "audit", "billing.invoices", "customer_services", "customers", "events"]


def pg_rows(url: str, tables=PG_TABLES) -> dict[str, list[str]]:
    with pg(url) as conn:
        out = {}
        for t in tables:
            schema, _, name = t.rpartition(".")
            out[t] = sorted(r[0] for r in conn.execute(f'SELECT x::text FROM ONLY "{schema or "public"}"."{name}" x'))
        return out


def pg_schema(url: str, *args: str) -> str:
    params = sa.engine.make_url(url)
    out = subprocess.run(
        [
            "pg_dump",
            "--schema-only",
            "-h",
            params.host,
            "-p",
            str(params.port),
            "-U",
            params.username,
            *args,
            params.database,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return "\n".join(line for line in out.splitlines() if not line.startswith(("\\restrict", "\\unrestrict")))


def pg_sequences(url: str) -> dict[str, tuple]:
    with pg(url) as conn:
        names = [r[0] for r in conn.execute("SELECT schemaname || '.' || sequencename FROM pg_sequences ORDER BY 1")]
        return {n: conn.execute(f"SELECT last_value, is_called FROM {n}").fetchone() for n in names}


def pg_mutate(url: str) -> None:
    with pg(url) as conn:
        conn.execute("UPDATE customers SET name = 'renamed', big = 1, profile = '{}' WHERE id = 1")
        conn.execute("DELETE FROM customers WHERE id = 3")  # nothing references it
        conn.execute("INSERT INTO customers (name) VALUES ('newcomer')")
        conn.execute("UPDATE customer_services SET price = 99 WHERE id = 1")
        conn.execute("DELETE FROM customer_services WHERE id = 3")
        conn.execute("INSERT INTO customer_services (customer_id, service) VALUES (1, 'added')")
        conn.execute("INSERT INTO events VALUES ('later', now())")
        conn.execute("ALTER TABLE customers DROP COLUMN obsolete")
        conn.execute("ALTER TYPE tier ADD VALUE 'enterprise'")
        conn.execute("CREATE TABLE extra (id int PRIMARY KEY, customer_id bigint REFERENCES customers (id))")
        conn.execute("INSERT INTO extra VALUES (1, 1)")


def test_postgresql_dump_streams_tables_with_exact_counts(postgresql_url):
    pg_seed(postgresql_url)
    engine = engine_for(postgresql_url)
    assert isinstance(engine, PostgreSQLEngine)
    engine.check_tools()
    repo = FakeRepo()
    dump = engine.dump(repo.write)

    assert dump.engine["tool"] == "pg_dump" and dump.engine["version"]
    by_name = {t.qualified: t for t in dump.tables}
    assert sorted(by_name) == sorted(t if "." in t else f"public.{t}" for t in PG_TABLES)
    expected = {"public.customers": 4, "public.customer_services": 4, "billing.invoices": 2, "public.events": 3,
                "public.alembic_version": 1, "public.audit": 4}  # fmt: skip
    assert {q: t.rows for q, t in by_name.items()} == expected
    assert engine.row_counts() == expected
    assert engine.row_counts(["customers", "billing.invoices"]) == {"public.customers": 4, "billing.invoices": 2}
    assert by_name["public.customer_services"].depends_on == ["public.customers"]
    assert by_name["billing.invoices"].depends_on == ["public.customers"]
    assert ("public", "alembic_version") in engine.list_tables()

    streams = [k.split(":", 1)[1] for k in repo.blobs]
    assert streams[0] == "schema" and sorted(streams[1:]) == sorted(by_name)
    customers = repo.data(by_name["public.customers"].stream)
    assert customers.count(b"\n") == 4 and "Größe".encode() in customers
    assert b"\\t" in customers and b"\\\\N" in customers  # text COPY escapes, no raw tabs in values
    assert str(BIG).encode() in customers and b"\\\\x00ff10" in customers
    assert b"+05:30" not in customers and b"2024-03-01 07:04:56.789+00" in customers  # pinned TimeZone=UTC

    only = engine.dump(FakeRepo().write, tables=["customers", "public.events", "billing.invoices"], exclude=["events"])
    assert [t.qualified for t in only.tables] == ["billing.invoices", "public.customers"]
    with pytest.raises(GuardError, match="no table 'nope'"):
        engine.dump(FakeRepo().write, tables=["nope"])


def test_postgresql_full_restore_brings_back_data_schema_and_sequences(postgresql_url):
    pg_seed(postgresql_url)
    engine = engine_for(postgresql_url)
    rows, schema, sequences = pg_rows(postgresql_url), pg_schema(postgresql_url), pg_sequences(postgresql_url)
    repo = FakeRepo()
    dump = engine.dump(repo.write)
    pg_mutate(postgresql_url)
    assert pg_rows(postgresql_url) != rows

    engine.restore(dump, repo.read)
    assert pg_rows(postgresql_url) == rows
    # 'extra' is not in the snapshot: left alone (drop_tables removes what a migration created),
    # and its foreign key onto the restored customers table survives
    assert pg_schema(postgresql_url, "--exclude-table=public.extra") == schema
    assert pg_sequences(postgresql_url) == sequences
    with pg(postgresql_url) as conn:
        fks = conn.execute("SELECT conname FROM pg_constraint WHERE conrelid = 'extra'::regclass AND contype = 'f'")
        assert fks.fetchall() == [("extra_customer_id_fkey",)]
        assert conn.execute("SELECT count(*) FROM customer_names").fetchone() == (4,)
        # the enum is back to its two values: the type was dropped and recreated
        assert conn.execute("SELECT enum_range(NULL::tier)::text").fetchone() == ("{free,pro}",)
        assert conn.execute("SELECT doubled FROM customers WHERE id = 1").fetchone() == (2 * BIG,)
        conn.execute("INSERT INTO customers (name) VALUES ('next')")
        assert conn.execute("SELECT max(id) FROM customers").fetchone() == (5,)
        with pytest.raises(Exception, match="foreign key"):
            conn.execute("INSERT INTO customer_services (customer_id) VALUES (9999)")
    engine.drop_tables(["extra"])
    assert pg_schema(postgresql_url) == schema


def test_postgresql_partial_restore_touches_only_the_named_table(postgresql_url):
    pg_seed(postgresql_url)
    engine = engine_for(postgresql_url)
    rows = pg_rows(postgresql_url)
    table_schema = pg_schema(postgresql_url, "--table=public.customers")
    sequences = pg_sequences(postgresql_url)
    repo = FakeRepo()
    dump = engine.dump(repo.write)
    pg_mutate(postgresql_url)
    mutated = pg_rows(postgresql_url)
    mutated_sequences = pg_sequences(postgresql_url)

    engine.restore(dump, repo.read, tables=["customers"])
    after = pg_rows(postgresql_url)
    assert after["customers"] == rows["customers"]
    assert pg_schema(postgresql_url, "--table=public.customers") == table_schema  # column, index, trigger, comment
    for table in PG_TABLES:
        if table != "customers":
            assert after[table] == mutated[table], table  # untouched; no trigger fired during the load
    seqs = pg_sequences(postgresql_url)
    assert seqs["public.customers_id_seq"] == sequences["public.customers_id_seq"]
    assert seqs["public.customer_services_id_seq"] == mutated_sequences["public.customer_services_id_seq"]

    with pg(postgresql_url) as conn:
        referencing = conn.execute(
            "SELECT conrelid::regclass::text FROM pg_constraint WHERE confrelid = 'customers'::regclass ORDER BY 1"
        ).fetchall()
        assert referencing == [("billing.invoices",), ("customer_services",), ("extra",)]
        with pytest.raises(Exception, match="foreign key"):
            conn.execute("INSERT INTO customer_services (customer_id) VALUES (9999)")
        with pytest.raises(Exception, match="foreign key"):
            conn.execute("DELETE FROM customers WHERE id = 1")
        assert conn.execute("SELECT count(*) FROM customer_names").fetchone() == (4,)  # view recreated
        # the enum keeps its live value: types belong to no table
        assert conn.execute("SELECT enum_range(NULL::tier)::text").fetchone() == ("{free,pro,enterprise}",)
        conn.execute("INSERT INTO customers (name) VALUES ('after')")
        assert conn.execute("SELECT what FROM audit ORDER BY id DESC LIMIT 1").fetchone() == ("insert 5",)

    engine.restore(dump, repo.read, tables=["billing.invoices", "public.customer_services"])
    assert pg_rows(postgresql_url, ["billing.invoices", "customer_services"]) == {
        "billing.invoices": rows["billing.invoices"], "customer_services": rows["customer_services"]
    }  # fmt: skip
    with pytest.raises(GuardError, match="no table 'extra' in this snapshot"):
        engine.restore(dump, repo.read, tables=["extra"])


def test_postgresql_partial_restore_that_breaks_a_foreign_key_changes_nothing(postgresql_url):
    pg_seed(postgresql_url)
    engine = engine_for(postgresql_url)
    repo = FakeRepo()
    dump = engine.dump(repo.write)
    with pg(postgresql_url) as conn:
        conn.execute("INSERT INTO customers (id, name) VALUES (50, 'late')")
        conn.execute("INSERT INTO customer_services (customer_id, service) VALUES (50, 'needs 50')")
    mutated, schema = pg_rows(postgresql_url), pg_schema(postgresql_url)
    with pytest.raises(GuardError) as info:
        engine.restore(dump, repo.read, tables=["customers"])
    message = one_line(info.value)
    assert "customer_services_customer_id_fkey" in message and "nothing was changed" in message
    assert pg_rows(postgresql_url) == mutated and pg_schema(postgresql_url) == schema


def test_postgresql_unchanged_tables_give_identical_streams(postgresql_url):
    pg_seed(postgresql_url)
    engine = engine_for(postgresql_url)
    repo = FakeRepo()
    first = {t.qualified: repo.data(t.stream) for t in engine.dump(repo.write).tables}
    with pg(postgresql_url) as conn:
        conn.execute("UPDATE customer_services SET price = price + 1")
        conn.execute("VACUUM events")
    second = {t.qualified: repo.data(t.stream) for t in engine.dump(repo.write).tables}
    assert second["public.customer_services"] != first["public.customer_services"]
    for table in first:
        if table != "public.customer_services":
            assert second[table] == first[table], table  # incl. events, which has no primary key


class WriteLog(FakeRepo):
    """A FakeRepo that remembers which streams were written (not reused) by the last dump."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[str] = []

    def write(self, name: str, chunks) -> StreamRef:
        self.written.append(name)
        return super().write(name, chunks)


@pytest.mark.parametrize(
    "change, changed",
    [
        ("UPDATE customers SET notes = 'x' WHERE id = 2", {"public.customers"}),
        ("DELETE FROM events WHERE payload = 'a'", {"public.events"}),  # no primary key
        ("INSERT INTO billing.invoices (customer_id, amount) VALUES (1, 3)", {"billing.invoices"}),
        ("BEGIN; UPDATE customers SET notes = 'gone'; ROLLBACK", set()),  # rolled back: nothing changed
        ("VACUUM FULL customers", set()),  # rewritten, same tuples: nothing to read again
        # schema changes that leave every tuple as it was but change what COPY prints:
        ("ALTER TABLE events DROP COLUMN at; ALTER TABLE events ADD COLUMN at timestamptz", {"public.events"}),
        ("ALTER TYPE tier RENAME VALUE 'pro' TO 'professional'", None),  # types are fingerprinted as a whole: all
        ("ALTER TABLE customer_services ADD COLUMN note text DEFAULT 'fast default'", {"public.customer_services"}),
    ],
)
def test_postgresql_reuses_exactly_the_unchanged_tables(postgresql_url, change, changed):
    """A dump given the previous one reads again exactly the tables that changed, and its streams
    are byte for byte those of a dump that reads everything."""
    pg_seed(postgresql_url)
    pg_older_transactions_ended(postgresql_url)
    engine = engine_for(postgresql_url)
    repo = WriteLog()
    first = engine.dump(repo.write)
    assert all(t.marker for t in first.tables)
    previous = {t.qualified: t for t in first.tables}
    repo.written.clear()
    again = engine.dump(repo.write, previous=previous)
    assert repo.written == ["schema"] and [t.stream for t in again.tables] == [t.stream for t in first.tables]

    with pg(postgresql_url) as conn:
        for statement in change.split("; "):
            conn.execute(statement)
    repo.written.clear()
    incremental = engine.dump(repo.write, previous=previous)
    assert set(repo.written) - {"schema"} == (changed if changed is not None else set(previous))
    fresh = {t.qualified: (t.rows, repo.data(t.stream)) for t in incremental.tables}
    reference = FakeRepo()
    full = engine.dump(reference.write)
    assert fresh == {t.qualified: (t.rows, reference.data(t.stream)) for t in full.tables}


def test_postgresql_a_transaction_running_during_a_backup_is_seen_by_the_next(postgresql_url):
    """Rows a transaction writes while a backup runs, committed after it, make the next backup read
    that table again, although their xid is older than that backup's snapshot horizon."""
    pg_seed(postgresql_url)
    pg_older_transactions_ended(postgresql_url)
    engine = engine_for(postgresql_url)
    with pg(postgresql_url) as writer:
        writer.autocommit = False
        writer.execute("UPDATE customers SET notes = 'written during the backup' WHERE id = 2")
        repo = WriteLog()
        first = engine.dump(repo.write)  # the update is not in it
        writer.commit()
    repo.written.clear()
    second = engine.dump(repo.write, previous={t.qualified: t for t in first.tables})
    assert set(repo.written) == {"schema", "public.customers"}
    customers = next(t for t in second.tables if t.qualified == "public.customers")
    assert b"written during the backup" in repo.data(customers.stream)


def test_postgresql_markers_are_compared_only_while_xids_cannot_be_confused(postgresql_url):
    """A marker says how far the xid counter may move before one of its table's xmins (32 bits,
    frozen ones from any earlier epoch) could be handed out again; beyond that the table is read."""
    pg_seed(postgresql_url)
    pg_older_transactions_ended(postgresql_url)
    engine = engine_for(postgresql_url)
    repo = WriteLog()
    first = engine.dump(repo.write)
    with pg(postgresql_url) as conn:
        horizon = int(conn.execute("SELECT txid_snapshot_xmax(txid_current_snapshot())").fetchone()[0])
    for t in first.tables:
        prefix, xmin, distance, digest = t.marker.split(":")
        assert 0 <= horizon - int(xmin) <= int(distance) <= 2**32, t.marker  # fresh tables: far from a wrap
        t.marker = f"{prefix}:{xmin}:{horizon - int(xmin) - 1}:{digest}"  # as if an old xmin were just ahead
    repo.written.clear()
    engine.dump(repo.write, previous={t.qualified: t for t in first.tables})
    assert set(repo.written) == {"schema", *(t.qualified for t in first.tables)}


def test_postgresql_dump_is_one_snapshot_and_streams_in_pieces(postgresql_url):
    pg_seed(postgresql_url)
    with pg(postgresql_url) as conn:
        conn.execute("INSERT INTO events SELECT repeat(md5(i::text), 32), now() FROM generate_series(1, 4000) i")
    engine = engine_for(postgresql_url)
    repo = FakeRepo()
    seen = []

    def write(name, chunks):
        seen.append(name)
        if name == "schema":  # while the dump runs, another session commits rows
            with pg(postgresql_url) as other:
                other.execute("INSERT INTO customers (name) VALUES ('during the dump')")
                other.execute("INSERT INTO events VALUES ('during', now())")
        return repo.write(name, chunks)

    dump = engine.dump(write)
    by_name = {t.qualified: t for t in dump.tables}
    assert by_name["public.customers"].rows == 4 and by_name["public.events"].rows == 4003
    assert by_name["public.audit"].rows == 4
    assert engine.row_counts(["customers"]) == {"public.customers": 5}
    events = repo.pieces[by_name["public.events"].stream.blobs[0]]
    assert len(events) >= 3 and max(events) <= MIB + 4096  # ~1 MiB pieces, never the whole table

    engine.restore(dump, repo.read, tables=["events"])
    assert engine.row_counts(["events", "customers"]) == {"public.events": 4003, "public.customers": 5}


def test_postgresql_password_never_on_the_command_line(postgresql_url, monkeypatch):
    import migrate_guard.backup.engines.postgresql.dump as module  # its subprocess module is restore.py's too

    password = "s3cr:et\\pw"
    url = sa.engine.make_url(postgresql_url).set(password=password).render_as_string(hide_password=False)
    calls = []
    real_popen = subprocess.Popen

    class Recorder(real_popen):
        def __init__(self, args, *a, **kw):
            env = kw.get("env") or {}
            passfile = env.get("PGPASSFILE")
            mode = stat.S_IMODE(os.stat(passfile).st_mode) if passfile else None
            content = Path(passfile).read_text() if passfile else None
            calls.append((list(args), env.get("PGPASSWORD"), mode, content))
            super().__init__(args, *a, **kw)

    monkeypatch.setattr(module.subprocess, "Popen", Recorder)
    pg_seed(postgresql_url)
    engine = PostgreSQLEngine(url)  # trust authentication: the password is simply not checked
    repo = FakeRepo()
    dump = engine.dump(repo.write)
    engine.restore(dump, repo.read, tables=["events"])
    dumps = [c for c in calls if "--snapshot" in c[0]]
    assert len(dumps) == 1 and any("pg_restore" in c[0][0] for c in calls)
    for args, _env_password, _mode, _content in calls:
        assert not any("s3cr" in str(a) for a in args), args
    _args, env_password, mode, content = dumps[0]
    assert env_password is None and mode == 0o600 and content == "*:*:*:*:s3cr\\:et\\\\pw\n"


def test_postgresql_missing_or_old_tools_give_one_line(postgresql_url, monkeypatch, tmp_path):
    engine = PostgreSQLEngine(postgresql_url)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissing) as info:
        engine.check_tools()
    assert one_line(info.value) == "pg_dump not found: install it (Debian/Ubuntu: apt-get install postgresql-client)"
    with pytest.raises(ToolMissing):
        engine.dump(FakeRepo().write)

    for tool in ("pg_dump", "pg_restore"):
        script = tmp_path / tool
        script.write_text(f"#!/bin/sh\necho '{tool} (PostgreSQL) 9.6.24'\n")
        script.chmod(0o755)
    with pytest.raises(ToolMissing) as info:
        engine.check_tools()
    message = one_line(info.value)
    assert message.startswith("pg_dump 9.6.24 is older than the PostgreSQL") and "postgresql-client-" in message


def test_postgresql_drop_tables_and_connection_errors(postgresql_url):
    pg_seed(postgresql_url)
    engine = PostgreSQLEngine(postgresql_url)
    with pg(postgresql_url) as conn:
        conn.execute("CREATE TABLE created_by_migration (id int PRIMARY KEY, c bigint REFERENCES customers (id))")
    engine.drop_tables(["created_by_migration", "nope"])
    assert ("public", "created_by_migration") not in engine.list_tables()
    bad = PostgreSQLEngine(with_database(postgresql_url, "mg_no_such_db"))
    with pytest.raises(GuardError, match="cannot connect to PostgreSQL") as info:
        bad.list_tables()
    one_line(info.value)


def test_postgresql_full_restore_leaves_excluded_tables_and_their_foreign_keys(postgresql_url):
    pg_seed(postgresql_url)
    engine = engine_for(postgresql_url)
    rows = pg_rows(postgresql_url)
    repo = FakeRepo()
    dump = engine.dump(repo.write, exclude=["billing.invoices"])
    assert "billing.invoices" not in {t.qualified for t in dump.tables}
    with pg(postgresql_url) as conn:
        conn.execute("INSERT INTO billing.invoices (customer_id, amount) VALUES (4, 1)")
        conn.execute("UPDATE customers SET name = 'x'")
    invoices = pg_rows(postgresql_url, ["billing.invoices"])

    engine.restore(dump, repo.read)
    after = pg_rows(postgresql_url)
    assert after["billing.invoices"] == invoices["billing.invoices"]  # not in the snapshot: untouched
    assert after["customers"] == rows["customers"]
    with pg(postgresql_url) as conn:
        assert conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'billing.invoices'::regclass AND contype = 'f'"
        ).fetchall() == [("invoices_customer_id_fkey",)]
        assert conn.execute("SELECT nextval('billing.invoices_id_seq')").fetchone() == (4,)  # its sequence too


def test_postgresql_partitioned_tables_restore_as_a_tree(postgresql_url):
    with pg(postgresql_url) as conn:
        conn.execute(
            """
            CREATE TABLE measurements (id int, k int, v text, PRIMARY KEY (id, k)) PARTITION BY RANGE (k);
            CREATE TABLE measurements_low PARTITION OF measurements FOR VALUES FROM (0) TO (10);
            CREATE TABLE measurements_high PARTITION OF measurements FOR VALUES FROM (10) TO (20);
            CREATE INDEX ON measurements (v);
            INSERT INTO measurements VALUES (1, 1, 'a'), (2, 15, 'b');
            """
        )
    engine = engine_for(postgresql_url)
    repo = FakeRepo()
    dump = engine.dump(repo.write)
    assert {t.qualified: t.rows for t in dump.tables} == {
        "public.measurements": 0, "public.measurements_high": 1, "public.measurements_low": 1
    }  # fmt: skip
    with pg(postgresql_url) as conn:
        conn.execute("INSERT INTO measurements VALUES (3, 3, 'c'); DELETE FROM measurements WHERE k = 15")
    with pytest.raises(GuardError, match="is a partition") as info:
        engine.restore(dump, repo.read, tables=["measurements_low"])
    one_line(info.value)
    engine.restore(dump, repo.read, tables=["measurements", "measurements_low", "measurements_high"])
    with pg(postgresql_url) as conn:
        assert conn.execute("SELECT id, k, v FROM measurements ORDER BY k").fetchall() == [(1, 1, "a"), (2, 15, "b")]
    engine.restore(dump, repo.read)
    assert engine.row_counts() == {t.qualified: t.rows for t in dump.tables}


def test_postgresql_restore_as_the_owning_non_superuser(postgresql_url):
    import uuid

    import psycopg

    role = f"mg_app_{uuid.uuid4().hex[:8]}"
    url = sa.engine.make_url(postgresql_url)
    with pg(postgresql_url) as admin:
        try:
            admin.execute(f'CREATE ROLE "{role}" LOGIN')
        except psycopg.errors.InsufficientPrivilege:
            pytest.skip("needs a role that may CREATE ROLE")
    try:
        with pg(postgresql_url) as admin:
            admin.execute(f'ALTER DATABASE "{url.database}" OWNER TO "{role}"')
            admin.execute(f'ALTER SCHEMA public OWNER TO "{role}"')
            admin.execute("CREATE EXTENSION IF NOT EXISTS citext")  # its COMMENT is not ours to restore
        app_url = url.set(username=role).render_as_string(hide_password=False)
        with pg(app_url) as conn:
            conn.execute("CREATE TABLE people (id serial PRIMARY KEY, email citext UNIQUE)")
            conn.execute("CREATE TABLE visits (person_id int REFERENCES people (id))")
            conn.execute("INSERT INTO people (email) VALUES ('A@x'); INSERT INTO visits VALUES (1)")
        engine = engine_for(app_url)
        repo = FakeRepo()
        dump = engine.dump(repo.write)
        with pg(app_url) as conn:
            conn.execute("INSERT INTO people (email) VALUES ('b@x'); ALTER TABLE people DROP COLUMN email")
        engine.restore(dump, repo.read)
        engine.restore(dump, repo.read, tables=["people"])
        with pg(app_url) as conn:
            assert conn.execute("SELECT id, email::text FROM people").fetchall() == [(1, "A@x")]
            assert conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'people'").fetchone() == (role,)
    finally:
        with pg(postgresql_url) as admin:
            admin.execute(f'ALTER DATABASE "{url.database}" OWNER TO "{url.username}"')
            admin.execute(f'REASSIGN OWNED BY "{role}" TO "{url.username}"')
            admin.execute(f'DROP OWNED BY "{role}"')
        with pg(with_database(postgresql_url, "postgres")) as admin:
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_sqlite_full_restore_into_a_new_file(sqlite_url, tmp_path):
    sqlite_seed(sqlite_url)
    repo = FakeRepo()
    dump = engine_for(sqlite_url).dump(repo.write)
    target = f"sqlite:///{tmp_path / 'scratch' / 'copy.db'}"
    (tmp_path / "scratch").mkdir()
    engine_for(target).restore(dump, repo.read)
    assert sqlite_state(target) == sqlite_state(sqlite_url)


def test_postgresql_full_restore_into_an_empty_database(postgresql_url):
    import uuid

    pg_seed(postgresql_url)
    repo = FakeRepo()
    dump = engine_for(postgresql_url).dump(repo.write)
    name = f"mg_test_{uuid.uuid4().hex[:10]}"
    admin_url = with_database(postgresql_url, "postgres")
    with pg(admin_url) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        target = with_database(postgresql_url, name)
        engine = engine_for(target)
        engine.restore(dump, repo.read)  # as a verify does, into a scratch database
        assert pg_rows(target) == pg_rows(postgresql_url)
        assert pg_schema(target) == pg_schema(postgresql_url)
        assert pg_sequences(target) == pg_sequences(postgresql_url)
        assert engine.row_counts() == {t.qualified: t.rows for t in dump.tables}
    finally:
        with pg(admin_url) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
