"""The application's files in a snapshot (`[backup] paths`), end to end through the CLI: a backup of the
example project's uploads and configuration beside its SQLite database, restored by type (content, mode,
mtime, symlinks, empty directories); excludes and `--paths`; incremental backups that do not read
unchanged files again; a file written to while it is read; secrets only in an encrypted repository;
what a restore may write (dry run, paths no longer configured, a symlinked directory, `--to DIR`, the
pre-restore snapshot); damaged file blobs; retention keeping the blobs of files still referenced.

Failures are real: a second process appending to a file, real symlinks, bytes flipped in a blob on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import KEY, error_line, everything, execute, migrate_example

BASE_NS = 1_700_000_000_123_456_789  # mtimes with nanoseconds: ext4/tmpfs keep them

# The example's uploaded files: path -> (content, mode). Random content: every file has blobs of its own.
UPLOADS: dict[str, tuple[bytes, int]] = {
    "media/uploads/2024/05/photo.jpg": (os.urandom(150_000), 0o640),
    "media/uploads/2024/05/scan.pdf": (os.urandom(60_000), 0o640),
    "media/uploads/2025/notes.txt": (b"notes of 2025\n", 0o644),
    "media/avatars/u1.png": (os.urandom(20_000), 0o600),
    "media/bin/convert.sh": (b"#!/bin/sh\necho converting\n", 0o755),
    "media/uploads/cache": (b"a file named cache, not a directory\n", 0o644),  # `cache/` is only directories
    "config/app.toml": (b'[app]\nname = "shop"\ndebug = false\n', 0o600),
}
EMPTY_DIR = "media/empty"
SYMLINK = ("media/latest", "uploads/2024/05/photo.jpg")
EXCLUDED = {
    "media/uploads/upload-123.tmp": b"half an upload",
    "media/cache/thumb-1.bin": b"thumbnail",
    "media/uploads/2025/cache/thumb-2.bin": b"thumbnail",
}
NOT_CONFIGURED = {"config/local.toml": b"not in [backup] paths\n"}
PHOTO = "media/uploads/2024/05/photo.jpg"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def left_out(rel: str, is_dir: bool) -> bool:
    """What `exclude = ["*.tmp", "cache/"]` leaves out (written here on its own, not the library's matcher)."""
    name = rel.rsplit("/", 1)[-1]
    return name.endswith(".tmp") or (is_dir and name == "cache")


def tree(root: Path, tops: tuple[str, ...] = ("media", "config/app.toml")) -> dict[str, tuple]:
    """What a restore must bring back, of every entry beneath ``tops`` but those the backup leaves out:
    type, mode, mtime (ns) and the content's SHA-256 or the symlink's target."""
    found: dict[str, tuple] = {}

    def visit(rel: str) -> None:
        full = root / rel
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            return
        if rel not in tops and left_out(rel, stat.S_ISDIR(st.st_mode)):
            return
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            found[rel] = ("symlink", st.st_mtime_ns, os.readlink(full))
        elif stat.S_ISDIR(st.st_mode):
            found[rel] = ("dir", mode, st.st_mtime_ns)
            for name in sorted(os.listdir(full)):
                visit(f"{rel}/{name}")
        else:
            found[rel] = ("file", mode, st.st_mtime_ns, sha(full.read_bytes()))

    for top in tops:
        visit(top)
    return found


def files_below(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def regular_files(found: dict[str, tuple]) -> dict[str, tuple]:
    return {path: value for path, value in found.items() if value[0] == "file"}


class App:
    """The example project on SQLite with uploaded files and an encrypted repository at <project>/repo."""

    def __init__(self, root: Path, url: str, run_cli) -> None:
        self.root, self.url, self.run_cli = root, url, run_cli
        self.repo = root / "repo"

    @property
    def args(self) -> tuple[str, ...]:
        return ("-c", str(self.root / "alembic.ini"), "--url", self.url)

    def run(self, *args: str):
        return self.run_cli(*self.args, *args)

    def backup(self, *args: str) -> dict:
        result = self.run("backup", "--format", "json", *args)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def restore(self, *args: str, code: int = 0):
        result = self.run("restore", *args)
        assert result.exit_code == code, result.output
        return result

    def backup_settings(self, body: str) -> None:
        """migrate-guard.toml: only a [backup] table, ``body`` and the repository at ``self.repo`` (the
        example's own settings are not what these tests are about, and may change)."""
        path = self.root / "migrate-guard.toml"
        path.write_text(f'[backup]\nrepository = "{self.repo}"\n' + textwrap.dedent(body))

    def manifest(self, snapshot_id: str) -> dict:
        from migrate_guard.backup.service import open_repository
        from migrate_guard.config import load_project

        return open_repository(load_project(self.root / "alembic.ini", self.url)).load_manifest(snapshot_id)

    def entries(self, snapshot_id: str) -> dict[str, dict]:
        return {e["path"]: e for e in self.manifest(snapshot_id)["files"]["entries"]}

    def snapshots(self) -> list[str]:
        folder = self.repo / "snapshots"
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []

    def blobs(self) -> set[str]:
        folder = self.repo / "blobs"
        return {p.name for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()

    def blob(self, blob_id: str) -> Path:
        return self.repo / "blobs" / blob_id[:2] / blob_id

    def customers(self) -> list[tuple]:
        return everything(self.url)["customers"]


def make_files(root: Path) -> None:
    for i, (rel, (content, mode)) in enumerate(sorted(UPLOADS.items())):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode)
        os.utime(path, ns=(BASE_NS + i * 1_000_000_007, BASE_NS + i * 1_000_000_007))
    for rel, content in {**EXCLUDED, **NOT_CONFIGURED}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    (root / EMPTY_DIR).mkdir(parents=True)
    (root / EMPTY_DIR).chmod(0o750)
    os.symlink(SYMLINK[1], root / SYMLINK[0])
    os.utime(root / SYMLINK[0], ns=(BASE_NS - 7, BASE_NS - 7), follow_symlinks=False)
    # directories last, deepest first: writing their contents changed their mtimes
    dirs = sorted((p for p in (root / "media").rglob("*") if p.is_dir() and not p.is_symlink()), reverse=True)
    for i, d in enumerate([*dirs, root / "media"]):
        os.utime(d, ns=(BASE_NS - 1_000_000_000 * (i + 1), BASE_NS - 1_000_000_000 * (i + 1)))


@pytest.fixture
def app(example: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch, run_cli) -> App:
    """The example migrated to heads and seeded (5 customers), with its uploads (nested directories, an
    empty one, a symlink, modes 0o600 to 0o755, nanosecond mtimes), config/app.toml and things the
    backup leaves out; `[backup] paths = ["media/", "config/app.toml"]`, `exclude = ["*.tmp", "cache/"]`,
    encrypted with the test key."""
    migrate_example(example, sqlite_url, customers=5)
    make_files(example)
    monkeypatch.setenv("MIGRATE_GUARD_KEY", KEY)
    monkeypatch.delenv("MIGRATE_GUARD_PASSPHRASE", raising=False)
    a = App(example, sqlite_url, run_cli)
    a.backup_settings('paths = ["media/", "config/app.toml"]\nexclude = ["*.tmp", "cache/"]\n')
    return a


# --- 1. round trip ------------------------------------------------------------------------------------------


def test_files_round_trip_by_type_and_the_database_is_left_alone(app):
    before = tree(app.root)
    assert before[SYMLINK[0]] == ("symlink", BASE_NS - 7, SYMLINK[1]) and before[EMPTY_DIR][0] == "dir"
    snap = app.backup()
    assert snap["contents"] == ["database", "files"]
    files = regular_files(before)  # ours and whatever the example ships in media/
    assert set(UPLOADS) <= set(files)
    assert snap["files"]["count"] == len(files)
    assert snap["files"]["bytes"] == sum((app.root / p).stat().st_size for p in files)
    entries = app.entries(snap["id"])
    assert entries[PHOTO]["type"] == "file" and entries[PHOTO]["mode"] == 0o640
    assert entries[PHOTO]["sha256"] == sha(UPLOADS[PHOTO][0]) and entries[PHOTO]["size"] == 150_000
    assert entries[SYMLINK[0]]["type"] == "symlink" and entries[SYMLINK[0]]["target"] == SYMLINK[1]
    assert entries[EMPTY_DIR]["type"] == "dir" and entries[EMPTY_DIR]["mode"] == 0o750

    # lose the uploads, edit the configuration, and add a customer after the backup
    shutil.rmtree(app.root / "media")
    (app.root / "config/app.toml").write_text("broken = true\n")
    os.chmod(app.root / "config/app.toml", 0o666)
    execute(app.url, "INSERT INTO customers (customer_code, name) VALUES ('KUN99999', 'after the backup')")
    customers = app.customers()

    result = app.restore(snap["id"], "--files", "--yes")
    assert "the files before are snapshot" in result.output  # config/app.toml was replaced
    assert tree(app.root) == before  # content, mode, mtime (ns), symlink target, empty directory
    assert app.customers() == customers  # --files: the database untouched, the new customer is still there


def test_db_restore_leaves_the_files_alone(app):
    snap = app.backup()
    customers = app.customers()
    execute(app.url, "INSERT INTO customers (customer_code, name) VALUES ('KUN99999', 'after the backup')")
    (app.root / PHOTO).write_bytes(b"a new photo")
    os.remove(app.root / "media/uploads/2025/notes.txt")
    after = tree(app.root)

    result = app.restore(snap["id"], "--db", "--yes")
    assert "files in place" not in result.output and "file entries written" not in result.output
    assert app.customers() == customers  # the database is back
    assert tree(app.root) == after  # and the files are as they were: the new photo, no notes.txt


def test_restore_without_db_or_files_restores_both(app):
    snap = app.backup()
    customers, before = app.customers(), tree(app.root)
    execute(app.url, "DELETE FROM customers WHERE id = 1")
    os.remove(app.root / PHOTO)
    app.restore(snap["id"], "--yes")
    assert app.customers() == customers and tree(app.root) == before


def test_restore_brings_back_a_mode_changed_in_place(app):
    """Same content, another mode: a restore still puts the mode back (and the mtime)."""
    snap = app.backup()
    before = tree(app.root)
    os.chmod(app.root / PHOTO, 0o666)
    os.chmod(app.root / "media/bin/convert.sh", 0o644)
    os.utime(app.root / PHOTO, ns=(BASE_NS + 5, BASE_NS + 5))
    app.restore(snap["id"], "--files", "--yes")
    assert tree(app.root)[PHOTO] == before[PHOTO]
    assert tree(app.root)["media/bin/convert.sh"] == before["media/bin/convert.sh"]


def test_restore_only_the_paths_asked_for(app):
    snap = app.backup()
    os.remove(app.root / PHOTO)
    os.remove(app.root / "media/uploads/2025/notes.txt")
    app.restore(snap["id"], "--files", "--path", "media/uploads/2025", "--yes")
    assert (app.root / "media/uploads/2025/notes.txt").read_bytes() == UPLOADS["media/uploads/2025/notes.txt"][0]
    assert not (app.root / PHOTO).exists()


# --- 2. excludes and --paths --------------------------------------------------------------------------------


def test_excludes_are_left_out(app):
    snap = app.backup("--only-files")
    assert snap["contents"] == ["files"]
    paths = set(app.entries(snap["id"]))
    assert not paths & set(EXCLUDED)
    assert "media/cache" not in paths and "media/uploads/2025/cache" not in paths  # `cache/`: the directories
    assert "media/uploads/cache" in paths  # a file named cache is not a directory
    assert not paths & set(NOT_CONFIGURED)
    files = {p for p in paths if app.entries(snap["id"])[p]["type"] == "file"}
    assert set(UPLOADS) <= files and files == set(regular_files(tree(app.root)))
    # and a restore of the whole snapshot into an empty directory brings none of them
    app.restore(snap["id"], "--files", "--to", str(app.root / "elsewhere"), "--yes")
    restored = files_below(app.root / "elsewhere")
    assert not set(restored) & {*EXCLUDED, "media/cache", "media/uploads/2025/cache"}
    assert PHOTO in restored and EMPTY_DIR in restored


def test_paths_option_overrides_the_configured_paths(app):
    snap = app.backup("--only-files", "--paths", "config/app.toml,media/uploads/2025")
    assert snap["files"]["paths"] == ["config/app.toml", "media/uploads/2025"]
    files = {p for p, e in app.entries(snap["id"]).items() if e["type"] == "file"}
    assert files == {"config/app.toml", "media/uploads/2025/notes.txt"}  # its cache/ still excluded


# --- 3. incremental -------------------------------------------------------------------------------------------


class OpenSpy:
    """Stands in for the ``os`` module of migrate_guard.backup.files: records every path it opens."""

    def __init__(self) -> None:
        self.opened: list[str] = []

    def __getattr__(self, name: str):
        return getattr(os, name)

    def open(self, path, *args, **kwargs):
        self.opened.append(os.fspath(path))
        return os.open(path, *args, **kwargs)


def test_incremental_backup_reads_and_stores_only_the_changed_file(app, monkeypatch):
    from migrate_guard.backup import files as files_module

    many = app.root / "media/many"
    many.mkdir()
    for i in range(40):
        (many / f"f{i:02}.bin").write_bytes(os.urandom(100_000))
    first = app.backup("--only-files")
    assert first["files"]["bytes"] > 4_000_000 and first["stored_bytes"] > 4_000_000  # random: incompressible

    edited = many / "f17.bin"
    data = bytearray(edited.read_bytes())
    data[50_000:50_010] = b"0123456789"
    edited.write_bytes(bytes(data))
    spy = OpenSpy()
    with monkeypatch.context() as patch:
        patch.setattr(files_module, "os", spy)
        second = app.backup("--only-files")

    assert second["files"]["bytes"] == first["files"]["bytes"]
    assert second["stored_bytes"] < 150_000  # about the one file's changed bytes (it is one blob), not 4 MB
    read = sorted(Path(p).relative_to(app.root).as_posix() for p in spy.opened)
    assert read == ["media/many/f17.bin"]  # the unchanged files were not read again
    old, new = app.entries(first["id"]), app.entries(second["id"])
    for path, entry in new.items():
        if entry["type"] == "file" and path != "media/many/f17.bin":
            assert entry["blobs"] == old[path]["blobs"] and entry["sha256"] == old[path]["sha256"], path
    assert new["media/many/f17.bin"]["sha256"] == sha(bytes(data)) != old["media/many/f17.bin"]["sha256"]
    assert new["media/many/f17.bin"]["blobs"] != old["media/many/f17.bin"]["blobs"]


def test_a_backup_of_other_paths_in_between_does_not_make_the_next_one_read_everything(app, monkeypatch):
    """`backup --paths config/app.toml` between two full backups: the media files, unchanged since the
    first, are still not read again by the next full one."""
    from migrate_guard.backup import files as files_module

    first = app.backup("--only-files")
    app.backup("--only-files", "--paths", "config/app.toml")
    (app.root / "media/uploads/2025/notes.txt").write_text("notes, edited\n")
    spy = OpenSpy()
    with monkeypatch.context() as patch:
        patch.setattr(files_module, "os", spy)
        third = app.backup("--only-files")
    read = sorted(Path(p).relative_to(app.root).as_posix() for p in spy.opened)
    assert "media/uploads/2025/notes.txt" in read  # the spy sees the files read
    assert read == ["media/uploads/2025/notes.txt"], read
    assert app.entries(third["id"])[PHOTO]["blobs"] == app.entries(first["id"])[PHOTO]["blobs"]


def test_a_file_rewritten_with_the_same_size_and_mtime_is_read_again(app):
    """Size and mtime alone do not prove a file unchanged: its ctime (and inode) changed, so it is read."""
    first = app.backup("--only-files")
    path = app.root / PHOTO
    old = os.stat(path)
    new_content = os.urandom(len(UPLOADS[PHOTO][0]))
    path.write_bytes(new_content)  # the same inode, the same size
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))  # the same mtime: only the ctime tells
    assert os.stat(path).st_size == old.st_size and os.stat(path).st_mtime_ns == old.st_mtime_ns
    second = app.backup("--only-files")
    entry = app.entries(second["id"])[PHOTO]
    assert entry["sha256"] == sha(new_content) != app.entries(first["id"])[PHOTO]["sha256"]
    (app.root / PHOTO).write_bytes(b"lost")
    app.restore(second["id"], "--files", "--path", PHOTO, "--yes")
    assert path.read_bytes() == new_content


