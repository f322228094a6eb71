"""The MariaDB/MySQL backup engine against the real local MariaDB server and the real mariadb-dump /
mariadb tools, with an in-memory repository (a dict of chunks)."""

from __future__ import annotations

import os
import random
import stat
import subprocess
import uuid
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from migrate_guard.backup.engines import engine_for
from migrate_guard.backup.engines import mysql as mysql_engine
from migrate_guard.backup.engines.base import StreamRef, ToolMissing
from migrate_guard.backup.engines.mysql import MySQLEngine, RowCounter, _events
from migrate_guard.errors import GuardError

pytestmark = pytest.mark.mariadb

ALL_BYTES = bytes(range(256))
BIG = 2**53 + 12345  # not representable as a double
TRICKY = [
    "it's",
    'say "hi"',
    "back\\slash",
    "ends with a backslash\\",
    "\\'",
    "'),('",
    "),(",
    "(((",
    "new\nline\r\nand\ttab",
    "NUL\x00byte and ctrl-Z\x1a",
    "--\n-- Table structure for table `customers`\n--\n",
    "--\n-- Dumping data for table `customers`\n--\n",
    "\nUNLOCK TABLES;\n",
    "\n/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n",
    "`backticks` and `(`",
    "emoji 😀🎉, umlauts äöüß ÄÖÜ, tiếng Việt có dấu",
    "",
]


class FakeRepo:
    """The repository as the engine sees it: write a stream under a key, read it back."""

    def __init__(self) -> None:
        self.blobs: dict[str, list[bytes]] = {}
        self.names: list[str] = []

    def write(self, name: str, chunks: Iterable[bytes]) -> StreamRef:
        key = uuid.uuid4().hex
        data = [bytes(c) for c in chunks]
        self.blobs[key] = data
        self.names.append(name)
        return StreamRef(blobs=[key], bytes=sum(map(len, data)))

    def read(self, ref: StreamRef) -> Iterator[bytes]:
        for key in ref.blobs:
            yield from self.blobs[key]

    def data(self, ref: StreamRef) -> bytes:
        return b"".join(self.read(ref))


