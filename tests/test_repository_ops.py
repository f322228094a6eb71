"""Repository operations against real failures: a full disk (a small tmpfs), a read-only mount, a second
process holding the lock, `pin`/`unpin`, prune's garbage collection, `key add` (also killed with SIGKILL
half-way and run again), and the exit codes the README documents."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import KEY, add_backup_setting, execute, migrate_example

from migrate_guard.backup.manifest import manifest_blobs

ROOT = Path(__file__).resolve().parent.parent


# --- helpers ----------------------------------------------------------------------------------------


class Proj:
    """The example project on SQLite with its repository at ``repo``."""

    def __init__(self, root: Path, url: str, repo: Path):
        self.root, self.url, self.repo = root, url, repo
        self.args = ("--url", url, "-c", str(root / "alembic.ini"))


def make_project(example: Path, url: str, repo: Path, monkeypatch: pytest.MonkeyPatch, key: bool = True) -> Proj:
    settings = example / "migrate-guard.toml"
    add_backup_setting(settings, f'repository = "{repo}"')
    monkeypatch.delenv("MIGRATE_GUARD_PASSPHRASE", raising=False)
    if key:
        monkeypatch.setenv("MIGRATE_GUARD_KEY", KEY)
    else:
        monkeypatch.delenv("MIGRATE_GUARD_KEY", raising=False)
    return Proj(example, url, repo)


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def snapshot_ids(run_cli, p: Proj) -> list[str]:
    return [s["id"] for s in json.loads(ok(run_cli(*p.args, "list", "--format", "json")))]


def blob_files(repo: Path) -> set[str]:
    return {f.name for f in (repo / "blobs").glob("*/*") if ".tmp-" not in f.name}


def mount(kind: str, target: Path, *options: str, source: str = "tmpfs") -> None:
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", *options, *(["-t", kind] if kind else []), source, str(target)], capture_output=True
    )
    if done.returncode:
        pytest.skip(f"cannot mount here ({done.stderr.decode().strip()}): needs root in a container that allows it")


def umount(target: Path) -> None:
    subprocess.run(["umount", "-l", str(target)], capture_output=True)


def grow(url: str, mib: float) -> None:
    """Incompressible rows: the next snapshot needs about ``mib`` MiB more."""
    execute(url, "CREATE TABLE IF NOT EXISTS ballast (id INTEGER PRIMARY KEY, data BLOB)")
    for _ in range(round(mib * 16)):
        execute(url, "INSERT INTO ballast (data) VALUES (randomblob(65536))")


def small_chunked_repository(location: Path, key: str | None = KEY) -> None:
    """A repository with 64 KiB chunks, so a snapshot is many blobs (a full disk hits it half-way)."""
    from migrate_guard.backup.crypto import decode_key
    from migrate_guard.backup.repository import KeySource, Repository

    Repository.init(str(location), KeySource(key=decode_key(key) if key else None), chunk_size=64 << 10)


# --- a full disk, a read-only filesystem ---------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path):
    target = tmp_path / "disk"
    mount("tmpfs", target, "-o", "size=1m")
    yield target
    umount(target)


def test_full_disk_is_one_line_with_path_and_free_space_and_prune_reclaims_the_orphans(
    run_cli, example, monkeypatch, small_disk, tmp_path
):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    migrate_example(example, url, customers=20)
    repo = small_disk / "repo"
    small_chunked_repository(repo)
    p = make_project(example, url, repo, monkeypatch)
    [first] = [ok(run_cli(*p.args, "backup")).split()[1].rstrip(":")]
    kept = blob_files(repo)
    revision_before = sa_revision(url)

    grow(url, 1.5)  # more than the disk holds
    result = run_cli(*p.args, "backup")
    line = _error_line(result)
    assert result.exit_code == 1, result.output
    assert f"cannot write {repo}/" in line and "no space left on device" in line, line
    assert "free on that filesystem" in line, line
    orphans = blob_files(repo) - kept
    assert orphans, "the interrupted backup wrote no blob: the disk was not filled half-way"
    assert snapshot_ids(run_cli, p) == [first]  # no visible, incomplete snapshot

    # migrate-safe behind a safety snapshot that cannot be written: exit 1, nothing migrated
    execute(url, "UPDATE alembic_version SET version_num = '0004'")
    result = run_cli(*p.args, "migrate-safe", "--yes")
    assert result.exit_code == 1 and "no space left on device" in _error_line(result), result.output
    assert sa_revision(url) == ["0004"] and revision_before == ["0006"]
    execute(url, "UPDATE alembic_version SET version_num = '0006'")

    # prune removes no snapshot but reclaims every blob no snapshot names, and says so
    result = run_cli(*p.args, "prune", "--keep-last", "5", "--dry-run")
    assert "would remove 0 snapshots, " in ok(result) and blob_files(repo) > kept
    result = run_cli(*p.args, "prune", "--keep-last", "5")
    out = ok(result)
    assert "removed 0 snapshots, " in out and " 0 blobs" not in out, out
    assert blob_files(repo) == kept
    assert ok(run_cli(*p.args, "verify", "--all")).count(": ok") == 1
    execute(url, "DROP TABLE ballast")
    ok(run_cli(*p.args, "backup"))  # room again


def test_a_full_disk_under_the_sqlite_database_is_one_line_too(run_cli, example, monkeypatch, small_disk, tmp_path):
    """The database's own disk fills during a restore: the filesystem's refusal (exit 1, the path and the
    free space), not a database error (exit 2)."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    migrate_example(example, url, customers=5)
    grow(url, 1.5)  # more than the small disk holds
    p = make_project(example, url, tmp_path / "repo", monkeypatch)
    snapshot = ok(run_cli(*p.args, "backup")).split()[1].rstrip(":")
    target = small_disk / "copy.db"
    result = run_cli(*p.args, "restore", snapshot, "--to-url", f"sqlite:///{target}", "--into-other-database", "--yes")
    line = _error_line(result)
    assert result.exit_code == 1, result.output
    assert f"cannot write {target}: no space left on device" in line and "free on that filesystem" in line, line


