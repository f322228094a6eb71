"""Where a repository's files live: a local directory, or any fsspec URL (``s3://bucket/prefix``).

Paths are relative to the repository root, ``/``-separated. The repository needs only these few
operations; everything about the format lives in ``repository.py``.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import secrets
import shutil
import stat
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from ..errors import EXIT_FAILED, EXIT_USAGE, GuardError

TEMP_MARKER = ".tmp-"
READ_SIZE = 1 << 20
FILE_MODE = 0o600
DIR_MODE = 0o700

# What the filesystem refuses for reasons the user must fix: each becomes one line naming the path.
_REFUSALS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EFBIG: "file too large (a file size limit, ulimit -f?)",
    errno.EIO: "input/output error (a failing disk or network filesystem?)",
}


def refused(exc: BaseException) -> bool:
    """Whether ``exc`` is a refusal of the filesystem the user must fix (full, read-only, no permission)."""
    return isinstance(exc, OSError) and exc.errno in _REFUSALS


def _free_space(path: str) -> str:
    """``, 12.0 KiB free on that filesystem`` for the nearest existing folder of ``path`` (empty when unknown)."""
    from ..progress import human_bytes

    folder = Path(path)
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    try:
        return f"; {human_bytes(shutil.disk_usage(folder).free)} free on that filesystem"
    except OSError:
        return ""


def _path_in_traceback(exc: BaseException) -> str | None:
    """The name of the file being written or read where ``exc`` was raised (the innermost frame holding an
    open file with a path name), for errors such as a failed ``write()`` that carry no file name."""
    tb = exc.__traceback__
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            name = getattr(value, "name", None) if isinstance(value, io.IOBase) else None
            if isinstance(name, (str, os.PathLike)):
                return str(os.fspath(name))
    return None


def describe_os_error(exc: OSError, path: str | os.PathLike[str] | None = None, doing: str = "") -> str:
    """One line: what failed on which path and why, with the free space for a full disk. ``doing`` is
    what was attempted ("write", "read", "create", "delete"); ``path`` defaults to the error's own."""
    name = os.fspath(path) if path is not None else exc.filename or _path_in_traceback(exc)
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    why = _REFUSALS.get(exc.errno or 0) or (exc.strerror or str(exc)).lower()
    where = f" {name}" if name else " a file (its path is unknown)"
    line = f"cannot {doing or 'access'}{where}: {why}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) and name:
        line += _free_space(str(name))
    if exc.errno == errno.EROFS:
        line += "; its filesystem is mounted read-only"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        import getpass

        try:
            user = getpass.getuser()
        except Exception:  # noqa: BLE001 - no passwd entry in some containers
            user = f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"
        line += f"; migrate-guard runs as user {user}"
    return line


class StorageError(GuardError, OSError):
    """A repository file the filesystem refused to write, read or delete (full, read-only, no permission).
    Still an ``OSError`` (with ``errno`` and ``filename``) for code that catches those; a ``GuardError``
    whose one-line message names the path, what failed and (disk full) the free space: exit 1."""

    exit_code = EXIT_FAILED

    def __init__(self, exc: OSError, path: str | os.PathLike[str], doing: str):
        OSError.__init__(self, exc.errno, exc.strerror, os.fspath(path))
        self._line = describe_os_error(exc, path, doing)

    def __str__(self) -> str:
        return self._line


def _refusal(exc: OSError, path: str | os.PathLike[str], doing: str) -> OSError:
    """``exc`` as a ``StorageError`` naming ``path`` when it is a refusal, else ``exc`` itself."""
    if isinstance(exc, StorageError) or not refused(exc):
        return exc
    return StorageError(exc, path, doing)


def _check(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"bad repository path {path!r}")
    return path


def is_temp(name: str) -> bool:
    return TEMP_MARKER in name.rsplit("/", 1)[-1]


