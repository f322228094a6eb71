"""scratch_copy: the target's schema and Alembic revision in a scratch database, dropped however the block ends,
the target only read (same rows, same schema) and its writers never held up."""

from __future__ import annotations

import os
import secrets
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from conftest import MARIADB_URL, PG_URL, everything, execute
from sqlalchemy.engine import make_url

from migrate_guard.errors import GuardError
from migrate_guard.trace import scratch as scratch_module
from migrate_guard.trace.scratch import Terminated, retarget_dump, scratch_copy, split_guc_list

VERSION = "abc123"

PG_SCHEMA = [
    "CREATE TYPE mood AS ENUM ('ok', 'sad')",
    "CREATE TABLE parent (id serial PRIMARY KEY, name text NOT NULL, m mood,"
    " g int GENERATED ALWAYS AS (id * 2) STORED)",
    "CREATE TABLE child (id serial PRIMARY KEY, parent_id int REFERENCES parent (id), v text)",
    "CREATE INDEX child_v ON child (v)",
    "CREATE VIEW pv AS SELECT id, name FROM parent",
    "CREATE FUNCTION shout() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.v := upper(NEW.v); RETURN NEW; END $$",
    "CREATE TRIGGER child_shout BEFORE INSERT ON child FOR EACH ROW EXECUTE FUNCTION shout()",
    "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)",
    f"INSERT INTO alembic_version VALUES ('{VERSION}')",
    "INSERT INTO parent (name, m) SELECT 'p' || i, 'ok' FROM generate_series(1, 10) i",
    "INSERT INTO child (parent_id, v) SELECT 11 - i, 'c' || i FROM generate_series(1, 10) i",
]


def mariadb_schema(db: str) -> list[str]:
    # The trigger and the routine name the target database; created while its default charset differs, so
    # mariadb-dump wraps them in ALTER DATABASE `db` ... lines: all of it must land on the scratch database.
    return [
        f"ALTER DATABASE `{db}` CHARACTER SET latin1",
        "CREATE TABLE parent (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(20) NOT NULL, g INT AS (id * 2) VIRTUAL)",
        "CREATE TABLE child (id INT AUTO_INCREMENT PRIMARY KEY, parent_id INT, v VARCHAR(20), KEY child_v (v),"
        " CONSTRAINT child_fk FOREIGN KEY (parent_id) REFERENCES parent (id))",
        "CREATE TABLE log (msg VARCHAR(200))",
        f"CREATE VIEW pv AS SELECT id, name FROM `{db}`.parent",
        f"CREATE TRIGGER child_log AFTER INSERT ON child FOR EACH ROW"
        f" INSERT INTO `{db}`.log VALUES (CONCAT('c', NEW.id))",
        f"CREATE PROCEDURE clear_log() DELETE FROM `{db}`.log",
        f"CREATE EVENT hourly ON SCHEDULE EVERY 1 HOUR DO DELETE FROM `{db}`.log",
        f"ALTER DATABASE `{db}` CHARACTER SET utf8mb4",
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)",
        f"INSERT INTO alembic_version VALUES ('{VERSION}')",
        "INSERT INTO parent (name) VALUES " + ", ".join(f"('p{i}')" for i in range(10)),
        "INSERT INTO child (parent_id, v) VALUES " + ", ".join(f"({10 - i}, 'c{i}')" for i in range(10)),
    ]


SQLITE_SCHEMA = [
    "CREATE TABLE parent (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,"
    " g INT GENERATED ALWAYS AS (id * 2))",
    "CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INT REFERENCES parent (id), v TEXT)",
    "CREATE INDEX child_v ON child (v)",
    "CREATE VIEW pv AS SELECT id, name FROM parent",
    "CREATE TRIGGER pv_insert INSTEAD OF INSERT ON pv BEGIN INSERT INTO parent (name) VALUES (NEW.name); END",
    "CREATE TRIGGER child_shout AFTER INSERT ON child BEGIN UPDATE child SET v = upper(v) WHERE id = NEW.id; END",
    "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)",
    f"INSERT INTO alembic_version VALUES ('{VERSION}')",
    *[f"INSERT INTO parent (name) VALUES ('p{i}')" for i in range(10)],
    *[f"INSERT INTO child (parent_id, v) VALUES ({10 - i}, 'c{i}')" for i in range(10)],
]