def sa_revision(url: str) -> list[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.exec_driver_sql("SELECT version_num FROM alembic_version")]
    finally:
        engine.dispose()


def _error_line(result) -> str:
    assert "Traceback" not in result.output and "internal error" not in result.stderr, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("migrate-guard: error")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_read_only_repository_is_one_line_naming_the_path(run_cli, example, monkeypatch, tmp_path):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    migrate_example(example, url, customers=5)
    repo = tmp_path / "repo"
    p = make_project(example, url, repo, monkeypatch)
    ok(run_cli(*p.args, "backup"))
    if os.geteuid() == 0:
        mount("", repo, "--bind", "-o", "ro", source=str(repo))
        mount("", repo, "-o", "remount,bind,ro", source=str(repo))
    else:
        for d in [repo, *repo.rglob("*")]:
            if d.is_dir():
                d.chmod(0o500)
    try:
        execute(url, "UPDATE customers SET notes = 'changed' WHERE id = 1")
        result = run_cli(*p.args, "backup")
        line = _error_line(result)
        assert result.exit_code == 1, result.output
        assert line.startswith("migrate-guard: error: cannot ") and f" {repo}/" in line, line
        assert "read-only file system" in line or "permission denied" in line, line
        assert len(snapshot_ids(run_cli, p)) == 1  # still readable
    finally:
        if os.geteuid() == 0:
            umount(repo)
        else:
            for d in [repo, *repo.rglob("*")]:
                if d.is_dir():
                    d.chmod(0o700)


def test_an_os_error_without_a_file_name_names_the_file_being_written(tmp_path):
    from migrate_guard.backup.storage import describe_os_error

    target = tmp_path / "report.html"
    try:
        with open(target, "w") as f:
            f.write("x")
            raise OSError(28, "No space left on device")  # as write() raises it: no file name
    except OSError as exc:
        line = describe_os_error(exc, doing="write")
    assert line.startswith(f"cannot write {target}: no space left on device; ") and "free on that filesystem" in line


