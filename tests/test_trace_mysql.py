"""trace/mysql.py: asking MariaDB which algorithm and lock an ALTER takes, by running it once with the
strictest clause the server accepts (the measured table is in the module's docstring)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from sqlalchemy.engine import make_url

from migrate_guard.trace.mysql import ATTEMPTS, Probe, blocks_for, execute_probed

INSTANT, INPLACE_NONE, INPLACE_SHARED, INPLACE_EXCLUSIVE, COPY_NONE, COPY_SHARED, COPY_EXCLUSIVE = (
    a.clause for a in ATTEMPTS
)
WRITES_DDL = ["INSERT/UPDATE/DELETE", "DDL"]


class Recording:
    """A DBAPI cursor that remembers every statement sent through it."""

    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor
        self.sent: list[str] = []

    def execute(self, sql: str, args: Any = None) -> Any:
        self.sent.append(sql)
        return self.cursor.execute(sql, args)

    def __getattr__(self, name: str) -> Any:  # connection, rowcount, fetchall, ...
        return getattr(self.cursor, name)


@pytest.fixture
def db(mariadb_url: str) -> Iterator[Recording]:
    url = make_url(mariadb_url)
    conn = pymysql.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 3306,
        user=url.username or "root",
        password=url.password or "",
        database=url.database,
        autocommit=True,
    )
    cursor = conn.cursor()
    cursor.execute("CREATE TABLE t (id INT PRIMARY KEY, a INT, b VARCHAR(10), c INT, KEY ka (a)) ENGINE=InnoDB")
    cursor.execute("INSERT INTO t SELECT seq, seq, 'xxxxx', seq FROM seq_1_to_50")
    try:
        yield Recording(cursor)
    finally:
        conn.close()


def query(db: Recording, sql: str) -> list[tuple[Any, ...]]:
    db.cursor.execute(sql)
    return list(db.cursor.fetchall())


def columns(db: Recording, table: str = "t") -> dict[str, str]:
    rows = query(
        db,
        "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS "
        f"WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table}' ORDER BY ORDINAL_POSITION",
    )
    return {name: kind for name, kind in rows}


def indexes(db: Recording, table: str = "t") -> dict[str, list[str]]:
    rows = query(
        db,
        "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS "
        f"WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table}' ORDER BY INDEX_NAME, SEQ_IN_INDEX",
    )
    found: dict[str, list[str]] = {}
    for name, column in rows:
        found.setdefault(name, []).append(column)
    return found


def create_table(db: Recording) -> str:
    return str(query(db, "SHOW CREATE TABLE t")[0][1])


def refusals(probe: Probe) -> list[str]:
    return [entry.split(":")[0] for entry in probe.tried]


# --- the algorithms, each applied once -----------------------------------------------------------


def test_add_column_at_the_end_is_instant_and_blocks_nothing(db):
    probe = execute_probed(db, "ALTER TABLE t ADD COLUMN d INT")
    assert probe == Probe("instant", "none", [], "t", [])
    assert db.sent == ["ALTER TABLE t ALGORITHM=INSTANT, ADD COLUMN d INT"]
    assert list(columns(db)) == ["id", "a", "b", "c", "d"]


def test_add_index_is_in_place_without_a_lock_and_built_once(db):
    probe = execute_probed(db, "ALTER TABLE t ADD INDEX (b)")  # unnamed: run twice it would make b and b_2
    assert (probe.algorithm, probe.lock, probe.blocks, probe.table) == ("inplace", "none", ["DDL"], "t")
    assert refusals(probe) == [INSTANT] and "ALGORITHM=INSTANT is not supported" in probe.tried[0]
    assert db.sent == [f"ALTER TABLE t {INSTANT}, ADD INDEX (b)", f"ALTER TABLE t {INPLACE_NONE}, ADD INDEX (b)"]
    assert indexes(db) == {"PRIMARY": ["id"], "b": ["b"], "ka": ["a"]}


def test_a_type_change_is_a_copy_that_blocks_writes_not_reads(db):
    probe = execute_probed(db, "ALTER TABLE t MODIFY c VARCHAR(20) NULL")
    assert (probe.algorithm, probe.lock, probe.blocks) == ("copy", "shared", WRITES_DDL)
    assert refusals(probe) == [INSTANT, INPLACE_NONE, INPLACE_SHARED, INPLACE_EXCLUSIVE, COPY_NONE]
    assert all("is not supported" in entry for entry in probe.tried)
    assert "Cannot change column type" in probe.tried[0]
    assert "COPY algorithm requires a lock" in probe.tried[-1]
    assert len(db.sent) == 6 and db.sent[-1] == f"ALTER TABLE t {COPY_SHARED}, MODIFY c VARCHAR(20) NULL"
    assert columns(db)["c"] == "varchar(20)"
    assert query(db, "SELECT c FROM t WHERE id = 7") == [("7",)]


def test_primary_keys(db):
    probe = execute_probed(db, "ALTER TABLE t DROP PRIMARY KEY")
    assert (probe.algorithm, probe.lock, probe.blocks) == ("copy", "shared", WRITES_DDL)
    assert "Dropping a primary key is not allowed without also adding a new primary key" in probe.tried[0]
    assert "PRIMARY" not in indexes(db)
    probe = execute_probed(db, "ALTER TABLE t ADD CONSTRAINT pk PRIMARY KEY (id, a)")
    assert (probe.algorithm, probe.lock, probe.blocks) == ("inplace", "none", ["DDL"])
    assert indexes(db)["PRIMARY"] == ["id", "a"]
    probe = execute_probed(db, "ALTER TABLE t DROP PRIMARY KEY, ADD PRIMARY KEY (id)")
    assert (probe.algorithm, probe.lock) == ("inplace", "none")
    assert indexes(db)["PRIMARY"] == ["id"]


def test_create_index_takes_the_clause_at_its_end_without_a_comma(db):
    probe = execute_probed(db, "CREATE INDEX ix_b ON t (b);  -- for the lookups\n")
    assert (probe.algorithm, probe.lock, probe.table) == ("inplace", "none", "t")
    assert db.sent[-1] == "CREATE INDEX ix_b ON t (b) ALGORITHM=INPLACE LOCK=NONE;  -- for the lookups\n"
    probe = execute_probed(db, "CREATE UNIQUE INDEX `ux_c` USING BTREE ON `t` (`c`) COMMENT 'one each'")
    assert (probe.algorithm, probe.lock) == ("inplace", "none")
    probe = execute_probed(db, "CREATE FULLTEXT INDEX ft_b ON t (b)")
    assert (probe.algorithm, probe.lock, probe.blocks) == ("inplace", "shared", WRITES_DDL)
    assert "Fulltext index creation requires a lock" in probe.tried[-1]
    assert indexes(db) == {"PRIMARY": ["id"], "ft_b": ["b"], "ix_b": ["b"], "ka": ["a"], "ux_c": ["c"]}


def test_drop_index_is_asked_as_the_alter_table_it_is_short_for(db):
    database = query(db, "SELECT DATABASE()")[0][0]
    probe = execute_probed(db, f"DROP INDEX IF EXISTS `ka` ON `{database}`.`t` WAIT 5;")
    assert (probe.algorithm, probe.lock, probe.blocks, probe.table) == ("inplace", "none", ["DDL"], "t")
    assert db.sent[-1] == f"ALTER TABLE `{database}`.`t` WAIT 5 {INPLACE_NONE}, DROP INDEX IF EXISTS `ka`;"
    assert "ka" not in indexes(db)
    with pytest.raises(pymysql.err.ProgrammingError) as raised:  # MariaDB: no clause after DROP INDEX
        db.cursor.execute("DROP INDEX ix ON t ALGORITHM=INPLACE")
    assert raised.value.args[0] == 1064


def test_a_refused_clause_leaves_nothing_done(db):
    before = create_table(db)
    with pytest.raises(pymysql.err.OperationalError) as raised:
        db.cursor.execute(f"ALTER TABLE t {INSTANT}, ADD COLUMN d INT, MODIFY c VARCHAR(20)")
    assert raised.value.args[0] == 1846
    with pytest.raises(pymysql.err.OperationalError) as raised:
        db.cursor.execute(f"ALTER TABLE t {INPLACE_NONE}, ADD COLUMN d INT, ADD FULLTEXT INDEX ft (b)")
    assert raised.value.args[0] == 1846
    assert create_table(db) == before
    probe = execute_probed(db, "ALTER TABLE t ADD COLUMN d INT, MODIFY c VARCHAR(20)")
    assert (probe.algorithm, probe.lock) == ("copy", "shared")
    assert columns(db) == {"id": "int(11)", "a": "int(11)", "b": "varchar(10)", "c": "varchar(20)", "d": "int(11)"}


# --- statements that name their own clause --------------------------------------------------------


def test_an_explicit_algorithm_runs_once_as_written(db):
    statement = "ALTER TABLE t MODIFY c VARCHAR(20), ALGORITHM=COPY"
    probe = execute_probed(db, statement)
    assert db.sent == [statement]
    assert (probe.algorithm, probe.lock, probe.table, probe.tried) == ("copy", None, "t", [])
    assert probe.blocks == ["SELECT", "INSERT/UPDATE/DELETE", "DDL"]  # a lock not named counts as exclusive
    probe = execute_probed(db, "ALTER TABLE t ADD COLUMN d INT, LOCK = NONE")
    assert (probe.algorithm, probe.lock, probe.blocks) == (None, "none", ["DDL"])
    probe = execute_probed(db, "ALTER TABLE t ADD COLUMN e INT, ALGORITHM=DEFAULT")  # DEFAULT is named too
    assert (probe.algorithm, probe.lock) == (None, None) and db.sent[-1].endswith("ALGORITHM=DEFAULT")
    assert list(columns(db)) == ["id", "a", "b", "c", "d", "e"]


def test_an_instant_the_server_turns_into_a_copy_is_reported_as_a_copy(db):
    # measured: MariaDB accepts ALGORITHM=INSTANT for an engine change and copies every row anyway
    probe = execute_probed(db, "ALTER TABLE t ALGORITHM=INSTANT, ENGINE=Aria")
    assert (probe.algorithm, probe.lock) == ("copy", None)
    assert probe.tried == ["as written: accepted, but the server copied 50 rows"]
    # asked, such statements skip INSTANT
    probe = execute_probed(db, "ALTER TABLE t ENGINE=InnoDB, ORDER BY a")
    assert (probe.algorithm, probe.lock) == ("copy", "shared")
    assert INSTANT not in refusals(probe) and not any(INSTANT in sql for sql in db.sent[1:])


def test_a_column_called_algorithm_is_not_a_clause(db):
    probe = execute_probed(db, "ALTER TABLE t ADD COLUMN algorithm INT, ADD COLUMN engine INT")
    assert (probe.algorithm, probe.lock) == ("instant", "none")
    assert "algorithm" in columns(db) and "engine" in columns(db)


def test_alter_online_asks_only_what_online_allows(db):
    probe = execute_probed(db, "ALTER ONLINE TABLE t ADD INDEX ix_b (b)")
    assert (probe.algorithm, probe.lock) == ("inplace", "none")
    db.sent.clear()
    before = create_table(db)
    with pytest.raises(pymysql.err.OperationalError) as raised:
        execute_probed(db, "ALTER ONLINE TABLE t MODIFY c VARCHAR(20)")
    assert raised.value.args[0] == 1846 and "LOCK=NONE is not supported" in raised.value.args[1]
    assert db.sent == [
        f"ALTER ONLINE TABLE t {INSTANT}, MODIFY c VARCHAR(20)",
        f"ALTER ONLINE TABLE t {INPLACE_NONE}, MODIFY c VARCHAR(20)",
        f"ALTER ONLINE TABLE t {COPY_NONE}, MODIFY c VARCHAR(20)",
        "ALTER ONLINE TABLE t MODIFY c VARCHAR(20)",  # its own refusal is what is raised
    ]
    assert create_table(db) == before


# --- errors of the statement's own ------------------------------------------------------------------


def test_a_duplicate_column_raises_the_servers_own_error_and_changes_nothing(db):
    before = create_table(db)
    with pytest.raises(pymysql.err.OperationalError) as raised:
        execute_probed(db, "ALTER TABLE t ADD COLUMN d INT, ADD COLUMN a INT")
    assert raised.value.args == (1060, "Duplicate column name 'a'")
    assert db.sent == [
        f"ALTER TABLE t {INSTANT}, ADD COLUMN d INT, ADD COLUMN a INT",
        db.sent[0].replace(f" {INSTANT},", ""),
    ]
    assert create_table(db) == before


def test_data_a_copy_would_truncate_raises_and_changes_nothing(db):
    before = create_table(db)
    with pytest.raises(pymysql.err.DataError) as raised:
        execute_probed(db, "ALTER TABLE t MODIFY b VARCHAR(2)")
    assert raised.value.args[0] == 1265
    assert db.sent[-1] == "ALTER TABLE t MODIFY b VARCHAR(2)"
    assert create_table(db) == before and query(db, "SELECT COUNT(*) FROM t WHERE b = 'xxxxx'") == [(50,)]


def test_a_missing_table_and_a_syntax_error_raise_their_own_messages(db):
    with pytest.raises(pymysql.err.ProgrammingError) as raised:
        execute_probed(db, "ALTER TABLE nowhere ADD COLUMN d INT")
    assert raised.value.args[0] == 1146 and "nowhere" in raised.value.args[1]
    with pytest.raises(pymysql.err.ProgrammingError) as raised:
        execute_probed(db, "ALTER TABLE t ADD COLUMN d INT NOT NULL DEFALT 1")
    assert raised.value.args[0] == 1064 and "ALGORITHM" not in raised.value.args[1]
    assert "d" not in columns(db)


# --- what cannot be asked --------------------------------------------------------------------------


def test_partition_upkeep_takes_no_clause_and_runs_as_written(db):
    db.cursor.execute(
        "CREATE TABLE p (id INT PRIMARY KEY) PARTITION BY RANGE (id) "
        "(PARTITION p0 VALUES LESS THAN (10), PARTITION p1 VALUES LESS THAN (20))"
    )
    db.cursor.execute("INSERT INTO p VALUES (1), (2), (15)")
    probe = execute_probed(db, "ALTER TABLE p TRUNCATE PARTITION p0")
    assert (probe.algorithm, probe.lock, probe.blocks, probe.table) == (None, None, [], "p")
    assert refusals(probe) == [INSTANT] and "syntax" in probe.tried[0]
    assert db.sent[-1] == "ALTER TABLE p TRUNCATE PARTITION p0"
    assert query(db, "SELECT id FROM p") == [(15,)]
    probe = execute_probed(db, "ALTER TABLE p REMOVE PARTITIONING")  # this one takes a clause, no comma
    assert (probe.algorithm, probe.lock) == ("copy", "shared") and INSTANT not in refusals(probe)
    assert db.sent[-1] == f"ALTER TABLE p {COPY_SHARED} REMOVE PARTITIONING"
    probe = execute_probed(db, "ALTER TABLE t PARTITION BY HASH (id) PARTITIONS 2")
    assert (probe.algorithm, probe.lock) == ("copy", "shared")


def test_names_quotes_semicolons_and_comments(db):
    database = query(db, "SELECT DATABASE()")[0][0]
    db.cursor.execute("CREATE TABLE `My Orders` (id INT PRIMARY KEY)")
    statement = (
        f"/* add */ ALTER TABLE `{database}`.`My Orders` -- the table\n ADD COLUMN `d;` INT COMMENT 'a -- b; c' ;"
    )
    probe = execute_probed(db, statement)
    assert (probe.algorithm, probe.lock, probe.table) == ("instant", "none", "my orders")
    assert db.sent == [
        f"/* add */ ALTER TABLE `{database}`.`My Orders` {INSTANT}, -- the table\n"
        " ADD COLUMN `d;` INT COMMENT 'a -- b; c' ;"
    ]
    assert list(columns(db, "My Orders")) == ["id", "d;"]
    probe = execute_probed(db, f"alter table {database}.t add e int # at the end")
    assert (probe.algorithm, probe.table) == ("instant", "t")
    assert db.sent[-1] == f"alter table {database}.t {INSTANT}, add e int # at the end"
    assert list(columns(db))[-1] == "e"
    assert query(db, "SELECT COLUMN_COMMENT FROM information_schema.COLUMNS WHERE COLUMN_NAME = 'd;'") == [
        ("a -- b; c",)
    ]


def test_other_statements_run_once_with_their_parameters(db):
    probe = execute_probed(db, "INSERT INTO t (id, b) VALUES (%s, %s)", (100, "it's"))
    assert probe == Probe(None, None, [], None, [])
    assert db.sent == ["INSERT INTO t (id, b) VALUES (%s, %s)"]
    assert query(db, "SELECT b FROM t WHERE id = 100") == [("it's",)]
    two = "ALTER TABLE t ADD COLUMN d INT; ALTER TABLE t ADD COLUMN e INT"
    with pytest.raises(pymysql.err.ProgrammingError):  # as written: PyMySQL does not allow multi-statements
        execute_probed(db, two)
    assert db.sent[-1] == two and "d" not in columns(db)


# --- without a server ------------------------------------------------------------------------------


class Scripted:
    """A cursor whose server answers from a list: an exception to raise, or None to accept."""

    class connection:  # noqa: N801 - the DBAPI attribute
        Error = pymysql.err.Error
        server_version = "8.0.36"

    def __init__(self, *answers: BaseException | None) -> None:
        self.answers = list(answers)
        self.sent: list[str] = []
        self.rowcount = 0

    def execute(self, sql: str, args: Any = None) -> int:
        self.sent.append(sql)
        answer = self.answers.pop(0) if self.answers else None
        if answer is not None:
            raise answer
        return 0


def refused(code: int = 1846) -> pymysql.err.OperationalError:
    return pymysql.err.OperationalError(code, "ALGORITHM=INSTANT is not supported. Reason: x. Try ALGORITHM=COPY")


def test_mysql_instant_only_refusals_count_on_mysql_only():
    cursor = Scripted(pymysql.err.OperationalError(4092, "Maximum row versions reached for table test/t"))
    probe = execute_probed(cursor, "ALTER TABLE t ADD COLUMN d INT")
    assert (probe.algorithm, probe.lock) == ("inplace", "none")
    assert probe.tried == ["ALGORITHM=INSTANT: Maximum row versions reached for table test/t"]
    cursor = Scripted(pymysql.err.OperationalError(4092, "Unknown VIEW: 'v'"))
    cursor.connection = type("MariaDB", (), {"Error": pymysql.err.Error, "server_version": "5.5.5-10.11.19-MariaDB"})
    assert execute_probed(cursor, "ALTER TABLE t ADD COLUMN d INT").algorithm is None
    assert cursor.sent == [f"ALTER TABLE t {INSTANT}, ADD COLUMN d INT", "ALTER TABLE t ADD COLUMN d INT"]


def test_timeouts_and_lost_connections_are_not_run_again():
    for error in (
        pymysql.err.OperationalError(1205, "Lock wait timeout exceeded; try restarting transaction"),
        pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query"),
        pymysql.err.InterfaceError(0, ""),
    ):
        cursor = Scripted(refused(), error)
        with pytest.raises(type(error)):
            execute_probed(cursor, "ALTER TABLE t ADD INDEX (b)")
        assert len(cursor.sent) == 2


def test_all_refused_runs_as_written_and_does_not_guess():
    cursor = Scripted(*[refused(1845)] * len(ATTEMPTS))
    probe = execute_probed(cursor, "ALTER TABLE t ADD COLUMN d INT")
    assert (probe.algorithm, probe.lock, probe.blocks) == (None, None, [])
    assert len(probe.tried) == len(ATTEMPTS) and cursor.sent[-1] == "ALTER TABLE t ADD COLUMN d INT"


def test_older_servers_that_do_not_know_instant():
    cursor = Scripted(pymysql.err.InternalError(1800, "Unknown ALGORITHM 'INSTANT'"))
    assert execute_probed(cursor, "ALTER TABLE t ADD INDEX (b)").algorithm == "inplace"


def test_blocks():
    assert blocks_for("instant", "none") == [] and blocks_for(None, None) == []
    assert blocks_for(None, "none") == ["DDL"] and blocks_for(None, "exclusive") == ["SELECT", *WRITES_DDL]
    assert blocks_for("inplace", "none") == ["DDL"]
    assert blocks_for("copy", "shared") == blocks_for("inplace", "shared") == WRITES_DDL
    assert blocks_for("copy", "exclusive") == blocks_for("copy", None) == ["SELECT", *WRITES_DDL]