class Storage(ABC):
    location: str

    @abstractmethod
    def write_atomic(self, path: str, chunks: Iterable[bytes | bytearray | memoryview]) -> int:
        """Write the file so that it appears whole or not at all, durably; returns its size."""

    @abstractmethod
    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Create the file unless it exists (then False)."""

    @abstractmethod
    def open_read(self, path: str) -> Iterator[bytes]:
        """The file's bytes in pieces. ``FileNotFoundError`` (at once) when it does not exist."""

    def read_bytes(self, path: str) -> bytes:
        return b"".join(self.open_read(path))

    @abstractmethod
    def exists(self, path: str) -> bool: ...

    @abstractmethod
    def delete(self, path: str) -> None:
        """Remove the file; a missing file is not an error."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Paths of the files under the folder ``prefix`` (recursively, sorted), temp files excluded."""

    @abstractmethod
    def size(self, path: str) -> int: ...

    @abstractmethod
    def mtime(self, path: str) -> float | None:
        """Modification time (epoch seconds) when the backend knows it."""

    @abstractmethod
    def total_size(self) -> int:
        """Bytes of all files in the repository."""

    @abstractmethod
    def clean_temp(self, older_than: float) -> int:
        """Delete temp files left by interrupted writes, older than ``older_than`` seconds; returns how many."""

    def ensure_dir(self, path: str) -> None:  # noqa: B027 - a no-op by default: object stores have no folders
        """Create a folder (a no-op where folders do not exist, as in object stores)."""

    @abstractmethod
    def is_empty(self) -> bool:
        """Whether the location holds no file at all (or does not exist)."""


# --- local directory -------------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory
    finally:
        os.close(fd)


class LocalStorage(Storage):
    """A directory: temp file, fsync, rename, fsync the directory. Files 0600, folders 0700."""

    def __init__(self, root: Path, location: str | None = None):
        self.root = Path(root)
        self.location = location or str(root)
        self._dirs: set[Path] = set()

    def _full(self, path: str) -> Path:
        return self.root / _check(path)

    def _makedirs(self, directory: Path) -> None:
        if directory in self._dirs:
            return
        missing = []
        d = directory
        while not d.is_dir():
            missing.append(d)
            if d.parent == d:
                break
            d = d.parent
        for d in reversed(missing):
            try:
                os.mkdir(d, DIR_MODE)
            except FileExistsError:
                pass
            except OSError as exc:
                raise _refusal(exc, d, "create the folder") from None
            else:
                os.chmod(d, DIR_MODE)
                _fsync_dir(d.parent)
        self._dirs.add(directory)

    def ensure_dir(self, path: str) -> None:
        self._makedirs(self.root / path if path else self.root)

    def write_atomic(self, path: str, chunks: Iterable[bytes | bytearray | memoryview]) -> int:
        full = self._full(path)
        self._makedirs(full.parent)
        tmp = full.with_name(f"{full.name}{TEMP_MARKER}{secrets.token_hex(6)}")
        size = 0
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
        except OSError as exc:
            raise _refusal(exc, full, "write") from None
        try:
            os.fchmod(fd, FILE_MODE)
            with os.fdopen(fd, "wb", buffering=0) as f:
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        written = f.write(view)
                        view = view[written:]
                    size += len(chunk)
                os.fsync(f.fileno())
            os.replace(tmp, full)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise _refusal(exc, full, "write") from None
            raise
        _fsync_dir(full.parent)
        return size

    def create_exclusive(self, path: str, data: bytes) -> bool:
        full = self._full(path)
        self._makedirs(full.parent)
        try:
            fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
        except FileExistsError:
            return False
        except OSError as exc:
            raise _refusal(exc, full, "create") from None
        try:
            os.fchmod(fd, FILE_MODE)
            os.write(fd, data)
            os.fsync(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(full)  # a lock file cut short is no lock: nobody could tell it from a held one
            raise _refusal(exc, full, "create") from None
        finally:
            os.close(fd)
        _fsync_dir(full.parent)
        return True

    def open_read(self, path: str) -> Iterator[bytes]:
        full = self._full(path)
        try:
            f = open(full, "rb")  # noqa: SIM115 - closed by the generator
        except OSError as exc:
            raise _refusal(exc, full, "read") from None

        def pieces() -> Iterator[bytes]:
            with f:
                while piece := f.read(READ_SIZE):
                    yield piece

        return pieces()

    def exists(self, path: str) -> bool:
        return self._full(path).is_file()

    def delete(self, path: str) -> None:
        full = self._full(path)
        try:
            full.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _refusal(exc, full, "delete") from None
        _fsync_dir(full.parent)

    def _walk(self, prefix: str = "") -> Iterator[tuple[str, os.stat_result]]:
        top = self.root / _check(prefix) if prefix else self.root
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                full = os.path.join(dirpath, name)
                try:
                    st = os.stat(full)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    yield (name if rel == "." else f"{rel}/{name}"), st

    def list(self, prefix: str = "") -> list[str]:
        return sorted(p for p, _ in self._walk(prefix) if not is_temp(p))

    def size(self, path: str) -> int:
        return self._full(path).stat().st_size

    def mtime(self, path: str) -> float | None:
        return self._full(path).stat().st_mtime

    def total_size(self) -> int:
        return sum(st.st_size for _, st in self._walk())

    def clean_temp(self, older_than: float) -> int:
        cutoff = time.time() - older_than
        removed = 0
        for dirpath, _, filenames in os.walk(self.root):  # every open: names only, a stat for temp files alone
            for name in filenames:
                if TEMP_MARKER not in name:
                    continue
                full = os.path.join(dirpath, name)
                try:
                    if os.stat(full).st_mtime < cutoff:
                        os.unlink(full)
                        removed += 1
                except OSError:
                    pass
        return removed

    def is_empty(self) -> bool:
        if not self.root.exists():
            return True
        if not self.root.is_dir():
            raise GuardError(f"{self.location} is not a directory", EXIT_USAGE)
        return not any(self.root.iterdir())


# --- fsspec --------------------------------------------------------------------------------------------------

# Backends where writing an object is already all-or-nothing (one PUT): no temp file and rename.
_OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "memory"}


