"""Locking and rewrite hazards and their safe look-alikes, each confirmed on a real server, against
what ``check`` says about the same revision (issue 15: every serious hazard flagged, no false alarm).

Every case is one Alembic revision body. Two tests per case:

- ``test_server_*`` runs the body on the server and measures what it does; the measurement must
  match the case's ``serious`` (so the corpus itself is checked, not assumed).
- ``test_check_*`` checks the same body (``check --range base:heads --format json``, one run per
  dialect over all cases); a serious case needs at least one finding of a rule in ``PG_RULES`` /
  ``MYSQL_RULES``, a safe one none. lock-timeout-missing (a missing timeout, not a cost of the
  statement), hygiene and breaking rules (enum-add-value-in-transaction, ...) are not counted: a safe
  case may carry them.

Classification on PostgreSQL (in one transaction, rolled back): the lock modes the session holds on
the table afterwards (pg_locks), whether it was rewritten (pg_class.relfilenode before vs after) and
whether it was read in full (pg_stat_xact_user_tables.seq_tup_read grew by the row count).
**Serious** = rewritten or read in full while holding a lock that blocks writes (SHARE or stronger).
A brief ACCESS EXCLUSIVE for a catalog change only, a scan under SHARE UPDATE EXCLUSIVE (VALIDATE
CONSTRAINT) and the CONCURRENTLY forms are safe. Statements that cannot run in a transaction
(CONCURRENTLY, VACUUM) run in autocommit while another session holds an open writer's lock (ROW
EXCLUSIVE): the lock mode they take or wait for is read from pg_locks, the rewrite from relfilenode.

On MariaDB the rendered statement is tried with ``ALGORITHM=INSTANT``, then ``ALGORITHM=INPLACE,
LOCK=NONE``; **serious** = the server refuses both (it would copy the table, blocking writes). It
is then run with ``ALGORITHM=COPY`` to show the statement itself is valid.

Where the server and ``check`` disagree the check test is ``xfail(strict=True)`` with the evidence.
"""

from __future__ import annotations

import io
import json
import os
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from conftest import MARIADB_URL, PG_URL, Project, _require
from sqlalchemy.dialects import mysql, postgresql

from migrate_guard.backup.service import scratch_database

PG_RULES = frozenset(
    {
        "alter-column-type",
        "add-column-rewrites-table",
        "create-index-non-concurrently",
        "add-foreign-key-validating",
        "add-check-validating",
        "set-not-null",
        "add-unique-constraint",
        "add-primary-key",
        "vacuum-full-or-cluster",
        "lock-table",
        "backfill-under-schema-lock",
        "reindex-non-concurrently",
        "detach-partition-non-concurrently",
        "create-domain-with-check",
    }
)
MYSQL_RULES = frozenset({"alter-rebuilds-table", "alter-column-type", "add-column-rewrites-table"})
WRITE_BLOCKING = frozenset({"ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock"})
ROWS = 2000
HEADER = "from sqlalchemy.dialects import mysql, postgresql\n"


@dataclass(frozen=True)
class Case:
    name: str
    body: str  # the revision's upgrade() body; {t} is the case's table
    serious: bool
    setup: str = ""  # SQL run (and committed) after the base table is created; {t} as above
    autocommit: bool = False  # cannot run in a transaction: an autocommit_block() in the revision
    xfail: str | None = None  # check disagrees with the server: the evidence, for the rule owner

    @property
    def table(self) -> str:
        return "h_" + self.name.replace("-", "_")

    def fill(self, text: str) -> str:
        return textwrap.dedent(text).strip().replace("{t}", self.table)

    def revision_body(self) -> str:
        body = self.fill(self.body)
        if self.autocommit:
            return "with op.get_context().autocommit_block():\n" + textwrap.indent(body, "    ")
        return body


def alter(column: str, old: str, new: str, extra: str = "") -> str:
    return f'op.alter_column("{{t}}", "{column}", existing_type={old}, type_={new}{extra})'


def add(column: str) -> str:
    return f'op.add_column("{{t}}", sa.Column({column}))'


# --- PostgreSQL ------------------------------------------------------------------------------------