# --- the repository lock, held by another process ---------------------------------------------------------

HOLDER = """
import sys, time
from pathlib import Path
from migrate_guard.backup.repository import KeySource, Repository
repo = Repository.open(sys.argv[1], KeySource.from_environment())
with repo.lock("nightly backup (test holder)"):
    print("held", flush=True)
    while not Path(sys.argv[2]).exists():
        time.sleep(0.05)
    time.sleep(float(sys.argv[3]))
"""


def hold_lock(repo: Path, release: Path, linger: float) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(repo), str(release), str(linger)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_backup_prune_and_pin_wait_for_the_lock_another_process_holds(run_cli, example, monkeypatch, tmp_path):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    migrate_example(example, url, customers=5)
    p = make_project(example, url, tmp_path / "repo", monkeypatch)
    first = ok(run_cli(*p.args, "backup")).split()[1].rstrip(":")
    release = tmp_path / "release"
    holder = hold_lock(p.repo, release, 1.5)
    try:
        started = time.monotonic()
        result = run_cli(*p.args, "backup", "--lock-wait", "0")
        assert result.exit_code == 2 and time.monotonic() - started < 5, result.output
        line = _error_line(result)
        assert f"locked by pid {holder.pid}" in line and "nightly backup (test holder)" in line, line

        result = run_cli(*p.args, "prune", "--keep-last", "1", "--lock-wait", "1s")
        assert result.exit_code == 2 and "(waited 1s: --lock-wait)" in _error_line(result), result.output
        assert result.stderr.count("waiting up to 1s") == 1, result.stderr

        assert run_cli(*p.args, "pin", first, "--lock-wait", "soon").exit_code == 2  # a bad duration

        release.touch()  # the holder lets go 1.5 s from now: a backup waiting 1m gets the lock then
        started = time.monotonic()
        result = run_cli(*p.args, "backup", "--lock-wait", "1m")
        waited = time.monotonic() - started
        assert result.exit_code == 0, result.output
        assert result.stderr.count("waiting up to 1m for the lock of repository") == 1, result.stderr
        assert f"held by pid {holder.pid} " in result.stderr and waited >= 1.0
        assert holder.wait(10) == 0
    finally:
        release.touch()
        holder.kill()
        holder.wait()
    holder = hold_lock(p.repo, release, 1.0)  # released at once: pin waits by default (10 minutes)
    try:
        result = run_cli(*p.args, "pin", first)
        assert result.exit_code == 0 and "waiting up to 10m" in result.stderr, result.output
    finally:
        holder.kill()
        holder.wait()
    assert len(snapshot_ids(run_cli, p)) == 2