def _as_epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class FsspecStorage(Storage):
    """Any fsspec filesystem. Object stores get each file in one PUT (atomic by nature); other
    backends write a temp file and move it. A file is buffered in memory while written (repository
    files are at most one chunk, 4 MiB by default), and read with one GET on object stores.
    ``create_exclusive`` checks, then uses the backend's create-only write where it has one (S3
    conditional writes), else a plain write, and reads the file back. Cached listings are
    dropped before each look-up: other processes change the repository too."""

    def __init__(self, url: str):
        self.location = url
        try:
            import fsspec
        except ImportError:
            raise GuardError(f"{url}: fsspec is not installed (pip install fsspec s3fs)", EXIT_USAGE) from None
        try:
            self.fs, root = fsspec.core.url_to_fs(url)
        except ImportError as exc:
            raise GuardError(
                f"{url}: a package this URL needs is missing ({exc}); pip install fsspec s3fs", EXIT_USAGE
            ) from None
        except (ValueError, OSError) as exc:
            raise GuardError(f"{url}: cannot open this location ({exc})", EXIT_USAGE) from None
        self.root = root.rstrip("/")
        protocols = self.fs.protocol if isinstance(self.fs.protocol, (tuple, list)) else (self.fs.protocol,)
        self.object_store = bool(set(protocols) & _OBJECT_STORES)

    def _full(self, path: str) -> str:
        return f"{self.root}/{_check(path)}"

    def _rel(self, full: str) -> str:
        full = self.fs._strip_protocol(full)
        root = self.fs._strip_protocol(self.root).rstrip("/")
        return full[len(root) :].lstrip("/") if full.startswith(root) else full

    def write_atomic(self, path: str, chunks: Iterable[bytes | bytearray | memoryview]) -> int:
        data = b"".join(bytes(c) for c in chunks)
        full = self._full(path)
        if self.object_store:
            self.fs.pipe_file(full, data)
        else:
            parent = full.rsplit("/", 1)[0]
            self.fs.makedirs(parent, exist_ok=True)
            tmp = f"{full}{TEMP_MARKER}{secrets.token_hex(6)}"
            self.fs.pipe_file(tmp, data)
            try:
                self.fs.mv(tmp, full)
            except BaseException:
                with contextlib.suppress(Exception):  # best effort: the error being raised is the one to report
                    self.fs.rm_file(tmp)
                raise
        return len(data)

    def _fresh(self, full: str) -> None:
        """Forget what the backend cached about ``full``. fsspec filesystems are shared per process
        and cache listings (s3fs: every ``find`` fills the cache that ``info``/``exists`` answer
        from), so without this a file another process wrote or deleted since would be reported
        wrongly: a deleted blob as present, a new lock as absent."""
        with contextlib.suppress(Exception):  # a backend without a cache
            self.fs.invalidate_cache(full)

    def create_exclusive(self, path: str, data: bytes) -> bool:
        full = self._full(path)
        self._fresh(full)
        if self.fs.exists(full):
            # Also where the create-only write exists: some S3-compatible servers accept
            # If-None-Match and ignore it, and would let a second taker overwrite a held lock.
            return False
        try:
            self.fs.pipe_file(full, data, mode="create")
        except FileExistsError:
            return False
        except (TypeError, ValueError, NotImplementedError):
            self.fs.pipe_file(full, data)  # no create-only write in this backend: checked above
        # A backend (or an S3-compatible server) may accept the create-only flag and ignore it,
        # overwriting a file another process had created: read back, so that of two writers racing
        # for the same name at least the overwritten one knows it lost.
        try:
            return self.read_bytes(path) == data
        except FileNotFoundError:
            return False

    def open_read(self, path: str) -> Iterator[bytes]:
        full = self._full(path)
        self._fresh(full)
        if self.object_store:
            # One GET for the whole object (repository files are at most a chunk): the bytes all
            # come from one version of it, and a missing object fails here, at once.
            data = self.fs.cat_file(full)

            def pieces() -> Iterator[bytes]:
                view = memoryview(data)
                for start in range(0, len(view), READ_SIZE):
                    yield bytes(view[start : start + READ_SIZE])

            return pieces()
        f = self.fs.open(full, "rb")

        def stream() -> Iterator[bytes]:
            with f:
                while piece := f.read(READ_SIZE):
                    yield piece

        return stream()

    def exists(self, path: str) -> bool:
        full = self._full(path)
        self._fresh(full)
        return bool(self.fs.isfile(full))

    def delete(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._full(path))

    def _find(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        top = self._full(prefix) if prefix else self.root
        self._fresh(top)
        try:
            found = self.fs.find(top, detail=True)
        except FileNotFoundError:
            return {}
        files = {}
        for name, info in found.items():
            # A key ending in "/" is a folder marker (the S3 console's "Create folder", some sync
            # tools), never a repository file: it must not make an empty location look used.
            if info.get("type", "file") != "file" or name.endswith("/"):
                continue
            rel = self._rel(name)
            if rel and not rel.endswith("/"):
                files[rel] = info
        return files

    def list(self, prefix: str = "") -> list[str]:
        return sorted(p for p in self._find(prefix) if not is_temp(p))

    def size(self, path: str) -> int:
        full = self._full(path)
        self._fresh(full)
        return int(self.fs.size(full))

    def mtime(self, path: str) -> float | None:
        full = self._full(path)
        self._fresh(full)
        info = self.fs.info(full)
        for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
            if info.get(key) is not None:
                return _as_epoch(info[key])
        return None

    def total_size(self) -> int:
        return sum(int(info.get("size") or 0) for info in self._find().values())

    def clean_temp(self, older_than: float) -> int:
        if self.object_store:
            return 0  # never makes temp files
        cutoff = time.time() - older_than
        removed = 0
        for path in self._find():
            if is_temp(path):
                when = self.mtime(path)
                if when is not None and when < cutoff:
                    self.delete(path)
                    removed += 1
        return removed

    def is_empty(self) -> bool:
        return not self._find()


def open_storage(location: str) -> Storage:
    """The storage for a location: a plain path or ``file://`` URL is a local directory, any other
    URL goes through fsspec."""
    if location.startswith("file://"):
        parsed = urlparse(location)
        if parsed.netloc not in ("", "localhost"):
            raise GuardError(f"{location}: a file:// URL names a local path (file:///path/to/repo)", EXIT_USAGE)
        return LocalStorage(Path(unquote(parsed.path)), location)
    if "://" in location:
        return FsspecStorage(location)
    return LocalStorage(Path(location).expanduser(), location)