# --- 4. a file changed while it is read -----------------------------------------------------------------------

WRITER = """
import os, sys, time
piece = os.urandom(4096)
with open(sys.argv[1], "ab", buffering=0) as f:
    f.write(piece)
    print("ready", flush=True)
    while True:  # until the test ends it: a few MB/s, slower than a backup reads
        f.write(piece)
        time.sleep(0.001)
"""


def test_a_file_changed_while_it_is_read_is_reported(app):
    big = app.root / "media/logs/app.log"
    big.parent.mkdir()
    with open(big, "wb") as f:
        for _ in range(32):
            f.write(os.urandom(1 << 20))
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(big)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "ready\n"  # writing before the backup starts
        result = app.run("backup", "--only-files", "--format", "json")
        assert writer.poll() is None  # and still writing when it ended
    finally:
        writer.kill()
        writer.wait()
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "changed while it was read" in line]
    assert len(warnings) == 1 and "media/logs/app.log: changed while it was read" in warnings[0], result.stderr
    snap = json.loads(result.stdout)
    assert snap["files"]["changed"] == ["media/logs/app.log"]
    entry = app.entries(snap["id"])["media/logs/app.log"]
    assert entry["size"] >= 32 << 20 and "cache" not in entry  # read again next time
    # what was read is consistent: its blobs hold exactly the bytes its SHA-256 names
    verified = app.run("verify", snap["id"], "--read-data")
    assert verified.exit_code == 0, verified.output


