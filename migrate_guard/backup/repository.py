"""The backup repository: content-addressed, encrypted when a key is configured, verifiable without
the database. docs/repository-format.md is the format; this module follows it.

Streams are cut into content-defined chunks of at most ``chunk_size`` bytes (chunker.py); each chunk
is a blob named by its keyed hash, stored once however many snapshots name it. A snapshot is a manifest
naming its streams' blobs, written last.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import getpass
import hashlib
import hmac
import json
import os
import random
import re
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import EXIT_FAILED, EXIT_USAGE, GuardError
from ..times import parse_iso
from .chunker import cut
from .crypto import (
    HEADER_SIZE,
    KEY_CHECK_PLAINTEXT,
    PLAIN_HEADER_SIZE,
    SALT_SIZE,
    SCRYPT_N,
    SCRYPT_P,
    SCRYPT_R,
    SEALED_SEGMENT_SIZE,
    TAG_SIZE,
    IntegrityError,
    WrongKey,
    blob_id,
    decode_key,
    id_key,
    key_matches,
    passphrase_key,
    seal,
    seal_bytes,
    seal_whole,
    unseal,
    unseal_bytes,
    unseal_whole,
)
from .engines.base import StreamRef
from .manifest import manifest_blobs
from .storage import Storage, open_storage

__all__ = [
    "IntegrityError",
    "JournalCheck",
    "KeySource",
    "Repository",
    "RepositoryLocked",
    "RepositoryNotFound",
    "WrongKey",
]

FORMAT = "migrate-guard-repository"
VERSION = 1
CONFIG = "config.json"
LOCK = "locks/exclusive.json"
JOURNAL = "state/journal.jsonl"
JOURNAL_HEAD = "journal-head"  # the state name of state/journal-head.json
DAMAGED = "damaged-blobs"  # the state name of state/damaged-blobs.json: blobs found damaged or missing
ID_CHECK_INFO = b"migrate-guard/repository-id\0"  # what config.json's id_check authenticates the id under
JOURNAL_LOCK = "locks/journal.json"
JOURNAL_LOCK_WAIT = 30.0
JOURNAL_LOCK_STALE_SECONDS = 60  # held for an append (well under a second); older than this, it is stale
JOURNAL_UNREADABLE_LOCK_SECONDS = 10
_CHAIN_FIELDS = ("seq", "prev", "repository")
DEFAULT_CHUNK_SIZE = 4 << 20
MIN_CHUNK_SIZE = 1 << 10
MAX_CHUNK_SIZE = 256 << 20
STALE_LOCK_SECONDS = 12 * 3600
UNREADABLE_LOCK_SECONDS = 60
TEMP_MAX_AGE = 3600
PLAIN_JSON_MOST = 1 << 20  # an unencrypted manifest or state file larger than this as indented JSON is compressed

_BLOB_ID = re.compile(r"[0-9a-f]{64}")
_SNAPSHOT_ID = re.compile(r"[0-9a-f]{16}")
_STATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class RepositoryNotFound(GuardError):
    exit_code = EXIT_USAGE


class RepositoryLocked(GuardError):
    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class _LockKind:
    """One of the repository's lock files and when it counts as stale (see ``Repository._acquire``)."""

    path: str
    what: str  # how warnings name it: "repository lock"
    subject: str  # how "is locked" messages name what it guards; {} is the location
    stale_after: float  # seconds: another host's lock older than this is stale (or any, see live_pid_holds)
    stale_text: str  # stale_after in words
    live_pid_holds: bool  # a lock of a process still running on this host is held however old
    unreadable_after: float  # seconds: a lock file that cannot be parsed, older than this, is stale
    poll: float  # seconds between tries while waiting (jittered)


_EXCLUSIVE = _LockKind(
    LOCK, "repository lock", "repository {}", STALE_LOCK_SECONDS, "12 hours", True, UNREADABLE_LOCK_SECONDS, 0.2
)
# The journal lock is held only for one append: a live process on this host does not keep it for more
# than a minute either, and polling is quick (several appenders queue for it).
_JOURNAL_LOCK = _LockKind(
    JOURNAL_LOCK,
    "journal lock",
    "the journal of repository {}",
    JOURNAL_LOCK_STALE_SECONDS,
    "1 minute",
    False,
    JOURNAL_UNREADABLE_LOCK_SECONDS,
    0.02,
)


class JournalCheck(NamedTuple):
    """What ``Repository.journal_checked`` found.

    ``records``: every line that decodes, in file order (as ``journal()`` returns them).
    ``problems``: one sentence per defect, naming the line or the head file; empty when sound.
    ``untrusted_from``: None when there is no problem; else ``records[:untrusted_from]`` are the
    records the chain still vouches for (``len(records)`` when only records after the last one are in
    doubt, e.g. a truncated journal; 0 when the head contradicts the chain)."""

    records: list[dict[str, Any]]
    problems: list[str]
    untrusted_from: int | None
    sound_from: int = 0  # records from this index on are vouched for again (by the chain after the last defect)


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(dt: datetime, micro: bool = False) -> str:
    return dt.astimezone(UTC).isoformat(timespec="microseconds" if micro else "seconds").replace("+00:00", "Z")


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return "unknown"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (one this user may not signal counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, OverflowError, ValueError):
        return False
    return True


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class _Slot(NamedTuple):
    """A journal line as the number it holds (its record's ``seq``, or the next one for lack of one)."""

    hash: str  # the line's hash (what the next record's ``prev`` holds)
    record: int | None  # its record's index among the records read; None when the line does not decode
    line: int  # its line number
    real: bool  # the number is the record's own ``seq``


def _chain_seq(record: dict[str, Any]) -> int | None:
    """``seq`` when the record's chain fields are well formed (an integer from 1, strings ``prev`` and
    ``repository``), else None."""
    seq = record.get("seq")
    if (
        isinstance(seq, int)
        and not isinstance(seq, bool)
        and seq >= 1
        and isinstance(record.get("prev"), str)
        and isinstance(record.get("repository"), str)
    ):
        return seq
    return None


@dataclass
class KeySource:
    """Where the master key comes from: an already-decoded key, or a passphrase (scrypt)."""

    key: bytes | None = None
    passphrase: str | None = None

    @classmethod
    def from_environment(cls, key_file: Path | str | None = None) -> KeySource:
        """``MIGRATE_GUARD_KEY``, else ``key_file``, else ``MIGRATE_GUARD_PASSPHRASE``, else none."""
        text = os.environ.get("MIGRATE_GUARD_KEY", "").strip()
        if text:
            return cls(key=decode_key(text, "MIGRATE_GUARD_KEY"))
        if key_file:
            path = Path(key_file).expanduser()
            try:
                content = path.read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                raise GuardError(f"key file {path}: not found", EXIT_USAGE) from None
            except (OSError, UnicodeDecodeError) as exc:
                raise GuardError(f"key file {path}: cannot read it ({exc})", EXIT_USAGE) from None
            if not content or "\n" in content:
                raise GuardError(f"key file {path}: expected one line, the base64 key", EXIT_USAGE)
            return cls(key=decode_key(content, f"key file {path}"))
        passphrase = os.environ.get("MIGRATE_GUARD_PASSPHRASE", "")
        if passphrase:
            return cls(passphrase=passphrase)
        return cls()

    @property
    def configured(self) -> bool:
        return self.key is not None or bool(self.passphrase)