def sql(url: str, *statements: str, params: tuple | None = None) -> list:
    """Run statements in one autocommit connection; the last one's rows."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            result = None
            for s in statements:
                result = conn.exec_driver_sql(s, params) if params is not None else conn.exec_driver_sql(s)
            return list(result.fetchall()) if result is not None and result.returns_rows else []
    finally:
        engine.dispose()


def tables_of(url: str) -> list[str]:
    return [r[0] for r in sql(url, "SHOW FULL TABLES WHERE Table_type = 'BASE TABLE'")]


def snapshot_state(url: str, tables: Iterable[str]) -> dict[str, tuple[str, list]]:
    """SHOW CREATE TABLE and every row (by primary key) of each table."""
    state = {}
    for t in tables:
        q = "`" + t.replace("`", "``") + "`"
        create = sql(url, f"SHOW CREATE TABLE {q}")[0][1]
        rows = sql(url, f"SELECT * FROM {q} ORDER BY 1")
        state[t] = (create, rows)
    return state


ODD = "we`ird 'name' (x)"
ODD_Q = "`we``ird 'name' (x)`"


def populate(url: str, bulk_rows: int = 20000) -> None:
    sql(
        url,
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY) DEFAULT CHARSET=utf8mb4",
        "INSERT INTO alembic_version VALUES ('0004')",
        "CREATE TABLE customers (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL,"
        " balance DECIMAL(12,2), created DATETIME(6), touched TIMESTAMP NULL DEFAULT NULL)"
        " DEFAULT CHARSET=utf8mb4",
        "CREATE TABLE customer_services (id BIGINT PRIMARY KEY, customer_id INT NOT NULL, note TEXT,"
        " CONSTRAINT fk_cs_customer FOREIGN KEY (customer_id) REFERENCES customers (id))"
        " DEFAULT CHARSET=utf8mb4",
        "CREATE TABLE samples (id INT PRIMARY KEY, big BIGINT, neg BIGINT, price DECIMAL(30,10),"
        " doc JSON, payload BLOB, raw VARBINARY(256), txt TEXT, uni VARCHAR(200), stamp TIMESTAMP(3) NULL,"
        " `odd (col) 'q'` INT, flags BIT(5)) DEFAULT CHARSET=utf8mb4",
        f"CREATE TABLE {ODD_Q} (id INT PRIMARY KEY, v VARCHAR(50)) DEFAULT CHARSET=utf8mb4",
        "CREATE TABLE bulk (id INT PRIMARY KEY, txt TEXT, bin VARBINARY(64)) DEFAULT CHARSET=utf8mb4",
        "CREATE TABLE notes (id INT PRIMARY KEY, body TEXT) DEFAULT CHARSET=utf8mb4",
        "CREATE TABLE empty_one (id INT PRIMARY KEY) DEFAULT CHARSET=utf8mb4",
        "CREATE VIEW customer_names AS SELECT name FROM customers",
        # a trigger that would corrupt rows if it fired during a restore's load
        "CREATE TRIGGER notes_bi BEFORE INSERT ON notes FOR EACH ROW SET NEW.body = CONCAT(NEW.body, ' [trigger]')",
    )
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        x = conn.exec_driver_sql
        x(
            "INSERT INTO customers (id, name, balance, created, touched) VALUES (%s, %s, %s, %s, %s)",
            [
                (1, "Ada O'Brien", Decimal("1234.50"), "2024-02-29 23:59:59.123456", "2024-03-01 01:02:03"),
                (2, "Jürgen Größe", Decimal("-0.01"), None, None),
                (3, "Nguyễn Thị Minh Khai 😀", Decimal("9999999999.99"), "1999-12-31 00:00:00", "2038-01-19 03:14:07"),
                (4, "),(", None, "2000-01-01 00:00:00.000001", None),
            ],
        )
        x(
            "INSERT INTO customer_services VALUES (%s, %s, %s)",
            [(10, 1, "gold"), (11, 1, None), (12, 3, "line\nbreak"), (13, 4, "'),('")],
        )
        rows = []
        for i, s in enumerate(TRICKY):
            rows.append(
                (
                    i + 1,
                    BIG + i,
                    -BIG - i,
                    Decimal("12345678901234567890.0123456789") if i % 2 else None,
                    '{"k": "v\\"q", "n": [1, 2.5, null], "u": "é😀"}' if i % 3 else None,
                    ALL_BYTES if i % 2 == 0 else None,
                    bytes(reversed(ALL_BYTES)) if i % 2 else ALL_BYTES[:i],
                    s,
                    s[:200] or None,
                    "2024-06-01 12:00:00.500" if i % 2 else None,
                    i,
                    i % 32,
                )
            )
        x("INSERT INTO samples VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)
        x(f"INSERT INTO {ODD_Q} VALUES (1, 'x'), (2, NULL)")
        rnd = random.Random(7)
        x(
            "INSERT INTO bulk VALUES (%s, %s, %s)",
            [
                (i, TRICKY[i % len(TRICKY)] + " " + str(i) * rnd.randint(1, 40), rnd.randbytes(rnd.randint(0, 64)))
                for i in range(bulk_rows)
            ],
        )
        x("INSERT INTO notes VALUES (1, 'first'), (2, 'second')")
    engine.dispose()


@pytest.fixture
def db(mariadb_url: str) -> str:
    populate(mariadb_url)
    return mariadb_url


@pytest.fixture
def other_db(mariadb_url: str) -> Iterator[str]:
    """A second fresh database on the same server."""
    name = f"mg_test_{uuid.uuid4().hex[:10]}"
    sql(mariadb_url, f"CREATE DATABASE `{name}`")
    try:
        yield sa.engine.make_url(mariadb_url).set(database=name).render_as_string(hide_password=False)
    finally:
        sql(mariadb_url, f"DROP DATABASE IF EXISTS `{name}`")


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text.strip(), text
    assert "Traceback" not in text
    return text


# --- tools ------------------------------------------------------------------------------------------------


def test_engine_for_mysql_and_mariadb_urls():
    assert isinstance(engine_for("mysql+pymysql://root@127.0.0.1:3306/db"), MySQLEngine)
    assert isinstance(engine_for("mariadb+pymysql://root@127.0.0.1/db"), MySQLEngine)
    assert MySQLEngine.dialect == "mysql"


def test_missing_tools_name_the_package(monkeypatch, tmp_path: Path, mariadb_url: str):
    monkeypatch.setenv("PATH", str(tmp_path))
    engine = MySQLEngine(mariadb_url)
    with pytest.raises(ToolMissing, match="mariadb-client") as info:
        engine.check_tools()
    assert "mariadb-dump not found" in one_line(info.value)
    with pytest.raises(ToolMissing, match="mariadb-client"):
        engine.dump(FakeRepo().write)
    # the dump tool alone is not enough: the client is needed to restore
    (tmp_path / "mariadb-dump").symlink_to("/usr/bin/mariadb-dump")
    with pytest.raises(ToolMissing, match="mariadb-client") as info:
        engine.check_tools()
    assert "mariadb not found" in str(info.value)
    (tmp_path / "mariadb").symlink_to("/usr/bin/mariadb")
    engine.check_tools()


# --- dump -----------------------------------------------------------------------------------------------------


def test_dump_counts_rows_exactly_and_records_foreign_keys(db: str):
    repo = FakeRepo()
    engine = MySQLEngine(db)
    result = engine.dump(repo.write)
    names = [t.name for t in result.tables]
    assert sorted(names) == sorted(tables_of(db))
    assert "alembic_version" in names and "customer_names" not in names  # views are not tables
    counts = engine.row_counts()
    assert {t.name: t.rows for t in result.tables} == counts
    assert counts["samples"] == len(TRICKY) and counts["bulk"] == 20000 and counts["empty_one"] == 0
    by_name = {t.name: t for t in result.tables}
    assert by_name["customer_services"].depends_on == ["customers"]
    assert by_name["customers"].depends_on == []
    assert all(t.schema is None and t.qualified == t.name for t in result.tables)
    assert result.engine["tool"] == "mariadb-dump" and result.engine["version"].startswith("10.")
    # the schema stream holds every CREATE TABLE and no rows; each table stream its rows and no DDL
    schema = repo.data(result.schema)
    assert schema.count(b"CREATE TABLE") == len(names)
    assert b"INSERT INTO" not in schema
    for t in result.tables:
        data = repo.data(t.stream)
        assert t.stream.bytes == len(data)
        assert b"CREATE TABLE" not in data
        assert data.count(b"INSERT INTO") >= (1 if t.rows else 0)
    assert b"CREATE*/ /*!50017 DEFINER" in repo.data(by_name["notes"].stream)  # the trigger goes with its table
    assert b"TIME_ZONE=@OLD_TIME_ZONE" not in repo.data(result.tables[-1].stream)  # the footer is schema


def test_dump_selection_and_exclude(db: str):
    engine = MySQLEngine(db)
    result = engine.dump(FakeRepo().write, tables=["customers", "customer_services", "notes"], exclude=["notes"])
    assert [t.name for t in result.tables] == ["customers", "customer_services"]
    result = engine.dump(FakeRepo().write, exclude=["bulk"])
    assert "bulk" not in [t.name for t in result.tables] and "customers" in [t.name for t in result.tables]
    with pytest.raises(GuardError, match="no such table"):
        engine.dump(FakeRepo().write, tables=["nope"])


def test_list_tables_is_this_database_only(db: str, other_db: str):
    sql(other_db, "CREATE TABLE elsewhere (id INT PRIMARY KEY)")
    tables = MySQLEngine(db).list_tables()
    assert (None, "alembic_version") in tables and (None, ODD) in tables
    assert all(schema is None for schema, _ in tables)
    assert "elsewhere" not in [n for _, n in tables] and "customer_names" not in [n for _, n in tables]
    assert MySQLEngine(other_db).list_tables() == [(None, "elsewhere")]


def test_unchanged_tables_give_byte_identical_streams(db: str):
    engine = MySQLEngine(db)
    repo = FakeRepo()
    first = {t.name: repo.data(t.stream) for t in engine.dump(repo.write).tables}
    sql(
        db,
        "UPDATE samples SET txt = 'changed' WHERE id = 1",
        "CREATE TABLE zzz_new (id INT PRIMARY KEY)",  # sorts last: the previous last table must not change
        "INSERT INTO zzz_new VALUES (1)",
    )
    second = {t.name: repo.data(t.stream) for t in engine.dump(repo.write).tables}
    assert second.keys() == first.keys() | {"zzz_new"}
    for name, data in first.items():
        if name == "samples":
            assert second[name] != data
        else:
            assert second[name] == data, name


def test_tiny_pieces_split_and_count_the_same(db: str, monkeypatch):
    """Markers, quotes and escapes cut at every possible place between two reads of the dump."""
    engine = MySQLEngine(db)
    repo = FakeRepo()
    normal = engine.dump(repo.write)
    monkeypatch.setattr(mysql_engine, "PIECE", 61)
    tiny = engine.dump(repo.write)
    assert [(t.name, t.rows) for t in tiny.tables] == [(t.name, t.rows) for t in normal.tables]
    for a, b in zip(normal.tables, tiny.tables, strict=True):
        assert repo.data(a.stream) == repo.data(b.stream)
    assert repo.data(normal.schema) == repo.data(tiny.schema)


def test_row_counter_on_every_cut(db: str):
    engine = MySQLEngine(db)
    repo = FakeRepo()
    table = next(t for t in engine.dump(repo.write, tables=["samples"]).tables)
    data = repo.data(table.stream)
    rows_part = data[: data.index(b"\nUNLOCK TABLES;\n")]
    whole = RowCounter()
    whole.feed(rows_part)
    assert whole.rows == len(TRICKY)
    for size in (1, 2, 3, 5, 64):
        counter = RowCounter()
        for i in range(0, len(rows_part), size):
            counter.feed(rows_part[i : i + size])
        assert counter.rows == len(TRICKY), size
    # the older one-line extended INSERT format (mysqldump) counts the same
    one_line_format = rows_part.replace(b"\n(", b"(")
    assert one_line_format.count(b"\n(") == 0
    for size in (1, 7, 1 << 20):
        counter = RowCounter()
        for i in range(0, len(one_line_format), size):
            counter.feed(one_line_format[i : i + size])
        assert counter.rows == len(TRICKY)


def test_events_reassemble_the_input():
    dump = (
        b"-- header\n\n--\n-- Table structure for table `a`\n--\n\nCREATE TABLE `a` (x int);\n\n"
        b"--\n-- Dumping data for table `a`\n--\n\nINSERT INTO `a` VALUES\n(1),\n(2);\nUNLOCK TABLES;\n"
        b"/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n-- Dump completed\n"
    )
    for size in range(1, len(dump) + 1):
        events = list(_events(dump[i : i + size] for i in range(0, len(dump), size)))
        assert b"".join(e[1] for e in events) == dump
        assert [(k, n) for k, _, n in events if k != "text"] == [
            ("structure", "a"),
            ("data", "a"),
            ("unlock", None),
            ("footer", None),
        ]


# --- restore --------------------------------------------------------------------------------------------------


def mutate(url: str) -> None:
    sql(
        url,
        "UPDATE customers SET name = 'renamed', balance = 0 WHERE id = 1",
        "DELETE FROM customer_services WHERE id = 13",
        "DELETE FROM customers WHERE id = 4",
        "INSERT INTO customers (id, name) VALUES (50, 'new')",
        "INSERT INTO customer_services VALUES (99, 50, 'new service')",
        "UPDATE samples SET txt = 'x' WHERE id < 5",
        "ALTER TABLE samples DROP COLUMN raw",
        "ALTER TABLE customers ADD COLUMN extra INT NOT NULL DEFAULT 7",
        "DELETE FROM bulk WHERE id %% 3 = 0",
        "DROP TABLE notes",
        f"RENAME TABLE {ODD_Q} TO renamed_odd",
        "CREATE TABLE added_later (id INT PRIMARY KEY)",
    )


def test_full_restore_brings_back_rows_and_schema(db: str):
    engine = MySQLEngine(db)
    repo = FakeRepo()
    before = snapshot_state(db, tables_of(db))
    dump = engine.dump(repo.write)
    mutate(db)
    engine.restore(dump, repo.read)
    after = snapshot_state(db, [t.name for t in dump.tables])
    for name in before:
        assert after[name][0] == before[name][0], name  # SHOW CREATE TABLE
        assert after[name][1] == before[name][1], name  # every row, every value
    assert engine.row_counts([t.name for t in dump.tables]) == {t.name: t.rows for t in dump.tables}
    # tables created after the snapshot are left alone (migrate-safe drops them with drop_tables)
    assert {"added_later", "renamed_odd"} <= set(tables_of(db))
    # the trigger came back, after the rows (it did not fire on them) and works
    assert [r[0] for r in sql(db, "SHOW TRIGGERS")] == ["notes_bi"]
    sql(db, "INSERT INTO notes VALUES (3, 'third')")
    assert sql(db, "SELECT body FROM notes WHERE id = 3")[0][0] == "third [trigger]"
    # spot checks of the awkward values, read back from the server
    row = sql(db, "SELECT big, neg, raw, payload, txt, uni FROM samples WHERE id = 2")[0]
    assert row[0] == BIG + 1 and row[1] == -BIG - 1 and row[2] == bytes(reversed(ALL_BYTES))
    assert sql(db, "SELECT payload FROM samples WHERE id = 1")[0][0] == ALL_BYTES
    emoji = TRICKY.index("emoji 😀🎉, umlauts äöüß ÄÖÜ, tiếng Việt có dấu") + 1
    assert sql(db, "SELECT txt FROM samples WHERE id = %s", params=(emoji,))[0][0] == TRICKY[emoji - 1]
    # foreign keys are enforced again
    with pytest.raises(sa.exc.IntegrityError):
        sql(db, "INSERT INTO customer_services VALUES (500, 12345, 'orphan')")


def test_partial_restore_of_one_table(db: str):
    engine = MySQLEngine(db)
    repo = FakeRepo()
    before = snapshot_state(db, ["customers", "customer_services", "samples"])
    dump = engine.dump(repo.write)
    sql(
        db,
        "UPDATE customers SET name = 'renamed' WHERE id = 1",
        "INSERT INTO customers (id, name) VALUES (60, 'new')",
        "ALTER TABLE customers ADD COLUMN extra INT NOT NULL DEFAULT 7",
        "UPDATE customer_services SET note = 'mutated' WHERE id = 10",
        "ALTER TABLE samples DROP COLUMN uni",
    )
    mutated_services = sql(db, "SELECT * FROM customer_services ORDER BY id")
    mutated_samples = snapshot_state(db, ["samples"])["samples"]
    engine.restore(dump, repo.read, tables=["customers"])
    after = snapshot_state(db, ["customers", "customer_services", "samples"])
    assert after["customers"] == before["customers"]
    assert after["customer_services"][1] == mutated_services  # other tables keep their mutations
    assert after["customer_services"][0] == before["customer_services"][0]  # its FK is still defined
    assert after["samples"] == mutated_samples
    # the FK from customer_services to the re-created customers is still enforced, both ways
    with pytest.raises(sa.exc.IntegrityError):
        sql(db, "INSERT INTO customer_services VALUES (500, 60, 'points at a customer the restore removed')")
    with pytest.raises(sa.exc.IntegrityError):
        sql(db, "DELETE FROM customers WHERE id = 1")
    sql(db, "INSERT INTO customer_services VALUES (501, 2, 'fine')")
    # a table whose schema changed comes back exactly as in the snapshot
    engine.restore(dump, repo.read, tables=["samples"])
    assert snapshot_state(db, ["samples"])["samples"] == before["samples"]
    with pytest.raises(GuardError, match="no table"):
        engine.restore(dump, repo.read, tables=["not_in_snapshot"])


def test_restore_into_another_database(db: str, other_db: str):
    """What `verify --read-data` does: restore into a fresh scratch database and count."""
    repo = FakeRepo()
    dump = MySQLEngine(db).dump(repo.write)
    target = MySQLEngine(other_db)
    target.restore(dump, repo.read)
    assert target.row_counts() == {t.name: t.rows for t in dump.tables}
    names = [t.name for t in dump.tables]
    assert snapshot_state(other_db, names) == snapshot_state(db, names)


def test_restore_errors_are_one_line_guard_errors(db: str):
    engine = MySQLEngine(db)
    repo = FakeRepo()
    dump = engine.dump(repo.write, tables=["customers", "notes"])
    notes = next(t for t in dump.tables if t.name == "notes")
    repo.blobs[notes.stream.blobs[0]] = [
        b"INSERT INTO `notes` VALUES (1, 'unterminated);\n",
        b"INSERT INTO nowhere VALUES (1);\n",
    ]
    with pytest.raises(GuardError) as info:
        engine.restore(dump, repo.read)
    message = one_line(info.value)
    assert message.startswith("restore of database") and "ERROR 1064" in message
    repo.blobs[notes.stream.blobs[0]] = [b"INSERT INTO nowhere VALUES (1);\n"]
    with pytest.raises(GuardError) as info:
        engine.restore(dump, repo.read, tables=["notes"])
    assert "restore of table(s) notes failed: ERROR 1146" in one_line(info.value)
    assert "doesn't exist" in str(info.value)
    with pytest.raises(GuardError) as info:
        MySQLEngine(sa.engine.make_url(db).set(username="no_such_user_mg").render_as_string(False)).dump(repo.write)
    assert "Access denied" in one_line(info.value)


def test_dump_tool_errors_are_one_line_guard_errors(db: str, monkeypatch):
    monkeypatch.setattr(mysql_engine, "DUMP_OPTIONS", [*mysql_engine.DUMP_OPTIONS, "--where=no_such_column = 1"])
    with pytest.raises(GuardError) as info:
        MySQLEngine(db).dump(FakeRepo().write, tables=["notes"])
    message = one_line(info.value)
    assert message.startswith("mariadb-dump failed") and "no_such_column" in message


def test_one_snapshot_for_all_tables(db: str):
    """Writes committed while the dump runs (here: while the first table is being stored) are in
    none of its tables: every table comes from the same read view."""
    repo = FakeRepo()
    seen: list[str] = []

    def write(name, chunks):
        if not seen:
            sql(
                db,
                "INSERT INTO samples (id) VALUES (1000)",
                "DELETE FROM customer_services WHERE id = 10",
                "INSERT INTO customers (id, name) VALUES (77, 'late')",
                "DELETE FROM bulk WHERE id < 100",
            )
        seen.append(name)
        return repo.write(name, chunks)

    result = MySQLEngine(db).dump(write)
    assert seen[0] == "alembic_version"  # dumped first; the others after the concurrent writes
    rows = {t.name: t.rows for t in result.tables}
    assert rows["samples"] == len(TRICKY) and rows["customer_services"] == 4
    assert rows["customers"] == 4 and rows["bulk"] == 20000
    assert b"'late'" not in repo.data(next(t for t in result.tables if t.name == "customers").stream)


def test_password_goes_through_a_private_option_file(mariadb_url: str, monkeypatch):
    user = f"mg_u_{uuid.uuid4().hex[:8]}"
    password = "p#a\"s s\\w'o;rd$"
    database = sa.engine.make_url(mariadb_url).database
    sql(mariadb_url, f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", params=(password,))
    try:
        sql(mariadb_url, f"GRANT ALL PRIVILEGES ON `{database}`.* TO '{user}'@'%%'")
        url = sa.engine.make_url(mariadb_url)
        url = f"mysql+pymysql://{user}:{quote(password, safe='')}@{url.host}:{url.port or 3306}/{database}"
        sql(url, "CREATE TABLE t (id INT PRIMARY KEY, v TEXT)", "INSERT INTO t VALUES (1, 'a'), (2, 'b')")
        seen: list[tuple[list[str], int]] = []
        real_popen = subprocess.Popen

        def spy(cmd, *args, **kwargs):
            extra = [a for a in cmd if a.startswith("--defaults-extra-file=")]
            assert extra and cmd[1] == extra[0]  # must be the first option
            path = extra[0].split("=", 1)[1]
            seen.append((list(cmd), stat.S_IMODE(os.stat(path).st_mode)))
            seen[-1][0].append(path)
            return real_popen(cmd, *args, **kwargs)

        monkeypatch.setattr(mysql_engine.subprocess, "Popen", spy)
        engine = MySQLEngine(url)
        repo = FakeRepo()
        dump = engine.dump(repo.write)
        sql(url, "DELETE FROM t")
        engine.restore(dump, repo.read)
        assert engine.row_counts() == {"t": 2}
        assert len(seen) == 2
        for cmd, mode in seen:
            assert mode == 0o600
            assert not any(password in part for part in cmd)
            assert not os.path.exists(cmd[-1])  # deleted afterwards
    finally:
        sql(mariadb_url, f"DROP USER IF EXISTS '{user}'@'%%'")


# --- row counts, drop ---------------------------------------------------------------------------------------


def test_row_counts_and_drop_tables(db: str):
    engine = MySQLEngine(db)
    assert engine.row_counts(["customers", ODD]) == {"customers": 4, ODD: 2}
    assert engine.row_counts()["bulk"] == 20000
    engine.drop_tables(["customers", "empty_one", "never_existed"])  # customers is referenced: FK checks off
    assert "customers" not in tables_of(db) and "empty_one" not in tables_of(db)
    assert "customer_services" in tables_of(db)