# --- 5. secrets -------------------------------------------------------------------------------------------


def test_secret_refused_by_an_unencrypted_repository_before_anything_is_stored(app, monkeypatch):
    monkeypatch.delenv("MIGRATE_GUARD_KEY")
    app.repo = app.root / "plain-repo"
    (app.root / ".env").write_text("DATABASE_PASSWORD=hunter2\n")
    app.backup_settings('paths = ["media/", "config/app.toml"]\nsecret_paths = [".env"]\n')
    result = app.run("backup")
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert ".env" in line and "not encrypted" in line, line
    assert app.snapshots() == []
    assert app.blobs() == set(), "blobs were stored before the refusal"
    assert b"hunter2" not in b"".join(p.read_bytes() for p in app.repo.rglob("*") if p.is_file())


def test_a_secret_directory_is_refused_by_an_unencrypted_repository(app, monkeypatch):
    """`secret_paths = ["keys/"]`: the files in that directory are the secrets."""
    monkeypatch.delenv("MIGRATE_GUARD_KEY")
    app.repo = app.root / "plain-repo"
    (app.root / "keys").mkdir()
    (app.root / "keys/signing.pem").write_text("-----BEGIN PRIVATE KEY-----\nsecret\n")
    app.backup_settings('paths = ["media/"]\nsecret_paths = ["keys/"]\n')
    result = app.run("backup", "--only-files")
    assert result.exit_code == 2, result.output
    assert "keys" in error_line(result)
    assert app.snapshots() == []