def test_migrate_safe_waits_for_a_running_backup(run_cli, example, monkeypatch, tmp_path):
    """An hourly cron backup holding the repository lock delays a deploy's migrate-safe; it does not fail it."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    migrate_example(example, url, "0004", customers=5)
    p = make_project(example, url, tmp_path / "repo", monkeypatch)
    ok(run_cli(*p.args, "backup"))
    release = tmp_path / "release"
    release.touch()
    holder = hold_lock(p.repo, release, 1.0)
    try:
        result = run_cli(*p.args, "migrate-safe", "--yes")
        assert result.exit_code == 0, result.output
        assert f"waiting up to 10m for the lock of repository {p.repo}: held by pid {holder.pid}" in result.output
        assert holder.wait(10) == 0
    finally:
        holder.kill()
        holder.wait()


# --- pin, unpin, forget, prune ----------------------------------------------------------------------------


def test_pin_unpin_and_forget_reports_only_what_it_freed(run_cli, example, monkeypatch, tmp_path):
    from migrate_guard.backup.repository import KeySource, Repository

    url = f"sqlite:///{tmp_path / 'app.db'}"
    migrate_example(example, url, customers=5)
    p = make_project(example, url, tmp_path / "repo", monkeypatch)
    ok(run_cli(*p.args, "backup"))
    execute(url, "UPDATE customers SET notes = 'changed' WHERE id = 1")
    ok(run_cli(*p.args, "backup"))
    first, second = snapshot_ids(run_cli, p)

    assert ok(run_cli(*p.args, "pin", first[:6])) == f"snapshot {first} pinned\n"
    assert ok(run_cli(*p.args, "pin", first)) == f"snapshot {first} was pinned already\n"
    listed = json.loads(ok(run_cli(*p.args, "list", "--format", "json")))
    assert [s["pinned"] for s in listed] == [True, False]
    result = run_cli(*p.args, "forget", first)
    assert result.exit_code == 2 and f"unpin {first}" in _error_line(result)
    result = run_cli(*p.args, "prune", "--keep-last", "1")
    assert first in ok(result) and snapshot_ids(run_cli, p) == [first, second]  # pinned: kept

    # an orphan blob, as an interrupted backup leaves it: forget does not count it as its own
    repo = Repository.open(str(p.repo), KeySource.from_environment())
    orphan = repo.write_stream("orphan", [os.urandom(5000)]).blobs[0]
    own = {b for b in _blobs(repo.load_manifest(first))} - {b for b in _blobs(repo.load_manifest(second))}
    assert own
    assert ok(run_cli(*p.args, "unpin", first)) == f"snapshot {first} unpinned\n"
    out = ok(run_cli(*p.args, "forget", first))
    assert out.startswith(f"removed snapshot {first}, {len(own)} blobs, "), out
    assert orphan in blob_files(p.repo)
    out = ok(run_cli(*p.args, "prune", "--keep-last", "1"))
    assert "removed 0 snapshots, 1 blobs, " in out and orphan not in blob_files(p.repo), out
    assert "verified" not in out and ok(run_cli(*p.args, "verify", "--all")).count(": ok") == 1


def _blobs(manifest: dict) -> list[str]:
    return list(manifest_blobs(manifest))


# --- key add ----------------------------------------------------------------------------------------------


def all_sealed(repo: Path) -> None:
    """Every blob, manifest and state file is an encrypted file, every journal line a sealed one."""
    import base64

    for path in [*repo.glob("blobs/*/*"), *repo.glob("snapshots/*"), *repo.glob("state/*.json")]:
        assert path.read_bytes()[:4] == b"MGE1", path
    for line in (repo / "state" / "journal.jsonl").read_bytes().splitlines():
        assert base64.b64decode(line)[:4] == b"MGE1"
    assert not (repo / "rekey").exists() or not any((repo / "rekey").rglob("*.*"))
    assert json.loads((repo / "config.json").read_text())["encrypted"] is True


def test_readme_sequence_quickstart_then_key_add_then_encrypted_backups(run_cli, example, monkeypatch):
    """The Quickstart (migrate-safe with no key: an unencrypted repository), then the Backups section."""
    url = f"sqlite:///{example / 'app.db'}"
    monkeypatch.delenv("MIGRATE_GUARD_KEY", raising=False)
    monkeypatch.delenv("MIGRATE_GUARD_PASSPHRASE", raising=False)
    args = ("--url", url, "-c", str(example / "alembic.ini"))
    ok(run_cli(*args, "migrate-safe", "0004"))
    seeded = subprocess.run([sys.executable, "seed.py", "--url", url], cwd=example, capture_output=True, text=True)
    assert seeded.returncode == 0, seeded.stderr
    ok(run_cli(*args, "migrate-safe"))
    repo = example / ".migrate-guard" / "backups"
    before = snapshot_ids(run_cli, Proj(example, url, repo))
    history = ok(run_cli(*args, "history", "--format", "json"))
    assert len(before) == 2 and not json.loads((repo / "config.json").read_text())["encrypted"]

    monkeypatch.setenv("MIGRATE_GUARD_KEY", ok(run_cli("key", "generate")).strip())
    refused = run_cli(*args, "backup")
    assert refused.exit_code == 2 and "not encrypted" in _error_line(refused)
    out = ok(run_cli(*args, "key", "add"))
    assert f"encrypted the repository at {repo}: 2 snapshots" in out, out
    all_sealed(repo)
    assert run_cli(*args, "key", "add").exit_code == 2  # encrypted already
    ok(run_cli(*args, "backup", "--label", "before release 42"))
    after = snapshot_ids(run_cli, Proj(example, url, repo))
    assert after[:2] == before and len(after) == 3
    assert ok(run_cli(*args, "verify", "--all")).count(": ok") == 3

    def runs(text: str) -> list[dict]:  # the same records; only the chain's hashes are new (keyed)
        return [{k: v for k, v in r.items() if k != "prev"} for r in json.loads(text)]

    assert runs(ok(run_cli(*args, "history", "--format", "json"))) == runs(history) != []
    listed = json.loads(ok(run_cli(*args, "list", "--format", "json")))
    assert all(s["encrypted"] for s in listed)

    content = conftest_everything(url)
    execute(url, "DELETE FROM family_members")
    ok(run_cli(*args, "restore", after[-1], "--yes"))  # the encrypted backup, through the converted repository
    assert conftest_everything(url) == content and sa_revision(url) == ["0006"]
    monkeypatch.setenv("MIGRATE_GUARD_KEY", KEY)  # another key: refused
    assert "wrong key" in _error_line(run_cli(*args, "list"))


KILLER = """
import os, signal, sys
from migrate_guard.backup import storage
target, count = int(sys.argv[1]), [0]
log = open(sys.argv[2], "a") if sys.argv[2] != "-" else None

