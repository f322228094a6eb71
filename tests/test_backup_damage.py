"""Every kind of damage to a repository is found by `verify` and by `restore`, which names the blob
(or the manifest) and leaves the database exactly as it was: restore checks everything it needs
before it touches anything. On SQLite, PostgreSQL and MariaDB, encrypted and unencrypted.

Also: restoring into another database, `--dry-run`, an unencrypted repository end to end, and a key
file configured with `[backup] key_file`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import KEY, add_backup_setting, error_line, everything, execute, migrate_example, use_repository

SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # nothing dialect-specific to test
OTHER_KEY = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="  # 32 bytes, base64, not KEY
HEADER_SIZE = 28  # "MGE1", flags, salt, nonce prefix
SEGMENT = 65536 + 16  # a full sealed segment: ciphertext and tag
ATTACHMENT_BYTES = 40_000
ATTACHMENTS = 4  # ~160 KB of incompressible data: at least one blob spans several segments

ATTACHMENTS_DDL = {
    "sqlite": "CREATE TABLE attachments (id INTEGER PRIMARY KEY, customer_id INTEGER, data BLOB NOT NULL)",
    "postgresql": "CREATE TABLE attachments (id INTEGER PRIMARY KEY, customer_id INTEGER, data BYTEA NOT NULL)",
    "mysql": "CREATE TABLE attachments (id INTEGER PRIMARY KEY, customer_id INTEGER, data LONGBLOB NOT NULL)",
}


@dataclass
class Seeded:
    project: Path
    url: str
    repo: Path

    @property
    def args(self) -> tuple[str, ...]:
        return ("--url", self.url, "-c", str(self.project / "alembic.ini"))

    def snapshots(self) -> list[str]:
        folder = self.repo / "snapshots"
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []

    def manifest(self, snapshot_id: str) -> dict:
        from migrate_guard.backup.service import open_repository
        from migrate_guard.config import load_project

        return open_repository(load_project(self.project / "alembic.ini", self.url)).load_manifest(snapshot_id)

    def blob(self, blob_id: str) -> Path:
        return self.repo / "blobs" / blob_id[:2] / blob_id


def _dialect(url: str) -> str:
    return sa.engine.make_url(url).get_backend_name()


@pytest.fixture
def seeded(example: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Seeded:
    """The example project migrated to heads and seeded (20 customers) plus a table of binary
    attachments; its repository at <project>/repo, encrypted with MIGRATE_GUARD_KEY."""
    migrate_example(example, db_url)
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(ATTACHMENTS_DDL[_dialect(db_url)])
            for i in range(1, ATTACHMENTS + 1):
                conn.execute(
                    sa.text("INSERT INTO attachments (id, customer_id, data) VALUES (:i, :c, :d)"),
                    {"i": i, "c": i, "d": os.urandom(ATTACHMENT_BYTES)},
                )
    finally:
        engine.dispose()
    use_repository(example, example / "repo", monkeypatch)
    return Seeded(example, db_url, example / "repo")


# --- helpers -------------------------------------------------------------------------------------------------


CHANGES = ("UPDATE customers SET notes = 'changed after the backup'", "DELETE FROM attachments WHERE id = 1")


def backup(run_cli, seeded: Seeded, *extra: str) -> str:
    result = run_cli(*seeded.args, "backup", "--format", "json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["id"]


def rewrite(path: Path, data: bytes) -> None:
    os.chmod(path, 0o600)
    path.write_bytes(data)


def blobs_of(manifest: dict) -> list[str]:
    return list(dict.fromkeys(manifest["schema"]["blobs"] + [b for t in manifest["tables"] for b in t["blobs"]]))


# --- damage -------------------------------------------------------------------------------------------------

# kind -> what the verify/restore message must say (beyond the blob id), encrypted / unencrypted
ENCRYPTED_KINDS = {
    "flipped-byte": r"tag mismatch in segment \d+",
    "flipped-header-byte": r"tag mismatch in segment 0",
    "truncated-tail": r"tag mismatch|truncated",
    "truncated-last-segment": r"truncated",
    "truncated-to-header": r"truncated",
    "empty-file": r"truncated",
    "missing": r"missing",
    "schema-blob-flipped": r"tag mismatch in segment \d+",
    "schema-blob-missing": r"missing",
    "other-blob": r"id mismatch",
    "damaged-manifest": r"tag mismatch",
    "manifest-of-another-snapshot": r"id mismatch",
}
PLAIN_KINDS = {
    "flipped-byte": r"id mismatch|cannot decompress|incomplete",
    "truncated-tail": r"incomplete|cannot decompress|truncated",
    "empty-file": r"truncated|bad magic",
    "missing": r"missing",
    "other-blob": r"id mismatch",
    "damaged-manifest": r"sha256 mismatch|not valid JSON",
    "manifest-of-another-snapshot": r"id mismatch|sha256 mismatch",
}
CASES = [pytest.param(True, kind, id=f"encrypted-{kind}") for kind in ENCRYPTED_KINDS] + [
    pytest.param(False, kind, id=f"plain-{kind}") for kind in PLAIN_KINDS
]


def damage(run_cli, seeded: Seeded, snapshot: str, kind: str) -> str:
    """Damage the repository; returns what the errors must name (a blob id or the snapshot id)."""
    manifest = seeded.manifest(snapshot)
    blobs = blobs_of(manifest)
    victim = max(blobs, key=lambda b: seeded.blob(b).stat().st_size)
    if kind.startswith("schema-blob"):  # the schema stream (SQLite: the image), restored first
        victim = manifest["schema"]["blobs"][-1]
        kind = kind.replace("schema-blob", "blob")
    path = seeded.blob(victim)
    data = path.read_bytes()
    if kind in ("flipped-byte", "blob-flipped"):
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0x01
        rewrite(path, bytes(flipped))
    elif kind == "flipped-header-byte":
        flipped = bytearray(data)
        flipped[10] ^= 0x80  # in the salt: the file key, and so every segment, is wrong
        rewrite(path, bytes(flipped))
    elif kind == "truncated-tail":
        rewrite(path, data[:-7])
    elif kind == "truncated-last-segment":
        full_segments = (len(data) - HEADER_SIZE - 1) // SEGMENT
        assert full_segments >= 1, f"the largest blob has one segment ({len(data)} bytes): the seed is too small"
        rewrite(path, data[: HEADER_SIZE + full_segments * SEGMENT])  # cut exactly at a segment boundary
    elif kind == "truncated-to-header":
        rewrite(path, data[:HEADER_SIZE])
    elif kind == "empty-file":
        rewrite(path, b"")
    elif kind in ("missing", "blob-missing"):
        path.unlink()
    elif kind == "other-blob":
        # a blob of a later snapshot, copied over the victim: authentic, but not the victim's content
        execute(seeded.url, "UPDATE customers SET notes = 'for a second snapshot'")
        later = backup(run_cli, seeded)
        others = [b for b in blobs_of(seeded.manifest(later)) if b not in blobs]
        assert others, "the second snapshot added no blob"
        rewrite(path, seeded.blob(others[0]).read_bytes())
    elif kind == "damaged-manifest":
        file = seeded.repo / "snapshots" / f"{snapshot}.json"
        raw = bytearray(file.read_bytes())
        if seeded.manifest(snapshot)["encrypted"]:
            raw[len(raw) // 2] ^= 0x01
        else:
            text = raw.decode("utf-8")
            assert '"rows": ' in text
            raw = bytearray(
                re.sub(r'"rows": (\d+)', lambda m: f'"rows": {int(m.group(1)) + 1}', text, count=1).encode("utf-8")
            )
        rewrite(file, bytes(raw))
        return snapshot
    elif kind == "manifest-of-another-snapshot":
        later = backup(run_cli, seeded)
        file = seeded.repo / "snapshots" / f"{snapshot}.json"
        rewrite(file, (seeded.repo / "snapshots" / f"{later}.json").read_bytes())
        return snapshot
    else:  # pragma: no cover
        raise AssertionError(kind)
    return victim


@pytest.mark.parametrize(("encrypted", "kind"), CASES)
def test_damage_is_found_by_verify_and_restore_touches_nothing(run_cli, seeded, monkeypatch, encrypted, kind):
    if not encrypted:
        monkeypatch.delenv("MIGRATE_GUARD_KEY")
    snapshot = backup(run_cli, seeded)
    named = damage(run_cli, seeded, snapshot, kind)
    expected = (ENCRYPTED_KINDS if encrypted else PLAIN_KINDS)[kind]
    execute(seeded.url, *CHANGES)  # a restore would be visible
    before = everything(seeded.url)
    snapshots = seeded.snapshots()

    result = run_cli(*seeded.args, "verify", snapshot)
    assert result.exit_code == 1, result.output
    if named == snapshot:  # the manifest itself: verify cannot start, one error line
        message = error_line(result)
        assert f"snapshot {snapshot}" in message and re.search(expected, message), message
    else:
        assert "DAMAGED" in result.stdout
        problems = [line.strip() for line in result.stdout.splitlines() if named in line]
        assert problems and re.search(expected, problems[0]), result.stdout
        assert problems[0].startswith(f"blob {named}"), problems

    result = run_cli(*seeded.args, "restore", snapshot, "--yes")
    assert result.exit_code == 1, result.output
    message = error_line(result)
    assert named in message and re.search(expected, message), message
    assert "restored snapshot" not in result.stdout

    assert everything(seeded.url) == before  # not one row changed
    assert seeded.snapshots() == snapshots  # no pre-restore snapshot of a restore that did not happen
    assert not (seeded.repo / "locks" / "exclusive.json").exists()


@pytest.mark.parametrize(
    "kind", ["flipped-byte", "truncated-last-segment", "missing", "schema-blob-flipped", "other-blob"]
)
def test_damage_without_a_pre_snapshot_is_found_before_commit(run_cli, seeded, kind):
    """Without a pre-snapshot the blobs are checked beside the restore: nothing may be committed."""
    snapshot = backup(run_cli, seeded)
    named = damage(run_cli, seeded, snapshot, kind)
    execute(seeded.url, *CHANGES)
    before = everything(seeded.url)

    result = run_cli(*seeded.args, "restore", snapshot, "--yes", "--no-pre-snapshot")
    assert result.exit_code == 1, result.output
    message = error_line(result)
    assert f"snapshot {snapshot} is damaged, nothing was restored: blob {named}" in message, message
    assert re.search(ENCRYPTED_KINDS[kind], message), message
    assert everything(seeded.url) == before


def test_wrong_key_is_refused_before_anything(run_cli, seeded, monkeypatch):
    snapshot = backup(run_cli, seeded)
    execute(seeded.url, *CHANGES)
    before = everything(seeded.url)
    snapshots = seeded.snapshots()
    monkeypatch.setenv("MIGRATE_GUARD_KEY", OTHER_KEY)
    for command in (("verify", snapshot), ("restore", snapshot, "--yes"), ("list",), ("backup",)):
        result = run_cli(*seeded.args, *command)
        assert result.exit_code == 2, (command, result.output)
        assert "wrong key" in error_line(result), command
    assert everything(seeded.url) == before
    assert seeded.snapshots() == snapshots
    assert not (seeded.repo / "locks" / "exclusive.json").exists()

    monkeypatch.setenv("MIGRATE_GUARD_KEY", "not a key")
    result = run_cli(*seeded.args, "restore", snapshot, "--yes")
    assert result.exit_code == 2 and "MIGRATE_GUARD_KEY" in error_line(result)
    assert everything(seeded.url) == before

    monkeypatch.setenv("MIGRATE_GUARD_KEY", KEY)
    assert run_cli(*seeded.args, "verify", snapshot).exit_code == 0  # nothing was damaged by trying


def test_partial_restore_checks_its_blobs_first(run_cli, seeded):
    """`restore --tables` checks the blobs it needs (the schema stream and those tables') before it
    touches anything; a damaged blob of a table it does not restore does not stop it."""
    snapshot = backup(run_cli, seeded)
    manifest = seeded.manifest(snapshot)
    tables = {t["name"]: t for t in manifest["tables"]}
    original = everything(seeded.url)
    execute(seeded.url, *CHANGES)
    before = everything(seeded.url)

    needed = tables["customers"]["blobs"] or manifest["schema"]["blobs"]  # SQLite: the image holds every table
    victim = seeded.blob(needed[0])
    data = victim.read_bytes()
    flipped = bytearray(data)
    flipped[-3] ^= 0x20
    rewrite(victim, bytes(flipped))
    result = run_cli(*seeded.args, "restore", snapshot, "--tables", "customers", "--yes")
    assert result.exit_code == 1, result.output
    assert needed[0] in error_line(result)
    assert everything(seeded.url) == before
    rewrite(victim, data)

    elsewhere = [b for b in tables["attachments"]["blobs"] if b not in needed]
    if elsewhere:  # PostgreSQL, MariaDB: one stream per table
        rewrite(seeded.blob(elsewhere[0]), b"")
        result = run_cli(*seeded.args, "restore", snapshot, "--tables", "customers", "--yes", "--no-pre-snapshot")
        assert result.exit_code == 0, result.output
        after = everything(seeded.url)
        assert after["customers"] == original["customers"]
        assert after["attachments"] == before["attachments"]  # left alone
        result = run_cli(*seeded.args, "restore", snapshot, "--yes", "--no-pre-snapshot")
        assert result.exit_code == 1 and elsewhere[0] in error_line(result)
        assert everything(seeded.url) == after


@SQLITE_ONLY
@pytest.mark.parametrize("damage_kind", ["truncated", "not-json", "key-check", "version"])
def test_damaged_config_is_one_line(run_cli, seeded, damage_kind):
    snapshot = backup(run_cli, seeded)
    execute(seeded.url, *CHANGES)
    before = everything(seeded.url)
    path = seeded.repo / "config.json"
    config = json.loads(path.read_text())
    if damage_kind == "truncated":
        rewrite(path, path.read_bytes()[:40])
    elif damage_kind == "not-json":
        rewrite(path, b"\x00" * 64)
    elif damage_kind == "key-check":
        config["key_check"] = config["key_check"][:-8] + "AAAAAAA="
        rewrite(path, json.dumps(config).encode())
    else:
        config["version"] = 99
        rewrite(path, json.dumps(config).encode())
    for command in (("verify", snapshot), ("restore", snapshot, "--yes")):
        result = run_cli(*seeded.args, *command)
        assert result.exit_code == 2, (command, result.output)
        message = error_line(result)
        assert "config.json" in message or "wrong key" in message, message
    assert everything(seeded.url) == before


@SQLITE_ONLY
def test_restore_refused_while_the_repository_is_locked(run_cli, seeded):
    from migrate_guard.backup.service import open_repository
    from migrate_guard.config import load_project

    snapshot = backup(run_cli, seeded)
    execute(seeded.url, *CHANGES)
    before = everything(seeded.url)
    holder = open_repository(load_project(seeded.project / "alembic.ini", seeded.url))
    with holder.lock("a long backup"):
        for extra in ((), ("--no-pre-snapshot",)):
            result = run_cli(*seeded.args, "restore", snapshot, "--yes", *extra)
            assert result.exit_code == 2, result.output
            assert "a long backup" in error_line(result)
    assert everything(seeded.url) == before


# --- restore elsewhere, dry run -------------------------------------------------------------------------------


def test_restore_to_another_database_leaves_the_source_alone(run_cli, seeded, other_url):
    original = everything(seeded.url)
    snapshot = backup(run_cli, seeded)
    execute(seeded.url, *CHANGES)
    changed = everything(seeded.url)
    assert changed != original

    refused = run_cli(*seeded.args, "restore", snapshot, "--to-url", other_url, "--yes")
    assert refused.exit_code == 2 and "--into-other-database" in refused.stderr, refused.output
    source, target = (sa.engine.make_url(u).database or "" for u in (seeded.url, other_url))
    family = {"mariadb": "mysql"}.get(sa.engine.make_url(seeded.url).get_backend_name(), "")
    assert f"was taken from {family or sa.engine.make_url(seeded.url).get_backend_name()}" in refused.stderr
    assert os.path.basename(source) in refused.stderr and os.path.basename(target) in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert everything(other_url) != original  # refused: nothing was restored

    result = run_cli(*seeded.args, "restore", snapshot, "--to-url", other_url, "--into-other-database", "--yes")
    assert result.exit_code == 0, result.output
    assert everything(other_url) == original
    assert everything(seeded.url) == changed  # the source is untouched

    # the restored copy is a database like the original: it backs up and verifies
    result = run_cli("--url", other_url, "-c", str(seeded.project / "alembic.ini"), "backup", "--format", "json")
    assert result.exit_code == 0, result.output
    copy = json.loads(result.stdout)
    assert copy["revision"] == ["0006"]
    assert run_cli(*seeded.args, "verify", copy["id"], "--read-data").exit_code == 0


@pytest.mark.parametrize(
    "pre_snapshot",
    [
        pytest.param(True, id="pre-snapshot"),
        pytest.param(False, id="no-pre-snapshot"),
    ],
)
def test_restore_to_a_new_sqlite_file(run_cli, example, sqlite_url, tmp_path, monkeypatch, pre_snapshot):
    migrate_example(example, sqlite_url)
    (example / "migrate-guard.toml").write_text(f'[backup]\nrepository = "{example / "repo"}"\n')
    monkeypatch.setenv("MIGRATE_GUARD_KEY", KEY)
    seeded = Seeded(example, sqlite_url, example / "repo")
    snapshot = backup(run_cli, seeded)
    new = tmp_path / "new" / "copy.db"
    new.parent.mkdir()
    extra = () if pre_snapshot else ("--no-pre-snapshot",)
    result = run_cli(
        *seeded.args, "restore", snapshot, "--to-url", f"sqlite:///{new}", "--into-other-database", "--yes", *extra
    )
    assert result.exit_code == 0, result.output
    assert everything(f"sqlite:///{new}") == everything(sqlite_url)


def test_dry_run_touches_nothing(run_cli, seeded):
    snapshot = backup(run_cli, seeded)
    execute(seeded.url, *CHANGES)
    before = everything(seeded.url)
    snapshots = seeded.snapshots()
    files = sorted(p.relative_to(seeded.repo) for p in seeded.repo.rglob("*"))

    for extra in ((), ("--tables", "customers"), ("--yes",)):
        result = run_cli(*seeded.args, "restore", snapshot, "--dry-run", *extra)
        assert result.exit_code == 0, result.output
        assert "dry run: nothing changed" in result.stdout and snapshot in result.stdout
    assert everything(seeded.url) == before
    assert seeded.snapshots() == snapshots
    assert sorted(p.relative_to(seeded.repo) for p in seeded.repo.rglob("*")) == files


# --- unencrypted repository, key file --------------------------------------------------------------------------


def test_unencrypted_repository_end_to_end(run_cli, seeded, monkeypatch):
    monkeypatch.delenv("MIGRATE_GUARD_KEY")
    original = everything(seeded.url)
    result = run_cli(*seeded.args, "backup", "--format", "json")
    assert result.exit_code == 0, result.output
    snap = json.loads(result.stdout)
    assert snap["encrypted"] is False
    config = json.loads((seeded.repo / "config.json").read_text())
    assert config["encrypted"] is False and "key_check" not in config and "kdf" not in config
    blob_files = [p for p in (seeded.repo / "blobs").rglob("*") if p.is_file()]
    assert blob_files and all(p.read_bytes()[:4] == b"MGP1" for p in blob_files)
    manifest = (seeded.repo / "snapshots" / f"{snap['id']}.json").read_bytes()
    assert manifest[:5] == b"MGP1\x00" and json.loads(manifest[5:])["sha256"]

    listed = json.loads(run_cli(*seeded.args, "list", "--format", "json").stdout)
    assert [s["encrypted"] for s in listed] == [False]
    result = run_cli(*seeded.args, "verify", snap["id"], "--read-data")
    assert result.exit_code == 0, result.output
    execute(seeded.url, *CHANGES)
    result = run_cli(*seeded.args, "restore", snap["id"], "--yes")
    assert result.exit_code == 0, result.output
    assert everything(seeded.url) == original

    # a key (or a passphrase) is refused: one repository never mixes encrypted and plain files
    execute(seeded.url, *CHANGES)
    changed = everything(seeded.url)
    count = seeded.snapshots()
    for variable, value in (("MIGRATE_GUARD_KEY", KEY), ("MIGRATE_GUARD_PASSPHRASE", "correct horse")):
        monkeypatch.setenv(variable, value)
        for command in (("list",), ("backup",), ("verify", snap["id"]), ("restore", snap["id"], "--yes")):
            result = run_cli(*seeded.args, *command)
            assert result.exit_code == 2, (variable, command, result.output)
            assert "not encrypted" in error_line(result), (variable, command)
        monkeypatch.delenv(variable)
    assert everything(seeded.url) == changed
    assert seeded.snapshots() == count


def test_key_file(run_cli, seeded, monkeypatch):
    monkeypatch.delenv("MIGRATE_GUARD_KEY")
    toml = seeded.project / "migrate-guard.toml"
    plain_config = toml.read_text()
    (seeded.project / "keys").mkdir()
    key_file = seeded.project / "keys" / "backup.key"
    key_file.write_text(KEY + "\n")
    os.chmod(key_file, 0o600)
    add_backup_setting(toml, 'key_file = "keys/backup.key"')
    original = everything(seeded.url)

    result = run_cli(*seeded.args, "backup", "--format", "json")
    assert result.exit_code == 0, result.output
    snap = json.loads(result.stdout)
    assert snap["encrypted"] is True
    assert "key_check" in json.loads((seeded.repo / "config.json").read_text())
    result = run_cli(*seeded.args, "verify", snap["id"], "--read-data")
    assert result.exit_code == 0, result.output
    execute(seeded.url, *CHANGES)
    result = run_cli(*seeded.args, "restore", snap["id"], "--yes")
    assert result.exit_code == 0, result.output
    assert everything(seeded.url) == original

    # the same key from the environment opens it too; MIGRATE_GUARD_KEY wins over the file
    monkeypatch.setenv("MIGRATE_GUARD_KEY", KEY)
    assert run_cli(*seeded.args, "verify", snap["id"]).exit_code == 0
    monkeypatch.setenv("MIGRATE_GUARD_KEY", OTHER_KEY)
    result = run_cli(*seeded.args, "list")
    assert result.exit_code == 2 and "wrong key" in error_line(result)
    monkeypatch.delenv("MIGRATE_GUARD_KEY")

    # a key file holding another key, garbage, or nothing at all; no key file configured
    key_file.write_text(OTHER_KEY + "\n")
    result = run_cli(*seeded.args, "restore", snap["id"], "--yes")
    assert result.exit_code == 2 and "wrong key" in error_line(result)
    key_file.write_text("this is not a key\n")
    result = run_cli(*seeded.args, "list")
    assert result.exit_code == 2 and "backup.key" in error_line(result)
    key_file.unlink()
    result = run_cli(*seeded.args, "list")
    assert result.exit_code == 2 and "backup.key" in error_line(result) and "not found" in result.stderr
    toml.write_text(plain_config)
    result = run_cli(*seeded.args, "list")
    assert result.exit_code == 2 and "encrypted" in error_line(result)


@SQLITE_ONLY
def test_wrong_passphrase(run_cli, seeded, monkeypatch):
    monkeypatch.delenv("MIGRATE_GUARD_KEY")
    monkeypatch.setenv("MIGRATE_GUARD_PASSPHRASE", "correct horse battery staple")
    snapshot = backup(run_cli, seeded)
    assert json.loads((seeded.repo / "config.json").read_text())["kdf"]["algorithm"] == "scrypt"
    execute(seeded.url, *CHANGES)
    before = everything(seeded.url)
    monkeypatch.setenv("MIGRATE_GUARD_PASSPHRASE", "correct horse battery stapler")
    for command in (("verify", snapshot), ("restore", snapshot, "--yes")):
        result = run_cli(*seeded.args, *command)
        assert result.exit_code == 2 and "wrong key" in error_line(result), command
    monkeypatch.setenv("MIGRATE_GUARD_KEY", KEY)  # a key that is not the one the passphrase derives
    result = run_cli(*seeded.args, "restore", snapshot, "--yes")
    assert result.exit_code == 2 and "wrong key" in error_line(result)
    assert everything(seeded.url) == before
    monkeypatch.delenv("MIGRATE_GUARD_KEY")
    monkeypatch.setenv("MIGRATE_GUARD_PASSPHRASE", "correct horse battery staple")
    assert run_cli(*seeded.args, "verify", snapshot).exit_code == 0


# --- damage outside the snapshot being restored --------------------------------------------------------------


def _damage_manifest(seeded: Seeded, snapshot: str) -> bytes:
    file = seeded.repo / "snapshots" / f"{snapshot}.json"
    original = file.read_bytes()
    raw = bytearray(original)
    raw[len(raw) // 2] ^= 0x01
    rewrite(file, bytes(raw))
    return original


def _three_snapshots(run_cli, seeded: Seeded) -> list[str]:
    """Three snapshots, each of a different database state (so each has blobs of its own)."""
    ids = [backup(run_cli, seeded)]
    for note in ("second", "third"):
        execute(seeded.url, f"UPDATE customers SET notes = '{note}'")
        ids.append(backup(run_cli, seeded))
    return ids


@SQLITE_ONLY
def test_list_warns_about_a_damaged_manifest(run_cli, seeded):
    first, second, third = _three_snapshots(run_cli, seeded)
    _damage_manifest(seeded, second)
    for fmt in ("text", "json"):
        result = run_cli(*seeded.args, "list", "--format", fmt)
        assert result.exit_code == 0, result.output
        assert first in result.stdout and third in result.stdout and second not in result.stdout
        if fmt == "json":
            assert len(json.loads(result.stdout)) == 2  # stdout stays JSON
        assert second in result.stderr, f"no warning naming snapshot {second}: {result.stderr!r}"


@SQLITE_ONLY
def test_verify_all_reports_a_damaged_manifest(run_cli, seeded):
    first, second, third = _three_snapshots(run_cli, seeded)
    _damage_manifest(seeded, second)
    result = run_cli(*seeded.args, "verify", "--all")
    assert result.exit_code == 1, result.output
    assert second in result.output


@SQLITE_ONLY
@pytest.mark.parametrize("command", ["prune", "forget"])
def test_garbage_collection_keeps_the_blobs_of_an_unreadable_manifest(run_cli, seeded, command):
    first, second, third = _three_snapshots(run_cli, seeded)
    first_blobs = blobs_of(seeded.manifest(first))
    original = _damage_manifest(seeded, first)
    if command == "prune":
        result = run_cli(*seeded.args, "prune", "--keep-last", "1")
    else:
        result = run_cli(*seeded.args, "forget", second)
    # refusing is fine, removing the unreadable snapshot's data is not
    rewrite(seeded.repo / "snapshots" / f"{first}.json", original)  # the manifest is repaired (from a copy)
    missing = [b for b in first_blobs if not seeded.blob(b).exists()]
    assert not missing, f"{command} deleted blobs of snapshot {first}: {missing} ({result.output})"
    assert run_cli(*seeded.args, "verify", first).exit_code == 0


@SQLITE_ONLY
def test_damaged_verify_state_does_not_break_list(run_cli, seeded):
    snapshot = backup(run_cli, seeded)
    assert run_cli(*seeded.args, "verify", snapshot).exit_code == 0
    state = seeded.repo / "state" / "verify.json"
    raw = bytearray(state.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    rewrite(state, bytes(raw))
    result = run_cli(*seeded.args, "list", "--format", "json")
    assert result.exit_code == 0, result.output
    assert [s["id"] for s in json.loads(result.stdout)] == [snapshot]


@SQLITE_ONLY
def test_damaged_verify_state_does_not_break_verify(run_cli, seeded):
    snapshot = backup(run_cli, seeded)
    assert run_cli(*seeded.args, "verify", snapshot).exit_code == 0
    state = seeded.repo / "state" / "verify.json"
    rewrite(state, state.read_bytes()[:-5])
    result = run_cli(*seeded.args, "verify", snapshot)
    assert result.exit_code == 0, result.output
    assert f"snapshot {snapshot}: ok" in result.stdout
    result = run_cli(*seeded.args, "list", "--format", "json")
    assert result.exit_code == 0 and json.loads(result.stdout)[0]["verified_at"]  # recorded again