def test_secret_stored_and_restored_in_an_encrypted_repository(app, monkeypatch):
    generated = app.run_cli("key", "generate")
    assert generated.exit_code == 0, generated.output
    monkeypatch.setenv("MIGRATE_GUARD_KEY", generated.stdout.strip())
    app.repo = app.root / "secret-repo"  # a fresh repository, encrypted with the new key
    env = app.root / ".env"
    env.write_text("DATABASE_PASSWORD=hunter2\n")
    env.chmod(0o600)
    app.backup_settings('paths = ["media/", "config/app.toml"]\nsecret_paths = [".env"]\n')
    snap = app.backup()
    assert snap["encrypted"] is True and "files" in snap["contents"]
    entry = app.entries(snap["id"])[".env"]
    assert entry["secret"] is True and entry["sha256"] == sha(b"DATABASE_PASSWORD=hunter2\n")
    assert b"hunter2" not in b"".join(p.read_bytes() for p in app.repo.rglob("*") if p.is_file())
    env.unlink()
    app.restore(snap["id"], "--files", "--yes")
    assert env.read_text() == "DATABASE_PASSWORD=hunter2\n" and stat.S_IMODE(env.stat().st_mode) == 0o600


# --- 6. what a restore may write ----------------------------------------------------------------------------


def test_dry_run_changes_nothing_and_lists_replace_and_create(app):
    snap = app.backup()
    (app.root / PHOTO).write_bytes(b"edited")
    os.remove(app.root / "media/uploads/2025/notes.txt")
    (app.root / "media/uploads/new.txt").write_text("uploaded after the backup")
    before, snapshots = tree(app.root), app.snapshots()
    result = app.restore(snap["id"], "--files", "--dry-run")
    assert f"replace   {PHOTO}" in result.output
    assert "create    media/uploads/2025/notes.txt" in result.output
    assert "unchanged" not in result.output.replace("unchanged,", "")  # counted, not listed
    assert "media/uploads/new.txt" in result.output  # kept: a restore deletes nothing
    assert "dry run: nothing changed" in result.output
    assert tree(app.root) == before and app.snapshots() == snapshots  # no pre-restore snapshot either