PG_BASE = (
    "CREATE TABLE {t} (id int PRIMARY KEY, n int, s10 varchar(10), s20 varchar(20), txt text,"
    " amount numeric(10,2), ts timestamp);"
    f" INSERT INTO {{t}} SELECT g, g, 's' || g, 's' || g, 't' || g, g / 3.0, now() FROM generate_series(1, {ROWS}) g"
)
PARENT = f"CREATE TABLE {{t}}_p (id int PRIMARY KEY); INSERT INTO {{t}}_p SELECT generate_series(1, {ROWS})"
MOOD = "CREATE TYPE {t}_mood AS ENUM ('a', 'b'); ALTER TABLE {t} ADD COLUMN mood {t}_mood DEFAULT 'a'"
NO_PK = "ALTER TABLE {t} DROP CONSTRAINT {t}_pkey"

PG_CASES = [
    Case("int-to-bigint", alter("n", "sa.Integer()", "sa.BigInteger()"), True),
    Case("varchar10-to-varchar20", alter("s10", "sa.String(10)", "sa.String(20)"), False),
    Case("varchar20-to-varchar10", alter("s20", "sa.String(20)", "sa.String(10)"), True),
    Case("varchar-to-text", alter("s20", "sa.String(20)", "sa.Text()"), False),
    Case("varchar-to-unbounded-varchar", alter("s20", "sa.String(20)", "sa.String()"), False),
    Case("text-to-varchar50", alter("txt", "sa.Text()", "sa.String(50)"), True),
    Case("text-to-unbounded-varchar", alter("txt", "sa.Text()", "sa.String()"), False),
    Case("numeric-10-2-to-12-2", alter("amount", "sa.Numeric(10, 2)", "sa.Numeric(12, 2)"), False),
    Case("numeric-10-2-to-10-3", alter("amount", "sa.Numeric(10, 2)", "sa.Numeric(10, 3)"), True),
    Case(
        "timestamp-to-timestamptz",
        "op.execute(\"SET LOCAL TIME ZONE 'Europe/Berlin'\")\n"
        + alter("ts", "sa.DateTime()", "sa.DateTime(timezone=True)"),
        True,
    ),
    Case(
        "timestamp-to-timestamptz-utc-session",
        "op.execute(\"SET LOCAL TIME ZONE 'UTC'\")\n" + alter("ts", "sa.DateTime()", "sa.DateTime(timezone=True)"),
        False,
    ),
    Case(
        "enum-to-other-enum-type",
        alter(
            "mood",
            'postgresql.ENUM("a", "b", name="{t}_mood", create_type=False)',
            'postgresql.ENUM("a", "b", "c", name="{t}_mood2", create_type=False)',
            ', postgresql_using="mood::text::{t}_mood2"',
        ),
        True,
        setup=MOOD + "; CREATE TYPE {t}_mood2 AS ENUM ('a', 'b', 'c'); ALTER TABLE {t} ALTER mood DROP DEFAULT",
    ),
    Case("add-nullable-column", add('"note", sa.Text(), nullable=True'), False),
    Case("add-column-constant-default", add('"flag", sa.Integer(), nullable=False, server_default="0"'), False),
    Case("add-column-now-default", add('"created", sa.DateTime(timezone=True), server_default=sa.func.now()'), False),
    Case("add-column-uuid-default", add('"u", sa.Uuid(), server_default=sa.text("gen_random_uuid()")'), True),
    Case(
        "add-column-clock-timestamp-default",
        add('"seen", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()")'),
        True,
    ),
    Case("add-stored-generated-column", add('"n2", sa.Integer(), sa.Computed("n * 2", persisted=True)'), True),
    Case("add-identity-column", add('"seq", sa.BigInteger(), sa.Identity()'), True),
    Case(
        "set-volatile-default-on-existing-column",
        'op.alter_column("{t}", "n", existing_type=sa.Integer(), server_default=sa.text("(random() * 100)::int"))',
        False,
    ),
    Case("set-not-null", 'op.alter_column("{t}", "n", existing_type=sa.Integer(), nullable=False)', True),
    Case("add-check", 'op.create_check_constraint("{t}_ck", "{t}", "n > 0")', True),
    Case(
        "add-check-not-valid", 'op.create_check_constraint("{t}_ck", "{t}", "n > 0", postgresql_not_valid=True)', False
    ),
    Case(
        "validate-check",
        'op.execute("ALTER TABLE {t} VALIDATE CONSTRAINT {t}_ck")',
        False,
        setup="ALTER TABLE {t} ADD CONSTRAINT {t}_ck CHECK (n > 0) NOT VALID",
    ),
    Case("add-foreign-key", 'op.create_foreign_key("{t}_fk", "{t}", "{t}_p", ["n"], ["id"])', True, setup=PARENT),
    Case(
        "add-foreign-key-not-valid",
        'op.create_foreign_key("{t}_fk", "{t}", "{t}_p", ["n"], ["id"], postgresql_not_valid=True)',
        False,
        setup=PARENT,
    ),
    Case("create-index", 'op.create_index("{t}_ix", "{t}", ["n"])', True),
    Case(
        "create-index-concurrently",
        'op.create_index("{t}_ix", "{t}", ["n"], postgresql_concurrently=True)',
        False,
        autocommit=True,
    ),
    Case("add-unique-constraint", 'op.create_unique_constraint("{t}_uq", "{t}", ["n"])', True),
    Case(
        "add-unique-constraint-using-index",
        'op.execute("ALTER TABLE {t} ADD CONSTRAINT {t}_uq UNIQUE USING INDEX {t}_ux")',
        False,
        setup="CREATE UNIQUE INDEX {t}_ux ON {t} (n)",
    ),
    Case("add-primary-key", 'op.create_primary_key("{t}_pk", "{t}", ["n"])', True, setup=NO_PK),
    Case(
        "add-primary-key-using-index",
        'op.execute("ALTER TABLE {t} ADD CONSTRAINT {t}_pk PRIMARY KEY USING INDEX {t}_ux")',
        False,
        setup=NO_PK + "; CREATE UNIQUE INDEX {t}_ux ON {t} (id)",
    ),
    Case("vacuum-full", 'op.execute("VACUUM FULL {t}")', True, autocommit=True),
    Case("cluster", 'op.execute("CLUSTER {t} USING {t}_pkey")', True),
    Case("reindex-table", 'op.execute("REINDEX TABLE {t}")', True),
    Case("reindex-table-concurrently", 'op.execute("REINDEX TABLE CONCURRENTLY {t}")', False, autocommit=True),
    Case("enum-add-value", "op.execute(\"ALTER TYPE {t}_mood ADD VALUE 'c'\")", False, setup=MOOD),
    Case(
        "backfill-under-schema-lock",
        add('"note", sa.Text(), nullable=True') + "\nop.execute(\"UPDATE {t} SET note = 'x'\")",
        True,
    ),
]