class Repository:
    """A repository opened (or just created) at ``location``. Use ``init`` or ``open``."""

    def __init__(
        self, storage: Storage, config: dict[str, Any], master: bytes | None, compression_level: int | None = None
    ):
        self.storage = storage
        self.location = storage.location
        self.config = config
        self.id: str = config["id"]
        self.encrypted: bool = bool(config["encrypted"])
        self.chunk_size: int = int(config["chunk_size"])
        self.compression_level: int = compression_level or int(config["compression"]["level"])
        self._key = master
        self._id_key = id_key(master, self.id) if master is not None else None
        self.added_bytes = 0
        self.warnings: list[str] = []
        self._known: set[str] | None = None
        self._damaged: dict[str, dict[str, Any]] | None = None  # see damaged_blobs()
        self._found_damaged: dict[str, str] = {}  # found by this session, not yet recorded
        self._healed: set[str] = set()  # stored again by this session, not yet recorded
        self.read_only = False  # the location cannot be written: nothing is locked, nothing recorded
        self.no_lock = False  # --no-lock: read as from read-only media (no lock taken, nothing recorded)
        self._pending: dict[str, threading.Event] = {}
        self._mutex = threading.Lock()
        self._lock_depth = 0
        self._workers = max(1, min(4, os.cpu_count() or 1))
        # Sealing threads: twice the CPUs used, so that one waiting for its fsync does not leave a CPU
        # idle; the slots bound the chunks held (queued or being sealed) over all streams written at once.
        self._sealers = 2 * self._workers
        self._slots = threading.BoundedSemaphore(self._workers + 2)
        self._pool: ThreadPoolExecutor | None = None  # the sealing threads, started on first use

    def __repr__(self) -> str:
        return f"Repository({self.location!r}, encrypted={self.encrypted})"

    @property
    def records(self) -> bool:
        """Whether this session takes locks and records what it finds (not on read-only media, not with
        ``no_lock``): the one test every lock and every bookkeeping write goes by."""
        return not (self.read_only or self.no_lock)

    # --- creating and opening ------------------------------------------------------------------------

    @classmethod
    def init(
        cls, location: str, keys: KeySource, *, compression_level: int = 3, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> Repository:
        """Create an empty repository; encrypted exactly when ``keys`` is configured."""
        _check_level(compression_level)
        if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise GuardError(
                f"chunk size {chunk_size}: expected {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE} bytes", EXIT_USAGE
            )
        storage = open_storage(location)
        if storage.exists(CONFIG):
            raise GuardError(f"a repository already exists at {location}", EXIT_USAGE)
        if not storage.is_empty():
            raise GuardError(
                f"{location} is not empty and holds no repository (no config.json): choose a new or empty location",
                EXIT_USAGE,
            )
        repo_id = secrets.token_hex(16)
        config: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "id": repo_id,
            "created_at": _iso(_now()),
            "encrypted": keys.configured,
            "compression": {"algorithm": "zstd", "level": compression_level},
            "chunk_size": chunk_size,
        }
        master = key_config(keys, config) if keys.configured else None
        try:
            storage.ensure_dir("")
            for folder in ("snapshots", "blobs", "locks", "state"):
                storage.ensure_dir(folder)
            storage.write_atomic(CONFIG, [json.dumps(config, indent=2).encode("utf-8") + b"\n"])
        except OSError as exc:
            raise GuardError(f"cannot create a repository at {location} ({exc.strerror or exc})", EXIT_USAGE) from None
        return cls(storage, config, master)

    @classmethod
    def open(
        cls, location: str, keys: KeySource, *, create: bool = False, compression_level: int | None = None
    ) -> Repository:
        """Open the repository at ``location`` (create it when ``create`` and there is none).
        ``compression_level`` overrides the repository's level for what this session writes."""
        if compression_level is not None:
            _check_level(compression_level)
        storage = open_storage(location)
        try:
            raw = storage.read_bytes(CONFIG)
        except FileNotFoundError:
            if create:
                return cls.init(location, keys, compression_level=compression_level or 3)
            raise RepositoryNotFound(
                f"no backup repository at {location} (`migrate-guard backup` creates it)"
            ) from None
        except OSError as exc:
            raise GuardError(f"{location}: cannot read config.json ({exc.strerror or exc})", EXIT_USAGE) from None
        config = _parse_config(raw, location)
        master: bytes | None = None
        if config["encrypted"]:
            if not keys.configured:
                raise GuardError(
                    f"repository is encrypted: set MIGRATE_GUARD_KEY or MIGRATE_GUARD_PASSPHRASE "
                    f"(or backup.key_file) to open {location}",
                    EXIT_USAGE,
                )
            if keys.key is not None:
                master = keys.key
            else:
                kdf = config.get("kdf")
                if not kdf:
                    raise GuardError(
                        f"repository at {location} uses a key, not a passphrase: set MIGRATE_GUARD_KEY "
                        "or backup.key_file",
                        EXIT_USAGE,
                    )
                master = passphrase_key(keys.passphrase or "", *_kdf_params(kdf, location))
            try:
                check = base64.b64decode(config["key_check"], validate=True)
                matches = key_matches(check, master)
            except (binascii.Error, ValueError, IntegrityError):
                raise GuardError(f"{location}: config.json key_check is damaged", EXIT_USAGE) from None
            if not matches:
                raise WrongKey(f"wrong key for the repository at {location}")
            if "id_check" in config and not hmac.compare_digest(
                str(config["id_check"]), _id_check(master, config["id"])
            ):
                raise GuardError(
                    f"{location}: config.json's id was changed (it does not match its id_check, which the key "
                    "authenticates): put the original id back (a copy of config.json, or the repository field "
                    "of state/journal-head.json); no snapshot can be written or read until then",
                    EXIT_USAGE,
                )
        elif keys.configured:
            raise GuardError(
                f"repository at {location} is not encrypted: refusing to use a key with it "
                "(`migrate-guard key add` encrypts it; or unset MIGRATE_GUARD_KEY / MIGRATE_GUARD_PASSPHRASE)",
                EXIT_USAGE,
            )
        repo = cls(storage, config, master, compression_level)
        repo.read_only = not _writable(storage)
        if repo.read_only:
            repo.warnings.append(f"{location} is read-only: it is read without a lock and nothing is recorded in it")
        else:
            with suppress(OSError):  # a location that turns out read-only: the leftovers are ignored anyway
                storage.clean_temp(TEMP_MAX_AGE)
        if master is not None and "id_check" not in config:
            repo._check_legacy_id()
        return repo

    def _check_legacy_id(self) -> None:
        """A repository created before ``id_check``: its id is checked against one of its blobs (their ids are
        keyed with it), then authenticated from now on when the location can be written."""
        blobs = sorted(self.blob_ids())[:1]
        if blobs and "id mismatch" in (self.check_blob(blobs[0], record=False) or ""):
            raise GuardError(
                f"{self.location}: config.json's id does not match the repository's blobs (was it changed?): "
                "put the original id back; no snapshot can be written or read until then",
                EXIT_USAGE,
            )
        if not self.read_only and self._key is not None:
            self.config["id_check"] = _id_check(self._key, self.id)
            with suppress(OSError):
                self.storage.write_atomic(CONFIG, [json.dumps(self.config, indent=2).encode("utf-8") + b"\n"])

    # --- streams -------------------------------------------------------------------------------------

    @staticmethod
    def _blob_path(bid: str) -> str:
        return f"blobs/{bid[:2]}/{bid}"

    def known_blobs(self) -> set[str]:
        """The sound blob ids in the repository, listed once per session (and added to as blobs are
        written): those found damaged or missing are not among them, so a backup stores them again."""
        if self._known is None:
            known = self.blob_ids() - set(self.damaged_blobs())
            with self._mutex:
                if self._known is None:
                    self._known = known
        return self._known

    def _store_chunk(self, data: bytes | bytearray) -> str:
        bid = blob_id(data, self._id_key)
        known = self.known_blobs()
        with self._mutex:
            if bid in known:
                return bid
            event = self._pending.get(bid)
            mine = event is None
            if mine:
                event = self._pending[bid] = threading.Event()
        assert event is not None
        if not mine:
            event.wait()
            with self._mutex:
                if bid in known:
                    return bid
            raise GuardError(f"blob {bid}: writing it failed", EXIT_FAILED)
        try:
            stored = self.storage.write_atomic(
                self._blob_path(bid), seal_whole(data, self._key, compress=True, level=self.compression_level)
            )
            with self._mutex:
                known.add(bid)
                self.added_bytes += stored
                if bid in self.damaged_blobs():
                    self._healed.add(bid)
        finally:
            with self._mutex:
                del self._pending[bid]
            event.set()
        return bid

    def _submit(self, data: bytes | bytearray) -> Future[str]:
        """Hand a chunk to the repository's sealing threads once one of its in-flight slots is
        free: however many streams are written at once, only a few chunks are held."""
        with self._mutex:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._sealers, thread_name_prefix="migrate-guard-blob")
            pool = self._pool
        self._slots.acquire()
        try:
            future = pool.submit(self._store_chunk, data)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        return future

    def write_stream(self, name: str, chunks: Iterable[bytes]) -> StreamRef:
        """Store a stream: cut into content-defined chunks, each a blob (written only when new,
        fsynced). Chunks are hashed, compressed and encrypted in parallel while the stream goes on; at
        most a few are in memory, also when several streams are written at once (from several threads)."""
        ids: list[str] = []
        total = 0
        inflight: deque[Future[str]] = deque()
        try:
            for data in cut(chunks, self.chunk_size):
                total += len(data)
                inflight.append(self._submit(data))
                while inflight and inflight[0].done():
                    ids.append(inflight.popleft().result())
            while inflight:
                ids.append(inflight.popleft().result())
        finally:
            if inflight:  # failed: drop the chunks not started, wait for those being written
                for future in inflight:
                    future.cancel()
                wait(inflight)
        return StreamRef(blobs=ids, bytes=total)

    def _read_blob(self, bid: str) -> bytes:
        if not isinstance(bid, str) or not _BLOB_ID.fullmatch(bid):
            raise IntegrityError(f"blob {bid!r}: not a blob id (64 hex digits)")
        name = f"blob {bid}"
        try:
            pieces = self.storage.open_read(self._blob_path(bid))
        except FileNotFoundError:
            raise IntegrityError(f"blob {bid} missing") from None
        # A sound blob is read whole and unsealed in one pass (unseal_whole); a file larger than any
        # sound blob, or one that fails, goes through the streaming unseal, which says what is wrong.
        most = self.chunk_size + self.chunk_size // 128 + 4 * SEALED_SEGMENT_SIZE
        head: list[bytes] = []
        size = 0
        data: bytes | None = None
        try:
            for piece in pieces:
                head.append(piece)
                size += len(piece)
                if size > most:
                    break
            else:
                data = unseal_whole(head[0] if len(head) == 1 else b"".join(head), self._key, self.chunk_size)
            if data is None:
                parts: list[bytes] = []
                size = 0
                for plain in unseal(chain(head, pieces), self._key, name):
                    parts.append(plain)
                    size += len(plain)
                    if size > self.chunk_size:
                        raise IntegrityError(f"{name}: larger than the chunk size ({self.chunk_size} bytes)")
                data = parts[0] if len(parts) == 1 and type(parts[0]) is bytes else b"".join(parts)
        except OSError as exc:
            raise IntegrityError(f"{name}: cannot read it ({exc})") from None
        actual = blob_id(data, self._id_key)
        if actual != bid:
            raise IntegrityError(
                f"{name}: id mismatch (its content is blob {actual[:16]}…: stored under the wrong name)"
            )
        return data

    def read_stream(self, ref: StreamRef) -> Iterator[bytes]:
        """The stream's bytes, a verified blob at a time (each checked, tag and id, before it is yielded)."""
        blobs = list(ref.blobs)
        total = 0
        if len(blobs) <= 1:
            for bid in blobs:
                data = self._read_blob(bid)
                total += len(data)
                yield data
        else:
            pool = ThreadPoolExecutor(self._workers, thread_name_prefix="migrate-guard-read")
            try:
                inflight: deque[Future[bytes]] = deque()
                queue = iter(blobs)
                for bid in queue:
                    inflight.append(pool.submit(self._read_blob, bid))
                    if len(inflight) >= self._workers + 1:
                        break
                while inflight:
                    data = inflight.popleft().result()
                    nxt = next(queue, None)
                    if nxt is not None:
                        inflight.append(pool.submit(self._read_blob, nxt))
                    total += len(data)
                    yield data
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        if total != ref.bytes:
            raise IntegrityError(f"stream of {len(blobs)} blobs holds {total} bytes, the manifest says {ref.bytes}")

    # --- blobs -----------------------------------------------------------------------------------------

    def blob_ids(self) -> set[str]:
        ids = set()
        for path in self.storage.list("blobs"):
            parts = path.split("/")
            if len(parts) == 3 and _BLOB_ID.fullmatch(parts[2]) and parts[1] == parts[2][:2]:
                ids.add(parts[2])
        return ids

    def blob_size(self, blob_id: str) -> int:
        try:
            return self.storage.size(self._blob_path(blob_id))
        except FileNotFoundError:
            return 0

    def check_blob(self, blob_id: str, read_data: bool = True, *, record: bool = True) -> str | None:
        """None when the blob is sound, else the problem (one line naming the blob). Without
        ``read_data`` only its presence and a plausible size are checked. A damaged or missing blob is
        recorded (``damaged_blobs``; unless ``record`` is false): no backup reuses it."""
        problem = self._check_blob(blob_id, read_data)
        if problem and record and _BLOB_ID.fullmatch(str(blob_id)):
            self._found_damaged[blob_id] = problem
            self.record_damage()
        return problem

    def _check_blob(self, blob_id: str, read_data: bool) -> str | None:
        if not isinstance(blob_id, str) or not _BLOB_ID.fullmatch(blob_id):
            return f"blob {blob_id!r}: not a blob id (64 hex digits)"
        if not read_data:
            try:
                size = self.storage.size(self._blob_path(blob_id))
            except FileNotFoundError:
                return f"blob {blob_id} missing"
            minimum = HEADER_SIZE + TAG_SIZE if self.encrypted else PLAIN_HEADER_SIZE
            return None if size >= minimum else f"blob {blob_id}: truncated ({size} bytes)"
        try:
            self._read_blob(blob_id)
        except IntegrityError as exc:
            return exc.message
        return None

    def check_blobs(self, blob_ids: Iterable[str]) -> Iterator[tuple[str, str | None]]:
        """``check_blob(id, read_data=True)`` for each id, several at once, in the given order;
        at most a few blobs are in memory whatever their number."""
        ids = list(dict.fromkeys(blob_ids))
        if len(ids) <= 1:
            for bid in ids:
                yield bid, self.check_blob(bid)
            return
        pool = ThreadPoolExecutor(self._workers, thread_name_prefix="migrate-guard-check")
        try:
            inflight: deque[tuple[str, Future[str | None]]] = deque()
            for bid in ids:
                inflight.append((bid, pool.submit(self.check_blob, bid, record=False)))
                if len(inflight) > self._workers:
                    done, future = inflight.popleft()
                    yield done, self._found(done, future.result())
            while inflight:
                done, future = inflight.popleft()
                yield done, self._found(done, future.result())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self.record_damage()

    def _found(self, blob_id: str, problem: str | None) -> str | None:
        if problem and _BLOB_ID.fullmatch(blob_id):
            self._found_damaged[blob_id] = problem
        return problem

    # --- damage ------------------------------------------------------------------------------------------

    def damaged_blobs(self) -> dict[str, dict[str, Any]]:
        """Blobs found damaged or missing (by verify, a restore's check, ``repair``), id -> {"problem",
        "found_at"}, until a backup stores them again: ``state/damaged-blobs.json``. A snapshot naming
        one has lost data (for now: the next backup that reads the same rows heals every snapshot)."""
        if self._damaged is None:
            self._damaged = self._read_damaged()
        return self._damaged

    def _read_damaged(self) -> dict[str, dict[str, Any]]:
        try:
            state = self.read_state(DAMAGED) or {}
        except IntegrityError as exc:
            self.warnings.append(f"{exc.message}: the record of damaged blobs is ignored (verify finds them again)")
            state = {}
        blobs = state.get("blobs") if isinstance(state, dict) else None
        return {k: v for k, v in (blobs or {}).items() if isinstance(k, str) and _BLOB_ID.fullmatch(k)}

    def record_damage(self) -> None:
        """Record the damage found and the blobs stored again by this session (merged with what other
        processes recorded meanwhile, under the journal lock). Where the repository cannot be written
        (read-only media), it is only kept in memory and said in ``warnings``."""
        with self._mutex:
            found, healed = dict(self._found_damaged), set(self._healed)
            self._found_damaged.clear()
            self._healed.clear()
            damaged = self.damaged_blobs()
            stamp = _iso(_now())
            for bid, problem in found.items():
                damaged.setdefault(bid, {"problem": problem, "found_at": stamp})
            for bid in healed:
                damaged.pop(bid, None)
            if self._known is not None:
                self._known.difference_update(found)
        if not found and not healed:
            return
        if not self.records:
            return
        try:
            with self._holding(_JOURNAL_LOCK, "record damaged blobs", JOURNAL_LOCK_WAIT):
                current = self._read_damaged()
                for bid, problem in found.items():
                    current.setdefault(bid, {"problem": problem, "found_at": stamp})
                for bid in healed:
                    current.pop(bid, None)
                self.write_state(DAMAGED, {"blobs": current})
                with self._mutex:
                    self._damaged = current
        except (OSError, RepositoryLocked) as exc:
            note = f"damaged blobs not recorded in the repository ({exc})"
            if note not in self.warnings:
                self.warnings.append(note)

    def lost_data(self, manifest: dict[str, Any]) -> list[str]:
        """The blobs of a snapshot found damaged or missing: empty when it has lost nothing known."""
        damaged = self.damaged_blobs()
        return sorted({b for b in manifest_blobs(manifest) if b in damaged})

    def delete_blob(self, blob_id: str) -> None:
        if not _BLOB_ID.fullmatch(blob_id):
            raise ValueError(f"not a blob id: {blob_id!r}")
        self.storage.delete(self._blob_path(blob_id))
        with self._mutex:
            if self._known is not None:
                self._known.discard(blob_id)

    # --- sealed JSON files ------------------------------------------------------------------------------

    def _write_json(self, path: str, obj: Any) -> int:
        """A manifest or state file. Unencrypted ones are indented JSON, for reading, unless that is
        over ``PLAIN_JSON_MOST`` (a manifest listing many files): then compact JSON, zstd-compressed."""
        if self.encrypted:
            text = json.dumps(obj, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"
            return self.storage.write_atomic(path, seal([text], self._key, compress=True, level=self.compression_level))
        # The compact form first: a manifest listing thousands of files is over the bound already as
        # that, and its (longer) indented form need not be made at all.
        compact = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(compact) <= PLAIN_JSON_MOST:
            text = json.dumps(obj, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"
            if len(text) <= PLAIN_JSON_MOST:
                return self.storage.write_atomic(path, seal([text], None, compress=False))
        return self.storage.write_atomic(path, seal([compact], None, compress=True, level=self.compression_level))

    def _read_json(self, path: str, name: str) -> Any:
        """FileNotFoundError when missing; IntegrityError naming ``name`` when unreadable."""
        try:
            raw = self.storage.read_bytes(path)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise IntegrityError(f"{name}: cannot read it ({exc})") from None
        text = unseal_bytes(raw, self._key, name)
        try:
            return json.loads(text)
        except (UnicodeDecodeError, ValueError):
            raise IntegrityError(f"{name}: not valid JSON") from None

    # --- snapshots ------------------------------------------------------------------------------------

    def new_snapshot_id(self) -> str:
        while True:
            sid = secrets.token_hex(8)
            if not self.storage.exists(f"snapshots/{sid}.json"):
                return sid

    def _snapshot_ids(self) -> list[str]:
        ids = []
        for path in self.storage.list("snapshots"):
            parts = path.split("/")
            if len(parts) == 2 and parts[1].endswith(".json") and _SNAPSHOT_ID.fullmatch(parts[1][:-5]):
                ids.append(parts[1][:-5])
        return ids

    def _resolve(self, snapshot_id: str) -> str:
        text = str(snapshot_id).strip().lower()
        if not re.fullmatch(r"[0-9a-f]{4,16}", text):
            raise GuardError(f"snapshot id {snapshot_id!r}: expected 4 to 16 hex digits", EXIT_USAGE)
        if len(text) == 16 and self.storage.exists(f"snapshots/{text}.json"):
            return text
        matches = sorted(i for i in self._snapshot_ids() if i.startswith(text))
        if not matches:
            raise GuardError(f"no snapshot {snapshot_id} in {self.location}", EXIT_USAGE)
        if len(matches) > 1:
            raise GuardError(
                f"snapshot id {snapshot_id} is ambiguous: it matches {', '.join(matches[:5])}"
                f"{' …' if len(matches) > 5 else ''}",
                EXIT_USAGE,
            )
        return matches[0]

    def save_manifest(self, manifest: dict[str, Any], *, new: bool = True) -> None:
        """Write a snapshot's manifest (atomically; the last write of a backup: the snapshot exists from now)."""
        sid = manifest.get("id")
        if not isinstance(sid, str) or not _SNAPSHOT_ID.fullmatch(sid):
            raise ValueError(f"manifest id {sid!r}: expected 16 hex digits")
        body = {k: v for k, v in manifest.items() if k != "sha256"}
        if not self.encrypted:
            body["sha256"] = hashlib.sha256(_canonical(body)).hexdigest()
        self._write_json(f"snapshots/{sid}.json", body)
        if new:
            # the set of snapshots is recorded in the (chained) journal: a manifest deleted behind the
            # repository's back is found missing (``missing_manifests``)
            self.append_journal({"snapshots_added": [sid], "at": _iso(_now())})
            self.record_damage()  # the blobs this backup stored again are sound: every snapshot naming them heals

    def _read_manifest(self, sid: str) -> dict[str, Any]:
        name = f"snapshot {sid}"
        manifest = self._read_json(f"snapshots/{sid}.json", name)
        if not isinstance(manifest, dict):
            raise IntegrityError(f"{name}: not a manifest (a JSON object)")
        if not self.encrypted:
            recorded = manifest.pop("sha256", None)
            if recorded is None:
                raise IntegrityError(f"{name}: no sha256 field")
            if hashlib.sha256(_canonical(manifest)).hexdigest() != recorded:
                raise IntegrityError(f"{name}: sha256 mismatch (the manifest was changed)")
        if manifest.get("id") != sid:
            raise IntegrityError(f"{name}: id mismatch (the file holds snapshot {manifest.get('id')!r})")
        return manifest

    def load_manifest(self, snapshot_id: str) -> dict[str, Any]:
        """The manifest of a snapshot, by id or a unique prefix of at least 4 hex digits."""
        sid = self._resolve(snapshot_id)
        try:
            return self._read_manifest(sid)
        except FileNotFoundError:
            raise GuardError(f"no snapshot {snapshot_id} in {self.location}", EXIT_USAGE) from None

    def manifests(self) -> list[dict[str, Any]]:
        """Every readable manifest, oldest first. One that cannot be read is skipped, with a note in ``warnings``."""
        found = []
        for sid in self._snapshot_ids():
            try:
                found.append(self._read_manifest(sid))
            except FileNotFoundError:
                continue  # deleted meanwhile
            except IntegrityError as exc:
                note = f"skipped {exc.message}"
                if note not in self.warnings:
                    self.warnings.append(note)
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        found.sort(key=lambda m: (parse_iso(m.get("created_at")) or epoch, m["id"]))
        return found

    def delete_manifest(self, snapshot_id: str) -> None:
        self.delete_manifests([snapshot_id])

    def delete_manifests(self, snapshot_ids: Iterable[str]) -> None:
        """Remove snapshots: one journal record names them all (first: a snapshot is never gone but
        still recorded), then their manifests go."""
        sids = [self._resolve(s) for s in snapshot_ids]
        if not sids:
            return
        self.append_journal({"snapshots_removed": sids, "at": _iso(_now())})
        for sid in sids:
            self.storage.delete(f"snapshots/{sid}.json")

    def missing_manifests(self) -> list[tuple[str, str]]:
        """Snapshots the journal records as taken and never removed whose manifest is gone: (id, taken at).
        A manifest deleted by hand (or lost) is found here; records that do not decode are skipped."""
        present = set(self._snapshot_ids())
        recorded: dict[str, str] = {}
        for _number, line in self._journal_lines():
            try:
                record = self._decode_journal_line(line, JOURNAL)
            except IntegrityError:
                continue
            for sid in record.get("snapshots_added") or ():
                recorded[str(sid)] = str(record.get("at"))
            for sid in record.get("snapshots_removed") or ():
                recorded.pop(str(sid), None)
        return sorted((sid, at) for sid, at in recorded.items() if sid not in present)

    def update_manifest(self, snapshot_id: str, **fields: Any) -> None:
        sid = self._resolve(snapshot_id)
        if "id" in fields and fields["id"] != sid:
            raise ValueError("a snapshot's id cannot change")
        manifest = self._read_manifest(sid)
        manifest.update(fields)
        self.save_manifest(manifest, new=False)

    # --- state and journal ---------------------------------------------------------------------------

    @staticmethod
    def _state_path(name: str) -> str:
        if not _STATE_NAME.fullmatch(name) or name.endswith(".tmp"):
            raise ValueError(f"bad state name {name!r}")
        return f"state/{name}.json"

    def read_state(self, name: str) -> dict[str, Any] | None:
        path = self._state_path(name)
        try:
            state: dict[str, Any] | None = self._read_json(path, path)
        except FileNotFoundError:
            return None
        return state

    def write_state(self, name: str, data: dict[str, Any]) -> None:
        self._write_json(self._state_path(name), data)

    # The journal is chained (docs/repository-format.md, "State and journal"): each record carries its
    # number (``seq``), the hash of the line before it (``prev``) and the repository's id; the head file
    # holds the number and hash of the last record. Appends take the short journal lock, never the
    # repository's exclusive one (migrate-safe appends while a backup may hold that).

    def _journal_line(self, record: dict[str, Any]) -> bytes:
        text = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if self.encrypted:
            return base64.b64encode(seal_bytes(text, self._key, compress=False)) + b"\n"
        return text + b"\n"

    def _line_hash(self, line: bytes) -> str:
        """What ``prev`` (and the head's ``hash``) holds for ``line``, a line's bytes as stored without its
        newline: HMAC-SHA256 under the id key in an encrypted repository (only a key holder can forge a
        chain), SHA-256 in an unencrypted one."""
        if self._id_key is not None:
            return hmac.new(self._id_key, line, hashlib.sha256).hexdigest()
        return hashlib.sha256(line).hexdigest()

    def _decode_journal_line(self, line: bytes, name: str) -> dict[str, Any]:
        """The record ``line`` holds; ``IntegrityError`` naming ``name`` when it does not decode or unseal."""
        if self.encrypted:
            try:
                sealed = base64.b64decode(line, validate=True)
            except (binascii.Error, ValueError):
                raise IntegrityError(f"{name}: not a journal record (not base64)") from None
            text = unseal_bytes(sealed, self._key, name)
        else:
            text = line
        try:
            record = json.loads(text)
        except (UnicodeDecodeError, ValueError):
            raise IntegrityError(f"{name}: not a journal record (not JSON)") from None
        if not isinstance(record, dict):
            raise IntegrityError(f"{name}: not a journal record (not a JSON object)")
        return record

    @staticmethod
    def _journal_split(raw: bytes) -> list[tuple[int, bytes]]:
        """The non-blank lines of the journal's bytes: (line number, the line without its newline)."""
        return [(number, line) for number, line in enumerate(raw.split(b"\n"), 1) if line.strip()]

    def _journal_lines(self) -> list[tuple[int, bytes]]:
        try:
            return self._journal_split(self.storage.read_bytes(JOURNAL))
        except FileNotFoundError:
            return []

    def _own_seq(self, record: dict[str, Any]) -> int | None:
        """The record's ``seq`` when it is a well-formed chained record of this repository, else None."""
        seq = _chain_seq(record)
        return seq if seq is not None and record.get("repository") == self.id else None

    def _next_link(self, lines: list[bytes]) -> tuple[int, str]:
        """``seq`` and ``prev`` for a record appended after ``lines``. A line that is no sound chained
        record of this repository (one written before the chain, or a damaged one) takes the next number,
        as readers count it; usually only the last line is read."""
        if not lines:
            return 1, ""
        prev = self._line_hash(lines[-1])
        for back, line in enumerate(reversed(lines)):
            try:
                seq = self._own_seq(self._decode_journal_line(line, JOURNAL))
            except IntegrityError:
                continue
            if seq is not None:
                return seq + back + 1, prev
        return len(lines) + 1, prev

    def append_journal(self, record: dict[str, Any], *, wait: float = JOURNAL_LOCK_WAIT) -> dict[str, Any]:
        """Add a record to ``state/journal.jsonl`` and return it as written: with ``seq``, ``prev`` and
        ``repository`` (set here; the caller's values for them are replaced). Takes the journal lock
        (``RepositoryLocked`` when another appender holds it for more than ``wait`` seconds), not the
        repository's exclusive lock. The file is rewritten atomically (it is small), then the head."""
        with self._holding(_JOURNAL_LOCK, "journal append", wait) as mine:
            try:
                existing = self.storage.read_bytes(JOURNAL)
            except FileNotFoundError:
                existing = b""
            seq, prev = self._next_link([line for _, line in self._journal_split(existing)])
            try:  # a journal cut short stays visibly cut short: the next record numbers on from the head
                head = self.read_state(JOURNAL_HEAD) or {}
            except IntegrityError:
                head = {}
            if isinstance(head.get("seq"), int) and head.get("repository") == self.id and head["seq"] >= seq:
                seq = head["seq"] + 1
            written = {
                "seq": seq,
                "prev": prev,
                "repository": self.id,
                **{k: v for k, v in record.items() if k not in _CHAIN_FIELDS},
            }
            line = self._journal_line(written)
            if existing and not existing.endswith(b"\n"):
                existing += b"\n"
            if self._read_lock(_JOURNAL_LOCK.path)[0] != mine:
                raise RepositoryLocked(
                    f"the journal of repository {self.location}: another process took over the journal lock "
                    "while this one held it (as stale); the record was not written: try again"
                )
            self.storage.write_atomic(JOURNAL, [existing, line])
            self.write_state(JOURNAL_HEAD, {"seq": seq, "hash": self._line_hash(line[:-1]), "repository": self.id})
        return written

    def journal(self) -> list[dict[str, Any]]:
        """The journal's records, oldest first, as written (records from before the chain have no
        ``seq``, ``prev`` or ``repository``). A line that does not decode raises ``IntegrityError``
        (callers then treat the journal as unreadable); a broken chain does not: ``journal_checked``
        says what is wrong with it and which records can be trusted."""
        return [self._decode_journal_line(line, f"{JOURNAL} line {number}") for number, line in self._journal_lines()]

    def journal_problems(self) -> list[str]:
        """``journal_checked().problems``: every defect of the journal, one sentence each; empty when sound."""
        return self.journal_checked().problems

    def journal_checked(self) -> JournalCheck:
        """The journal's records, its defects and how far it can be trusted (see ``JournalCheck``); never raises.

        Records from before the chain (no ``seq``) at the start are accepted, each counting as the number
        of its line. Each chained record must be of this repository, number one more than the highest
        before it, and carry in ``prev`` the hash of the record numbered one less ("" for record 1). The
        head may lag behind the file (an append interrupted between its two writes) but must match the
        record it names, and must not be ahead of the file."""
        try:
            lines = self._journal_lines()
        except OSError as exc:
            return JournalCheck([], [f"{JOURNAL}: cannot read it ({exc})"], 0)
        decoded: list[tuple[int, bytes, dict[str, Any] | None, str]] = []
        for number, line in lines:
            try:
                decoded.append((number, line, self._decode_journal_line(line, f"{JOURNAL} line {number}"), ""))
            except IntegrityError as exc:
                decoded.append((number, line, None, exc.message))
        present = {s for _, _, r, _ in decoded if r is not None and (s := self._own_seq(r)) is not None}

        records: list[dict[str, Any]] = []
        problems: list[str] = []
        trusted: list[int] = []  # each problem's bound: records before this index are still vouched for
        foreign: list[Any] = []  # the run of consecutive lines of another repository: [first, last, id, index]
        slots: dict[int, _Slot] = {}  # number -> the line that holds it
        highest = 0
        chained = False

        flagged: set[int] = set()  # line numbers named in a problem

        def flush() -> None:
            if foreign:
                first, last, other, index = foreign
                where = f"line {first}: belongs" if first == last else f"lines {first}-{last}: belong"
                problems.append(f"{JOURNAL} {where} to repository {other}, not this one {self.id}")
                trusted.append(index)
                foreign.clear()

        def flag(problem: str, bound: int) -> None:
            flush()
            problems.append(problem)
            trusted.append(bound)

        for position, (number, line, record, error) in enumerate(decoded):
            name = f"{JOURNAL} line {number}"
            index = len(records)
            seq: int | None = None
            if record is None:
                flagged.add(number)
                flag(error, index)
            else:
                records.append(record)
                other = record.get("repository")
                if "seq" not in record:
                    if chained:
                        flag(
                            f"{name}: has no sequence number, after chained records (written without the chain)", index
                        )
                elif _chain_seq(record) is None:
                    flag(f"{name}: bad chain fields (seq, prev, repository)", index)
                elif other != self.id:
                    flagged.add(number)
                    if foreign and foreign[1] == decoded[position - 1][0] and foreign[2] == other:
                        foreign[1] = number
                    else:
                        flush()
                        foreign.extend([number, number, other, index])
                else:
                    seq = record["seq"]
                    chained = True
                    after = f"follows {highest}" if highest else "at the start"
                    if seq in slots and slots[seq].real:
                        flag(f"{name}: repeats sequence {seq} of line {slots[seq].line} (a line was copied)", index)
                    elif seq <= highest or (seq > highest + 1 and any(highest < s < seq for s in present)):
                        flag(f"{name}: sequence {seq} {after} (out of order)", index)
                    elif seq > highest + 1:
                        flag(f"{name}: sequence {seq} {after} (records missing)", index)
                    else:
                        before = slots.get(seq - 1)
                        # a link to a line named already (undecodable, foreign) is not named again
                        if record["prev"] != (before.hash if before else "") and not (
                            before and before.line in flagged
                        ):
                            bound = before.record if before and before.record is not None else index
                            flag(f"{name}: chained to another record (a line was removed, changed or reordered)", bound)
            if seq is None:  # no number of its own: it takes the next one
                seq = highest + 1
                real = False
            else:
                real = True
            if seq not in slots:
                slots[seq] = _Slot(self._line_hash(line), None if record is None else index, number, real)
            highest = max(highest, seq)
        flush()
        self._check_head(slots, highest, chained, len(records), flag)
        if not problems:
            return JournalCheck(records, problems, None)
        return JournalCheck(records, problems, min(trusted), max(trusted) + 1)

    def _check_head(
        self, slots: dict[int, _Slot], highest: int, chained: bool, count: int, flag: Callable[[str, int], None]
    ) -> None:
        """The head file against the journal read: ``flag(problem, trusted bound)`` for each defect."""
        name = self._state_path(JOURNAL_HEAD)
        try:
            head = self.read_state(JOURNAL_HEAD)
        except IntegrityError as exc:
            flag(f"{exc.message} (head unreadable)", count)
            return
        if head is None:
            if chained:
                flag(f"{name} missing: the end of the journal cannot be checked (head missing)", count)
            return
        digest, other = head.get("hash"), head.get("repository")
        seq = _chain_seq({"seq": head.get("seq"), "prev": digest, "repository": other})
        if seq is None:
            flag(f"{name}: not a journal head (head unreadable)", count)
        elif other != self.id:
            flag(f"{name}: belongs to repository {other}, not this one {self.id}", 0)
        elif seq > highest:
            held = f"ends at record {highest}" if highest else "holds no record"
            flag(f"the journal {held}, its head says {seq} (truncated)", count)
        elif seq not in slots:
            flag(f"the journal's head names record {seq}, which is missing from the journal (records missing)", count)
        elif slots[seq].hash != digest and slots[seq].record is not None:  # an undecodable line is named already
            flag(f"the journal's head does not match record {seq} on line {slots[seq].line} (changed or replaced)", 0)

    # --- locking ----------------------------------------------------------------------------------------

    def _read_lock(self, path: str) -> tuple[bytes | None, dict[str, Any] | None]:
        try:
            raw = self.storage.read_bytes(path)
        except FileNotFoundError:
            return None, None
        try:
            holder = json.loads(raw)
        except ValueError:
            return raw, None
        return raw, holder if isinstance(holder, dict) else None

    def _stale(self, kind: _LockKind, holder: dict[str, Any] | None) -> str | None:
        """Why the lock is stale, or None when it is (or may be) held."""
        if holder is None:
            try:
                mtime = self.storage.mtime(kind.path)
            except FileNotFoundError:
                return None
            if mtime is not None and time.time() - mtime > kind.unreadable_after:
                return "an unreadable lock file"
            return None
        created = parse_iso(holder.get("created_at"))
        old = created is not None and (_now() - created).total_seconds() > kind.stale_after
        since = f"(since {holder.get('created_at')})"
        if holder.get("host") == socket.gethostname():
            try:
                pid = int(holder.get("pid"))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return (
                    f"a lock of this host older than {kind.stale_text} {since}"
                    if old and not kind.live_pid_holds
                    else None
                )
            if not pid_alive(pid):
                return f"the lock of pid {pid}, which no longer runs"
            if kind.live_pid_holds or not old:
                return None  # a live process here: held (for the exclusive lock however old)
            return f"the lock of pid {pid}, held for more than {kind.stale_text} {since}"
        if old:
            return f"a lock of host {holder.get('host')} older than {kind.stale_text} {since}"
        return None

    @contextmanager
    def _holding(self, kind: _LockKind, command: str, wait: float) -> Iterator[bytes]:
        """Hold the lock file ``kind.path`` (yielding its content) for the block; removed after, only if
        still ours. A stale lock is taken over with a note in ``warnings``; a held one raises
        ``RepositoryLocked`` after ``wait`` seconds of polling. Not re-entrant."""
        mine = json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "user": _user(),
                "created_at": _iso(_now(), micro=True),
                "command": command,
            }
        ).encode("utf-8")
        deadline = time.monotonic() + max(0.0, wait)
        retries = 0
        while not self.storage.create_exclusive(kind.path, mine):
            raw, holder = self._read_lock(kind.path)
            reason = None if raw is None else self._stale(kind, holder)
            if (raw is None or reason is not None) and retries < 20:
                retries += 1  # released meanwhile, or stale: try again (a bounded number of times)
                if reason is not None and self._read_lock(kind.path)[0] == raw:  # not taken over meanwhile
                    self.storage.delete(kind.path)
                    self.warnings.append(f"took over a stale {kind.what}: {reason}")
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RepositoryLocked(_locked_message(kind, self.location, holder))
            time.sleep(min(kind.poll * random.uniform(0.5, 1.5), remaining))
        try:
            yield mine
        finally:
            try:
                if self.storage.read_bytes(kind.path) == mine:
                    self.storage.delete(kind.path)
            except FileNotFoundError:
                pass

    @contextmanager
    def lock(self, command: str, wait: float | None = None) -> Iterator[None]:
        """The repository's exclusive lock (re-entrant within this object). A stale lock is taken
        over with a note in ``warnings``; a held one raises ``RepositoryLocked`` (after ``wait`` seconds;
        None: what ``Repository.waiting_for_lock`` set around the call, else at once)."""
        if self._lock_depth or not self.records:  # nothing can change a read-only repository
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        with self._exclusive(command, wait):
            self._lock_depth = 1
            try:
                yield
            finally:
                self._lock_depth = 0

    # --- size ---------------------------------------------------------------------------------------------

    def size(self) -> int:
        """Bytes the repository occupies."""
        return self.storage.total_size()

    # --- waiting for the lock ---------------------------------------------------------------------------

    # How long ``lock`` waits for another holder when its caller does not say, and whom it tells that it
    # waits: set by the CLI (``--lock-wait``) around a command, so use cases deep down wait as it says.
    _lock_wait: contextvars.ContextVar[tuple[float, Callable[[str], None] | None]] = contextvars.ContextVar(
        "migrate_guard_repository_lock_wait", default=(0.0, None)
    )

    @classmethod
    @contextmanager
    def waiting_for_lock(cls, seconds: float, say: Callable[[str], None] | None = None) -> Iterator[None]:
        """Within the block, ``lock()`` without a ``wait`` waits up to ``seconds`` for another holder, and
        says once (through ``say``) whom it waits for."""
        token = cls._lock_wait.set((max(0.0, seconds), say))
        try:
            yield
        finally:
            cls._lock_wait.reset(token)

    @contextmanager
    def _exclusive(self, command: str, wait: float | None) -> Iterator[None]:
        """``_holding`` the exclusive lock, waiting ``wait`` seconds (None: as ``waiting_for_lock`` says);
        when it has to wait, says once for whom, and a final refusal says how long it waited."""
        say: Callable[[str], None] | None = None
        implicit = wait is None
        if wait is None:
            wait, say = self._lock_wait.get()
        with ExitStack() as stack:
            try:
                stack.enter_context(self._holding(_EXCLUSIVE, command, 0))
            except RepositoryLocked:
                holder = self._read_lock(_EXCLUSIVE.path)[1]
                me = (os.getpid(), socket.gethostname())
                ours = holder is not None and (holder.get("pid"), holder.get("host")) == me
                if wait <= 0 or (ours and implicit):  # held by this very process: the CLI's wait would never end
                    raise
                whom = (
                    f"held by pid {holder.get('pid')} on {holder.get('host')} (user {holder.get('user')}), running "
                    f"{holder.get('command')!r} since {holder.get('created_at')}"
                    if holder
                    else "its lock file is being written"
                )
                if say is not None:
                    say(f"waiting up to {_seconds_text(wait)} for the lock of repository {self.location}: {whom}")
                try:
                    stack.enter_context(self._holding(_EXCLUSIVE, command, wait))
                except RepositoryLocked as again:
                    raise RepositoryLocked(f"{again.message} (waited {_seconds_text(wait)}: --lock-wait)") from None
            yield