def test_restore_skips_a_path_no_longer_configured(app):
    snap = app.backup("--only-files")
    app.backup_settings('paths = ["media/"]\nexclude = ["*.tmp", "cache/"]\n')
    os.remove(app.root / "config/app.toml")
    os.remove(app.root / PHOTO)
    result = app.restore(snap["id"], "--files", "--yes")
    assert "skip      config/app.toml (outside the paths configured now)" in result.output
    assert not (app.root / "config/app.toml").exists()
    assert (app.root / PHOTO).read_bytes() == UPLOADS[PHOTO][0]


def test_restore_writes_nothing_through_a_symlinked_directory(app, tmp_path):
    snap = app.backup("--only-files")
    outside = tmp_path / "outside"
    outside.mkdir()
    uploads = app.root / "media/uploads/2024"
    shutil.rmtree(uploads)
    os.symlink(outside, uploads)  # media/uploads/2024 -> a directory outside the project
    result = app.run("restore", snap["id"], "--files", "--yes")
    assert files_below(outside) == []  # nothing written there, no temporary file either
    assert result.exit_code != 0, result.output  # and not silently: it fails, naming the way out
    assert "outside the paths a restore may write" in error_line(result)
    assert os.readlink(uploads) == str(outside)  # and the symlink left as it is