# --- MariaDB ---------------------------------------------------------------------------------------

MARIADB_BASE = (
    "CREATE TABLE {t} (id INT PRIMARY KEY, n INT, s30 VARCHAR(30), s50 VARCHAR(50), s100 VARCHAR(100),"
    " l50 VARCHAR(50) CHARACTER SET latin1, l100 VARCHAR(100) CHARACTER SET latin1,"
    " l200 VARCHAR(200) CHARACTER SET latin1, e ENUM('a', 'b'))"
    " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;"
    " INSERT INTO {t} SELECT seq, seq, CONCAT('s', seq), CONCAT('s', seq), CONCAT('s', seq),"
    " CONCAT('l', seq), CONCAT('l', seq), CONCAT('l', seq), 'a'"
    f" FROM seq_1_to_{ROWS}"  # the Sequence engine
)
LATIN1 = 'mysql.VARCHAR({}, charset="latin1")'

MARIADB_CASES = [
    Case("varchar50-to-60-utf8mb4", alter("s50", "sa.String(50)", "sa.String(60)"), False),  # 200 -> 240 bytes
    Case("varchar50-to-100-latin1", alter("l50", LATIN1.format(50), LATIN1.format(100)), False),
    Case("varchar50-to-100-utf8mb4", alter("s50", "sa.String(50)", "sa.String(100)"), True),  # 200 -> 400 bytes
    Case("varchar200-to-300-latin1", alter("l200", LATIN1.format(200), LATIN1.format(300)), True),
    # MariaDB 10.4+ (MDEV-15563) extends a VARCHAR of at most 127 bytes instantly to any length: a
    # value under 128 bytes has a 1-byte length either way. check uses MySQL's 255-byte boundary.
    Case(
        "varchar100-to-300-latin1",
        alter("l100", LATIN1.format(100), LATIN1.format(300)),
        False,
    ),
    Case(
        "varchar30-to-100-utf8mb4",
        alter("s30", "sa.String(30)", "sa.String(100)"),
        False,
    ),
    Case("varchar100-to-300-utf8mb4", alter("s100", "sa.String(100)", "sa.String(300)"), False),  # 400 -> 1200
    Case("int-to-bigint", alter("n", "sa.Integer()", "sa.BigInteger()"), True),
    Case("add-column-last", add('"note", sa.Text(), nullable=True'), False),
    Case("add-column-first", 'op.execute("ALTER TABLE {t} ADD COLUMN x INT FIRST")', False),
    Case("add-stored-generated-column", add('"n2", sa.Integer(), sa.Computed("n * 2", persisted=True)'), True),
    Case("add-index", 'op.create_index("{t}_ix", "{t}", ["n"])', False),
    Case("drop-primary-key", 'op.drop_constraint("PRIMARY", "{t}", type_="primary")', True),
    Case(
        "column-charset-latin1-to-utf8mb4",
        alter("l50", LATIN1.format(50), 'mysql.VARCHAR(50, charset="utf8mb4")'),
        True,
    ),
    Case("enum-append", alter("e", 'sa.Enum("a", "b")', 'sa.Enum("a", "b", "c")'), False),
    Case("enum-reorder", alter("e", 'sa.Enum("a", "b")', 'sa.Enum("b", "a")'), True),
]

