"""migrate-safe end to end, on SQLite, PostgreSQL and MariaDB: block, apply, fail and roll back or
restore, crash and recover, lock, dry run, guarded downgrade, stock env.py.

Every test starts from the example project migrated to 0004 (or a later revision) and seeded, with an
encrypted backup repository configured. Failures are injected with extra revision files in the copy's
``migrations/versions/``. After every failure the database must be exactly as before the run: every
table's rows, every table's columns (and indexes and foreign keys), and ``alembic_version``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import KEY, add_backup_setting, error_line, migrate_example, use_repository

BIN = Path(sys.executable).parent


# --- the starting point ------------------------------------------------------------------------------


@dataclass
class Guarded:
    root: Path
    url: str

    @property
    def ini(self) -> Path:
        return self.root / "alembic.ini"

    @property
    def args(self) -> tuple[str, ...]:
        return ("--url", self.url, "-c", str(self.ini))

    @property
    def dialect(self) -> str:
        return sa.engine.make_url(self.url).get_backend_name()

    @property
    def dialect_family(self) -> str:
        return "mysql" if self.dialect in ("mysql", "mariadb") else self.dialect

    @property
    def transactional(self) -> bool:
        return self.dialect in ("postgresql", "sqlite")

    @property
    def versions(self) -> Path:
        return self.root / "migrations" / "versions"

    def revision(self, rev: str, down: str | None, upgrade: str, downgrade: str = "pass", header: str = "") -> Path:
        """Add a revision file; ``upgrade``/``downgrade`` are function bodies."""

        def body(code: str) -> str:
            return textwrap.indent(textwrap.dedent(code).strip() or "pass", "    ")

        source = (
            f'"""test revision {rev}"""\nimport os\nimport time\nfrom pathlib import Path\n\n'
            f"from alembic import op\nimport sqlalchemy as sa\n{textwrap.dedent(header)}\n"
            f"revision = {rev!r}\ndown_revision = {down!r}\nbranch_labels = None\ndepends_on = None\n\n\n"
            f"def upgrade():\n{body(upgrade)}\n\n\ndef downgrade():\n{body(downgrade)}\n"
        )
        path = self.versions / f"{rev}_test.py"
        path.write_text(source)
        return path

    def command(self, *args: str) -> list[str]:
        """A ``migrate-guard`` subprocess command line."""
        return [str(BIN / "migrate-guard"), "-c", str(self.ini), "--url", self.url, *args]

    def safe_command(self, *args: str) -> list[str]:
        """A ``migrate-safe`` subprocess command line (the console script)."""
        return [str(BIN / "migrate-safe"), "-c", str(self.ini), "--url", self.url, *args]

    def repository(self):
        from migrate_guard.backup.service import open_repository
        from migrate_guard.config import load_project

        return open_repository(load_project(self.ini, self.url))

    def journal(self) -> list[dict]:
        return self.repository().journal()


def _prepare(example: Path, url: str, revision: str, monkeypatch: pytest.MonkeyPatch) -> Guarded:
    migrate_example(example, url, revision, customers=10)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            columns = {c["name"] for c in sa.inspect(conn).get_columns("customers")}
            if "legacy_code" in columns:  # values that 0005 drops and a restore must bring back
                ids = [r[0] for r in conn.execute(sa.text("SELECT id FROM customers"))]
                for i in ids:
                    conn.execute(
                        sa.text("UPDATE customers SET legacy_code = :c WHERE id = :i"), {"c": f"LEG-{i:04d}", "i": i}
                    )
            if sa.inspect(conn).has_table("import_staging"):
                for n in range(3):
                    conn.execute(sa.text("INSERT INTO import_staging (payload) VALUES (:p)"), {"p": f"row {n} ünïcødé"})
    finally:
        engine.dispose()
    use_repository(example, example / "repo", monkeypatch)
    return Guarded(example, url)


@pytest.fixture
def guarded(example: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Guarded:
    """The example migrated to 0004 and seeded (10 customers, legacy codes, staging rows)."""
    return _prepare(example, db_url, "0004", monkeypatch)


@pytest.fixture
def guarded_pg(example: Path, postgresql_url: str, monkeypatch: pytest.MonkeyPatch) -> Guarded:
    """The example migrated to 0004 and seeded, on PostgreSQL only."""
    return _prepare(example, postgresql_url, "0004", monkeypatch)


@pytest.fixture
def guarded_0006(example: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Guarded:
    """The example migrated to 0006 (heads) and seeded."""
    return _prepare(example, db_url, "0006", monkeypatch)


# --- comparing the database with its state before ------------------------------------------------------


def db_state(url: str) -> dict:
    """Every table (alembic_version included): columns (name, type, nullable), indexes, foreign keys, rows."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            preparer = conn.dialect.identifier_preparer
            state = {}
            for table in sorted(inspector.get_table_names()):
                columns = [(c["name"], str(c["type"]), bool(c["nullable"])) for c in inspector.get_columns(table)]
                indexes = sorted(
                    (i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(table)
                )
                fks = sorted(
                    (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                    for f in inspector.get_foreign_keys(table)
                )
                rows = sorted(
                    (tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {preparer.quote(table)}"))), key=repr
                )
                state[table] = {"columns": columns, "indexes": indexes, "foreign_keys": fks, "rows": rows}
            return state
    finally:
        engine.dispose()


def revision_of(url: str) -> list[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return sorted(r[0] for r in conn.execute(sa.text("SELECT version_num FROM alembic_version")))
    finally:
        engine.dispose()


def assert_same_state(url: str, before: dict) -> None:
    after = db_state(url)
    assert sorted(after) == sorted(before), "tables differ"
    for table in before:
        assert after[table]["columns"] == before[table]["columns"], f"columns of {table}"
        assert after[table]["rows"] == before[table]["rows"], f"rows of {table}"
    for table in before:
        assert after[table]["indexes"] == before[table]["indexes"], f"indexes of {table}"
        assert after[table]["foreign_keys"] == before[table]["foreign_keys"], f"foreign keys of {table}"


def assert_can_insert(url: str) -> None:
    """The application can go on writing: id sequences / AUTO_INCREMENT survived a restore."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO customers (customer_code, name) VALUES ('NEW00001', 'Neu Kunde')"))
            new_id = conn.execute(sa.text("SELECT id FROM customers WHERE customer_code = 'NEW00001'")).scalar()
            assert new_id > 10
            conn.execute(sa.text("DELETE FROM customers WHERE customer_code = 'NEW00001'"))
    finally:
        engine.dispose()


def write_row(url: str, table: str, **values: object) -> None:
    """The application writing a row (committed)."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.table(table, *(sa.column(k) for k in values)).insert().values(**values))
    finally:
        engine.dispose()


def snapshots(run_cli, g: Guarded, kind: str | None = None) -> list[dict]:
    """The database's snapshots (of ``kind`` only: "safety", "pre-undo", ...)."""
    result = run_cli(*g.args, "list", "--format", "json")
    if result.exit_code == 2 and "no backup repository" in result.stderr.lower():
        return []
    assert result.exit_code == 0, result.output
    return [s for s in json.loads(result.stdout) if kind is None or s["kind"] == kind]


def no_new_snapshot(run_cli, g: Guarded) -> bool:
    return not (g.root / "repo").exists() or snapshots(run_cli, g) == []


def failed_as_expected(result, g: Guarded, before_rev: str) -> None:
    """Exit 1, saying the run was rolled back (transactional DDL) or restored from the snapshot (MariaDB)."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    if g.transactional:
        assert f"rolled back to {before_rev}" in result.stderr, result.stderr
    else:
        assert f"restored to {before_rev}, snapshot " in result.stderr, result.stderr


# Fails at run time, but the analysis can name its table, so the safety snapshot keeps the "affected" scope.
FAILING_SQL = 'op.execute("UPDATE customers SET no_such_column = 1 WHERE id = 1")'
# Cannot even be classified: the safety snapshot then covers every table.
INVALID_SQL = 'op.execute("THIS IS NOT VALID SQL AT ALL")'


def partial_snapshot(result) -> bool:
    """Whether the run's plan says the safety snapshot covers only some tables (the "affected" scope)."""
    return "safety snapshot: all tables" not in result.stderr and " tables: " in result.stderr


# --- 1. blocked ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["ack-removed", "unreviewed-revision"])
def test_unreviewed_destructive_revision_is_blocked_and_touches_nothing(run_cli, guarded, how):
    g = guarded
    if how == "ack-removed":
        path = g.versions / "0005_drop_legacy_code.py"
        path.write_text(path.read_text().replace("# migrate-guard: allow", "# TODO: allow"))
        culprit, after_rev = "0005", "0006"
    else:
        g.revision("0007", "0006", 'op.drop_column("customers", "phone")')
        culprit, after_rev = "0007", "0007"
    before = db_state(g.url)

    result = run_cli(*g.args, "migrate-safe")

    assert result.exit_code == 3, result.output
    assert "drop-column" in result.stdout and "customers" in result.stdout  # the findings are printed
    assert "blocked: 1 unreviewed error finding" in result.stderr and "nothing was touched" in result.stderr
    assert f"[{culprit}]" in result.stdout
    assert_same_state(g.url, before)
    assert revision_of(g.url) == ["0004"]
    assert no_new_snapshot(run_cli, g)

    # acknowledged on the command line instead, the same run goes through
    target = "customers.legacy_code" if how == "ack-removed" else "customers.phone"
    result = run_cli(*g.args, "migrate-safe", "--allow", f"drop-column:{target}")
    assert result.exit_code == 0, result.output
    assert revision_of(g.url) == [after_rev]
    assert target.split(".")[1] not in [c[0] for c in db_state(g.url)["customers"]["columns"]]


# --- 2. a reviewed destructive revision applies, and its snapshot restores -------------------------------


def test_reviewed_destructive_revision_applies_and_its_snapshot_restores(run_cli, guarded):
    g = guarded
    before = db_state(g.url)
    names = [c[0] for c in before["customers"]["columns"]]
    legacy = sorted((row[0], row[names.index("legacy_code")]) for row in before["customers"]["rows"])
    assert legacy and all(code for _, code in legacy)

    result = run_cli(*g.args, "migrate-safe")

    assert result.exit_code == 0, result.output
    assert "upgraded 0004 -> 0006; safety snapshot " in result.stdout + result.stderr
    assert "allowed" in result.stdout and "reviewed by @dpham" in result.stdout
    assert revision_of(g.url) == ["0006"]
    after = db_state(g.url)
    assert "legacy_code" not in [c[0] for c in after["customers"]["columns"]]
    assert "import_staging" not in after
    assert len(after["customers"]["rows"]) == len(before["customers"]["rows"])

    listed = snapshots(run_cli, g, "safety")
    assert len(listed) == 1
    snap = listed[0]
    assert snap["revision"] == ["0004"] and snap["verified_at"]
    assert {"customers", "alembic_version", "import_staging"} <= set(snap["tables"])
    assert snap["id"] in result.stderr + result.stdout
    journal = [r for r in g.journal() if r.get("run")]
    assert [r["state"] for r in journal] == ["started", "succeeded"]
    assert journal[-1]["snapshot"] == snap["id"] and journal[-1]["from"] == ["0004"]

    result = run_cli(*g.args, "restore", snap["id"], "--yes")
    assert result.exit_code == 0, result.output
    assert revision_of(g.url) == ["0004"]
    restored = db_state(g.url)
    names = [c[0] for c in restored["customers"]["columns"]]
    assert "legacy_code" in names
    assert sorted((row[0], row[names.index("legacy_code")]) for row in restored["customers"]["rows"]) == legacy
    assert_same_state(g.url, before)
    assert_can_insert(g.url)


# --- 3. a failure in the second of three pending revisions ---------------------------------------------


def add_three_revisions(g: Guarded, failure: str = "pass") -> None:
    g.revision(
        "0007",
        "0006",
        """
        op.create_table(
            "loyalty_points",
            sa.Column("id", sa.Integer(), primary_key=True),
            sa.Column("customer_id", sa.Integer(), sa.ForeignKey("customers.id"), nullable=False),
            sa.Column("points", sa.Integer(), nullable=False),
        )
        op.execute("INSERT INTO loyalty_points (customer_id, points) SELECT id, 100 FROM customers")
        op.add_column("service_categories", sa.Column("sort_order", sa.Integer(), nullable=True))
        op.execute("UPDATE service_categories SET sort_order = id WHERE id > 0")
    """,
    )
    g.revision(
        "0008",
        "0007",
        f"""
        op.add_column("customers", sa.Column("tier", sa.String(length=10), nullable=True))
        op.execute("UPDATE customers SET tier = 'gold', name = 'changed' WHERE id <= 5")
        op.execute("DELETE FROM family_members WHERE id <= 2")
        op.create_table("audit_trail", sa.Column("id", sa.Integer(), primary_key=True))
        op.execute("UPDATE service_packages SET price = price + 1 WHERE id > 0")
        {failure}
    """,
    )
    g.revision(
        "0009",
        "0008",
        """
        op.add_column("customers", sa.Column("late", sa.Integer(), nullable=True))
    """,
    )


@pytest.mark.parametrize("failure", ["unknown-column", "syntax-error"])
def test_failure_in_the_second_of_three_revisions_leaves_the_database_as_before(run_cli, guarded_0006, failure):
    g = guarded_0006
    add_three_revisions(g, FAILING_SQL if failure == "unknown-column" else INVALID_SQL)
    before = db_state(g.url)

    result = run_cli(*g.args, "migrate-safe")

    failed_as_expected(result, g, "0006")
    assert "upgrade 0006 -> heads: 3 revisions (0007, 0008, 0009)" in result.stderr
    assert partial_snapshot(result) == (failure == "unknown-column"), result.stderr
    assert_same_state(g.url, before)
    assert revision_of(g.url) == ["0006"]
    listed = snapshots(run_cli, g, "safety")
    assert len(listed) == 1 and listed[0]["revision"] == ["0006"] and listed[0]["id"] in result.stderr
    journal = [r for r in g.journal() if r.get("run")]
    assert [r["state"] for r in journal] == ["started", "rolled-back" if g.transactional else "restored"]
    assert ("no_such_column" if failure == "unknown-column" else "THIS") in journal[-1]["error"]

    # the failed run is finished: with the revision fixed the next run goes through
    add_three_revisions(g)
    result = run_cli(*g.args, "migrate-safe")
    assert result.exit_code == 0, result.output
    assert revision_of(g.url) == ["0009"]


# --- 4. a revision that creates a table, then fails ------------------------------------------------------


def test_table_created_by_a_failed_revision_is_gone(run_cli, guarded):
    g = guarded
    g.revision(
        "0007",
        "0006",
        f"""
        op.create_table(
            "vouchers",
            sa.Column("id", sa.Integer(), primary_key=True),
            sa.Column("code", sa.String(length=20), nullable=False),
        )
        op.execute("INSERT INTO vouchers (code) VALUES ('WELCOME')")
        {FAILING_SQL}
    """,
    )
    before = db_state(g.url)

    result = run_cli(*g.args, "migrate-safe")

    failed_as_expected(result, g, "0004")
    assert partial_snapshot(result), result.stderr
    assert "vouchers" not in sa.inspect(sa.create_engine(g.url, poolclass=sa.pool.NullPool)).get_table_names()
    assert_same_state(g.url, before)
    assert revision_of(g.url) == ["0004"]


# --- 5. non-transactional DDL before the failure ----------------------------------------------------------


def test_ddl_on_a_protected_table_before_the_failure_is_undone(run_cli, guarded):
    g = guarded
    g.revision(
        "0007",
        "0006",
        f"""
        op.add_column("customers", sa.Column("vip", sa.Boolean(), nullable=True))
        # migrate-guard: allow drop-column customers.phone -- test: phone numbers move elsewhere
        op.drop_column("customers", "phone")
        op.execute("UPDATE customers SET name = 'gone' WHERE id <= 3")
        {FAILING_SQL}
    """,
    )
    before = db_state(g.url)

    result = run_cli(*g.args, "migrate-safe")

    assert result.exit_code == 1, result.output
    assert partial_snapshot(result), result.stderr
    if g.dialect == "mysql":
        assert "restored to 0004, snapshot " in result.stderr, result.stderr
    else:
        assert "rolled back to 0004" in result.stderr, result.stderr
    assert_same_state(g.url, before)
    assert revision_of(g.url) == ["0004"]
    assert_can_insert(g.url)


def test_renamed_and_dropped_tables_are_back_after_a_failure(run_cli, guarded):
    """A failed run that renamed one table and dropped another (reviewed): both are back, under their names,
    with their rows, and the renamed copy is gone."""
    g = guarded
    g.revision(
        "0007",
        "0005",
        f"""
        op.rename_table("import_staging", "import_archive")
        # migrate-guard: allow drop-table family_members -- test: families move to another service
        op.drop_table("family_members")
        op.execute("UPDATE family_accounts SET current_members = 0 WHERE id > 0")
        {FAILING_SQL}
    """,
    )
    (g.versions / "0006_drop_import_staging.py").unlink()  # 0007 follows 0005 instead
    before = db_state(g.url)

    result = run_cli(*g.args, "migrate-safe")

    failed_as_expected(result, g, "0004")
    assert_same_state(g.url, before)
    assert revision_of(g.url) == ["0004"]


# --- 6. kill -9 in the middle of the upgrade, then recover ------------------------------------------------


def add_sleeping_revision(g: Guarded, marker: Path) -> None:
    """0007: DDL and DML on customers, create a table, then say so through ``marker`` and sleep (online
    only: the check renders every pending revision offline first)."""
    g.revision(
        "0007",
        "0006",
        f"""
        op.add_column("customers", sa.Column("halfway", sa.Integer(), nullable=True))
        op.execute("UPDATE customers SET name = 'half' WHERE id <= 4")
        op.create_table("half_done", sa.Column("id", sa.Integer(), primary_key=True))
        if not op.get_context().as_sql:
            Path({str(marker)!r}).write_text(str(os.getpid()))
            time.sleep(60)
    """,
    )


def add_held_revision(g: Guarded, marker: Path, release: Path) -> None:
    """0007: add a column, say so through ``marker``, then wait (online only) until ``release`` exists."""
    g.revision(
        "0007",
        "0006",
        f"""
        op.add_column("customers", sa.Column("slow", sa.Integer(), nullable=True))
        if not op.get_context().as_sql:
            Path({str(marker)!r}).write_text(str(os.getpid()))
            deadline = time.monotonic() + 60
            while not Path({str(release)!r}).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
    """,
    )


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"migrate-safe ended ({proc.returncode}) before reaching the sleep: {out}{err}")
        assert time.monotonic() < deadline, "migrate-safe did not reach the sleeping revision"
        time.sleep(0.05)
    time.sleep(0.2)


def test_killed_run_is_refused_then_recovered(run_cli, guarded, tmp_path):
    g = guarded
    marker = tmp_path / "reached"
    add_sleeping_revision(g, marker)
    before = db_state(g.url)
    env = {**os.environ, "MIGRATE_GUARD_KEY": KEY}

    proc = subprocess.Popen(g.safe_command(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(marker, proc)
        runs = [r for r in g.journal() if r.get("run")]
        assert [r["state"] for r in runs] == ["started"]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()

    if not g.transactional:  # MariaDB: the DDL before the kill stuck, so recover has real work to do
        left = db_state(g.url)
        assert "halfway" in [c[0] for c in left["customers"]["columns"]] and "half_done" in left

    refused = subprocess.run(g.safe_command(), env=env, capture_output=True, text=True)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "migrate-guard recover" in refused.stderr and "did not finish" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    # the application goes on writing between the crash and recover, to a table the run did not touch
    write_row(g.url, "service_categories", name="after the crash")
    before["service_categories"]["rows"] = db_state(g.url)["service_categories"]["rows"]

    recovered = subprocess.run(g.command("recover", "--yes"), env=env, capture_output=True, text=True)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert f"database: {g.dialect_family} " in recovered.stderr
    if g.transactional:  # the database rolled the killed transaction back: nothing to restore
        assert "left nothing behind" in recovered.stdout and "nothing restored" in recovered.stdout
    else:  # MariaDB: only the tables the run changed, after a snapshot of their current state
        assert "restore customers from safety snapshot" in recovered.stderr
        assert "drop half_done: created by the run" in recovered.stderr
        assert "service_categories" not in recovered.stderr
        assert "recovered run" in recovered.stdout and "rows written since the crash" in recovered.stdout
    assert_same_state(g.url, before)
    assert revision_of(g.url) == ["0004"]
    assert [r["state"] for r in g.journal() if r.get("run")] == ["started", "recovered"]
    assert_can_insert(g.url)

    again = subprocess.run(g.command("recover"), env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "no unfinished" in again.stdout
    # not refused any more: a dry run plans the same upgrade again
    planned = subprocess.run(g.safe_command("--dry-run"), env=env, capture_output=True, text=True)
    assert planned.returncode == 0, planned.stderr


# --- 7. SIGTERM / SIGINT in the middle of the upgrade -----------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=["SIGTERM", "SIGINT", "SIGHUP"])
def test_signal_during_the_upgrade_rolls_back_or_restores(run_cli, guarded, tmp_path, signum):
    g = guarded
    marker = tmp_path / "reached"
    add_sleeping_revision(g, marker)
    before = db_state(g.url)
    env = {**os.environ, "MIGRATE_GUARD_KEY": KEY}

    def default_sigint() -> None:  # a background job may inherit SIGINT ignored; Ctrl-C must work here
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(
        g.safe_command(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint
    )
    try:
        wait_for(marker, proc)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    assert proc.returncode == 1, out + err
    assert signal.Signals(signum).name in err, err
    assert "Traceback" not in err
    if g.transactional:
        assert "rolled back to 0004" in err, err
    else:
        assert "restored to 0004, snapshot " in err, err
    assert_same_state(g.url, before)
    assert revision_of(g.url) == ["0004"]
    assert [r["state"] for r in g.journal() if r.get("run")][-1] in ("rolled-back", "restored")
    assert_can_insert(g.url)


# --- 8. two runs at once -----------------------------------------------------------------------------------


def test_second_run_waits_for_the_lock_then_names_the_holder(run_cli, guarded):
    from migrate_guard.safe.lock import migration_lock

    g = guarded
    before = db_state(g.url)
    with migration_lock(g.url):
        holder = None
        if g.dialect == "mysql":
            engine = sa.create_engine(g.url, poolclass=sa.pool.NullPool)
            with engine.connect() as conn:
                name = f"migrate-guard:{sa.engine.make_url(g.url).database}"
                holder = conn.execute(sa.text("SELECT IS_USED_LOCK(:n)"), {"n": name}).scalar()
            engine.dispose()
        started = time.monotonic()
        result = run_cli(*g.args, "migrate-safe", "--lock-wait", "1")
        waited = time.monotonic() - started

    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "migration lock" in lines[0] and "held by" in lines[0] and "waited 1s" in lines[0]
    if g.dialect == "mysql":
        assert f"connection {holder} " in lines[0]
    else:
        assert f"pid {os.getpid()}" in lines[0]  # the holder is this test process
    assert waited >= 1
    assert_same_state(g.url, before)
    assert no_new_snapshot(run_cli, g)

    result = run_cli(*g.args, "migrate-safe")  # released: the next run goes through
    assert result.exit_code == 0, result.output


# --- 9. --dry-run ------------------------------------------------------------------------------------------


def test_dry_run_prints_the_plan_and_touches_nothing(run_cli, guarded):
    g = guarded
    before = db_state(g.url)

    result = run_cli(*g.args, "migrate-safe", "--dry-run")

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "upgrade 0004 -> heads: 2 revisions (0005, 0006)" in out
    if g.transactional:
        assert "protection: all pending revisions run in one transaction that migrate-safe owns" in out
    else:
        assert "protection: " in out and "commits every DDL statement on its own" in out
    assert "safety snapshot: " in out and "customers" in out.split("safety snapshot: ")[1].splitlines()[0]
    assert "import_staging" in out.split("safety snapshot: ")[1].splitlines()[0]
    assert "estimated snapshot size" in out
    assert "\nSQL:\n" in out
    sql = out.split("\nSQL:\n")[1]
    assert "DROP TABLE import_staging" in sql and "version_num='0006'" in sql
    # 0005: a plain DROP COLUMN, or on SQLite the batch rebuild of customers
    assert ("_alembic_tmp_customers" if g.dialect == "sqlite" else "DROP COLUMN legacy_code") in sql
    assert "drop-column" in out and "allowed" in out  # the findings
    assert "dry run: nothing was touched" in result.stdout + result.stderr

    assert_same_state(g.url, before)
    assert revision_of(g.url) == ["0004"]
    assert not (g.root / "repo").exists(), "a dry run created the backup repository"
    assert not list(g.root.parent.glob("*.migrate-guard.lock"))


# --- 10. --down -------------------------------------------------------------------------------------------


def test_guarded_downgrade(run_cli, guarded):
    g = guarded
    assert run_cli(*g.args, "migrate-safe").exit_code == 0
    at_heads = db_state(g.url)

    # further down, 0004's downgrade drops customers.notes, unreviewed: blocked like an upgrade
    result = run_cli(*g.args, "migrate-safe", "--down", "0003")
    assert result.exit_code == 3, result.output
    assert "drop-column" in result.stdout and "notes" in result.stdout and "nothing was touched" in result.stderr
    assert_same_state(g.url, at_heads)
    assert len(snapshots(run_cli, g)) == 1

    result = run_cli(*g.args, "migrate-safe", "--down", "0004")

    assert result.exit_code == 0, result.output
    assert "downgrade 0006 -> 0004" in result.stderr
    assert revision_of(g.url) == ["0004"]
    columns = {c[0]: c for c in db_state(g.url)["customers"]["columns"]}
    assert "legacy_code" in columns and columns["legacy_code"][2] is True  # back, nullable, empty
    assert "import_staging" in db_state(g.url)
    listed = snapshots(run_cli, g)
    assert len(listed) == 2 and listed[-1]["revision"] == ["0006"]


def test_failing_downgrade_is_rolled_back_or_restored(run_cli, guarded):
    g = guarded
    g.revision(
        "0007",
        "0006",
        """
        op.create_table("promo_codes", sa.Column("id", sa.Integer(), primary_key=True),
                        sa.Column("code", sa.String(length=20), nullable=False))
        op.execute("INSERT INTO promo_codes (code) VALUES ('A'), ('B')")
    """,
        downgrade=f"""
        op.execute("UPDATE customers SET name = 'downgraded' WHERE id <= 3")
        op.drop_table("promo_codes")
        op.add_column("service_categories", sa.Column("junk", sa.Integer(), nullable=True))
        {FAILING_SQL}
    """,
    )
    g.revision(
        "0008",
        "0007",
        """
        op.add_column("promo_codes", sa.Column("uses", sa.Integer(), nullable=True))
    """,
        downgrade="""
        op.drop_column("promo_codes", "uses")
    """,
    )
    result = run_cli(*g.args, "migrate-safe")
    assert result.exit_code == 0, result.output
    assert revision_of(g.url) == ["0008"]
    before = db_state(g.url)

    result = run_cli(*g.args, "migrate-safe", "--down", "0006", "--allow", "drop-table", "--allow", "drop-column")

    failed_as_expected(result, g, "0008")
    assert partial_snapshot(result), result.stderr
    assert "downgrade 0008 -> 0006: 2 revisions (0008, 0007)" in result.stderr
    assert_same_state(g.url, before)
    assert revision_of(g.url) == ["0008"]


# --- 11. the stock env.py template -------------------------------------------------------------------------


@pytest.fixture
def stock_env(guarded: Guarded) -> Guarded:
    """The copy's env.py replaced by Alembic's generic template; the URL comes from alembic.ini."""
    import alembic

    template = Path(alembic.__file__).parent / "templates" / "generic" / "env.py"
    (guarded.versions.parent / "env.py").write_text(template.read_text())
    ini = guarded.ini.read_text()
    lines = [
        f"sqlalchemy.url = {guarded.url}" if line.startswith("sqlalchemy.url") else line for line in ini.splitlines()
    ]
    guarded.ini.write_text("\n".join(lines) + "\n")
    return guarded


def stock_args(g: Guarded) -> tuple[str, ...]:
    return ("-c", str(g.ini))  # no --url: env.py reads sqlalchemy.url from the ini


def test_stock_env_dry_run_names_the_one_line_change(run_cli, stock_env):
    g = stock_env
    before = db_state(g.url)

    result = run_cli(*stock_args(g), "migrate-safe", "--dry-run")

    assert result.exit_code == 0, result.output
    protection = next(line for line in result.stdout.splitlines() if line.startswith("protection: "))
    assert "env.py opens its own connection" in protection  # which form is in play, on every database
    if g.transactional:  # where the form decides who owns the transaction: the one-line change
        assert 'config.attributes.get("connection")' in protection
    assert_same_state(g.url, before)
    assert not (g.root / "repo").exists()


def test_stock_env_failing_revision_leaves_the_database_as_before(run_cli, stock_env):
    g = stock_env
    g.revision(
        "0007",
        "0006",
        f"""
        op.add_column("customers", sa.Column("vip", sa.Boolean(), nullable=True))
        op.execute("UPDATE customers SET name = 'stock' WHERE id <= 3")
        op.create_table("stock_made", sa.Column("id", sa.Integer(), primary_key=True))
        {FAILING_SQL}
    """,
    )
    before = db_state(g.url)

    result = run_cli(*stock_args(g), "migrate-safe")

    assert result.exit_code == 1, result.output
    assert "rolled back to 0004" in result.stderr or "restored to 0004, snapshot " in result.stderr, result.stderr
    assert_same_state(g.url, before)
    assert revision_of(g.url) == ["0004"]


# --- beyond the list: targets, scopes, the final check, data migrations, real concurrent runs --------------


def test_target_revision_and_nothing_to_do(run_cli, guarded):
    g = guarded
    result = run_cli(*g.args, "migrate-safe", "0005")
    assert result.exit_code == 0, result.output
    assert "upgrade 0004 -> 0005: 1 revision (0005)" in result.stderr
    assert revision_of(g.url) == ["0005"]
    assert "import_staging" in db_state(g.url)  # 0006 not run

    for target in ("0005", "0004"):
        result = run_cli(*g.args, "migrate-safe", target)
        assert result.exit_code == 0 and "nothing to do" in result.stdout, result.output
    result = run_cli(*g.args, "migrate-safe", "no_such_rev")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
    assert revision_of(g.url) == ["0005"]
    assert len(snapshots(run_cli, g)) == 1


def test_backup_scope_none_needs_yes_and_leaves_only_a_rollback(run_cli, guarded):
    g = guarded
    g.revision(
        "0007",
        "0006",
        f"""
        op.add_column("customers", sa.Column("vip", sa.Boolean(), nullable=True))
        {FAILING_SQL}
    """,
    )
    before = db_state(g.url)

    result = run_cli(*g.args, "migrate-safe", "--backup-scope", "none")
    assert result.exit_code == 2 and "--yes" in result.stderr, result.output
    assert_same_state(g.url, before)

    result = run_cli(*g.args, "migrate-safe", "--backup-scope", "none", "--yes")
    assert no_new_snapshot(run_cli, g)
    if g.transactional:
        assert result.exit_code == 1 and "rolled back to 0004" in result.stderr, result.output
        assert_same_state(g.url, before)
    else:  # nothing to restore from: exit 4, said plainly
        assert result.exit_code == 4, result.output
        assert "NOT restored" in result.stderr and "no safety snapshot" in result.stderr


def test_backup_scope_full_snapshots_every_table(run_cli, guarded):
    g = guarded
    g.revision(
        "0007",
        "0006",
        f"""
        op.add_column("customers", sa.Column("vip", sa.Boolean(), nullable=True))
        op.execute("UPDATE service_packages SET price = price + 1 WHERE id > 0")
        {FAILING_SQL}
    """,
    )
    before = db_state(g.url)

    result = run_cli(*g.args, "migrate-safe", "--backup-scope", "full")

    failed_as_expected(result, g, "0004")
    assert_same_state(g.url, before)
    listed = snapshots(run_cli, g, "safety")
    assert len(listed) == 1 and set(listed[0]["tables"]) == set(before)


def test_change_the_analysis_cannot_see_is_caught_by_the_final_check(run_cli, guarded):
    """0007 alters service_categories only when online, so the offline analysis leaves that table out of the
    safety snapshot. Transactional DDL rolls it back anyway; on MariaDB the check after the restore sees the
    leftover column and exits 4 with the exact restore command."""
    g = guarded
    g.revision(
        "0007",
        "0006",
        f"""
        op.execute("UPDATE customers SET name = 'seen' WHERE id <= 2")
        if not op.get_context().as_sql:
            op.add_column("service_categories", sa.Column("hidden", sa.Integer(), nullable=True))
        {FAILING_SQL}
    """,
    )
    before = db_state(g.url)

    result = run_cli(*g.args, "migrate-safe")

    snap = snapshots(run_cli, g)[0]
    assert "service_categories" not in snap["tables"]
    if g.transactional:
        failed_as_expected(result, g, "0004")
        assert_same_state(g.url, before)
    else:
        assert result.exit_code == 4, result.output
        assert "NOT restored" in result.stderr and "service_categories" in result.stderr
        assert f"migrate-guard restore {snap['id']} --yes" in result.stderr
        assert [r["state"] for r in g.journal() if r.get("run")][-1] == "not-restored"


def test_data_migration_through_get_bind_is_undone(run_cli, guarded):
    """A revision that reads through op.get_bind() cannot be rendered offline: it is read statically and the
    whole database is snapshotted; the failure is still undone."""
    g = guarded
    g.revision(
        "0007",
        "0006",
        f"""
        bind = op.get_bind()
        rows = bind.execute(sa.text("SELECT id, name FROM customers ORDER BY id")).fetchall()
        for id_, name in rows:
            bind.execute(sa.text("UPDATE customers SET name = :n WHERE id = :i"), {{"n": name.upper(), "i": id_}})
        op.add_column("service_packages", sa.Column("promo", sa.Boolean(), nullable=True))
        bind.execute(sa.text("DELETE FROM customer_services WHERE id > 0"))
        {FAILING_SQL}
    """,
    )
    before = db_state(g.url)

    result = run_cli(*g.args, "migrate-safe")

    failed_as_expected(result, g, "0004")
    assert_same_state(g.url, before)
    assert revision_of(g.url) == ["0004"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_a_long_statement(guarded, tmp_path, signum):
    """A signal while the database is busy with a long statement (not in Python code): the run must stop
    promptly, not when the statement ends, and still leave the database as before."""
    g = guarded
    if g.dialect == "sqlite":
        pytest.skip("SQLite has no server-side sleep")
    marker = tmp_path / "reached"
    sleep_sql = f"SELECT pg_sleep({LONG_STATEMENT})" if g.dialect == "postgresql" else f"SELECT SLEEP({LONG_STATEMENT})"
    g.revision(
        "0007",
        "0006",
        f"""
        op.add_column("customers", sa.Column("halfway", sa.Integer(), nullable=True))
        op.execute("UPDATE customers SET name = 'half' WHERE id <= 4")
        if not op.get_context().as_sql:
            Path({str(marker)!r}).write_text("x")
            op.execute({sleep_sql!r})
    """,
    )
    before = db_state(g.url)
    env = {**os.environ, "MIGRATE_GUARD_KEY": KEY}

    proc = subprocess.Popen(
        g.safe_command(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint
    )
    try:
        wait_for(marker, proc)
        time.sleep(0.5)
        proc.send_signal(signum)
        sent = time.monotonic()
        out, err = proc.communicate(timeout=120)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    assert proc.returncode == 1, out + err
    assert ("SIGTERM" if signum == signal.SIGTERM else "SIGINT") in err and "Traceback" not in err
    assert_same_state(g.url, before)
    assert revision_of(g.url) == ["0004"]
    assert took < LONG_STATEMENT - 5, f"took {took:.1f}s to stop after the signal: the statement ran to its end"


LONG_STATEMENT = 16  # seconds


def _default_sigint() -> None:
    """In the child: a background job may inherit SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_a_second_run_while_one_is_migrating_waits_for_its_lock(guarded, tmp_path):
    """Two real migrate-safe processes: the second one waits for the first one's migration lock
    (--lock-wait), and does not take the first one's unfinished journal entry for a crash."""
    g = guarded
    marker, release = tmp_path / "reached", tmp_path / "release"
    add_held_revision(g, marker, release)
    env = {**os.environ, "MIGRATE_GUARD_KEY": KEY}

    first = subprocess.Popen(g.safe_command(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(marker, first)
        busy = subprocess.run(g.safe_command("--lock-wait", "1"), env=env, capture_output=True, text=True)
        waiting = subprocess.Popen(
            g.safe_command("--lock-wait", "60"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        time.sleep(2)  # let it start waiting for the lock
        release.touch()
        out, err = first.communicate(timeout=120)
        waited_out, waited_err = waiting.communicate(timeout=120)
    finally:
        release.touch()
        for proc in (first, locals().get("waiting")):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()

    assert first.returncode == 0, out + err
    assert busy.returncode == 2, busy.stdout + busy.stderr
    assert "held by" in busy.stderr and "recover" not in busy.stderr, busy.stderr
    assert len(busy.stderr.strip().splitlines()) == 1, busy.stderr
    if g.dialect != "mysql":
        assert f"pid {first.pid}" in busy.stderr, busy.stderr  # names the first run
    assert waiting.returncode == 0 and "nothing to do" in waited_out, waited_out + waited_err
    assert revision_of(g.url) == ["0007"]


def test_recover_during_a_live_run_refuses_and_touches_nothing(guarded, tmp_path):
    """A run that is still going looks unfinished in the journal: recover must not restore under it."""
    g = guarded
    marker, release = tmp_path / "reached", tmp_path / "release"
    add_held_revision(g, marker, release)
    env = {**os.environ, "MIGRATE_GUARD_KEY": KEY}

    first = subprocess.Popen(g.safe_command(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(marker, first)
        recovered = subprocess.run(g.command("recover"), env=env, capture_output=True, text=True)
        release.touch()
        out, err = first.communicate(timeout=120)
    finally:
        release.touch()
        if first.poll() is None:
            first.kill()
            first.communicate()

    assert recovered.returncode == 2, recovered.stdout + recovered.stderr
    assert "held by" in recovered.stderr and len(recovered.stderr.strip().splitlines()) == 1
    assert first.returncode == 0, out + err
    assert revision_of(g.url) == ["0007"]
    assert "slow" in [c[0] for c in db_state(g.url)["customers"]["columns"]]
    assert [r["state"] for r in g.journal() if r.get("run")] == ["started", "succeeded"]


# --- timeouts --------------------------------------------------------------------------------------------


def timeouts_refused_on_sqlite(result, g: Guarded, before: dict) -> bool:
    """SQLite has neither timeout: the options may be ignored there, or refused up front as a usage error
    (one line, nothing touched). Returns whether they were refused."""
    if g.dialect != "sqlite" or result.exit_code != 2:
        return False
    assert "not supported" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.output
    assert_same_state(g.url, before)
    return True


@pytest.mark.parametrize(
    "option",
    [("--lock-timeout", "30"), ("--statement-timeout", "600"), ("--lock-timeout", "10m")],
    ids=["lock-30", "statement-600", "lock-10m"],
)
def test_timeout_options_let_a_normal_upgrade_through(run_cli, guarded, option):
    g = guarded
    before = db_state(g.url)

    result = run_cli(*g.args, "migrate-safe", *option)

    if timeouts_refused_on_sqlite(result, g, before):
        return
    assert result.exit_code == 0, result.output
    assert revision_of(g.url) == ["0006"]


def test_timeout_in_seconds_as_the_help_shows(run_cli, guarded):
    """`--lock-timeout 5s` is the help text's own example."""
    g = guarded
    before = db_state(g.url)

    result = run_cli(*g.args, "migrate-safe", "--lock-timeout", "5s", "--statement-timeout", "30s")

    if timeouts_refused_on_sqlite(result, g, before):
        return
    assert result.exit_code == 0, result.output
    assert revision_of(g.url) == ["0006"]


def test_bad_timeout_is_a_usage_error_before_anything_is_touched(run_cli, guarded):
    g = guarded
    before = db_state(g.url)

    result = run_cli(*g.args, "migrate-safe", "--lock-timeout", "banana")

    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "banana" in result.stderr or (g.dialect == "sqlite" and "not supported" in result.stderr), result.stderr
    assert_same_state(g.url, before)
    assert no_new_snapshot(run_cli, g)


def test_statement_timeout_stops_a_long_statement(run_cli, guarded):
    g = guarded
    if g.dialect == "sqlite":
        pytest.skip("SQLite has no statement timeout")
    sleep_sql = "SELECT pg_sleep(30)" if g.dialect == "postgresql" else "SELECT SLEEP(30)"
    g.revision(
        "0007",
        "0006",
        f"""
        op.add_column("customers", sa.Column("halfway", sa.Integer(), nullable=True))
        op.execute("UPDATE customers SET name = 'half' WHERE id <= 4")
        if not op.get_context().as_sql:
            op.execute({sleep_sql!r})
    """,
    )
    before = db_state(g.url)

    started = time.monotonic()
    result = run_cli(*g.args, "migrate-safe", "--statement-timeout", "2")
    took = time.monotonic() - started

    failed_as_expected(result, g, "0004")
    assert "statement timeout" in result.stderr or "max_statement_time" in result.stderr, result.stderr
    assert took < 20, f"{took:.1f}s: the statement timeout did not stop the statement"
    assert_same_state(g.url, before)


def test_lock_timeout_gives_up_on_a_busy_table(run_cli, guarded):
    """Another session holds a lock on customers (an open transaction that read it): the ALTER TABLE gives up
    after --lock-timeout, and the run is rolled back or restored once the session lets go (it lets go when
    the run has failed: PostgreSQL rolls back without waiting for it; MariaDB's undo first snapshots the
    tables it is about to restore, then waits for the lock)."""
    import threading

    g = guarded
    if g.dialect == "sqlite":
        pytest.skip("SQLite has no lock timeout")
    before = db_state(g.url)
    engine = sa.create_engine(g.url, poolclass=sa.pool.NullPool)
    holding, done = threading.Event(), threading.Event()
    manifests = g.root / "repo" / "snapshots"

    def undo_began() -> bool:  # the safety snapshot and the pre-undo snapshot are there
        return manifests.is_dir() and len(list(manifests.glob("*.json"))) >= 2

    def hold() -> None:
        with engine.connect() as conn, conn.begin():
            conn.execute(sa.text("SELECT count(*) FROM customers")).scalar()
            holding.set()
            deadline = time.monotonic() + 60
            while not (done.is_set() or undo_began()) and time.monotonic() < deadline:
                time.sleep(0.05)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        started = time.monotonic()
        result = run_cli(*g.args, "migrate-safe", "--lock-timeout", "1")
        took = time.monotonic() - started
    finally:
        done.set()
        holder.join()
        engine.dispose()

    failed_as_expected(result, g, "0004")
    assert "lock timeout" in result.stderr or "Lock wait timeout" in result.stderr, result.stderr
    assert took < 60
    assert_same_state(g.url, before)


def test_lock_holder_named_is_the_one_in_this_database(run_cli, guarded_pg):
    """PostgreSQL: advisory locks are per database, and so must be the holder migrate-safe names; another
    project's migrate-safe on another database of the same server is not in the way."""
    from conftest import PG_URL

    from migrate_guard.safe.lock import PG_LOCK_KEY, migration_lock

    g = guarded_pg  # MariaDB's lock name and SQLite's lock file are per database already
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    holder_query = sa.text(
        "SELECT a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
        "AND l.granted AND ((l.classid::int8 << 32) | l.objid::int8) = :k"
    )
    ours = sa.create_engine(g.url, poolclass=sa.pool.NullPool)
    others: list[tuple[str, sa.Engine, sa.Connection]] = []
    try:
        with migration_lock(g.url):
            # Another project's run holds the same key on another database. pg_locks lists holders in hash
            # order, so add such databases until an unfiltered lookup would see one of them first.
            for n in range(12):
                name = f"{sa.engine.make_url(g.url).database}_other{n}"
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
                engine = sa.create_engine(
                    sa.engine.make_url(g.url).set(database=name),
                    isolation_level="AUTOCOMMIT",
                    poolclass=sa.pool.NullPool,
                    connect_args={"application_name": "another project's migrate-safe"},
                )
                conn = engine.connect()
                others.append((name, engine, conn))
                conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": PG_LOCK_KEY})
                other_pids = {c.connection.dbapi_connection.info.backend_pid for _, _, c in others}
                with ours.connect() as probe:
                    if probe.execute(holder_query, {"k": PG_LOCK_KEY}).scalar() in other_pids:
                        break
            result = run_cli(*g.args, "migrate-safe", "--lock-wait", "1")
    finally:
        for name, engine, conn in others:
            conn.close()
            engine.dispose()
            with admin.connect() as c:
                c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        ours.dispose()
        admin.dispose()

    assert result.exit_code == 2, result.output
    assert "another project" not in result.stderr, result.stderr
    assert f"pid {os.getpid()}" in result.stderr, result.stderr


def test_two_heads_and_a_failing_merge(run_cli, guarded):
    """Two branches applied together, then a merge revision that fails: alembic_version is both heads again."""
    g = guarded
    g.revision("0007", "0006", 'op.add_column("customers", sa.Column("a7", sa.Integer(), nullable=True))')
    g.revision("0107", "0006", 'op.create_table("side_branch", sa.Column("id", sa.Integer(), primary_key=True))')
    result = run_cli(*g.args, "migrate-safe")
    assert result.exit_code == 0, result.output
    assert revision_of(g.url) == ["0007", "0107"]

    g.revision(
        "0008",
        ("0007", "0107"),
        f"""
        op.execute("UPDATE customers SET a7 = 1 WHERE id <= 3")
        op.drop_table("side_branch")
        {FAILING_SQL}
    """,
    )
    before = db_state(g.url)

    result = run_cli(*g.args, "migrate-safe")

    assert result.exit_code == 1, result.output
    assert "rolled back to" in result.stderr or "restored to" in result.stderr, result.stderr
    assert "0007" in result.stderr.splitlines()[-1] and "0107" in result.stderr.splitlines()[-1]
    assert_same_state(g.url, before)
    assert revision_of(g.url) == ["0007", "0107"]
    assert snapshots(run_cli, g)[-1]["revision"] in (["0007", "0107"], ["0107", "0007"])


@pytest.fixture
def empty(example: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Guarded:
    """The example with a backup repository configured and an empty database (never migrated)."""
    monkeypatch.setenv("MIGRATE_GUARD_KEY", KEY)
    add_backup_setting(example / "migrate-guard.toml", f'repository = "{example / "repo"}"')
    return Guarded(example, db_url)


def test_first_deploy_onto_an_empty_database(run_cli, empty):
    """From base: a failure leaves the database empty again (no tables, no alembic_version); fixed, it deploys."""
    g = empty
    failing = g.revision(
        "0007",
        "0006",
        f"""
        op.execute("INSERT INTO service_categories (name) VALUES ('Neu')")
        {FAILING_SQL}
    """,
    )

    result = run_cli(*g.args, "migrate-safe")

    assert result.exit_code == 1, result.output
    assert "rolled back to base" in result.stderr or "restored to base" in result.stderr, result.stderr
    assert db_state(g.url) == {}

    failing.unlink()
    result = run_cli(*g.args, "migrate-safe")
    assert result.exit_code == 0, result.output
    assert revision_of(g.url) == ["0006"]


# --- 12. two databases, one project, one repository (issue 13) ----------------------------------------------


def listed(run_cli, g: Guarded, *extra: str) -> list[dict]:
    result = run_cli(*g.args, "list", "--format", "json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_two_databases_keep_apart_and_recover_touches_only_its_own(run_cli, guarded, other_url, tmp_path):
    a = guarded
    b = Guarded(a.root, other_url)  # the same project and repository, another database (staging / a tenant)
    migrate_example(a.root, b.url, "0004", customers=10)
    env = {**os.environ, "MIGRATE_GUARD_KEY": KEY}

    # B first: upgraded to 0005 behind its safety snapshot, taken at 0004
    done = subprocess.run(b.safe_command("0005"), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"database: {b.dialect_family} " in done.stderr
    (b_safety,) = [s["id"] for s in listed(run_cli, b)]

    # A: killed in the middle of its run
    marker = tmp_path / "reached"
    add_sleeping_revision(a, marker)
    proc = subprocess.Popen(a.safe_command(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(marker, proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    (a_safety,) = [s["id"] for s in listed(run_cli, a)]
    b_state = db_state(b.url)

    # each database sees its own snapshots; --all-databases every one, told apart by their identity
    every = listed(run_cli, a, "--all-databases")
    assert {s["id"] for s in every} == {a_safety, b_safety}
    names = {s["id"]: s["database"]["name"] for s in every}
    assert names[a_safety] != names[b_safety] and len({s["database"]["id"] for s in every}) == 2
    text = run_cli(*b.args, "list")
    assert b_safety in text.stdout and a_safety not in text.stdout
    assert "1 snapshot of other databases not shown" in text.stderr

    # A's unfinished run stands in nobody else's way, and prune keeps what recovery needs
    assert run_cli(*b.args, "recover", "--yes").stdout.startswith("no unfinished migrate-safe run on")
    assert db_state(b.url) == b_state
    status = json.loads(run_cli(*b.args, "status", "--format", "json").stdout)
    assert next(c for c in status["checks"] if c["name"] == "unfinished_runs")["level"] == "ok"
    pruned = run_cli(*a.args, "prune", "--keep-last", "1", "--dry-run")
    assert f"keep   {a_safety}  newest, safety snapshot of unfinished run" in pruned.stdout, pruned.output
    assert b_safety not in pruned.stdout
    newer = run_cli(*a.args, "backup", "--label", "after")
    assert newer.exit_code == 0, newer.output
    pruned = run_cli(*a.args, "prune", "--keep-last", "1")
    assert pruned.exit_code == 0, pruned.output
    assert {a_safety, b_safety} <= {s["id"] for s in listed(run_cli, a, "--all-databases")}

    # selection by time or revision is per database; another database's snapshot is refused
    picked = run_cli(*b.args, "restore", "--at-revision", "0004", "--dry-run")
    assert picked.exit_code == 0 and f"restore snapshot {b_safety}" in picked.stdout, picked.output
    refused = run_cli(*b.args, "restore", a_safety, "--yes")
    assert refused.exit_code == 2 and "pass --into-other-database" in refused.stderr, refused.output
    assert os.path.basename(names[a_safety]) in refused.stderr and os.path.basename(names[b_safety]) in refused.stderr
    cron = run_cli(*b.args, "backup", "--if-older-than", "1h", "--label", "after")
    assert cron.exit_code == 0 and "skipped" not in cron.stdout, cron.output  # A's backup is not B's
    assert db_state(b.url) == b_state

    # the application writes to A after the crash, in a table the run did not touch; recover A
    write_row(a.url, "service_categories", name="after the crash")
    recovered = subprocess.run(a.command("recover", "--yes"), env=env, capture_output=True, text=True)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert revision_of(a.url) == ["0004"] and "half_done" not in db_state(a.url)
    assert ("after the crash",) in [(r[1],) for r in db_state(a.url)["service_categories"]["rows"]]
    assert db_state(b.url) == b_state  # never touched
    assert revision_of(b.url) == ["0005"]
    history = json.loads(run_cli(*b.args, "history", "--format", "json").stdout)
    assert [r["state"] for r in history] == ["succeeded"]
    assert len(json.loads(run_cli(*b.args, "history", "--format", "json", "--all-databases").stdout)) == 2


def test_a_deleted_journal_line_is_detected_and_restores_nothing(run_cli, guarded):
    g = guarded
    done = run_cli(*g.args, "migrate-safe", "0005")
    assert done.exit_code == 0, done.output
    after = db_state(g.url)
    journal = g.root / "repo" / "state" / "journal.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:-1]))  # the "succeeded" record is gone: the run looks unfinished

    verify = run_cli(*g.args, "verify", "--all")
    assert verify.exit_code == 1 and "journal: DAMAGED" in verify.stdout and "truncated" in verify.stdout
    status = json.loads(run_cli(*g.args, "status", "--format", "json").stdout)
    assert next(c for c in status["checks"] if c["name"] == "journal")["level"] == "critical"
    refused = run_cli(*g.args, "migrate-safe")
    assert refused.exit_code == 2 and "the journal is damaged" in refused.stderr, refused.output

    recovered = run_cli(*g.args, "recover", "--yes")
    if g.transactional:  # one transaction, and the database is past it: the run had committed
        assert recovered.exit_code == 0 and "recorded as succeeded, nothing restored" in recovered.stdout
    else:  # MariaDB: what the database shows could be the run's end or its middle: nothing on the journal's word
        assert recovered.exit_code == 2 and "recover restores nothing on a damaged journal's word" in recovered.stderr
        assert run_cli(*g.args, "recover", "--abandon").exit_code == 0
    assert db_state(g.url) == after
    assert run_cli(*g.args, "migrate-safe").exit_code == 0  # the next run goes ahead


def test_closed_output_and_ctrl_c_still_journal_the_outcome(guarded, tmp_path):
    """`migrate-safe | tee deploy.log`, Ctrl-C: tee dies with the run's output pipe; the run still undoes
    itself and writes its outcome."""
    g = guarded
    marker = tmp_path / "reached"
    add_sleeping_revision(g, marker)
    before = db_state(g.url)
    env = {**os.environ, "MIGRATE_GUARD_KEY": KEY}
    proc = subprocess.Popen(
        g.safe_command(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_default_sigint
    )
    try:
        wait_for(marker, proc)
        proc.stdout.close()  # the reader is gone: every later write is EPIPE
        proc.stderr.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) in (1, 130)
    finally:
        proc.kill()
    assert [r["state"] for r in g.journal() if r.get("run")][-1] in ("rolled-back", "restored")
    assert_same_state(g.url, before)


def test_target_with_down_and_an_empty_url_are_usage_errors(run_cli, guarded):
    g = guarded
    both = run_cli(*g.args, "migrate-safe", "0005", "--down", "0003")
    assert both.exit_code == 2 and "not both" in error_line(both)
    empty = run_cli("-c", str(g.ini), "--url", "", "list")
    assert empty.exit_code == 2 and "--url is empty" in error_line(empty)
    assert revision_of(g.url) == ["0004"]