def test_restore_changes_no_metadata_through_a_symlinked_directory(app, tmp_path):
    """The uploads moved to another disk, symlinked back: the restore refuses to write there, and does not
    change the modes and mtimes of what it finds there either."""
    snap = app.backup("--only-files")
    outside = tmp_path / "disk2"
    shutil.move(app.root / "media/uploads", outside)
    os.symlink(outside, app.root / "media/uploads")
    for p in [outside, *outside.rglob("*")]:
        if not p.is_symlink():
            os.chmod(p, 0o700)
            os.utime(p, ns=(BASE_NS + 42, BASE_NS + 42))
    before = tree(tmp_path, ("disk2",))
    app.run("restore", snap["id"], "--files", "--yes")
    assert tree(tmp_path, ("disk2",)) == before


def test_restore_to_a_directory_writes_only_beneath_it(app, tmp_path):
    snap = app.backup()
    (app.root / PHOTO).write_bytes(b"edited in place")
    in_place, snapshots = tree(app.root), app.snapshots()
    project_files = sorted(p for p in files_below(app.root) if not p.startswith("repo"))
    target = tmp_path / "restored"
    result = app.restore(snap["id"], "--files", "--to", str(target), "--yes")
    assert f"into {target}" in result.output
    restored = tree(target)
    assert restored[PHOTO][3] == sha(UPLOADS[PHOTO][0]) and restored[PHOTO][1] == 0o640
    assert restored[SYMLINK[0]][2] == SYMLINK[1] and restored[EMPTY_DIR][0] == "dir"
    assert (target / "config/app.toml").read_bytes() == UPLOADS["config/app.toml"][0]
    assert tree(app.root) == in_place  # nothing in place changed
    assert sorted(p for p in files_below(app.root) if not p.startswith("repo")) == project_files
    assert app.snapshots() == snapshots  # nothing replaced in place: no pre-restore snapshot


def test_restore_to_a_directory_does_not_follow_a_symlink_out_of_it(app, tmp_path):
    snap = app.backup("--only-files")
    target, outside = tmp_path / "restored", tmp_path / "outside"
    target.mkdir()
    outside.mkdir()
    os.symlink(outside, target / "media")  # DIR/media -> a directory outside DIR
    result = app.run("restore", snap["id"], "--files", "--to", str(target), "--yes")
    assert files_below(outside) == []
    assert result.exit_code != 0, result.output
    assert "outside the paths a restore may write" in error_line(result)