def counted(real):
    def op(self, path, *rest):
        count[0] += 1
        if log:
            log.write(f"{real.__name__} {path}\\n")
            log.flush()
        if count[0] == target:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, path, *rest)
    return op

storage.LocalStorage.write_atomic = counted(storage.LocalStorage.write_atomic)
storage.LocalStorage.delete = counted(storage.LocalStorage.delete)
from migrate_guard.cli import cli
cli(args=sys.argv[3:], prog_name="migrate-guard")
"""


def key_add_killed(p: Proj, at: int, log: str = "-") -> int:
    done = subprocess.run(
        [sys.executable, "-c", KILLER, str(at), log, *p.args, "key", "add", "--lock-wait", "0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ},
    )
    return done.returncode


def test_key_add_killed_half_way_leaves_a_readable_repository_and_the_rerun_finishes(
    run_cli, example, monkeypatch, tmp_path
):
    import shutil

    url = f"sqlite:///{tmp_path / 'app.db'}"
    migrate_example(example, url, customers=10)
    grow(url, 0.75)
    repo = tmp_path / "repo"
    small_chunked_repository(repo, key=None)  # many blobs: the kill lands in the middle of them
    p = make_project(example, url, repo, monkeypatch, key=False)
    ok(run_cli(*p.args, "backup", "--pin"))
    execute(url, "UPDATE customers SET notes = 'changed' WHERE id = 1")
    ok(run_cli(*p.args, "backup"))
    ok(run_cli(*p.args, "verify", "--all"))  # a verify record (state) too
    ids = snapshot_ids(run_cli, p)
    pristine = tmp_path / "pristine"
    shutil.copytree(repo, pristine)

    # where the operations fall: one full run, logged
    monkeypatch.setenv("MIGRATE_GUARD_KEY", KEY)
    log = tmp_path / "ops.log"
    assert key_add_killed(p, 10**9, str(log)) == 0
    ops = log.read_text().splitlines()
    switch = ops.index(f"write_atomic {CONFIG_PATH}")
    points = {
        "first new blob": 2,
        "half the blobs": next(i for i, o in enumerate(ops) if "rekey/snapshots" in o) // 2 + 1,
        "before the switch": switch + 1,
        "right after the switch": switch + 2,
        "replacing manifests": next(i for i, o in enumerate(ops) if o.startswith("write_atomic snapshots/")) + 1,
        "deleting the old blobs": next(i for i, o in enumerate(ops) if o.startswith("delete blobs/")) + 2,
    }
    assert len(set(points.values())) == len(points) and points["half the blobs"] > 5, points

    for where, at in points.items():
        shutil.rmtree(repo)
        shutil.copytree(pristine, repo)
        assert key_add_killed(p, at) == -signal.SIGKILL, where
        encrypted = json.loads((repo / "config.json").read_text())["encrypted"]
        if not encrypted:  # still the unencrypted repository, whole
            monkeypatch.delenv("MIGRATE_GUARD_KEY")
            assert run_cli(*p.args, "verify", "--all").exit_code == 0, where
            assert snapshot_ids(run_cli, p) == ids, where
            monkeypatch.setenv("MIGRATE_GUARD_KEY", KEY)
        assert where not in ("first new blob", "half the blobs", "before the switch") or not encrypted
        out = ok(run_cli(*p.args, "key", "add"))  # the rerun finishes (or redoes) it
        assert ("finished encrypting" in out) == encrypted, (where, out)
        all_sealed(repo)
        verified = ok(run_cli(*p.args, "verify", "--all"))
        assert verified.count(": ok") == 2 and "DAMAGED" not in verified, (where, verified)
        assert snapshot_ids(run_cli, p) == ids, where
        assert not [f for f in (repo / "blobs").glob("*/*") if f.read_bytes()[:4] != b"MGE1"], where

    before = conftest_everything(url)
    execute(url, "DELETE FROM family_members")
    ok(run_cli(*p.args, "restore", ids[-1], "--yes"))
    assert conftest_everything(url) == before


CONFIG_PATH = "config.json"


def conftest_everything(url: str) -> dict:
    from conftest import everything

    return {k: v for k, v in everything(url).items() if k != "alembic_version"}


# --- exit codes ---------------------------------------------------------------------------------------------


def test_documented_exit_codes(run_cli, example, monkeypatch, tmp_path):
    """README "Exit codes": a declined prompt 1, a database that does not answer 2, an unhealthy status 1
    (a full disk is 1: test_full_disk_is_one_line_with_path_and_free_space_and_prune_reclaims_the_orphans)."""
    readme = (ROOT / "README.md").read_text()
    for case in ("a declined prompt", "a database that does not answer", "a full disk", "an unhealthy `status`"):
        assert case in readme.split("## Exit codes", 1)[1], case
    url = f"sqlite:///{tmp_path / 'app.db'}"
    migrate_example(example, url, customers=5)
    p = make_project(example, url, tmp_path / "repo", monkeypatch)
    snapshot = ok(run_cli(*p.args, "backup")).split()[1].rstrip(":")

    # a declined prompt, on a real terminal: nothing changed, exit 1
    execute(url, "DELETE FROM family_members")
    master, slave = pty.openpty()
    child = subprocess.Popen(
        [sys.executable, "-m", "migrate_guard", *p.args, "restore", snapshot],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    os.close(slave)
    os.write(master, b"n\n")
    _, err = child.communicate(timeout=60)
    os.close(master)
    assert child.returncode == 1 and b"aborted" in err, err
    assert conftest_everything(url)["family_members"] == []

    # a database that does not answer: 2, one line
    down = ("--url", "postgresql+psycopg://postgres@127.0.0.1:9/nothing", "-c", str(example / "alembic.ini"))
    result = run_cli(*down, "backup")
    line = _error_line(result)
    assert result.exit_code == 2 and ("cannot connect" in line or "database error" in line), result.output

    # an unhealthy status: 1
    result = run_cli(*down, "status")
    assert result.exit_code == 1 and "database" in result.stdout, result.output


def test_lock_wait_accepts_seconds_and_durations():
    from migrate_guard.cli import _lock_wait_seconds
    from migrate_guard.errors import UsageError

    assert [_lock_wait_seconds(t) for t in ("0", "600", "30s", "1.5", "10m", "1h")] == [0, 600, 30, 1.5, 600, 3600]
    with pytest.raises(UsageError):
        _lock_wait_seconds("soon")