# --- running a body --------------------------------------------------------------------------------


def run_body(conn: sa.Connection, body: str) -> None:
    """Run a revision body's op calls on ``conn`` (online: the SQL Alembic emits for them)."""
    exec(body, {"op": Operations(MigrationContext.configure(connection=conn)), "sa": sa, "postgresql": postgresql})


def render(body: str, dialect: str) -> list[str]:
    """The SQL statements a revision body emits in offline mode for ``dialect``."""
    out = io.StringIO()
    context = MigrationContext.configure(
        dialect_name=dialect, opts={"as_sql": True, "output_buffer": out, "literal_binds": True}
    )
    exec(body, {"op": Operations(context), "sa": sa, "mysql": mysql, "postgresql": postgresql})
    return [s.strip() for s in out.getvalue().split(";\n") if s.strip()]


def run_sql(engine: sa.Engine, script: str) -> None:
    with engine.begin() as conn:
        for statement in script.split(";"):
            if statement.strip():
                conn.exec_driver_sql(statement)


def check_findings(tmp_path: Path, dialect: str, cases: list[Case], *extra: str) -> dict[str, set[str]]:
    """The rules ``check`` reports for each case's revision, by case name (all cases in one history)."""
    from migrate_guard.cli import cli

    project = Project(tmp_path / "proj")
    revisions = {project.revision(f"r{i:02d}", c.revision_body(), header=HEADER).stem: c for i, c in enumerate(cases)}
    old = os.getcwd()
    os.chdir(project.root)  # the cache lives beside alembic.ini
    try:
        args = ["-c", str(project.ini), "check", "--dialect", dialect, "--range", "base:heads", "--format", "json"]
        result = CliRunner().invoke(cli, [*args, "--no-cache", *extra], catch_exceptions=False)
    finally:
        os.chdir(old)
    assert result.exit_code in (0, 3), result.output
    found: dict[str, set[str]] = {c.name: set() for c in cases}
    for f in json.loads(result.stdout)["findings"]:
        found[revisions[f["revision"]].name].add(f["rule"])
    return found


def _params(cases: list[Case], with_xfail: bool):
    for case in cases:
        marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if with_xfail and case.xfail else []
        yield pytest.param(case, id=case.name, marks=marks)