@dataclass
class Target:
    dialect: str  # "postgresql" | "mariadb" | "sqlite"
    url: str

    @property
    def database(self) -> str:
        return make_url(self.url).database or ""


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def target(request: pytest.FixtureRequest) -> Target:
    """A target database with two tables (an FK between them, 10 rows each), an index, a view, triggers, a
    version table at VERSION; PostgreSQL adds an enum type and a trigger function, MariaDB a routine and an event."""
    url = request.getfixturevalue(f"{request.param}_url")
    db = make_url(url).database or ""
    schema = {"sqlite": SQLITE_SCHEMA, "postgresql": PG_SCHEMA, "mariadb": mariadb_schema(db)}[request.param]
    execute(url, *schema)
    return Target(request.param, url)


@pytest.fixture
def names(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of every scratch database scratch_copy picks during the test."""
    picked: list[str] = []
    pick = scratch_module.scratch_name

    def recorded() -> str:
        picked.append(pick())
        return picked[-1]

    monkeypatch.setattr(scratch_module, "scratch_name", recorded)
    return picked


def query(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(statement, params or ()).fetchall()]
    finally:
        engine.dispose()


def exists(t: Target, name: str) -> bool:
    """Whether a database (or, for SQLite, the file) of that name exists on the target's server."""
    if t.dialect == "sqlite":
        return os.path.exists(name)
    if t.dialect == "postgresql":
        return bool(query(PG_URL, "SELECT 1 FROM pg_database WHERE datname = %s", name))
    return bool(query(MARIADB_URL, "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", name))


def schema_of(t: Target, url: str | None = None) -> list[tuple[Any, ...]]:
    """What a database holds besides rows: every object with its definition."""
    url = url or t.url
    if t.dialect == "sqlite":
        return query(url, "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")
    if t.dialect == "postgresql":
        return query(
            url,
            "SELECT 'rel', c.relname || ':' || c.relkind::text, (SELECT string_agg(a.attname || ' ' ||"
            "  format_type(a.atttypid, a.atttypmod) || a.attgenerated::text, ', ' ORDER BY a.attnum)"
            "  FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)"
            " FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace"
            " UNION ALL SELECT 'con', conname, pg_get_constraintdef(oid) FROM pg_constraint"
            "  WHERE connamespace = 'public'::regnamespace"
            " UNION ALL SELECT 'index', indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
            " UNION ALL SELECT 'view', viewname, definition FROM pg_views WHERE schemaname = 'public'"
            " UNION ALL SELECT 'trigger', tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal"
            " UNION ALL SELECT 'function', proname, prosrc FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
            " UNION ALL SELECT 'enum', t.typname, string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)"
            "  FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid GROUP BY t.typname"
            " ORDER BY 1, 2",
        )
    db = make_url(url).database
    return query(
        url,
        "SELECT 'db', DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA"
        "  WHERE SCHEMA_NAME = %s"
        " UNION ALL SELECT 'column', CONCAT(TABLE_NAME, '.', COLUMN_NAME), CONCAT(COLUMN_TYPE, ' ', EXTRA)"
        "  FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s"
        " UNION ALL SELECT 'index', CONCAT(TABLE_NAME, '.', INDEX_NAME), COLUMN_NAME"
        "  FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s"
        " UNION ALL SELECT 'fk', CONSTRAINT_NAME, REFERENCED_TABLE_NAME"
        "  FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = %s"
        " UNION ALL SELECT 'view', TABLE_NAME, REPLACE(VIEW_DEFINITION, %s, '<db>')"
        "  FROM information_schema.VIEWS WHERE TABLE_SCHEMA = %s"
        " UNION ALL SELECT 'trigger', TRIGGER_NAME, REPLACE(ACTION_STATEMENT, %s, '<db>')"
        "  FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s"
        " UNION ALL SELECT 'routine', ROUTINE_NAME, REPLACE(ROUTINE_DEFINITION, %s, '<db>')"
        "  FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s"
        " UNION ALL SELECT 'event', EVENT_NAME, CONCAT(STATUS, ' ', REPLACE(EVENT_DEFINITION, %s, '<db>'))"
        "  FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s"
        " ORDER BY 1, 2, 3",
        *([db] * 12),
    )


def user_rows(url: str) -> dict[str, int]:
    return {name: len(rows) for name, rows in everything(url).items() if name != "alembic_version"}


def check_objects(t: Target, url: str) -> None:
    """The scratch database at ``url`` has the target's objects, pointing at itself."""
    got = schema_of(t, url)
    if t.dialect == "mariadb":
        scratch = make_url(url).database
        # the same objects, the same definitions, except that the events are disabled
        assert got == [
            (*row[:2], row[2].replace("ENABLED", "DISABLED")) if row[0] == "event" else row for row in schema_of(t)
        ]
        assert ("event", "hourly", "DISABLED DELETE FROM `<db>`.log") in got
        assert ("db", "utf8mb4", "utf8mb4_general_ci") in got
        # its trigger writes to its own log table, not the target's
        execute(
            url,
            "INSERT INTO parent (name) VALUES ('x')",
            "INSERT INTO child (parent_id, v) VALUES (LAST_INSERT_ID(), 'y')",
        )
        assert [msg[:1] for (msg,) in query(url, f"SELECT msg FROM `{scratch}`.log")] == ["c"]
        return
    assert got == schema_of(t)
    kinds = {row[:2] for row in got}
    if t.dialect == "postgresql":
        assert {("enum", "mood"), ("view", "pv"), ("function", "shout"), ("trigger", "child_shout")} <= kinds
        assert {("index", "child_v"), ("con", "child_parent_id_fkey"), ("rel", "parent:r")} <= kinds
    else:
        assert {("index", "child_v"), ("view", "pv"), ("trigger", "pv_insert"), ("trigger", "child_shout")} <= kinds
        assert query(url, "SELECT \"table\" FROM pragma_foreign_key_list('child')") == [("parent",)]


# --- the copy ---------------------------------------------------------------------------------------------


def test_scratch_has_the_schema_and_the_revision_but_no_rows(target: Target, names: list[str]) -> None:
    rows, schema = everything(target.url), schema_of(target)
    with scratch_copy(target.url) as copy:
        assert copy.dialect == ("mysql" if target.dialect == "mariadb" else target.dialect)
        if target.dialect != "sqlite":
            assert copy.name == names[0] and copy.name.startswith("mg_trace_")
        assert copy.build_seconds > 0 and all("\n" not in note for note in copy.notes)
        assert everything(copy.url)["alembic_version"] == [(VERSION,)]
        assert user_rows(copy.url) == {"child": 0, "parent": 0, **({"log": 0} if target.dialect == "mariadb" else {})}
        check_objects(target, copy.url)
        assert exists(target, copy.name)
    assert not exists(target, copy.name)
    assert everything(target.url) == rows and schema_of(target) == schema


def test_sample_rows(target: Target) -> None:
    rows, schema = everything(target.url), schema_of(target)
    with scratch_copy(target.url, sample_rows=3) as copy:
        got = everything(copy.url)
        assert got["alembic_version"] == [(VERSION,)]
        # 3 of 10 parents, 3 of 10 children whose parents may not be among them: accepted all the same
        assert len(got["parent"]) == 3 and len(got["child"]) == 3
        assert {r[1] for r in got["child"]} - {r[0] for r in got["parent"]}
        assert set(got["child"]) <= set(rows["child"]) and set(got["parent"]) <= set(rows["parent"])
        if target.dialect == "mariadb":  # 3 of the target's log rows: the trigger did not fire on the sample
            assert len(got["log"]) == 3 and set(got["log"]) <= set(rows["log"])
        # new rows take ids after the target's (its sequence positions came along): none collides with the sample
        execute(copy.url, "INSERT INTO parent (name) VALUES ('new')")
        assert max(r[0] for r in everything(copy.url)["parent"]) > max(r[0] for r in rows["parent"])
    assert everything(target.url) == rows and schema_of(target) == schema


@pytest.mark.parametrize("dialect", ["postgresql", "mariadb"])
def test_sample_rows_onto_another_server(dialect: str, request: pytest.FixtureRequest) -> None:
    """scratch_url: the scratch database goes to that server (here the same one, reached by another URL, so the
    rows go through the client)."""
    url = request.getfixturevalue(f"{dialect}_url")
    execute(url, *(PG_SCHEMA if dialect == "postgresql" else mariadb_schema(make_url(url).database or "")))
    server = PG_URL if dialect == "postgresql" else MARIADB_URL
    with scratch_copy(url, scratch_url=server, sample_rows=3) as copy:
        assert make_url(copy.url).database == copy.name
        got = everything(copy.url)
        assert got["alembic_version"] == [(VERSION,)] and len(got["parent"]) == 3 and len(got["child"]) == 3
    assert not exists(Target(dialect, url), copy.name)


# --- always dropped ---------------------------------------------------------------------------------------


class Boom(Exception):
    pass


def test_dropped_after_an_exception_ctrl_c_and_sigterm(target: Target) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be set in the main thread")
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        for kind in (Boom, KeyboardInterrupt, Terminated):
            with pytest.raises(kind), scratch_copy(target.url, sample_rows=1) as copy:
                assert exists(target, copy.name)
                if kind is Terminated:
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(5)  # the handler raises before this ends
                raise kind()
            assert not exists(target, copy.name), kind
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("dialect", ["postgresql", "mariadb"])
def test_a_failed_build_drops_what_it_created(
    dialect: str, request: pytest.FixtureRequest, names: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = request.getfixturevalue(f"{dialect}_url")
    builder = scratch_module._PostgreSQL if dialect == "postgresql" else scratch_module._MySQL

    def refuse(*args: Any) -> None:
        raise GuardError("copying rows failed: refused")

    monkeypatch.setattr(builder, "_copy_rows", refuse)
    execute(url, "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
    with pytest.raises(GuardError, match="^copying rows failed: refused$"), scratch_copy(url):
        pass
    assert len(names) == 1 and not exists(Target(dialect, url), names[0])


# --- refusals, in one line ------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mariadb"])
def test_a_target_that_does_not_exist(dialect: str, request: pytest.FixtureRequest, tmp_path: Any) -> None:
    missing = f"mg_missing_{secrets.token_hex(6)}"
    if dialect == "sqlite":
        url, expected = f"sqlite:///{tmp_path / 'missing.db'}", "no SQLite database at"
    else:
        request.getfixturevalue(f"{dialect}_url")  # skips when the server does not answer
        url = make_url(PG_URL if dialect == "postgresql" else MARIADB_URL).set(database=missing)
        url, expected = url.render_as_string(hide_password=False), missing
    with pytest.raises(GuardError) as raised, scratch_copy(url):
        pass
    assert expected in raised.value.message and "\n" not in str(raised.value)
    assert not (tmp_path / "missing.db").exists()


def test_refusals_before_anything_is_created() -> None:
    for url, expected in [
        ("not a url", "not a database URL"),
        ("oracle://u@h/db", "not oracle"),
        ("sqlite://", "in-memory"),
        ("postgresql://postgres@127.0.0.1:1/db", "cannot connect to PostgreSQL at 127.0.0.1:1/db"),
    ]:
        with pytest.raises(GuardError, match=expected) as raised, scratch_copy(url):
            pass
        assert "\n" not in str(raised.value)
    with (
        pytest.raises(GuardError, match="must be postgresql like the target"),
        scratch_copy("postgresql://h/db", scratch_url="sqlite:///x.db"),
    ):
        pass


# --- PostgreSQL: the target's other sessions ---------------------------------------------------------------


def test_postgresql_writers_are_never_held_up(postgresql_url: str) -> None:
    execute(postgresql_url, *PG_SCHEMA, "CREATE TABLE busy (id serial PRIMARY KEY, at timestamptz DEFAULT now())")
    stop, waits, errors = threading.Event(), [0.0], []

    def writer() -> None:
        try:
            with psycopg.connect(postgresql_url.replace("+psycopg", ""), autocommit=True) as conn:
                while not stop.is_set():
                    started = time.monotonic()
                    conn.execute("INSERT INTO busy DEFAULT VALUES")
                    conn.execute("INSERT INTO child (parent_id, v) VALUES (1, 'w')")
                    waits.append(time.monotonic() - started)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for sample in (0, 3):
            with scratch_copy(postgresql_url, sample_rows=sample) as copy:
                assert everything(copy.url)["alembic_version"] == [(VERSION,)]
    finally:
        stop.set()
        thread.join()
    assert not errors and len(waits) > 20 and max(waits) < 0.5, (errors, len(waits), max(waits))


def test_postgresql_does_not_wait_behind_a_lock(
    postgresql_url: str, names: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scratch_module, "LOCK_WAIT_SECONDS", 0.3)
    execute(postgresql_url, *PG_SCHEMA)
    with psycopg.connect(postgresql_url.replace("+psycopg", "")) as holder:
        holder.execute("LOCK TABLE child IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        lock = r"waited 0.3s for a read lock on public\.child"
        with pytest.raises(GuardError, match=lock) as raised, scratch_copy(postgresql_url):
            pass
        assert time.monotonic() - started < 3 and "\n" not in str(raised.value)
        holder.rollback()
    assert not exists(Target("postgresql", postgresql_url), names[0])


def test_postgresql_sample_needs_session_replication_role(postgresql_url: str) -> None:
    role = f"mg_trace_role_{secrets.token_hex(6)}"
    execute(
        postgresql_url,
        *PG_SCHEMA,
        f"CREATE ROLE {role} LOGIN CREATEDB",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}",
        f"GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
    )
    try:
        url = make_url(postgresql_url).set(username=role).render_as_string(hide_password=False)
        with scratch_copy(url) as copy:  # without a sample it needs no such right
            assert everything(copy.url)["alembic_version"] == [(VERSION,)]
        refused = "--sample-rows needs a role that may set session_replication_role"
        with pytest.raises(GuardError, match=refused), scratch_copy(url, sample_rows=3):
            pass
        owned = "SELECT datname FROM pg_database WHERE datdba = (SELECT oid FROM pg_roles WHERE rolname = %s)"
        assert not query(PG_URL, owned, role)
    finally:
        execute(postgresql_url, f"DROP OWNED BY {role}")
        execute(PG_URL, f"DROP ROLE {role}")


# --- pieces ------------------------------------------------------------------------------------------------


def test_retarget_dump() -> None:
    dump = (
        b"ALTER DATABASE `app` CHARACTER SET latin1 ;\n"
        b"USE `app`;\n"
        b"/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`%`*/ /*!50003 TRIGGER t AFTER INSERT ON c FOR EACH ROW "
        b"INSERT INTO app.log SELECT app.c.id FROM app . c AS app WHERE app.id > 0 AND x = 'app.log' */;;\n"
        b"CREATE DEFINER=CURRENT_USER() PROCEDURE `p`() CALL `app`.`q`() -- app.log\n;;\n"
        b"/*!50106 EVENT `e` ON SCHEDULE EVERY 1 HOUR ON COMPLETION NOT PRESERVE ENABLE DO SELECT 'caf\xc3\xa9' */ ;;\n"
    )
    out = retarget_dump(dump, "app", "mg_trace_1", {"log", "c", "q"}, fold_case=False)
    assert out.sql == (
        b"ALTER DATABASE `mg_trace_1` CHARACTER SET latin1 ;\n"
        b"USE `mg_trace_1`;\n"
        b"/*!50003 CREATE*/ /*!50017 */ /*!50003 TRIGGER t AFTER INSERT ON c FOR EACH ROW "
        b"INSERT INTO `mg_trace_1`.log SELECT `mg_trace_1`.c.id FROM `mg_trace_1` . c AS app WHERE app.id > 0"
        b" AND x = 'app.log' */;;\n"
        b"CREATE  PROCEDURE `p`() CALL `mg_trace_1`.`q`() -- app.log\n;;\n"
        b"/*!50106 EVENT `e` ON SCHEDULE EVERY 1 HOUR ON COMPLETION NOT PRESERVE DISABLE"
        b" DO SELECT 'caf\xc3\xa9' */ ;;\n"
    )
    assert (out.references, out.definers, out.events, out.left) == (4, 2, 1, 2)  # left: app.id, 'app.log'


def test_split_guc_list() -> None:
    assert split_guc_list('app, "$user", public') == ["app", "$user", "public"]
    assert split_guc_list('"a,b", "say ""hi""",c') == ["a,b", 'say "hi"', "c"]
    assert split_guc_list("") == [""]


def test_a_target_without_a_version_table_is_at_base(db_url: str) -> None:
    execute(db_url, "CREATE TABLE t (id INTEGER PRIMARY KEY)", "INSERT INTO t VALUES (1)")
    with scratch_copy(db_url, sample_rows=5) as copy:
        assert everything(copy.url) == {"t": [(1,)]}
