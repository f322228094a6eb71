"""Backups from the CLI alone, on SQLite, PostgreSQL and MariaDB: backup -> list -> verify -> restore."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import KEY, execute, migrate_example, use_repository


@pytest.fixture
def seeded(example: Path, db_url: str, monkeypatch: pytest.MonkeyPatch):
    """The example project migrated to heads and seeded on each database, with an encrypted repository."""
    migrate_example(example, db_url, customers=30)
    use_repository(example, example / "repo", monkeypatch)
    return example, db_url


def table_rows(url: str, table: str) -> list[tuple]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return sorted(tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {table}")))
    finally:
        engine.dispose()


def test_backup_verify_restore_round_trip(run_cli, seeded):
    project, url = seeded
    args = ("--url", url, "-c", str(project / "alembic.ini"))
    before = {t: table_rows(url, t) for t in ("customers", "customer_services", "family_members", "alembic_version")}

    result = run_cli(*args, "backup", "--label", "nightly")
    assert result.exit_code == 0, result.output
    listed = json.loads(run_cli(*args, "list", "--format", "json").stdout)
    assert len(listed) == 1
    snap = listed[0]
    assert set(snap) == {
        "id",
        "created_at",
        "label",
        "kind",
        "revision",
        "dialect",
        "database",
        "contents",
        "tables",
        "files",
        "rows",
        "bytes",
        "encrypted",
        "pinned",
        "lost_data",
        "verified_at",
    }
    assert snap["lost_data"] == []
    assert set(snap["database"]) == {"dialect", "host", "name", "id"}
    assert snap["database"]["dialect"] == snap["dialect"].replace("mariadb", "mysql")
    assert snap["database"]["name"] in url and "password" not in json.dumps(snap["database"])
    assert snap["encrypted"] is True and snap["label"] == "nightly" and snap["revision"] == ["0006"]
    assert snap["created_at"].endswith("Z") and "customers" in snap["tables"]

    result = run_cli(*args, "verify", snap["id"], "--read-data")
    assert result.exit_code == 0, result.output
    assert json.loads(run_cli(*args, "list", "--format", "json").stdout)[0]["verified_at"]

    # lose data, then restore it all
    execute(url, "DELETE FROM family_members", "UPDATE customers SET name = 'x'", "DELETE FROM alembic_version")
    result = run_cli(*args, "restore", snap["id"], "--yes")
    assert result.exit_code == 0, result.output
    for table, rows in before.items():
        assert table_rows(url, table) == rows, table
    assert len(json.loads(run_cli(*args, "list", "--format", "json").stdout)) == 2  # the pre-restore snapshot


def test_partial_and_point_in_time_restore(run_cli, seeded):
    project, url = seeded
    args = ("--url", url, "-c", str(project / "alembic.ini"))
    customers = table_rows(url, "customers")
    assert run_cli(*args, "backup").exit_code == 0
    execute(url, "UPDATE customers SET name = 'changed'", "UPDATE service_categories SET description = 'kept'")
    categories = table_rows(url, "service_categories")

    result = run_cli(*args, "restore", "--before", "2099-01-01", "--tables", "customers", "--dry-run")
    assert result.exit_code == 0 and "customers" in result.stdout and "dry run" in result.stdout
    assert table_rows(url, "customers") != customers  # dry run touched nothing

    result = run_cli(*args, "restore", "--at-revision", "0006", "--tables", "customers", "--yes", "--no-pre-snapshot")
    assert result.exit_code == 0, result.output
    assert table_rows(url, "customers") == customers
    assert table_rows(url, "service_categories") == categories  # partial: the rest left alone


def test_damage_is_detected_and_named(run_cli, seeded):
    project, url = seeded
    args = ("--url", url, "-c", str(project / "alembic.ini"))
    assert run_cli(*args, "backup").exit_code == 0
    snap = json.loads(run_cli(*args, "list", "--format", "json").stdout)[0]["id"]
    blobs = sorted((project / "repo" / "blobs").rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else 0)
    victim = blobs[-1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    os.chmod(victim, 0o600)
    victim.write_bytes(bytes(data))

    result = run_cli(*args, "verify", snap)
    assert result.exit_code == 1
    assert victim.name in result.stdout
    result = run_cli(*args, "restore", snap, "--yes", "--no-pre-snapshot")
    assert result.exit_code != 0 and victim.name in result.stderr and "Traceback" not in result.output


def test_wrong_key_and_missing_key(run_cli, seeded, monkeypatch):
    project, url = seeded
    args = ("--url", url, "-c", str(project / "alembic.ini"))
    assert run_cli(*args, "backup").exit_code == 0
    monkeypatch.setenv("MIGRATE_GUARD_KEY", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    result = run_cli(*args, "list")
    assert result.exit_code == 2 and "wrong key" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    monkeypatch.delenv("MIGRATE_GUARD_KEY")
    result = run_cli(*args, "backup")
    assert result.exit_code == 2 and "encrypted" in result.stderr


def test_incremental_prune_forget_and_keys(run_cli, seeded):
    project, url = seeded
    args = ("--url", url, "-c", str(project / "alembic.ini"))
    assert run_cli(*args, "backup", "--pin").exit_code == 0
    assert run_cli(*args, "backup").exit_code == 0
    execute(url, "UPDATE customers SET notes = 'changed' WHERE id = 1")
    assert run_cli(*args, "backup").exit_code == 0
    snaps = json.loads(run_cli(*args, "list", "--format", "json").stdout)
    assert len(snaps) == 3 and snaps[0]["pinned"]

    repo = service_repo(project)
    manifests = {m["id"]: m for m in repo.manifests()}
    first, second = manifests[snaps[0]["id"]], manifests[snaps[1]["id"]]
    assert second["stored_bytes"] <= 0.02 * first["stored_bytes"] + 4096  # unchanged: almost nothing added

    result = run_cli(*args, "prune", "--keep-last", "1", "--dry-run")
    assert result.exit_code == 0 and "would remove" in result.stdout
    assert len(json.loads(run_cli(*args, "list", "--format", "json").stdout)) == 3
    result = run_cli(*args, "prune", "--keep-last", "1")
    assert result.exit_code == 0, result.output
    left = [s["id"] for s in json.loads(run_cli(*args, "list", "--format", "json").stdout)]
    assert snaps[0]["id"] in left and snaps[2]["id"] in left and snaps[1]["id"] not in left  # pinned + newest
    assert run_cli(*args, "verify", "--all").exit_code == 0  # garbage collection kept every live blob

    result = run_cli(*args, "forget", snaps[0]["id"])
    assert result.exit_code == 2 and "pinned" in result.stderr
    assert run_cli(*args, "prune").exit_code == 2  # no rule given and none configured

    generated = run_cli("key", "generate").stdout.strip()
    import base64

    assert len(base64.b64decode(generated)) == 32


def service_repo(project: Path):
    from migrate_guard.backup.service import open_repository
    from migrate_guard.config import load_project

    return open_repository(load_project(project / "alembic.ini"))


def test_backup_killed_half_way_leaves_a_valid_repository(example, tmp_path):
    """SIGKILL during a real backup: no visible snapshot, nothing corrupt, the next backup works."""
    import signal
    import time

    db = tmp_path / "big.db"
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)")
        for _ in range(60):
            conn.execute(sa.text("INSERT INTO blobs (data) VALUES (:d)"), {"d": os.urandom(1 << 20)})
    engine.dispose()
    repo = tmp_path / "repo"
    (example / "migrate-guard.toml").write_text(f'[backup]\nrepository = "{repo}"\n')
    cmd = [
        str(Path(sys.executable).parent / "migrate-guard"),
        "-c",
        str(example / "alembic.ini"),
        "--url",
        f"sqlite:///{db}",
    ]
    env = {**os.environ, "MIGRATE_GUARD_KEY": KEY}
    proc = subprocess.Popen([*cmd, "backup"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def blobs_written() -> bool:
        return (repo / "blobs").exists() and any(p.is_file() for p in (repo / "blobs").rglob("*"))

    deadline = time.monotonic() + 60
    while not blobs_written() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the backup finished before it could be killed half-way"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    listed = subprocess.run([*cmd, "list", "--format", "json"], env=env, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    done = subprocess.run([*cmd, "backup"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr  # the dead process's lock is stale and taken over
    check = subprocess.run([*cmd, "verify", "--all", "--read-data"], env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_concurrent_backups_are_serialised(run_cli, seeded):
    project, url = seeded
    from migrate_guard.backup.service import open_repository
    from migrate_guard.config import load_project

    repo = open_repository(load_project(project / "alembic.ini", url), create=True)
    with repo.lock("a long backup"):
        result = run_cli("--url", url, "-c", str(project / "alembic.ini"), "backup")
    assert result.exit_code == 2
    assert "a long backup" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert run_cli("--url", url, "-c", str(project / "alembic.ini"), "backup").exit_code == 0


def test_prune_with_the_database_down_goes_by_name_and_keeps_other_databases(
    run_cli, example, postgresql_url, monkeypatch
):
    """A backup host that cannot reach the database still prunes its snapshots (chosen by dialect, host
    and name), and leaves another database's snapshots in the same repository alone."""
    from migrate_guard.backup.service import scratch_database

    migrate_example(example, postgresql_url, customers=5)
    use_repository(example, example / "repo", monkeypatch)
    config = ("-c", str(example / "alembic.ini"))
    with scratch_database("postgresql", postgresql_url) as other:
        migrate_example(example, other, customers=5)
        for url in (postgresql_url, postgresql_url, other, other):
            assert run_cli("--url", url, *config, "backup").exit_code == 0
        everything = json.loads(
            run_cli("--url", postgresql_url, *config, "list", "--all-databases", "--format", "json").stdout
        )
        mine = [s["id"] for s in everything if s["database"]["name"] == sa.engine.make_url(postgresql_url).database]
        theirs = [s["id"] for s in everything if s["id"] not in mine]
        assert len(mine) == 2 and len(theirs) == 2

        name = sa.engine.make_url(postgresql_url).database
        execute(other, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')  # a real outage of this database
        try:
            result = run_cli("--url", postgresql_url, *config, "prune", "--keep-last", "1")
            assert result.exit_code == 0, result.output
            assert "does not answer" in result.output
            result = run_cli("--url", postgresql_url, *config, "prune", "--keep-last", "1", "--all-databases")
            assert result.exit_code == 0, result.output
        finally:
            execute(other, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        left = {
            s["id"]
            for s in json.loads(run_cli("--url", other, *config, "list", "--all-databases", "--format", "json").stdout)
        }
        # the unreachable database lost its older snapshot; with --all-databases the other one kept its newest
        assert left == {mine[-1], theirs[-1]}, (everything, left)
        assert run_cli("--url", postgresql_url, *config, "verify", "--all").exit_code == 0


def test_every_healthy_snapshot_of_the_example_passes_verify_read_data(run_cli, example, db_url, monkeypatch):
    """Full, partial and migrate-safe safety snapshots (only the affected tables, which reference others)
    all restore into an empty scratch database and count right; a MariaDB snapshot says what it lacks."""
    migrate_example(example, db_url, "0004", customers=10)
    use_repository(example, example / "repo", monkeypatch)
    args = ("--url", db_url, "-c", str(example / "alembic.ini"))
    assert run_cli(*args, "backup").exit_code == 0
    assert run_cli(*args, "backup", "--tables", "customer_services").exit_code == 0  # references two tables
    assert run_cli(*args, "backup", "--tables", "family_members,customers").exit_code == 0
    result = run_cli(*args, "migrate-safe", "--yes")
    assert result.exit_code == 0, result.output
    kinds = [s["kind"] for s in json.loads(run_cli(*args, "list", "--format", "json").stdout)]
    assert "safety" in kinds and len(kinds) >= 4
    result = run_cli(*args, "verify", "--all", "--read-data")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("(data restored and counted)") == len(kinds)

    if "mysql" in db_url:  # what mariadb-dump's snapshot does not hold is named, in the manifest and the plan
        execute(db_url, "CREATE VIEW customer_names AS SELECT id, name FROM customers")
        assert run_cli(*args, "backup").exit_code == 0
        newest = json.loads(run_cli(*args, "list", "--format", "json").stdout)[-1]["id"]
        result = run_cli(*args, "restore", newest, "--dry-run")
        assert result.exit_code == 0 and "not in this snapshot, so not restored: view customer_names" in result.stdout
