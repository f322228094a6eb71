"""`trace` on real servers: each lock, rewrite and failure kind on its own revision, the scratch
database always dropped, --in-place refused unless declared disposable, the target's data and locks
untouched (issue 16)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import sqlalchemy as sa
from conftest import Project, error_line, everything, execute
from sqlalchemy.engine import make_url

# env.py in the Alembic cookbook form: the caller's connection when it passes one
COOKBOOK_ENV = """
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config


def run(connection):
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    shared = config.attributes.get("connection")
    if shared is not None:
        run(shared)
    else:
        engine = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
                                    poolclass=pool.NullPool)
        with engine.connect() as conn:
            run(conn)
"""

ORDERS = "CREATE TABLE orders (id int PRIMARY KEY, n int, note text, ts timestamp)"


def traced(run_cli, project: Project, *args: str, code: tuple[int, ...] = (0, 3)) -> dict:
    result = run_cli("-c", str(project.ini), "trace", "--format", "json", *args)
    assert result.exit_code in code, result.output
    return json.loads(result.stdout)


def on(project: Project, url: str, cookbook: bool = True, settings: str = "") -> Project:
    (project.root / "alembic.ini").write_text(
        "[alembic]\nscript_location = %(here)s/migrations\npath_separator = os\n"
        f"sqlalchemy.url = {url.replace('%', '%%')}\n"
    )
    if cookbook:
        (project.root / "migrations" / "env.py").write_text(COOKBOOK_ENV)
    if settings:
        project.settings(settings)
    return project


def statements(report: dict, revision: str) -> list[dict]:
    return next(r for r in report["revisions"] if r["revision"] == revision)["statements"]


def rules_of(report: dict, revision: str) -> set[str]:
    return {f["rule"] for f in report["findings"] if f["revision"] == revision}


def database_exists(url: str, name: str) -> bool:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                sql = "SELECT count(*) FROM pg_database WHERE datname = %(n)s"
            else:
                sql = "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %(n)s"
            return bool(conn.exec_driver_sql(sql, {"n": name}).scalar())
    finally:
        engine.dispose()


# --- PostgreSQL -------------------------------------------------------------------------------------


def pg_revisions(project: Project) -> None:
    project.revision("rewrite", 'op.alter_column("orders", "n", existing_type=sa.Integer(), type_=sa.BigInteger())')
    project.revision("index", 'op.create_index("ix_orders_ts", "orders", ["ts"])')
    project.revision(
        "concurrently", 'op.create_index("ix_orders_note", "orders", ["note"], postgresql_concurrently=True)'
    )
    project.revision(
        "scan",
        "op.execute(\"UPDATE orders SET note = 'x' WHERE note IS NULL\")\n"
        'op.alter_column("orders", "note", existing_type=sa.Text(), nullable=False)',
    )
    project.revision(
        "autocommit",
        "with op.get_context().autocommit_block():\n"
        '    op.create_index("ix_orders_n", "orders", ["n"], postgresql_concurrently=True)',
    )
    project.revision("addcol", 'op.add_column("orders", sa.Column("flag", sa.Boolean(), nullable=True))')


def test_postgresql_each_kind_on_its_own_revision(run_cli, project, postgresql_url):
    execute(postgresql_url, ORDERS, "INSERT INTO orders SELECT g, g, NULL, now() FROM generate_series(1, 500) g")
    pg_revisions(on(project, postgresql_url))
    before = everything(postgresql_url)
    report = traced(run_cli, project, "--fail-on", "never")
    assert report["server"].startswith("PostgreSQL ")
    assert [r["revision"] for r in report["revisions"]] == [
        "rewrite",
        "index",
        "concurrently",
        "scan",
        "autocommit",
        "addcol",
    ]
    (alter,) = statements(report, "rewrite")
    assert {"relation": "orders", "kind": "table", "mode": "AccessExclusiveLock"} in [
        {k: lock[k] for k in ("relation", "kind", "mode")} for lock in alter["locks"]
    ]
    assert alter["rewrites"] == ["orders"] and alter["algorithm"] is None
    assert "trace-table-rewrite" in rules_of(report, "rewrite")
    (index,) = statements(report, "index")
    assert [(lock["relation"], lock["mode"]) for lock in index["locks"] if lock["kind"] == "table"] == [
        ("orders", "ShareLock")
    ]
    assert index["rewrites"] == [] and index["seq_scans"] == {"orders": 1}
    failed = next(r for r in report["revisions"] if r["revision"] == "concurrently")
    assert "cannot run inside a transaction block" in failed["error"]
    assert "trace-fails-in-transaction" in rules_of(report, "concurrently")
    update, not_null = statements(report, "scan")  # the revision after the failure ran: the trace went on
    assert update["rows_written"] == {} and update["seq_scans"] == {"orders": 1}  # the scratch copy has no rows
    assert not_null["seq_scans"] == {"orders": 1}
    assert "trace-access-exclusive-scan" in rules_of(report, "scan")
    (concurrent,) = statements(report, "autocommit")
    assert concurrent["error"] is None and concurrent["rewrites"] == []
    assert "trace-fails-in-transaction" not in rules_of(report, "autocommit")
    (add,) = statements(report, "addcol")
    assert add["rewrites"] == [] and not rules_of(report, "addcol") & {"trace-table-rewrite"}
    # the JSON contract of issue 16
    assert set(report) >= {"server", "revisions", "findings"}
    assert set(report["revisions"][0]) == {"revision", "file", "error", "statements"}
    assert set(alter) >= {"line", "sql", "duration_ms", "locks", "rewrites", "seq_scans", "rows_written", "algorithm"}
    assert alter["line"] == 12 and alter["sql"].startswith("ALTER TABLE orders ALTER COLUMN n TYPE BIGINT")
    # the target: same rows, same revision (none), no scratch database left
    assert everything(postgresql_url) == before
    assert not database_exists(postgresql_url, report["scratch"]["database"])


def test_sample_rows_show_the_rows_a_backfill_writes(run_cli, project, postgresql_url):
    execute(postgresql_url, ORDERS, "INSERT INTO orders SELECT g, g, NULL, now() FROM generate_series(1, 50) g")
    project = on(project, postgresql_url)
    project.revision(
        "backfill",
        'op.add_column("orders", sa.Column("flag", sa.Boolean(), nullable=True))\n'
        'op.execute("UPDATE orders SET flag = true")',
    )
    report = traced(run_cli, project, "--sample-rows", "7", "--fail-on", "never")
    _, update = statements(report, "backfill")
    assert update["rows_written"] == {"orders": 7}
    assert "backfill-under-schema-lock" in rules_of(report, "backfill")


def test_a_writer_on_the_target_is_never_blocked(run_cli, project, postgresql_url):
    execute(postgresql_url, ORDERS)
    project = on(project, postgresql_url)
    project.revision(
        "slow",
        'op.alter_column("orders", "n", existing_type=sa.Integer(), type_=sa.BigInteger())\n'
        'op.execute("SELECT pg_sleep(1.5)")',  # holds ACCESS EXCLUSIVE on the scratch copy meanwhile
    )
    stop, waits = threading.Event(), []

    def writer() -> None:
        engine = sa.create_engine(postgresql_url, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            i = 0
            while not stop.is_set():
                i += 1
                started = time.perf_counter()
                conn.exec_driver_sql(f"INSERT INTO orders (id, n) VALUES ({i}, {i})")
                conn.commit()
                waits.append(time.perf_counter() - started)
                time.sleep(0.01)
        engine.dispose()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        report = traced(run_cli, project, "--fail-on", "never")
    finally:
        stop.set()
        thread.join()
    assert statements(report, "slow")[0]["rewrites"] == ["orders"]
    assert len(waits) > 50 and max(waits) < 0.5


def test_ctrl_c_drops_the_scratch_database(project, postgresql_url, tmp_path):
    execute(postgresql_url, ORDERS)
    project = on(project, postgresql_url)
    project.revision("sleepy", 'op.execute("SELECT pg_sleep(30)")')
    proc = subprocess.Popen(
        [sys.executable, "-m", "migrate_guard", "-c", str(project.ini), "trace"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()  # "trace: scratch database mg_trace_... built in ..."
    name = line.split("scratch database ", 1)[1].split()[0]
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) != 0
    assert not database_exists(postgresql_url, name)


def test_in_place_only_on_a_database_declared_disposable(run_cli, project, postgresql_url):
    execute(postgresql_url, ORDERS, "INSERT INTO orders (id, n) VALUES (1, 1)")
    project = on(project, postgresql_url)
    project.revision("rewrite", 'op.alter_column("orders", "n", existing_type=sa.Integer(), type_=sa.BigInteger())')
    result = run_cli("-c", str(project.ini), "trace", "--in-place")
    assert result.exit_code == 2 and "not declared disposable" in error_line(result)
    name = make_url(postgresql_url).database
    project.settings(f'[trace]\nin_place_ok = ["{name[:5]}*"]\n')
    before = everything(postgresql_url)
    report = traced(run_cli, project, "--in-place", "--fail-on", "never")
    assert report["scratch"] == {"database": name, "in_place": True, "build_seconds": 0.0}
    assert statements(report, "rewrite")[0]["rewrites"] == ["orders"]
    assert everything(postgresql_url) == before  # rolled back: no alembic_version, n still an integer
    with sa.create_engine(postgresql_url, poolclass=sa.pool.NullPool).connect() as conn:
        kind = conn.exec_driver_sql("SELECT data_type FROM information_schema.columns WHERE column_name = 'n'")
        assert kind.scalar() == "integer"


def test_in_place_needs_env_py_to_use_the_connection_it_is_given(run_cli, project, postgresql_url):
    name = make_url(postgresql_url).database
    project = on(project, postgresql_url, cookbook=False, settings=f'[trace]\nin_place_ok = ["{name}"]\n')
    project.revision("r1", 'op.create_table("t", sa.Column("id", sa.Integer, primary_key=True))')
    result = run_cli("-c", str(project.ini), "trace", "--in-place")
    assert result.exit_code == 2 and "config.attributes" in error_line(result)


def test_an_env_py_that_connects_elsewhere_is_stopped_before_it_runs_anything(run_cli, project, postgresql_url):
    execute(postgresql_url, ORDERS)
    project = on(project, postgresql_url, cookbook=False)
    env = project.root / "migrations" / "env.py"  # a stock env.py that reads its URL from the environment
    env.write_text(
        env.read_text()
        .replace(
            "config.get_section(config.config_ini_section, {})", '{"sqlalchemy.url": os.environ["MG_TEST_TARGET"]}'
        )
        .replace("from alembic import context", "import os\nfrom alembic import context")
    )
    project.revision("r1", 'op.drop_table("orders")')
    os.environ["MG_TEST_TARGET"] = postgresql_url
    try:
        result = run_cli("-c", str(project.ini), "trace")
    finally:
        del os.environ["MG_TEST_TARGET"]
    assert result.exit_code == 2 and "not the database trace runs on" in error_line(result)
    assert "orders" in everything(postgresql_url)


# --- MariaDB -----------------------------------------------------------------------------------------


def test_mariadb_tells_instant_in_place_and_copy_apart(run_cli, project, mariadb_url):
    execute(mariadb_url, "CREATE TABLE orders (id int PRIMARY KEY, n int, code int) ENGINE=InnoDB")
    project = on(project, mariadb_url)
    project.revision("instant", 'op.add_column("orders", sa.Column("flag", sa.Boolean(), nullable=True))')
    project.revision("inplace", 'op.create_index("ix_orders_n", "orders", ["n"])')
    project.revision("copy", 'op.alter_column("orders", "code", existing_type=sa.Integer(), type_=sa.String(20))')
    project.revision("broken", 'op.drop_column("orders", "no_such_column")')
    project.revision("after", 'op.add_column("orders", sa.Column("late", sa.Integer(), nullable=True))')
    before = everything(mariadb_url)
    report = traced(run_cli, project, "--fail-on", "never")
    assert report["server"].startswith("MariaDB ")
    algorithms = {r["revision"]: [s["algorithm"] for s in r["statements"]] for r in report["revisions"]}
    assert algorithms["instant"] == ["instant"] and algorithms["inplace"] == ["inplace"]
    assert algorithms["copy"] == ["copy"]
    (copy,) = statements(report, "copy")
    assert copy["rewrites"] == ["orders"] and "INSERT/UPDATE/DELETE" in copy["locks"][0]["blocks"]
    assert statements(report, "instant")[0]["locks"][0]["blocks"] == []
    assert "trace-copy-algorithm" in rules_of(report, "copy")
    assert not rules_of(report, "instant") & {"trace-copy-algorithm", "trace-table-rewrite"}
    broken = next(r for r in report["revisions"] if r["revision"] == "broken")
    assert broken["error"] and "trace-revision-fails" in rules_of(report, "broken")
    assert statements(report, "after")[0]["algorithm"] == "instant"  # the trace went on after the failure
    assert everything(mariadb_url) == before
    assert not database_exists(mariadb_url, report["scratch"]["database"])


def test_mariadb_in_place_is_refused(run_cli, project, mariadb_url):
    name = make_url(mariadb_url).database
    project = on(project, mariadb_url, settings=f'[trace]\nin_place_ok = ["{name}"]\n')
    project.revision("r1", 'op.create_table("t", sa.Column("id", sa.Integer, primary_key=True))')
    result = run_cli("-c", str(project.ini), "trace", "--in-place")
    assert result.exit_code == 2 and "transactional DDL" in error_line(result)


# --- SQLite ------------------------------------------------------------------------------------------


def test_sqlite_batch_rebuild_is_a_rewrite_and_a_failure_does_not_stop_the_trace(run_cli, project, tmp_path):
    target = tmp_path / "app.db"
    url = f"sqlite:///{target}"
    execute(url, "CREATE TABLE orders (id integer PRIMARY KEY, n integer)", "INSERT INTO orders VALUES (1, 1)")
    project = on(project, url)
    project.revision(
        "batch",
        'with op.batch_alter_table("orders", recreate="always") as b:\n'
        '    b.alter_column("n", existing_type=sa.Integer(), type_=sa.BigInteger())',
    )
    project.revision("broken", 'op.execute("DROP TABLE no_such_table")')
    project.revision("after", 'op.create_index("ix_orders_n", "orders", ["n"])')
    before = target.read_bytes()
    report = traced(run_cli, project, "--fail-on", "never")
    assert any(s["rewrites"] == ["orders"] for s in statements(report, "batch"))
    assert "no such table" in next(r for r in report["revisions"] if r["revision"] == "broken")["error"]
    assert statements(report, "after")[0]["error"] is None
    assert target.read_bytes() == before


def test_migrate_safe_dry_run_shows_the_trace_and_touches_nothing(run_cli, example):
    result = run_cli("-c", str(example / "alembic.ini"), "migrate-safe", "--dry-run", "--trace")
    assert result.exit_code in (0, 3), result.output
    assert "migrations/versions/0005_drop_legacy_code.py  [0005]  ok" in result.stdout
    assert "rewrites customers" in result.stdout  # the batch block rebuilt the table
    assert not (example / "example.db").exists() or "alembic_version" not in everything(
        f"sqlite:///{example / 'example.db'}"
    )
    refused = run_cli("-c", str(example / "alembic.ini"), "migrate-safe", "--trace")
    assert refused.exit_code == 2 and "--dry-run" in error_line(refused)


def test_acknowledged_trace_findings_pass_and_check_does_not_call_them_stale(run_cli, project, postgresql_url):
    execute(postgresql_url, ORDERS)
    project = on(project, postgresql_url)
    project.revision(
        "rewrite",
        "# migrate-guard: allow trace-table-rewrite orders -- a small table, rewritten at night\n"
        "# migrate-guard: allow alter-column-type orders.n -- every value fits\n"
        "op.execute(\"SET LOCAL lock_timeout = '2s'\")\n"
        'op.alter_column("orders", "n", existing_type=sa.Integer(), type_=sa.BigInteger())',
    )
    report = traced(run_cli, project, "--fail-on", "warning", code=(0,))
    assert [(f["rule"], f["allowed"]) for f in report["findings"]] == [
        ("alter-column-type", True),
        ("trace-table-rewrite", True),
    ]
    github = run_cli("-c", str(project.ini), "trace", "--format", "github", "--fail-on", "warning")
    assert github.exit_code == 0 and "::error" not in github.stdout and "::warning" not in github.stdout
    assert "title=migrate-guard trace-table-rewrite (allowed)::" in github.stdout
    checked = run_cli("-c", str(project.ini), "check", "--format", "json", "--fail-on", "warning")
    assert checked.exit_code == 0, checked.output  # the trace's acknowledgement is not stale for check
    assert "invalid-acknowledgement" not in checked.stdout
