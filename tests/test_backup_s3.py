"""The backup repository on S3, end to end through the CLI, against a real S3 API (a moto server).

A user points the repository at a bucket in migrate-guard.toml::

    [backup]
    repository = "s3://my-bucket/backups/app"

and gives s3fs (through botocore) its credentials the usual AWS ways: environment variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``), ``~/.aws/credentials``
and ``AWS_PROFILE``, or an instance role. An S3-compatible server (MinIO, Ceph, a moto server as
here) is reached by setting ``AWS_ENDPOINT_URL=http://host:port`` (botocore honours it;
``AWS_ENDPOINT_URL_S3`` too). ``pip install 'migrate-guard[s3]'`` brings fsspec and s3fs.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import error_line, execute, migrate_example, use_repository

from migrate_guard.backup.manifest import manifest_blobs

moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install -e '.[test]')")
boto3 = pytest.importorskip("boto3", reason="boto3 is not installed (pip install -e '.[test]')")
pytest.importorskip("s3fs", reason="s3fs is not installed (pip install -e '.[test]')")

TABLES = ("customers", "customer_services", "family_members", "service_categories", "alembic_version")


@pytest.fixture(scope="module")
def s3_endpoint():
    """A real S3 API on 127.0.0.1 (moto's server in a thread), for this module."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def _clear_s3fs_instances() -> None:
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def s3(s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The AWS environment a user would set for an S3-compatible endpoint, and a fresh bucket."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("NO_PROXY", ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", "localhost"])))
    _clear_s3fs_instances()
    bucket = f"mg-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3")
    client.create_bucket(Bucket=bucket)
    yield client, bucket
    _clear_s3fs_instances()


@pytest.fixture
def on_s3(example: Path, tmp_path: Path, s3, monkeypatch: pytest.MonkeyPatch):
    """The example project on SQLite, seeded, its encrypted repository at s3://<bucket>/backups/app."""
    client, bucket = s3
    url = f"sqlite:///{tmp_path / 'app.db'}"
    migrate_example(example, url)
    use_repository(example, f"s3://{bucket}/backups/app", monkeypatch)
    return example, url, client, bucket


def keys(client, bucket: str, prefix: str = "backups/app/") -> list[str]:
    found = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found += [o["Key"][len(prefix) :] for o in page.get("Contents", [])]
    return sorted(found)


def blob_keys(client, bucket: str) -> set[str]:
    return {k.rsplit("/", 1)[-1] for k in keys(client, bucket) if k.startswith("blobs/")}