# --- PostgreSQL: observe ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PgObservation:
    locks: frozenset[str]  # modes held (or waited for) on the table
    rewritten: bool
    read_in_full: bool | None  # None: not measurable from another session

    @property
    def serious(self) -> bool:
        return bool(self.locks & WRITE_BLOCKING) and (self.rewritten or bool(self.read_in_full))


def _table_state(conn: sa.Connection, table: str) -> tuple[int, int]:
    row = conn.exec_driver_sql(
        "SELECT c.relfilenode, coalesce(s.seq_tup_read, 0) FROM pg_class c"
        f" LEFT JOIN pg_stat_xact_user_tables s ON s.relid = c.oid WHERE c.oid = '{table}'::regclass"
    ).one()
    return row[0], row[1]


def observe_in_transaction(engine: sa.Engine, case: Case) -> PgObservation:
    with engine.connect() as conn:
        filenode, read = _table_state(conn, case.table)
        run_body(conn, case.fill(case.body))
        modes = conn.exec_driver_sql(
            f"SELECT mode FROM pg_locks WHERE relation = '{case.table}'::regclass"
            " AND pid = pg_backend_pid() AND granted"
        ).scalars()
        locks = frozenset(modes)
        filenode_after, read_after = _table_state(conn, case.table)
        conn.rollback()
    return PgObservation(locks, filenode_after != filenode, read_after - read >= ROWS)


def observe_beside_a_writer(engine: sa.Engine, case: Case) -> PgObservation:
    """Run an autocommit statement while another session holds a writer's lock on the table; the
    modes it holds or waits for while that writer is open are what it would do to live traffic."""
    relfilenode = f"SELECT relfilenode FROM pg_class WHERE oid = '{case.table}'::regclass"
    failure: list[BaseException] = []
    with engine.connect() as watcher, engine.connect() as writer:
        before = watcher.exec_driver_sql(relfilenode).scalar()
        watcher.rollback()
        writer.exec_driver_sql(f"LOCK TABLE {case.table} IN ROW EXCLUSIVE MODE")  # what an INSERT takes
        runner = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        pid = runner.exec_driver_sql("SELECT pg_backend_pid()").scalar()

        def run() -> None:
            try:
                run_body(runner, case.fill(case.body))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
                failure.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 10
        locks: frozenset[str] = frozenset()
        while time.monotonic() < deadline and thread.is_alive():
            rows = watcher.exec_driver_sql(
                f"SELECT mode, granted, relation = '{case.table}'::regclass FROM pg_locks WHERE pid = {pid}"
            ).all()
            watcher.rollback()
            if any(not granted for _, granted, _ in rows):  # waiting: on the writer, or for it to finish
                locks = frozenset(mode for mode, _, on_table in rows if on_table)
                break
            time.sleep(0.02)
        writer.rollback()
        thread.join(30)
        runner.close()
        assert not failure, failure
        assert locks, f"{case.name}: never waited beside an open writer"
        after = watcher.exec_driver_sql(relfilenode).scalar()
    return PgObservation(locks, after != before, None)


def _fresh_engine(dialect: str) -> Iterator[sa.Engine]:
    """A database of its own: each case creates its table once in it."""
    if dialect == "postgresql":
        _require("127.0.0.1", 5432, "PostgreSQL", "start it or set MIGRATE_GUARD_PG_URL")
    else:
        _require("127.0.0.1", 3306, "MariaDB", "start it or set MIGRATE_GUARD_MARIADB_URL")
    with scratch_database(dialect, PG_URL if dialect == "postgresql" else MARIADB_URL) as url:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        yield engine
        engine.dispose()


@pytest.fixture(scope="module")
def pg_engine() -> Iterator[sa.Engine]:
    yield from _fresh_engine("postgresql")


@pytest.fixture(scope="module")
def pg_engine_for_trace() -> Iterator[sa.Engine]:
    yield from _fresh_engine("postgresql")