def test_replaced_files_are_kept_in_a_pre_restore_snapshot(app):
    snap = app.backup()
    (app.root / PHOTO).write_bytes(b"the photo as it is now")
    (app.root / "config/app.toml").write_text("edited = true\n")
    (app.root / "media/uploads/new.txt").write_text("uploaded after the backup")
    result = app.restore(snap["id"], "--files", "--yes")
    assert (app.root / "media/uploads/new.txt").read_text() == "uploaded after the backup"  # never deleted
    (pre,) = set(app.snapshots()) - {f"{snap['id']}.json"}
    pre_id = pre.removesuffix(".json")
    assert f"the files before are snapshot {pre_id}" in result.output
    manifest = app.manifest(pre_id)
    assert manifest["kind"] == "pre-restore" and manifest["contents"] == ["files"]
    assert (app.root / PHOTO).read_bytes() == UPLOADS[PHOTO][0]
    app.restore(pre_id, "--files", "--yes", "--no-pre-snapshot")
    assert len(app.snapshots()) == 2  # --no-pre-snapshot: none taken this time
    assert (app.root / PHOTO).read_bytes() == b"the photo as it is now"
    assert (app.root / "config/app.toml").read_text() == "edited = true\n"


# --- 7. integrity -----------------------------------------------------------------------------------------------


def damage_photo_blob(app: App, snapshot_id: str) -> str:
    (blob,) = app.entries(snapshot_id)[PHOTO]["blobs"]  # 150 kB: one chunk, its own
    path = app.blob(blob)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    return blob


def test_verify_read_data_names_the_damaged_file(app):
    snap = app.backup()
    assert app.run("verify", snap["id"], "--read-data").exit_code == 0
    blob = damage_photo_blob(app, snap["id"])
    result = app.run("verify", snap["id"], "--read-data")
    assert result.exit_code == 1, result.output
    assert blob in result.output and "DAMAGED" in result.output
    assert PHOTO in result.output, result.output  # which file lost data, not only which blob


def test_restore_of_a_damaged_file_leaves_the_old_content_in_place(app):
    snap = app.backup()
    damage_photo_blob(app, snap["id"])
    (app.root / PHOTO).write_bytes(b"the photo as it is now")
    result = app.restore(snap["id"], "--files", "--yes", code=1)
    assert (app.root / PHOTO).read_bytes() == b"the photo as it is now"
    assert sorted(os.listdir(app.root / "media/uploads/2024/05")) == ["photo.jpg", "scan.pdf"]  # no temporary
    assert error_line(result)


# --- 8. retention ---------------------------------------------------------------------------------------------


def test_forget_and_prune_keep_the_blobs_of_files_still_referenced(app):
    (app.root / "media/uploads/old.bin").write_bytes(os.urandom(30_000))
    first = app.backup()
    (only_first,) = app.entries(first["id"])["media/uploads/old.bin"]["blobs"]
    os.remove(app.root / "media/uploads/old.bin")
    second = app.backup()
    (app.root / "media/uploads/2025/notes.txt").write_text("notes, edited\n")
    third = app.backup()
    before = tree(app.root)
    shared = app.entries(third["id"])[PHOTO]["blobs"]
    assert shared == app.entries(first["id"])[PHOTO]["blobs"]

    forgot = app.run("forget", first["id"])
    assert forgot.exit_code == 0, forgot.output
    assert not app.blob(only_first).exists()  # only the forgotten snapshot named it
    assert all(app.blob(b).exists() for b in shared)
    pruned = app.run("prune", "--keep-last", "1")
    assert pruned.exit_code == 0, pruned.output
    assert f"remove {second['id']}" in pruned.output and app.snapshots() == [f"{third['id']}.json"]

    assert app.run("verify", third["id"], "--read-data").exit_code == 0
    shutil.rmtree(app.root / "media")
    app.restore(third["id"], "--files", "--yes")
    assert tree(app.root) == before


# --- the example project as shipped ------------------------------------------------------------------------


