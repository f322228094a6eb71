"""A repository that heals (issue 14): a damaged blob is never reused, `repair` removes it and names the
snapshots that lost data, a changed id or a deleted manifest is found, and a read-only copy is still
listed, verified and restored from."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import error_line, execute, migrate_example, use_repository

pytestmark = pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def seeded(example: Path, db_url: str, monkeypatch: pytest.MonkeyPatch):
    migrate_example(example, db_url, customers=30)
    use_repository(example, example / "repo", monkeypatch)
    return example, db_url, ("--url", db_url, "-c", str(example / "alembic.ini"))


def _snapshots(run_cli, args) -> list[dict]:
    result = run_cli(*args, "list", "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _table_blob(project: Path, url: str, table: str = "customers") -> Path:
    """The file of the first blob of ``table``'s rows in the newest snapshot (a table's stream is the same
    bytes while its rows are: a later backup names the same blob; PostgreSQL's schema archive holds a time)."""
    from migrate_guard.backup.service import open_repository
    from migrate_guard.config import load_project

    repo = open_repository(load_project(project / "alembic.ini", url))
    manifest = repo.manifests()[-1]
    blobs = next(t for t in manifest["tables"] if t["name"] == table)["blobs"] or manifest["schema"]["blobs"]
    return project / "repo" / "blobs" / blobs[0][:2] / blobs[0]  # SQLite: the image holds every table


def _truncate(blob: Path) -> None:
    data = blob.read_bytes()
    blob.write_bytes(data[: len(data) // 2])


def test_a_damaged_blob_is_stored_again_by_the_next_backup(run_cli, seeded):
    project, _url, args = seeded
    assert run_cli(*args, "backup").exit_code == 0
    first = _snapshots(run_cli, args)[0]["id"]
    blob = _table_blob(project, _url)
    _truncate(blob)  # a table no one changes: the next backup would name the same blob

    result = run_cli(*args, "verify", "--all")
    assert result.exit_code == 1 and blob.name in result.stdout
    assert [s["lost_data"] for s in _snapshots(run_cli, args)] == [[blob.name]]

    assert run_cli(*args, "backup").exit_code == 0  # stores the blob again from the database
    result = run_cli(*args, "verify", "--all")
    assert result.exit_code == 0, result.output  # both snapshots: they name the same, now sound, blob
    listed = _snapshots(run_cli, args)
    assert [s["lost_data"] for s in listed] == [[], []] and listed[0]["id"] == first
    assert run_cli(*args, "restore", first, "--yes", "--no-pre-snapshot").exit_code == 0


def test_migrate_safe_takes_its_safety_snapshot_again_over_a_damaged_blob(run_cli, example, db_url, monkeypatch):
    """No verify ran: the safety snapshot reuses the truncated blob, fails its own verification, and the
    second one stores it again; the migration goes ahead on a sound snapshot."""
    migrate_example(example, db_url, "0004", customers=30)
    use_repository(example, example / "repo", monkeypatch)
    args = ("--url", db_url, "-c", str(example / "alembic.ini"))
    assert run_cli(*args, "backup").exit_code == 0
    _truncate(_table_blob(example, db_url))
    result = run_cli(*args, "migrate-safe", "--backup-scope", "full", "--yes")
    assert result.exit_code == 0, result.output
    assert "taking it again" in result.output
    assert run_cli(*args, "verify", "--all").exit_code == 0


def test_repair_removes_damaged_blobs_and_prune_removes_what_lost_data(run_cli, seeded):
    project, url, args = seeded
    assert run_cli(*args, "backup").exit_code == 0
    blob = _table_blob(project, url, "family_members")
    _truncate(blob)
    execute(url, "UPDATE customers SET notes = 'changed' WHERE id = 1")
    assert run_cli(*args, "backup", "--tables", "customers").exit_code == 0  # does not name the damaged blob

    result = run_cli(*args, "repair", "--dry-run")
    assert result.exit_code == 1 and blob.exists() and "would remove 1" in result.stdout

    result = run_cli(*args, "repair", "--format", "json")
    assert result.exit_code == 1, result.output
    found = json.loads(result.stdout)
    assert list(found["damaged"]) == [blob.name] and found["removed"] == 1 and not blob.exists()
    damaged_snapshot, sound_snapshot = (s["id"] for s in _snapshots(run_cli, args))
    assert list(found["lost"]) == [damaged_snapshot]
    assert "L  " in run_cli(*args, "list").stdout
    result = run_cli(*args, "status", "--format", "json")
    assert result.exit_code != 0 and "lost data" in json.dumps(json.loads(result.stdout)["checks"])
    assert run_cli(*args, "report", "--html", str(project / "report.html")).exit_code == 0
    assert "LOST DATA" in (project / "report.html").read_text()

    result = run_cli(*args, "prune", "--keep-last", "5")
    assert result.exit_code == 0, result.output
    assert [s["id"] for s in _snapshots(run_cli, args)] == [sound_snapshot]
    assert run_cli(*args, "verify", "--all").exit_code == 0
    assert run_cli(*args, "repair").exit_code == 0


def test_a_changed_repository_id_is_an_error_at_open(run_cli, seeded):
    project, _url, args = seeded
    assert run_cli(*args, "backup").exit_code == 0
    config_file = project / "repo" / "config.json"
    config = json.loads(config_file.read_text())
    original = config["id"]
    config["id"] = ("0" if original[0] != "0" else "1") + original[1:]  # one hex digit
    os.chmod(config_file, 0o600)
    config_file.write_text(json.dumps(config))
    for command in (("backup",), ("list",), ("verify", "--all")):
        result = run_cli(*args, *command)
        assert result.exit_code == 2 and "id" in error_line(result), (command, result.output)

    # a repository from before id_check: its blobs give the changed id away
    del config["id_check"]
    config_file.write_text(json.dumps(config))
    result = run_cli(*args, "backup")
    assert result.exit_code == 2 and "does not match the repository's blobs" in error_line(result)
    config["id"] = original
    config_file.write_text(json.dumps(config))
    assert run_cli(*args, "backup").exit_code == 0
    assert "id_check" in json.loads(config_file.read_text())  # authenticated from then on


def test_a_deleted_manifest_is_detected(run_cli, seeded):
    project, _url, args = seeded
    assert run_cli(*args, "backup").exit_code == 0
    assert run_cli(*args, "backup").exit_code == 0
    gone, kept = (s["id"] for s in _snapshots(run_cli, args))
    (project / "repo" / "snapshots" / f"{gone}.json").unlink()

    result = run_cli(*args, "verify", "--all")
    assert result.exit_code == 1 and gone in result.stdout and "deleted outside migrate-guard" in result.stdout
    result = run_cli(*args, "list")
    assert gone in result.stderr and kept in result.stdout
    assert run_cli(*args, "forget", kept).exit_code == 0  # removed through migrate-guard: not reported
    assert kept not in run_cli(*args, "verify", "--all").stdout


@contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """``path`` on read-only media: a read-only bind mount when this runs as root (root ignores modes)."""
    if os.geteuid() != 0:
        for p in (path, *path.rglob("*")):
            os.chmod(p, 0o500 if p.is_dir() else 0o400)
        try:
            yield path
        finally:
            for p in (path, *path.rglob("*")):
                os.chmod(p, 0o700 if p.is_dir() else 0o600)
        return
    mount = path.with_name(path.name + "-ro")
    mount.mkdir()
    subprocess.run(["mount", "--bind", str(path), str(mount)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)], check=True)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)
        mount.rmdir()