@pytest.fixture(scope="module")
def pg_check(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    return check_findings(tmp_path_factory.mktemp("pg"), "postgresql", PG_CASES, "--server-version", "15")


def observe_pg(engine: sa.Engine, case: Case) -> PgObservation:
    run_sql(engine, case.fill(PG_BASE) + ";" + case.fill(case.setup))
    if case.autocommit:
        return observe_beside_a_writer(engine, case)
    return observe_in_transaction(engine, case)


@pytest.mark.postgresql
@pytest.mark.parametrize("case", list(_params(PG_CASES, with_xfail=False)))
def test_server_postgresql(pg_engine: sa.Engine, case: Case) -> None:
    seen = observe_pg(pg_engine, case)
    assert seen.serious == case.serious, f"{case.name}: {seen}"
    if case.name == "create-index-concurrently":
        with pg_engine.connect() as conn:
            valid = conn.exec_driver_sql(
                f"SELECT indisvalid FROM pg_index WHERE indexrelid = '{case.table}_ix'::regclass"
            )
            assert valid.scalar() is True


@pytest.mark.parametrize("case", list(_params(PG_CASES, with_xfail=True)))
def test_check_postgresql(pg_check: dict[str, set[str]], case: Case) -> None:
    counted = pg_check[case.name] & PG_RULES
    if case.serious:
        assert counted, f"{case.name}: a serious hazard with no locking/rewrite finding ({pg_check[case.name]})"
    else:
        assert not counted, f"{case.name}: a false alarm on a safe look-alike ({counted})"


# --- MariaDB: observe ------------------------------------------------------------------------------

REFUSED = (1845, 1846)  # ER_ALTER_OPERATION_NOT_SUPPORTED(_REASON): the server would have to copy


def with_algorithm(statement: str, algorithm: str) -> str:
    if statement.upper().startswith("CREATE"):  # CREATE INDEX takes the options without a comma
        return f"{statement} {algorithm.replace(',', '')}"
    return f"{statement}, {algorithm}"


def observe_mariadb(engine: sa.Engine, case: Case) -> tuple[str, str]:
    """The cheapest algorithm the server accepts for the case (INSTANT, INPLACE or COPY), and why the
    cheaper ones were refused."""
    run_sql(engine, case.fill(MARIADB_BASE) + ";" + case.fill(case.setup))
    (statement,) = render(case.fill(case.body), "mysql")
    refusals = []
    for algorithm in ("ALGORITHM=INSTANT", "ALGORITHM=INPLACE, LOCK=NONE", "ALGORITHM=COPY"):
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(with_algorithm(statement, algorithm))
            return algorithm.split(",")[0].removeprefix("ALGORITHM="), "; ".join(refusals)
        except sa.exc.OperationalError as exc:
            if exc.orig.args[0] not in REFUSED:
                raise
            refusals.append(str(exc.orig.args[1]))
    raise AssertionError(f"{case.name}: refused even with ALGORITHM=COPY: {refusals}")


@pytest.fixture(scope="module")
def mariadb_engine() -> Iterator[sa.Engine]:
    yield from _fresh_engine("mysql")


@pytest.fixture(scope="module")
def mariadb_engine_for_trace() -> Iterator[sa.Engine]:
    yield from _fresh_engine("mysql")


@pytest.fixture(scope="module")
def mariadb_check(mariadb_engine: sa.Engine, tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    with mariadb_engine.connect() as conn:
        version = conn.exec_driver_sql("SELECT VERSION()").scalar().split("-")[0]
    return check_findings(tmp_path_factory.mktemp("mariadb"), "mariadb", MARIADB_CASES, "--server-version", version)


@pytest.mark.mariadb
@pytest.mark.parametrize("case", list(_params(MARIADB_CASES, with_xfail=False)))
def test_server_mariadb(mariadb_engine: sa.Engine, case: Case) -> None:
    algorithm, refusals = observe_mariadb(mariadb_engine, case)
    assert (algorithm == "COPY") == case.serious, f"{case.name}: {algorithm} ({refusals})"


@pytest.mark.mariadb
@pytest.mark.parametrize("case", list(_params(MARIADB_CASES, with_xfail=True)))
def test_check_mariadb(mariadb_check: dict[str, set[str]], case: Case) -> None:
    counted = mariadb_check[case.name] & MYSQL_RULES
    if case.serious:
        assert counted, f"{case.name}: a table copy with no rebuild finding ({mariadb_check[case.name]})"
    else:
        assert not counted, f"{case.name}: a false alarm on an in-place change ({counted})"


def test_corpus_has_hazards_and_look_alikes() -> None:
    for cases, least in ((PG_CASES, 25), (MARIADB_CASES, 10)):
        assert len(cases) >= least and len({c.table for c in cases}) == len(cases)
        assert sum(c.serious for c in cases) >= least // 3 and sum(not c.serious for c in cases) >= least // 3


# --- PostgreSQL: `trace` against the same observations ----------------------------------------------


@pytest.fixture(scope="module")
def pg_trace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    """What `trace` reports for each case's revision, traced from a database holding every case's table."""
    from migrate_guard.cli import cli

    _require("127.0.0.1", 5432, "PostgreSQL", "start it or set MIGRATE_GUARD_PG_URL")
    with scratch_database("postgresql", PG_URL) as url:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        for case in PG_CASES:
            run_sql(engine, case.fill(PG_BASE) + ";" + case.fill(case.setup))
        engine.dispose()
        project = Project(tmp_path_factory.mktemp("pg-trace") / "proj", url)
        revisions = {
            project.revision(f"r{i:02d}", c.revision_body(), header=HEADER).stem: c for i, c in enumerate(PG_CASES)
        }
        args = ["-c", str(project.ini), "trace", "--format", "json", "--fail-on", "never"]
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    seen: dict[str, dict[str, object]] = {}
    for r in json.loads(result.stdout)["revisions"]:
        case = revisions[r["revision"]]
        seen[case.name] = {
            "modes": {lock["mode"] for s in r["statements"] for lock in s["locks"] if lock["relation"] == case.table},
            "rewritten": any(case.table in s["rewrites"] for s in r["statements"]),
            "error": r["error"],
        }
    return seen


def _strongest(modes: object) -> str | None:
    from migrate_guard.trace.postgresql import BLOCKS

    order = list(BLOCKS)
    return max(modes, key=order.index, default=None)  # type: ignore[call-overload]


@pytest.mark.parametrize("case", [c for c in PG_CASES if not c.autocommit], ids=lambda c: c.name)
def test_trace_postgresql_sees_what_the_server_does(pg_engine_for_trace: sa.Engine, pg_trace, case: Case) -> None:
    seen = observe_pg(pg_engine_for_trace, case)
    traced = pg_trace[case.name]
    assert traced["error"] is None, traced
    # trace names the strongest mode a statement took on each relation (the weaker ones it holds too add nothing)
    assert _strongest(traced["modes"]) == _strongest(seen.locks), (traced, seen)
    assert traced["rewritten"] == seen.rewritten, (traced, seen)


@pytest.fixture(scope="module")
def mariadb_trace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str | None]]:
    """The algorithm `trace` reports for each statement of each case's revision."""
    from migrate_guard.cli import cli

    _require("127.0.0.1", 3306, "MariaDB", "start it or set MIGRATE_GUARD_MARIADB_URL")
    with scratch_database("mysql", MARIADB_URL) as url:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        for case in MARIADB_CASES:
            run_sql(engine, case.fill(MARIADB_BASE) + ";" + case.fill(case.setup))
        engine.dispose()
        project = Project(tmp_path_factory.mktemp("mariadb-trace") / "proj", url)
        revisions = {
            project.revision(f"r{i:02d}", c.revision_body(), header=HEADER).stem: c for i, c in enumerate(MARIADB_CASES)
        }
        args = ["-c", str(project.ini), "trace", "--format", "json", "--fail-on", "never"]
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return {
        revisions[r["revision"]].name: [s["algorithm"] for s in r["statements"]]
        for r in json.loads(result.stdout)["revisions"]
    }


@pytest.mark.parametrize("case", MARIADB_CASES, ids=lambda c: c.name)
def test_trace_mariadb_tells_instant_in_place_and_copy_apart(
    mariadb_engine_for_trace: sa.Engine, mariadb_trace, case: Case
) -> None:
    algorithm, _ = observe_mariadb(mariadb_engine_for_trace, case)
    assert mariadb_trace[case.name] == [algorithm.lower()]