def _seconds_text(seconds: float) -> str:
    """``10m``, ``1h30m``, ``45s``: a wait in words."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{u}" for n, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if n) or f"{seconds:g}s"


def _locked_message(kind: _LockKind, location: str, holder: dict[str, Any] | None) -> str:
    subject = kind.subject.format(location)
    if holder is None:
        return (
            f"{subject} is locked (the lock file is being written or unreadable); "
            f"try again, or delete {kind.path} if no migrate-guard runs"
        )
    return (
        f"{subject} is locked by pid {holder.get('pid')} on {holder.get('host')} "
        f"(user {holder.get('user')}) since {holder.get('created_at')}, running {holder.get('command')!r}; "
        f"wait for it, or delete {kind.path} if that process is gone"
    )


def _writable(storage: Storage) -> bool:
    """Whether the repository's files can be written: a local directory on read-only media (or one this
    user may not write) cannot; an object store is taken to be writable (a refused write says so)."""
    root = getattr(storage, "root", None)
    if not isinstance(root, Path):
        return True
    return all(os.access(root / sub, os.W_OK) for sub in ("", "locks", "state", "snapshots") if (root / sub).exists())


def key_config(keys: KeySource, config: dict[str, Any]) -> bytes:
    """The master key ``keys`` give (scrypt of the passphrase with a new salt, or the key itself), with
    what ``config`` must hold of it: ``kdf`` (a passphrase only), ``key_check`` and ``id_check``."""
    if keys.key is not None:
        master = keys.key
    else:
        salt = os.urandom(SALT_SIZE)
        config["kdf"] = {
            "algorithm": "scrypt",
            "salt": base64.b64encode(salt).decode("ascii"),
            "n": SCRYPT_N,
            "r": SCRYPT_R,
            "p": SCRYPT_P,
        }
        master = passphrase_key(keys.passphrase or "", salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    config["key_check"] = base64.b64encode(seal_bytes(KEY_CHECK_PLAINTEXT, master, compress=False)).decode("ascii")
    config["id_check"] = _id_check(master, config["id"])
    return master


def _id_check(master: bytes, repository_id: str) -> str:
    """config.json's ``id_check``: the id authenticated with the key, so a changed id is found at open."""
    return hmac.new(master, ID_CHECK_INFO + repository_id.encode("ascii"), hashlib.sha256).hexdigest()