def test_a_read_only_repository_is_listed_verified_and_restored_from(run_cli, seeded, other_url):
    project, url, args = seeded
    assert run_cli(*args, "backup").exit_code == 0
    snapshot = _snapshots(run_cli, args)[0]["id"]
    migrate_example(project, other_url, customers=None)
    settings = project / "migrate-guard.toml"
    with read_only(project / "repo") as media:
        settings.write_text(settings.read_text().replace(str(project / "repo"), str(media)))
        with pytest.raises(OSError):
            (media / "probe").write_text("x")
        assert [s["id"] for s in _snapshots(run_cli, args)] == [snapshot]
        result = run_cli(*args, "verify", "--all", "--read-data")
        assert result.exit_code == 0, result.output
        assert f"snapshot {snapshot}: ok" in result.stdout and "not recorded" in result.stderr
        result = run_cli(
            *args, "restore", snapshot, "--to-url", other_url, "--into-other-database", "--no-pre-snapshot", "--yes"
        )
        assert result.exit_code == 0, result.output
    from conftest import everything

    assert everything(other_url) == everything(url)


def test_verify_no_lock_reads_a_writable_repository_and_records_nothing(run_cli, seeded):
    project, _url, args = seeded
    assert run_cli(*args, "backup").exit_code == 0
    blob = _table_blob(project, _url)
    _truncate(blob)
    state = project / "repo" / "state"
    before = {p.name: p.read_bytes() for p in state.iterdir()}
    result = run_cli(*args, "verify", "--all", "--no-lock")
    assert result.exit_code == 1 and blob.name in result.stdout and "not recorded" in result.stderr
    assert {p.name: p.read_bytes() for p in state.iterdir()} == before  # no result, no damage record
    assert not (project / "repo" / "locks" / "journal.json").exists()
    assert [s["lost_data"] for s in _snapshots(run_cli, args)] == [[]]
    assert run_cli(*args, "verify", "--all").exit_code == 1  # without it: recorded
    assert [s["lost_data"] for s in _snapshots(run_cli, args)] == [[blob.name]]