def rows(url: str) -> dict[str, list[tuple]]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return {t: sorted(tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {t}"))) for t in TABLES}
    finally:
        engine.dispose()


def manifests(project: Path) -> dict[str, dict]:
    from migrate_guard.backup.service import open_repository
    from migrate_guard.config import load_project

    return {m["id"]: m for m in open_repository(load_project(project / "alembic.ini")).manifests()}


def blobs_of(manifest: dict) -> set[str]:
    return set(manifest_blobs(manifest))  # the database's streams and the files


def test_round_trip_dedup_and_prune_on_s3(run_cli, on_s3):
    project, url, client, bucket = on_s3
    args = ("--url", url, "-c", str(project / "alembic.ini"))
    before = rows(url)

    result = run_cli(*args, "backup", "--label", "first")
    assert result.exit_code == 0, result.output
    assert "encrypted" in result.stdout
    stored = keys(client, bucket)
    assert "config.json" in stored
    assert not any(".tmp-" in k for k in stored)  # one PUT per object: no temp files on S3
    config = json.loads(client.get_object(Bucket=bucket, Key="backups/app/config.json")["Body"].read())
    assert config["encrypted"] is True and config["format"] == "migrate-guard-repository"
    assert not any(k.startswith("locks/") for k in stored)  # released
    listed = json.loads(run_cli(*args, "list", "--format", "json").stdout)
    assert len(listed) == 1 and listed[0]["label"] == "first" and listed[0]["encrypted"] is True
    first = listed[0]["id"]
    assert f"snapshots/{first}.json" in stored
    assert all(k.split("/")[1] == k.split("/")[2][:2] for k in stored if k.startswith("blobs/"))
    assert (
        client.get_object(Bucket=bucket, Key=f"backups/app/snapshots/{first}.json")["Body"].read()[:4] == b"MGE1"
    )  # the manifest is sealed

    result = run_cli(*args, "verify", first, "--read-data")
    assert result.exit_code == 0, result.output
    assert json.loads(run_cli(*args, "list", "--format", "json").stdout)[0]["verified_at"]
    assert "state/verify.json" in keys(client, bucket)

    # an unchanged database: the second snapshot adds (almost) nothing
    blobs = blob_keys(client, bucket)
    result = run_cli(*args, "backup", "--format", "json")
    assert result.exit_code == 0, result.output
    second = json.loads(result.stdout)
    assert blob_keys(client, bucket) == blobs
    assert second["stored_bytes"] == 0

    # lose data, restore it all from S3
    execute(url, "DELETE FROM family_members", "UPDATE customers SET name = 'x'", "DELETE FROM alembic_version")
    result = run_cli(*args, "restore", first, "--yes", "--no-pre-snapshot")
    assert result.exit_code == 0, result.output
    assert rows(url) == before

    # a changed database: new blobs; prune drops the older snapshots and exactly their blobs
    execute(url, "UPDATE customers SET notes = 'changed on purpose'")
    result = run_cli(*args, "backup", "--format", "json")
    assert result.exit_code == 0, result.output
    third = json.loads(result.stdout)["id"]
    assert len(blob_keys(client, bucket)) > len(blobs)
    result = run_cli(*args, "prune", "--keep-last", "1")
    assert result.exit_code == 0, result.output
    left = manifests(project)
    assert third in left and first not in left
    live = set().union(*(blobs_of(m) for m in left.values()))
    assert blob_keys(client, bucket) == live  # the unreferenced blobs are gone from the bucket
    assert not any(k.startswith("locks/") for k in keys(client, bucket))
    result = run_cli(*args, "verify", "--all")
    assert result.exit_code == 0, result.output


def test_lock_on_s3(run_cli, on_s3):
    """The lock is one object created with a conditional PUT (If-None-Match: *): a second taker is
    refused, in this process and in another one; a dead holder's lock is taken over."""
    from migrate_guard.backup.repository import RepositoryLocked
    from migrate_guard.backup.service import open_repository
    from migrate_guard.config import load_project

    project, url, client, bucket = on_s3
    args = ("--url", url, "-c", str(project / "alembic.ini"))
    repo = open_repository(load_project(project / "alembic.ini", url), create=True)
    other = open_repository(load_project(project / "alembic.ini", url))
    assert other.storage.create_exclusive("locks/probe.json", b"one") is True
    assert other.storage.create_exclusive("locks/probe.json", b"two") is False
    assert other.storage.read_bytes("locks/probe.json") == b"one"
    other.storage.delete("locks/probe.json")

    with repo.lock("a long backup"):
        assert "locks/exclusive.json" in keys(client, bucket)
        holder = json.loads(client.get_object(Bucket=bucket, Key="backups/app/locks/exclusive.json")["Body"].read())
        assert holder["pid"] == os.getpid() and holder["command"] == "a long backup"
        with pytest.raises(RepositoryLocked, match="a long backup"), other.lock("second"):
            pass
        result = run_cli(*args, "backup")
        assert result.exit_code == 2
        assert "a long backup" in error_line(result)
        cli = [str(Path(sys.executable).parent / "migrate-guard"), *args, "backup", "--lock-wait", "0"]
        done = subprocess.run(cli, capture_output=True, text=True, env=os.environ.copy())
        assert done.returncode == 2, done.stdout + done.stderr
        assert "is locked by pid" in done.stderr and "a long backup" in done.stderr
    assert "locks/exclusive.json" not in keys(client, bucket)
    assert manifests(project) == {}

    # a lock left by a process that no longer runs (same host) is stale: taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    stale = {
        "pid": int(dead.stdout),
        "host": socket.gethostname(),
        "user": "someone",
        "created_at": "2026-01-01T00:00:00.000000Z",
        "command": "backup",
    }
    client.put_object(Bucket=bucket, Key="backups/app/locks/exclusive.json", Body=json.dumps(stale).encode())
    result = run_cli(*args, "backup")
    assert result.exit_code == 0, result.output
    assert "locks/exclusive.json" not in keys(client, bucket)


def test_damage_on_s3_is_detected_and_named(run_cli, on_s3):
    project, url, client, bucket = on_s3
    args = ("--url", url, "-c", str(project / "alembic.ini"))
    assert run_cli(*args, "backup").exit_code == 0
    snap = json.loads(run_cli(*args, "list", "--format", "json").stdout)[0]["id"]
    manifest = manifests(project)[snap]
    victim = sorted(set(manifest["schema"]["blobs"]) | {b for t in manifest["tables"] for b in t["blobs"]})[0]
    key = f"backups/app/blobs/{victim[:2]}/{victim}"
    original = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    data = bytearray(original)
    data[len(data) // 2] ^= 0x01
    client.put_object(Bucket=bucket, Key=key, Body=bytes(data))
    execute(url, "UPDATE customers SET name = 'changed after the backup'")
    before = rows(url)

    result = run_cli(*args, "verify", snap)
    assert result.exit_code == 1, result.output
    assert victim in result.stdout and "DAMAGED" in result.stdout
    result = run_cli(*args, "restore", snap, "--yes", "--no-pre-snapshot")
    assert result.exit_code != 0 and victim in error_line(result)
    assert rows(url) == before  # nothing was touched

    # a missing object: named as missing (not a stale cached listing of the bucket)
    client.delete_object(Bucket=bucket, Key=key)
    result = run_cli(*args, "verify", snap)
    assert result.exit_code == 1, result.output
    assert f"blob {victim} missing" in result.stdout

    # put back, everything is fine again
    client.put_object(Bucket=bucket, Key=key, Body=original)
    result = run_cli(*args, "verify", snap, "--read-data")
    assert result.exit_code == 0, result.output


def test_user_configuration_from_a_separate_process(on_s3):
    """What a user runs: the console script, configured by environment variables alone."""
    project, url, client, bucket = on_s3
    cli = [str(Path(sys.executable).parent / "migrate-guard"), "--url", url, "-c", str(project / "alembic.ini")]
    env = os.environ.copy()
    done = subprocess.run([*cli, "backup", "--label", "from a shell"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([*cli, "list", "--format", "json"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert [s["label"] for s in json.loads(done.stdout)] == ["from a shell"]
    done = subprocess.run([*cli, "verify", "--all"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout + done.stderr

    # the wrong key is refused before any data is read; no key at all too
    done = subprocess.run(
        [*cli, "list"],
        capture_output=True,
        text=True,
        env={**env, "MIGRATE_GUARD_KEY": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="},
    )
    assert done.returncode == 2 and "wrong key" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    done = subprocess.run(
        [*cli, "list"], capture_output=True, text=True, env={k: v for k, v in env.items() if k != "MIGRATE_GUARD_KEY"}
    )
    assert done.returncode == 2 and "encrypted" in done.stderr


def test_fsspec_configuration_instead_of_aws_variables(on_s3):
    """fsspec's own configuration works too: ``FSSPEC_S3_ENDPOINT_URL`` (and ``FSSPEC_S3_KEY`` /
    ``FSSPEC_S3_SECRET``) become S3FileSystem(endpoint_url=..., key=..., secret=...)."""
    project, url, client, bucket = on_s3
    cli = [str(Path(sys.executable).parent / "migrate-guard"), "--url", url, "-c", str(project / "alembic.ini")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        FSSPEC_S3_ENDPOINT_URL=os.environ["AWS_ENDPOINT_URL"],
        FSSPEC_S3_KEY="testing",
        FSSPEC_S3_SECRET="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.environ["AWS_CONFIG_FILE"],
        AWS_SHARED_CREDENTIALS_FILE=os.environ["AWS_SHARED_CREDENTIALS_FILE"],
    )
    done = subprocess.run([*cli, "backup"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "config.json" in keys(client, bucket)


def test_folder_markers_and_neighbours_are_not_repository_files(run_cli, on_s3):
    """A location "created" as a folder in the S3 console (a 0-byte key ending in "/") is still
    empty; keys of a neighbouring prefix (backups/app2/, backups/app.txt) are not in the repository."""
    project, url, client, bucket = on_s3
    for key in ("backups/app/", "backups/app/blobs/", "backups/app2/config.json", "backups/app.txt"):
        client.put_object(Bucket=bucket, Key=key, Body=b"" if key.endswith("/") else b"{}")
    args = ("--url", url, "-c", str(project / "alembic.ini"))
    result = run_cli(*args, "backup")
    assert result.exit_code == 0, result.output
    snaps = json.loads(run_cli(*args, "list", "--format", "json").stdout)
    assert len(snaps) == 1
    assert run_cli(*args, "verify", "--all").exit_code == 0
    from migrate_guard.backup.storage import open_storage

    storage = open_storage(f"s3://{bucket}/backups/app")
    assert all(p and not p.endswith("/") for p in storage.list())
    assert "config.json" in storage.list() and not any(p.startswith(("app2", "../")) for p in storage.list())
    assert open_storage(f"s3://{bucket}/backups/app/").list() == storage.list()  # a trailing slash is the same
    client.delete_object(Bucket=bucket, Key="backups/app2/config.json")
    client.delete_object(Bucket=bucket, Key="backups/app.txt")
    empty = open_storage(f"s3://{bucket}/backups/other")
    client.put_object(Bucket=bucket, Key="backups/other/", Body=b"")
    assert empty.is_empty() and empty.list() == []


def test_missing_bucket_is_one_line(run_cli, on_s3):
    project, url, client, bucket = on_s3
    toml = project / "migrate-guard.toml"
    toml.write_text(toml.read_text().replace(f"s3://{bucket}/", f"s3://{bucket}-does-not-exist/"))
    result = run_cli("--url", url, "-c", str(project / "alembic.ini"), "backup")
    assert result.exit_code == 2, result.output
    assert "does-not-exist" in error_line(result)


def test_storage_sees_changes_made_by_others(s3):
    """fsspec shares one filesystem object per process and s3fs caches listings in it: the storage
    must still see objects another process (here: boto3) deleted or created since it listed."""
    from migrate_guard.backup.storage import open_storage

    client, bucket = s3
    storage = open_storage(f"s3://{bucket}/repo")
    assert storage.is_empty()
    storage.write_atomic("blobs/ab/abcd", [b"one ", b"two"])
    storage.write_atomic("config.json", [b"{}"])
    assert storage.list() == ["blobs/ab/abcd", "config.json"] and storage.list("blobs") == ["blobs/ab/abcd"]
    assert storage.read_bytes("blobs/ab/abcd") == b"one two" and storage.size("blobs/ab/abcd") == 7
    assert not storage.is_empty() and storage.total_size() == 9

    client.delete_object(Bucket=bucket, Key="repo/blobs/ab/abcd")
    client.put_object(Bucket=bucket, Key="repo/blobs/cd/cdef", Body=b"new")
    again = open_storage(f"s3://{bucket}/repo")
    for view in (storage, again):
        assert view.exists("blobs/ab/abcd") is False
        assert view.exists("blobs/cd/cdef") is True
        with pytest.raises(FileNotFoundError):
            view.open_read("blobs/ab/abcd")  # at once, not while reading
        with pytest.raises(FileNotFoundError):
            view.size("blobs/ab/abcd")
        assert view.list("blobs") == ["blobs/cd/cdef"]
        assert view.read_bytes("blobs/cd/cdef") == b"new"
        view.delete("blobs/ab/abcd")  # a missing file is not an error

    assert storage.create_exclusive("locks/exclusive.json", b"mine") is True
    client.delete_object(Bucket=bucket, Key="repo/locks/exclusive.json")
    assert again.create_exclusive("locks/exclusive.json", b"theirs") is True  # gone: free again
    assert storage.create_exclusive("locks/exclusive.json", b"mine") is False
    assert storage.mtime("locks/exclusive.json") is not None


def test_lock_where_the_server_ignores_conditional_writes(s3, monkeypatch):
    """Some S3-compatible servers accept If-None-Match and ignore it (every PUT overwrites): a held
    lock is still not taken by a second process."""
    from migrate_guard.backup.repository import KeySource, Repository, RepositoryLocked
    from migrate_guard.backup.storage import open_storage

    client, bucket = s3
    location = f"s3://{bucket}/repo"
    Repository.init(location, KeySource(key=bytes(32)))
    storage = open_storage(location)
    real = storage.fs.pipe_file

    def ignoring(path, value, mode="overwrite", **kwargs):
        return real(path, value, **kwargs)

    monkeypatch.setattr(storage.fs, "pipe_file", ignoring)
    assert storage.create_exclusive("locks/probe.json", b"first") is True
    assert storage.create_exclusive("locks/probe.json", b"second") is False
    assert storage.read_bytes("locks/probe.json") == b"first"

    one = Repository.open(location, KeySource(key=bytes(32)))
    two = Repository.open(location, KeySource(key=bytes(32)))
    with one.lock("first"), pytest.raises(RepositoryLocked, match="'first'"), two.lock("second"):
        pass
    with two.lock("second"):
        pass
    assert "locks/exclusive.json" not in keys(client, bucket, prefix="repo/")