def _check_level(level: int) -> None:
    if not isinstance(level, int) or isinstance(level, bool) or not 1 <= level <= 22:
        raise GuardError(f"compression level {level!r}: expected an integer from 1 to 22", EXIT_USAGE)


def _parse_config(raw: bytes, location: str) -> dict[str, Any]:
    def bad(why: str) -> GuardError:
        return GuardError(f"{location}: config.json {why}", EXIT_USAGE)

    try:
        config = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise bad("is not valid JSON") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise bad("is not a migrate-guard repository config")
    if config.get("version") != VERSION:
        raise bad(f"has format version {config.get('version')!r}; this migrate-guard reads version {VERSION}")
    if not isinstance(config.get("id"), str) or not re.fullmatch(r"[0-9a-f]{32}", config["id"]):
        raise bad("has a bad id")
    if not isinstance(config.get("encrypted"), bool):
        raise bad("has a bad 'encrypted'")
    chunk = config.get("chunk_size")
    if not isinstance(chunk, int) or not MIN_CHUNK_SIZE <= chunk <= MAX_CHUNK_SIZE:
        raise bad("has a bad chunk_size")
    compression = config.get("compression")
    if (
        not isinstance(compression, dict)
        or compression.get("algorithm") != "zstd"
        or not isinstance(compression.get("level"), int)
        or not 1 <= compression["level"] <= 22
    ):
        raise bad("has a bad compression setting")
    if config["encrypted"] and not isinstance(config.get("key_check"), str):
        raise bad("has no key_check")
    return config


def _kdf_params(kdf: Any, location: str) -> tuple[bytes, int, int, int]:
    try:
        if kdf["algorithm"] != "scrypt":
            raise ValueError
        salt = base64.b64decode(kdf["salt"], validate=True)
        n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
        if len(salt) != SALT_SIZE or n < 2 or n & (n - 1) or n > 1 << 22 or not 1 <= r <= 64 or not 1 <= p <= 16:
            raise ValueError
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise GuardError(f"{location}: config.json has a bad kdf", EXIT_USAGE) from None
    return salt, n, r, p