def test_the_example_projects_own_files_round_trip_by_type(run_cli, example, sqlite_url, monkeypatch):
    """The example's own settings (its uploaded contracts and avatar, its config/app.toml) as a newcomer
    finds them: `backup` keeps them beside the database, `restore --files` brings them back, `--db`
    leaves them alone and `--files` leaves the database alone."""
    migrate_example(example, sqlite_url, customers=3)
    monkeypatch.delenv("MIGRATE_GUARD_KEY", raising=False)
    args = ("-c", str(example / "alembic.ini"), "--url", sqlite_url)
    shipped, original = tree(example), everything(sqlite_url)
    assert "media/contracts/KUN00001-service-agreement.txt" in shipped and "config/app.toml" in shipped
    result = run_cli(*args, "backup", "--format", "json")
    assert result.exit_code == 0, result.output
    snap = json.loads(result.stdout)
    assert snap["contents"] == ["database", "files"] and snap["files"]["count"] == len(regular_files(shipped))

    shutil.rmtree(example / "media" / "contracts")
    (example / "config" / "app.toml").write_text("# lost\n")
    execute(sqlite_url, "UPDATE customers SET name = 'changed after the backup'")
    before_db = everything(sqlite_url)
    result = run_cli(*args, "restore", snap["id"], "--files", "--yes")
    assert result.exit_code == 0, result.output
    assert tree(example) == shipped
    assert everything(sqlite_url) == before_db  # --files: the database as it was

    (example / "media" / "avatars" / "KUN00001.png").unlink()
    result = run_cli(*args, "restore", snap["id"], "--db", "--yes")
    assert result.exit_code == 0, result.output
    assert not (example / "media" / "avatars" / "KUN00001.png").exists()  # --db: the files as they were
    assert everything(sqlite_url) == original  # the names as they were backed up


def test_a_files_restore_killed_half_way_is_critical_in_status_until_it_is_run_again(app):
    """kill -9 while a restore writes the files in place: the files may be half old, half restored.
    `status` says so (critical, naming the snapshot to restore and the one holding what was replaced)
    until a files restore covering it finishes."""
    big = app.root / "media" / "uploads" / "video.bin"
    big.write_bytes(os.urandom(48 << 20))  # big enough to be caught writing
    snap = app.backup()["id"]
    big.write_bytes(b"replaced after the backup")
    (app.root / PHOTO).write_bytes(b"changed after the backup too")
    env = {**os.environ, "MIGRATE_GUARD_KEY": KEY}
    cmd = [sys.executable, "-m", "migrate_guard", *app.args, "restore", snap, "--files", "--yes"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not any(".mg-restore-" in p.name for p in big.parent.iterdir()):  # writing the big file now
            assert proc.poll() is None, "the restore ended before it was caught writing"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        proc.kill()
    finally:
        proc.wait()
    result = app.run("status", "--format", "json")
    report = json.loads(result.stdout)
    check = next(c for c in report["checks"] if c["name"] == "restores")
    assert result.exit_code == 1 and check["level"] == "critical", check
    assert (
        f"restore of snapshot {snap} started" in check["message"]
        and "the files may be partly restored" in check["message"]
    )
    assert f"re-run `migrate-guard restore {snap} --files`" in check["message"]
    pre = check["message"].rsplit("the state before it is snapshot ", 1)[1]
    assert app.manifest(pre)["kind"] == "pre-restore"  # what the restore replaced is kept
    app.restore(snap, "--files", "--yes")
    check = next(
        c for c in json.loads(app.run("status", "--format", "json").stdout)["checks"] if c["name"] == "restores"
    )
    assert check["level"] == "ok", check
    assert len(big.read_bytes()) == 48 << 20 and not any(".mg-restore-" in p.name for p in big.parent.iterdir())


def test_the_repository_inside_a_backed_up_directory_is_left_out(app):
    """A configured directory holding the repository would store the repository into itself, growing
    with every backup: it is left out, with a warning."""
    result = app.run("backup", "--only-files", "--paths", f"media,{app.repo.name}", "--format", "json")
    assert result.exit_code == 0, result.output
    assert f"{app.repo.name}/: the backup repository itself: not in this snapshot" in result.stderr
    snap = json.loads(result.stdout)["id"]
    assert not [p for p in app.entries(snap) if p.startswith(app.repo.name)]
