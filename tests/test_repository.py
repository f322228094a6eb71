"""The backup repository against docs/repository-format.md: real files, real crypto, no mocks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zstandard
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pyfastcdc import FastCDC

from migrate_guard.backup import crypto
from migrate_guard.backup.crypto import IntegrityError, WrongKey, decode_key, generate_key, seal_bytes, unseal_bytes
from migrate_guard.backup.engines.base import StreamRef
from migrate_guard.backup.repository import KeySource, Repository, RepositoryLocked, RepositoryNotFound
from migrate_guard.backup.storage import LocalStorage, open_storage
from migrate_guard.errors import GuardError

CHUNK = 64 * 1024  # small chunks keep the tests fast; the format is the same at 4 MiB
SEG = 65536
SEALED = SEG + 16


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("MIGRATE_GUARD_KEY", "MIGRATE_GUARD_PASSPHRASE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def key() -> bytes:
    return decode_key(generate_key())


@pytest.fixture(params=["encrypted", "plain"])
def keys(request, key) -> KeySource:
    return KeySource(key=key) if request.param == "encrypted" else KeySource()


@pytest.fixture
def repo(tmp_path, keys) -> Repository:
    return Repository.init(str(tmp_path / "repo"), keys, chunk_size=CHUNK)


@pytest.fixture
def enc_repo(tmp_path, key) -> Repository:
    # the default chunk size (4 MiB): its chunker cuts nothing shorter than 256 KiB, so a stream of a
    # few segments is one blob
    return Repository.init(str(tmp_path / "repo"), KeySource(key=key))


def blob_file(repo: Repository, blob: str) -> Path:
    return Path(repo.location) / "blobs" / blob[:2] / blob


def read_all(repo: Repository, ref: StreamRef) -> bytes:
    return b"".join(repo.read_stream(ref))


def hkdf(master: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(master)


# --- streams ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pieces",
    [
        [],
        [b""],
        [b"hello, world\n"],
        [os.urandom(CHUNK)],  # the largest chunk
        [os.urandom(2 * CHUNK)],
        [os.urandom(3 * CHUNK + 17)],  # several chunks
        [os.urandom(1000) for _ in range(300)],  # many small pieces across boundaries
        [b"a" * (CHUNK - 1), b"b", b"c" * (CHUNK + 1), bytearray(b"d" * 5), memoryview(b"e" * CHUNK)],
    ],
    ids=["none", "empty-piece", "small", "one-chunk", "two-chunks-exact", "several", "small-pieces", "mixed"],
)
def test_stream_round_trip(repo, pieces):
    data = b"".join(bytes(p) for p in pieces)
    ref = repo.write_stream("t", iter(pieces))
    assert ref.bytes == len(data)
    assert (len(ref.blobs) == 0) == (len(data) == 0)  # an empty stream has no blob
    assert all(len(repo._read_blob(blob)) <= CHUNK for blob in ref.blobs)
    assert read_all(repo, ref) == data
    assert repo.write_stream("t", [data]).blobs == ref.blobs  # the cuts do not depend on the pieces
    for blob in ref.blobs:
        assert len(blob) == 64 and all(c in "0123456789abcdef" for c in blob)
        assert repo.check_blob(blob) is None
        assert repo.check_blob(blob, read_data=False) is None
    reopened = Repository.open(repo.location, KeySource(key=repo._key) if repo.encrypted else KeySource())
    assert read_all(reopened, ref) == data


def test_stream_ids_follow_the_doc(tmp_path, key):
    data = os.urandom(3 * CHUNK) + b"x" * 100
    # the doc's FastCDC at chunk_size 64 KiB: max 64 KiB, avg 16 KiB, min 4 KiB, normalized chunking 1
    cdc = FastCDC(16384, min_size=4096, max_size=65536, normalized_chunking=1, seed=0)
    chunks = [bytes(chunk.data) for chunk in cdc.cut_buf(data)]
    assert len(chunks) > 3
    plain = Repository.init(str(tmp_path / "plain"), KeySource(), chunk_size=CHUNK)
    ref = plain.write_stream("t", [data])
    assert ref.blobs == [hashlib.sha256(chunk).hexdigest() for chunk in chunks]
    enc = Repository.init(str(tmp_path / "enc"), KeySource(key=key), chunk_size=CHUNK)
    id_key = hkdf(key, bytes.fromhex(enc.id), b"migrate-guard/v1/blob-id")
    ref = enc.write_stream("t", [data])
    assert ref.blobs == [hmac.new(id_key, chunk, "sha256").hexdigest() for chunk in chunks]


def test_dedup(repo):
    rows = [b"%d,customer %d,active\n" % (i, i) for i in range(40000)]
    data = b"".join(rows)
    assert len(data) > 5 * CHUNK
    first = repo.write_stream("customers", [data])
    added = repo.added_bytes
    assert added > 0
    again = repo.write_stream("customers", iter(rows))  # other piece sizes, same stream
    assert again.blobs == first.blobs
    assert repo.added_bytes == added  # nothing new
    # a fresh session (the known-blob set comes from the listing) adds nothing either
    reopened = Repository.open(repo.location, KeySource(key=repo._key) if repo.encrypted else KeySource())
    assert reopened.write_stream("customers", [data]).blobs == first.blobs
    assert reopened.added_bytes == 0
    # one changed byte: exactly one new blob (the chunk holding it; the cuts around it stay)
    changed = bytearray(data)
    changed[2 * CHUNK + 10] ^= 0xFF
    before = len(repo.blob_ids())
    ref = repo.write_stream("customers", [bytes(changed)])
    assert [a == b for a, b in zip(ref.blobs, first.blobs, strict=True)].count(False) == 1
    assert len(repo.blob_ids()) == before + 1
    assert read_all(repo, ref) == bytes(changed)


def test_equal_chunks_within_a_stream_stored_once(repo):
    block = os.urandom(CHUNK)
    ref = repo.write_stream("t", [block * 6])
    # the cuts repeat with the content: past the first block, the stream is the same chunks again (no
    # chunk is longer than a block, so there are at least 6; with no cut point inside a block, exactly 6)
    assert len(ref.blobs) >= 6 and len(set(ref.blobs)) < len(ref.blobs) / 2
    assert repo.blob_ids() == set(ref.blobs)
    assert sum(len(repo._read_blob(blob)) for blob in set(ref.blobs)) <= 3 * CHUNK  # of 6 * CHUNK
    assert read_all(repo, ref) == block * 6


def test_file_and_directory_modes(repo):
    ref = repo.write_stream("t", [os.urandom(2 * CHUNK)])
    repo.save_manifest({"id": repo.new_snapshot_id(), "created_at": "2026-01-01T00:00:00Z", "blobs": ref.blobs})
    repo.write_state("verify", {"x": 1})
    repo.append_journal({"event": "start"})
    root = Path(repo.location)
    seen_files = 0
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        if path.is_dir():
            assert mode == 0o700, path
        else:
            assert mode == 0o600, path
            seen_files += 1
    assert seen_files >= 6
    with repo.lock("test"):
        assert stat.S_IMODE((root / "locks" / "exclusive.json").stat().st_mode) == 0o600


# --- the on-disk format -------------------------------------------------------------------------------------


def test_config_json(tmp_path, key):
    repo = Repository.init(str(tmp_path / "repo"), KeySource(key=key))
    config = json.loads((tmp_path / "repo" / "config.json").read_text())
    assert config["format"] == "migrate-guard-repository" and config["version"] == 1
    assert len(config["id"]) == 32 and config["id"] == repo.id
    assert config["encrypted"] is True
    assert config["compression"] == {"algorithm": "zstd", "level": 3}
    assert config["chunk_size"] == 4 * 1024 * 1024
    assert "kdf" not in config  # a key, not a passphrase
    assert config["created_at"].endswith("Z")
    check = base64.b64decode(config["key_check"])
    assert unseal_bytes(check, key) == b"migrate-guard key check v1......"
    for folder in ("snapshots", "blobs", "locks", "state"):
        assert (tmp_path / "repo" / folder).is_dir()
    plain = Repository.init(str(tmp_path / "plain"), KeySource())
    config = json.loads((tmp_path / "plain" / "config.json").read_text())
    assert config["encrypted"] is False and "key_check" not in config and not plain.encrypted


def decrypt_by_the_doc(raw: bytes, master: bytes) -> bytes:
    """An independent reading of the "Encrypted file framing" section."""
    header = raw[:28]
    assert header[:4] == b"MGE1"
    salt, prefix = header[5:21], header[21:28]
    aead = AESGCM(hkdf(master, salt, b"migrate-guard/v1/file"))
    body = raw[28:]
    segments = [body[i : i + SEALED] for i in range(0, len(body), SEALED)] or [b""]
    out = []
    for n, segment in enumerate(segments):
        last = n == len(segments) - 1
        nonce = prefix + n.to_bytes(4, "big") + (b"\x01" if last else b"\x00")
        out.append(aead.decrypt(nonce, segment, header))
    plain = b"".join(out)
    return zstandard.ZstdDecompressor().decompressobj().decompress(plain) if header[4] & 1 else plain


def test_encrypted_blob_bytes_match_the_doc(enc_repo, key):
    data = os.urandom(3 * SEG)  # incompressible: the compressed blob spans 4 segments
    ref = enc_repo.write_stream("t", [data])
    (blob,) = ref.blobs
    raw = blob_file(enc_repo, blob).read_bytes()
    assert raw[:4] == b"MGE1"
    assert raw[4] == 0x01  # zstd
    assert len(raw[5:21]) == 16 and len(raw[21:28]) == 7
    body = len(raw) - 28
    assert body > 3 * SEALED and (body % SEALED) not in (0,) and (body % SEALED) > 16
    assert decrypt_by_the_doc(raw, key) == data
    id_key = hkdf(key, bytes.fromhex(enc_repo.id), b"migrate-guard/v1/blob-id")
    assert hmac.new(id_key, data, "sha256").hexdigest() == blob
    # two writes of the same content never share salt or nonce prefix
    other = b"".join(crypto.seal([data], key, True, 3))
    assert other[5:28] != raw[5:28]


def test_segment_sizes(key):
    for size, expected in [
        (0, [16]),  # the empty plaintext: one empty final segment (tag only)
        (1, [17]),
        (SEG, [SEALED]),  # a full final segment, no empty one after it
        (SEG + 1, [SEALED, 17]),
        (3 * SEG, [SEALED] * 3),
    ]:
        sealed = seal_bytes(os.urandom(size), key, compress=False)
        assert sealed[4] == 0x00
        assert len(sealed) == 28 + sum(expected), size
        assert len(decrypt_by_the_doc(sealed, key)) == size


def test_plain_blob_bytes_match_the_doc(tmp_path):
    repo = Repository.init(str(tmp_path / "repo"), KeySource(), chunk_size=CHUNK)
    data = b"id,name\n" + b"1,alice\n" * 5000
    (blob,) = repo.write_stream("t", [data]).blobs
    raw = blob_file(repo, blob).read_bytes()
    assert raw[:5] == b"MGP1\x01"
    assert zstandard.ZstdDecompressor().decompressobj().decompress(raw[5:]) == data
    assert hashlib.sha256(data).hexdigest() == blob


def test_plain_manifest_carries_sha256(tmp_path):
    repo = Repository.init(str(tmp_path / "repo"), KeySource())
    sid = repo.new_snapshot_id()
    manifest = {"id": sid, "created_at": "2026-11-25T13:50:00.123456Z", "label": "before 0005", "tables": []}
    repo.save_manifest(manifest)
    raw = (tmp_path / "repo" / "snapshots" / f"{sid}.json").read_bytes()
    assert raw[:5] == b"MGP1\x00"
    on_disk = json.loads(raw[5:])
    digest = on_disk.pop("sha256")
    assert (
        digest
        == hashlib.sha256(
            json.dumps(on_disk, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        ).hexdigest()
    )
    assert repo.load_manifest(sid) == manifest


def test_encrypted_files_hide_their_content(enc_repo, key):
    ref = enc_repo.write_stream("t", [b"secret-customer-name," * 1000])
    sid = enc_repo.new_snapshot_id()
    enc_repo.save_manifest(
        {
            "id": sid,
            "created_at": "2026-01-01T00:00:00Z",
            "label": "secret-label",
            "tables": [{"name": "secret_table", "blobs": ref.blobs}],
        }
    )
    enc_repo.write_state("verify", {sid: {"ok": True, "note": "secret-state"}})
    enc_repo.append_journal({"step": "secret-journal"})
    enc_repo.append_journal({"step": "two"})
    for path in Path(enc_repo.location).rglob("*"):
        if path.is_file() and path.name != "config.json":
            raw = path.read_bytes()
            assert b"secret" not in raw, path
    manifest_raw = (Path(enc_repo.location) / "snapshots" / f"{sid}.json").read_bytes()
    assert manifest_raw[:4] == b"MGE1"
    assert json.loads(decrypt_by_the_doc(manifest_raw, key))["label"] == "secret-label"
    lines = (Path(enc_repo.location) / "state" / "journal.jsonl").read_bytes().splitlines()
    assert len(lines) == 3  # the snapshot's record, then the two appended
    first = json.loads(decrypt_by_the_doc(base64.b64decode(lines[0]), key))
    assert first == {"snapshots_added": [sid], "at": first["at"], "seq": 1, "prev": "", "repository": enc_repo.id}
    assert [r.get("step") for r in enc_repo.journal()] == [None, "secret-journal", "two"]
    assert enc_repo.read_state("verify") == {sid: {"ok": True, "note": "secret-state"}}


# --- tampering ----------------------------------------------------------------------------------------------


@pytest.fixture
def tamper(enc_repo):
    """An encrypted repository with one stream of a single 4-segment blob (random, incompressible)."""
    data = os.urandom(3 * SEG)
    ref = enc_repo.write_stream("t", [data])
    path = blob_file(enc_repo, ref.blobs[0])
    raw = path.read_bytes()
    assert (len(raw) - 28) // SEALED == 3  # three full segments and a short last one
    return enc_repo, ref, path, raw


def expect_integrity(repo: Repository, ref: StreamRef, *fragments: str) -> str:
    with pytest.raises(IntegrityError) as info:
        read_all(repo, ref)
    message = info.value.message
    assert ref.blobs[0] in message
    for fragment in fragments:
        assert fragment in message
    assert info.value.exit_code == 1
    assert repo.check_blob(ref.blobs[0]) == message
    return message


def test_flipped_byte(tamper):
    repo, ref, path, raw = tamper
    damaged = bytearray(raw)
    damaged[28 + SEALED + 100] ^= 0x01
    path.write_bytes(bytes(damaged))
    expect_integrity(repo, ref, "tag mismatch in segment 1")


def test_flipped_header_byte(tamper):
    repo, ref, path, raw = tamper
    damaged = bytearray(raw)
    damaged[10] ^= 0x01  # the salt: another file key
    path.write_bytes(bytes(damaged))
    expect_integrity(repo, ref, "tag mismatch in segment 0")
    damaged = bytearray(raw)
    damaged[0:4] = b"XXXX"
    path.write_bytes(bytes(damaged))
    expect_integrity(repo, ref, "bad magic")


def test_truncated_at_a_segment_boundary(tamper):
    repo, ref, path, raw = tamper
    path.write_bytes(raw[: 28 + 3 * SEALED])  # the final segment dropped
    expect_integrity(repo, ref, "truncated")
    path.write_bytes(raw[:28])  # no segment at all
    expect_integrity(repo, ref, "truncated")
    path.write_bytes(raw[:20])
    expect_integrity(repo, ref, "truncated")


def test_truncated_mid_segment(tamper):
    repo, ref, path, raw = tamper
    path.write_bytes(raw[: 28 + SEALED + 1000])
    expect_integrity(repo, ref, "tag mismatch in segment 1")
    path.write_bytes(raw[: 28 + 2 * SEALED + 5])  # fewer bytes than a tag
    expect_integrity(repo, ref, "truncated in segment 2")
    path.write_bytes(raw[:-1])
    expect_integrity(repo, ref, "tag mismatch in segment 3")


def test_swapped_segments(tamper):
    repo, ref, path, raw = tamper
    s0, s1 = raw[28 : 28 + SEALED], raw[28 + SEALED : 28 + 2 * SEALED]
    path.write_bytes(raw[:28] + s1 + s0 + raw[28 + 2 * SEALED :])
    expect_integrity(repo, ref, "tag mismatch in segment 0")


def test_appended_data(tamper):
    repo, ref, path, raw = tamper
    path.write_bytes(raw + b"more")
    expect_integrity(repo, ref, "tag mismatch")


def test_missing_blob(tamper):
    repo, ref, path, _ = tamper
    path.unlink()
    message = expect_integrity(repo, ref)
    assert message == f"blob {ref.blobs[0]} missing"
    assert repo.check_blob(ref.blobs[0], read_data=False) == message


def test_blob_renamed_to_another_id(enc_repo):
    first = enc_repo.write_stream("a", [b"first stream"])
    second = enc_repo.write_stream("b", [b"second stream"])
    blob_file(enc_repo, second.blobs[0]).write_bytes(blob_file(enc_repo, first.blobs[0]).read_bytes())
    message = expect_integrity(enc_repo, second, "id mismatch")
    assert read_all(enc_repo, first) == b"first stream"
    assert message.startswith(f"blob {second.blobs[0]}")


def test_plain_blob_in_an_encrypted_repository_refused(enc_repo):
    ref = enc_repo.write_stream("a", [b"data"])
    blob_file(enc_repo, ref.blobs[0]).write_bytes(seal_bytes(b"data", None))
    expect_integrity(enc_repo, ref, "not encrypted")


def test_plain_repository_tampering(tmp_path):
    repo = Repository.init(str(tmp_path / "repo"), KeySource(), chunk_size=CHUNK)
    data = b"1,alice,active\n" * 4000
    ref = repo.write_stream("t", [data])
    path = blob_file(repo, ref.blobs[0])
    raw = path.read_bytes()
    damaged = bytearray(raw)
    damaged[len(raw) // 2] ^= 0x40
    path.write_bytes(bytes(damaged))
    expect_integrity(repo, ref)
    path.write_bytes(raw[:-3])
    expect_integrity(repo, ref)
    path.write_bytes(b"MGP1\x00" + data[:-1] + b"X")  # well-formed, wrong content
    expect_integrity(repo, ref, "id mismatch")
    path.write_bytes(raw)
    assert read_all(repo, ref) == data


def test_stream_size_must_match(repo):
    ref = repo.write_stream("t", [b"abc"])
    with pytest.raises(IntegrityError, match="3 bytes, the manifest says 4"):
        read_all(repo, StreamRef(ref.blobs, 4))
    with pytest.raises(IntegrityError, match="not a blob id"):
        read_all(repo, StreamRef(["../../config.json"], 0))


def test_tampered_manifests(tmp_path, keys):
    repo = Repository.init(str(tmp_path / "repo"), keys)
    good, bad = repo.new_snapshot_id(), repo.new_snapshot_id()
    repo.save_manifest({"id": good, "created_at": "2026-01-01T00:00:00Z", "rows": 1})
    repo.save_manifest({"id": bad, "created_at": "2026-01-02T00:00:00Z", "rows": 2})
    path = tmp_path / "repo" / "snapshots" / f"{bad}.json"
    raw = bytearray(path.read_bytes())
    if repo.encrypted:
        raw[-3] ^= 1
    else:
        raw[:] = raw.replace(b'"rows": 2', b'"rows": 9')
    path.write_bytes(bytes(raw))
    assert [m["id"] for m in repo.manifests()] == [good]
    assert any(bad in w for w in repo.warnings)
    with pytest.raises(IntegrityError, match=f"snapshot {bad}"):
        repo.load_manifest(bad)
    # a manifest copied under another snapshot's name
    other = repo.new_snapshot_id()
    (tmp_path / "repo" / "snapshots" / f"{other}.json").write_bytes(
        (tmp_path / "repo" / "snapshots" / f"{good}.json").read_bytes()
    )
    with pytest.raises(IntegrityError, match="id mismatch"):
        repo.load_manifest(other)


# --- keys ---------------------------------------------------------------------------------------------------


def test_wrong_key(tmp_path, key):
    Repository.init(str(tmp_path / "repo"), KeySource(key=key))
    with pytest.raises(WrongKey, match="wrong key") as info:
        Repository.open(str(tmp_path / "repo"), KeySource(key=os.urandom(32)))
    assert info.value.exit_code == 2


def test_encrypted_repository_needs_a_key(tmp_path, key):
    Repository.init(str(tmp_path / "repo"), KeySource(key=key))
    with pytest.raises(GuardError) as info:
        Repository.open(str(tmp_path / "repo"), KeySource())
    assert info.value.exit_code == 2
    assert info.value.message.startswith("repository is encrypted: set MIGRATE_GUARD_KEY or")
    assert "\n" not in str(info.value)


def test_key_for_a_plain_repository_refused(tmp_path, key):
    Repository.init(str(tmp_path / "repo"), KeySource())
    for keys in (KeySource(key=key), KeySource(passphrase="secret")):
        with pytest.raises(GuardError, match="not encrypted") as info:
            Repository.open(str(tmp_path / "repo"), keys)
        assert info.value.exit_code == 2


def test_passphrase_repository(tmp_path):
    location = str(tmp_path / "repo")
    repo = Repository.init(location, KeySource(passphrase="correct horse battery staple"), chunk_size=CHUNK)
    kdf = json.loads((tmp_path / "repo" / "config.json").read_text())["kdf"]
    assert kdf["algorithm"] == "scrypt" and (kdf["n"], kdf["r"], kdf["p"]) == (32768, 8, 1)
    assert len(base64.b64decode(kdf["salt"])) == 16
    data = os.urandom(CHUNK + 5)
    ref = repo.write_stream("t", [data])
    reopened = Repository.open(location, KeySource(passphrase="correct horse battery staple"))
    assert reopened.encrypted and read_all(reopened, ref) == data
    with pytest.raises(WrongKey):
        Repository.open(location, KeySource(passphrase="wrong horse"))
    # the derived master key opens it too
    master = crypto.passphrase_key("correct horse battery staple", base64.b64decode(kdf["salt"]))
    assert read_all(Repository.open(location, KeySource(key=master)), ref) == data


def test_passphrase_for_a_key_repository(tmp_path, key):
    Repository.init(str(tmp_path / "repo"), KeySource(key=key))
    with pytest.raises(GuardError, match="uses a key, not a passphrase"):
        Repository.open(str(tmp_path / "repo"), KeySource(passphrase="pw"))


def test_key_sources(tmp_path, monkeypatch, key):
    assert not KeySource.from_environment().configured
    monkeypatch.setenv("MIGRATE_GUARD_PASSPHRASE", "pw")
    assert KeySource.from_environment() == KeySource(passphrase="pw")
    key_file = tmp_path / "key"
    key_file.write_text(base64.b64encode(key).decode() + "\n")
    assert KeySource.from_environment(key_file) == KeySource(key=key)
    other = os.urandom(32)
    monkeypatch.setenv("MIGRATE_GUARD_KEY", base64.b64encode(other).decode())
    assert KeySource.from_environment(key_file) == KeySource(key=other)
    for bad, why in [("not base64!", "base64"), (base64.b64encode(b"short").decode(), "5 bytes")]:
        monkeypatch.setenv("MIGRATE_GUARD_KEY", bad)
        with pytest.raises(GuardError, match=why) as info:
            KeySource.from_environment()
        assert info.value.exit_code == 2 and "MIGRATE_GUARD_KEY" in info.value.message
    monkeypatch.delenv("MIGRATE_GUARD_KEY")
    key_file.write_text("abc\ndef\n")
    with pytest.raises(GuardError, match="one line"):
        KeySource.from_environment(key_file)
    with pytest.raises(GuardError, match="not found"):
        KeySource.from_environment(tmp_path / "missing")
    assert len(base64.b64decode(generate_key())) == 32


# --- opening ------------------------------------------------------------------------------------------------


def test_not_found_and_create(tmp_path, keys):
    location = str(tmp_path / "nowhere")
    with pytest.raises(RepositoryNotFound, match="backup") as info:
        Repository.open(location, keys)
    assert location in info.value.message and info.value.exit_code == 2
    repo = Repository.open(location, keys, create=True, compression_level=5)
    assert repo.encrypted == keys.configured and repo.compression_level == 5
    assert Repository.open(location, keys).id == repo.id
    with pytest.raises(GuardError, match="already exists"):
        Repository.init(location, keys)


def test_init_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "file.txt").write_text("x")
    with pytest.raises(GuardError, match="not empty"):
        Repository.init(str(tmp_path / "stuff"), KeySource())


def test_file_url(tmp_path):
    repo = Repository.init(f"file://{tmp_path / 'repo'}", KeySource())
    ref = repo.write_stream("t", [b"abc"])
    assert (tmp_path / "repo" / "config.json").is_file()
    assert read_all(Repository.open(str(tmp_path / "repo"), KeySource()), ref) == b"abc"


# --- snapshots ----------------------------------------------------------------------------------------------


def test_manifests_and_prefixes(repo):
    ids = []
    for day in (3, 1, 2):
        sid = repo.new_snapshot_id()
        repo.save_manifest({"id": sid, "created_at": f"2026-01-0{day}T00:00:00.000000Z", "pinned": False})
        ids.append(sid)
    assert [m["id"] for m in repo.manifests()] == [ids[1], ids[2], ids[0]]  # oldest first
    assert repo.load_manifest(ids[0][:8])["id"] == ids[0]
    assert repo.load_manifest(ids[0].upper())["id"] == ids[0]
    for bad, why in [("abc", "4 to 16 hex"), ("zzzzzz", "4 to 16 hex"), ("0000000000000000", "no snapshot")]:
        with pytest.raises(GuardError, match=why) as info:
            repo.load_manifest(bad)
        assert info.value.exit_code == 2
    # an ambiguous prefix
    a, b = "abcd" + "0" * 12, "abcd" + "1" * 12
    for sid in (a, b):
        repo.save_manifest({"id": sid, "created_at": "2026-02-01T00:00:00Z"})
    with pytest.raises(GuardError, match="ambiguous") as info:
        repo.load_manifest("abcd")
    assert a in info.value.message and b in info.value.message
    assert repo.load_manifest("abcd0")["id"] == a
    repo.update_manifest(ids[0][:6], pinned=True, label="kept")
    assert repo.load_manifest(ids[0]) | {} == {
        "id": ids[0],
        "created_at": "2026-01-03T00:00:00.000000Z",
        "pinned": True,
        "label": "kept",
    }
    repo.delete_manifest(ids[0])
    assert ids[0] not in [m["id"] for m in repo.manifests()]
    with pytest.raises(GuardError, match="no snapshot"):
        repo.load_manifest(ids[0])


def test_interrupted_backup_leaves_no_snapshot(repo, tmp_path):
    sid = repo.new_snapshot_id()
    repo.save_manifest({"id": sid, "created_at": "2026-01-01T00:00:00Z"})

    def dump():
        yield os.urandom(64 * CHUNK)  # more than the chunker holds back: some chunks are written
        yield os.urandom(CHUNK)
        raise RuntimeError("pg_dump died")

    with pytest.raises(RuntimeError), repo.lock("backup"):
        repo.new_snapshot_id()
        repo.write_stream("t", dump())
    assert not (Path(repo.location) / "locks" / "exclusive.json").exists()
    assert [m["id"] for m in repo.manifests()] == [sid]
    # what was written is whole: complete blobs, no temp file
    blobs = repo.blob_ids()
    assert blobs and all(repo.check_blob(b) is None for b in blobs)
    assert not [p for p in Path(repo.location).rglob("*.tmp-*")]
    # a temp file left by a killed process is ignored, and removed once older than an hour
    d = Path(repo.location) / "blobs" / "ab"
    d.mkdir(mode=0o700, exist_ok=True)
    old, new = d / ("ab" * 32 + ".tmp-0123456789ab"), d / ("ab" * 32 + ".tmp-ba9876543210")
    old.write_bytes(b"partial")
    new.write_bytes(b"partial")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert repo.blob_ids() == blobs
    reopened = Repository.open(repo.location, KeySource(key=repo._key) if repo.encrypted else KeySource())
    assert not old.exists() and new.exists()
    assert reopened.blob_ids() == blobs
    assert [m["id"] for m in reopened.manifests()] == [sid]


def test_state_and_journal(repo):
    assert repo.read_state("verify") is None
    assert repo.journal() == []
    repo.write_state("verify", {"a": {"ok": True}})
    repo.write_state("verify", {"a": {"ok": False}})
    assert repo.read_state("verify") == {"a": {"ok": False}}
    for n in range(3):
        repo.append_journal({"n": n, "text": "ünïcode"})
    assert [{k: r[k] for k in ("n", "text", "seq")} for r in repo.journal()] == [
        {"n": n, "text": "ünïcode", "seq": n + 1} for n in range(3)
    ]
    with pytest.raises(ValueError):
        repo.read_state("../config")


def test_size(repo):
    before = repo.size()
    repo.write_stream("t", [os.urandom(3 * CHUNK)])
    assert repo.size() - before == repo.added_bytes > 3 * CHUNK
    (blob,) = list(repo.blob_ids())[:1]
    assert repo.blob_size(blob) == blob_file(repo, blob).stat().st_size
    repo.delete_blob(blob)
    assert blob not in repo.blob_ids() and repo.blob_size(blob) == 0


# --- locking -------------------------------------------------------------------------------------------------


def test_second_lock_names_the_holder(tmp_path, keys):
    first = Repository.init(str(tmp_path / "repo"), keys)
    second = Repository.open(str(tmp_path / "repo"), keys)
    with first.lock("backup before 0005"):
        with pytest.raises(RepositoryLocked) as info, second.lock("prune"):
            pass
        message = info.value.message
        assert info.value.exit_code == 2
        for part in (str(os.getpid()), socket.gethostname(), "backup before 0005", "since"):
            assert part in message
        started = time.monotonic()
        with pytest.raises(RepositoryLocked), second.lock("prune", wait=0.3):
            pass
        assert time.monotonic() - started >= 0.3
        with first.lock("nested"):  # re-entrant in the same session
            pass
        assert (tmp_path / "repo" / "locks" / "exclusive.json").exists()
    assert not (tmp_path / "repo" / "locks" / "exclusive.json").exists()
    with second.lock("prune"):
        pass


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_lock_taken_over(tmp_path):
    repo = Repository.init(str(tmp_path / "repo"), KeySource())
    lock = tmp_path / "repo" / "locks" / "exclusive.json"
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    lock.write_text(
        json.dumps(
            {"pid": dead_pid(), "host": socket.gethostname(), "user": "x", "created_at": now, "command": "backup"}
        )
    )
    with repo.lock("prune"):
        assert json.loads(lock.read_text())["command"] == "prune"
    assert any("no longer runs" in w for w in repo.warnings)
    # another host's lock: held for 12 hours, then stale
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "user": "x", "created_at": now, "command": "backup"}))
    with pytest.raises(RepositoryLocked, match="elsewhere"), repo.lock("prune"):
        pass
    lock.write_text(
        json.dumps(
            {"pid": 1, "host": "elsewhere", "user": "x", "created_at": "2020-01-01T00:00:00Z", "command": "backup"}
        )
    )
    with repo.lock("prune"):
        pass
    assert any("elsewhere older than 12 hours" in w for w in repo.warnings)
    assert not lock.exists()


# --- storage ---------------------------------------------------------------------------------------------------


def test_local_storage(tmp_path):
    storage = open_storage(str(tmp_path / "s"))
    assert isinstance(storage, LocalStorage)
    assert storage.is_empty()
    assert storage.write_atomic("a/b/c", [b"12", b"345"]) == 5
    assert storage.read_bytes("a/b/c") == b"12345" and storage.size("a/b/c") == 5
    assert storage.create_exclusive("locks/x", b"1") is True
    assert storage.create_exclusive("locks/x", b"2") is False
    assert storage.list() == ["a/b/c", "locks/x"] and storage.list("a") == ["a/b/c"]
    assert storage.total_size() == 6
    storage.delete("a/b/c")
    storage.delete("a/b/c")
    assert not storage.exists("a/b/c")
    with pytest.raises(FileNotFoundError):
        storage.open_read("a/b/c")
    with pytest.raises(ValueError):
        storage.exists("../escape")


def test_fsspec_memory_round_trip(key):
    pytest.importorskip("fsspec")
    location = f"memory://mg-test-{os.urandom(4).hex()}/repo"
    repo = Repository.init(location, KeySource(key=key), chunk_size=CHUNK)
    data = os.urandom(2 * CHUNK + 3)
    ref = repo.write_stream("t", [data])
    sid = repo.new_snapshot_id()
    repo.save_manifest({"id": sid, "created_at": "2026-01-01T00:00:00Z", "blobs": ref.blobs})
    reopened = Repository.open(location, KeySource(key=key))
    assert read_all(reopened, ref) == data
    assert reopened.load_manifest(sid[:4])["blobs"] == ref.blobs
    assert reopened.blob_ids() == set(ref.blobs)
    assert reopened.write_stream("t", [data]).blobs == ref.blobs and reopened.added_bytes == 0
    with reopened.lock("backup"), pytest.raises(RepositoryLocked), repo.lock("prune"):
        pass
    with repo.lock("prune"):
        pass
    reopened.write_state("verify", {"ok": 1})
    assert repo.read_state("verify") == {"ok": 1}
    assert repo.size() > 2 * CHUNK
    with pytest.raises(WrongKey):
        Repository.open(location, KeySource(key=os.urandom(32)))


# --- crypto ---------------------------------------------------------------------------------------------------


def test_seal_streams_any_piece_sizes(key):
    data = os.urandom(5 * SEG + 123)
    pieces = [data[i : i + 777] for i in range(0, len(data), 777)]
    for k in (key, None):
        for compress in (True, False):
            sealed = list(crypto.seal(iter(pieces), k, compress, 3))
            assert b"".join(crypto.unseal(iter(sealed), k, "x")) == data
            raw = b"".join(sealed)
            feed = [raw[i : i + 1000] for i in range(0, len(raw), 1000)]
            assert b"".join(crypto.unseal(iter(feed), k, "x")) == data


def test_unseal_is_lazy(key):
    """Plaintext comes out a segment at a time: the first arrives before the rest is read."""
    data = os.urandom(10 * SEG)
    raw = seal_bytes(data, key, compress=False)
    consumed = []

    def source():
        for i in range(0, len(raw), 4096):
            consumed.append(i)
            yield raw[i : i + 4096]

    first = next(crypto.unseal(source(), key, "x"))
    assert first == data[:SEG]
    assert len(consumed) * 4096 < 3 * SEALED


def test_wrong_framing_for_the_repository(key):
    with pytest.raises(IntegrityError, match="x: encrypted, in an unencrypted repository"):
        unseal_bytes(seal_bytes(b"data", key), None, "x")
    with pytest.raises(IntegrityError, match="x: bad magic"):
        unseal_bytes(b"NOPE\x00data", None, "x")
    with pytest.raises(IntegrityError, match="unknown flags"):
        unseal_bytes(b"MGP1\x80data", None, "x")


def test_fsspec_missing_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "fsspec", None)
    with pytest.raises(GuardError) as info:
        open_storage("s3://bucket/prefix")
    assert "pip install fsspec s3fs" in info.value.message and "\n" not in str(info.value)
    assert info.value.exit_code == 2


def test_a_manifest_listing_many_files_is_compressed_and_still_checked(repo):
    """A manifest with thousands of file entries would be megabytes of indented JSON in every snapshot of
    an unencrypted repository: over 1 MiB it is stored compact and compressed, read back the same, and a
    changed byte is still found by its sha256 (or the zstd frame's checksum)."""
    entries = [
        {"path": f"media/{i:05}.jpg", "type": "file", "mode": 0o644, "mtime_ns": 1_700_000_000_000_000_000 + i,
         "size": i, "sha256": f"{i:064x}", "blobs": [f"{i:064x}"], "cache": [i, i, i, i]}
        for i in range(8000)
    ]  # fmt: skip
    sid = repo.new_snapshot_id()
    manifest = {"id": sid, "created_at": "2026-01-01T00:00:00Z", "files": {"entries": entries}}
    repo.save_manifest(manifest)
    path = Path(repo.location) / "snapshots" / f"{sid}.json"
    raw = path.read_bytes()
    assert repo.load_manifest(sid)["files"]["entries"] == entries
    if not repo.encrypted:
        assert raw[:5] == b"MGP1\x01" and len(raw) < (1 << 20) // 4  # compressed: a fraction of the JSON
        small = repo.new_snapshot_id()
        repo.save_manifest({"id": small, "created_at": "2026-01-01T00:00:00Z", "rows": 1})
        assert (Path(repo.location) / "snapshots" / f"{small}.json").read_bytes()[:5] == b"MGP1\x00"  # readable
        text = unseal_bytes(raw, None).replace(b'"mode":420', b'"mode":511', 1)  # a changed entry, recompressed
        path.write_bytes(b"MGP1\x01" + zstandard.ZstdCompressor().compress(text))
        with pytest.raises(IntegrityError, match="sha256 mismatch"):
            repo.load_manifest(sid)
