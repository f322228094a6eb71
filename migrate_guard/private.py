"""One private directory per process for everything secret or plaintext that must touch a disk: password
files for the native tools, copies of SQLite databases, scratch databases.

``$TMPDIR/migrate-guard-<uid>/`` (0700, owned by the user, never a symlink) holds one directory per
process, ``<pid>-<random>/``, with a ``held`` file the process keeps an exclusive ``flock`` on for as long
as it lives. The directory is removed when the process exits; a process killed with -9 cannot remove
it, so every process removes, the first time it needs its own, the directories whose lock nobody holds
(their process is dead: the kernel drops a lock with its holder, and a reused pid does not hold it).
"""

from __future__ import annotations

import atexit
import fcntl
import os
import secrets
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from .errors import GuardError

_lock = threading.Lock()
_mine: tuple[int, Path, int] | None = None  # (pid, directory, fd of its held file)


def _base() -> Path:
    base = Path(tempfile.gettempdir()) / f"migrate-guard-{os.getuid()}"
    try:
        base.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(base)
    except OSError as exc:
        raise GuardError(f"cannot create the private temporary directory {base}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise GuardError(f"{base} is not a directory owned by this user: remove it, or set TMPDIR elsewhere")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(base, 0o700)
    return base


def remove_stale(base: Path | None = None) -> list[Path]:
    """Remove the directories of processes that are gone (their ``held`` lock is free); returns them."""
    base = base or _base()
    removed = []
    for entry in base.iterdir():
        if _mine is not None and entry == _mine[1]:
            continue
        held = entry / "held"
        try:
            fd = os.open(held, os.O_RDWR)
        except FileNotFoundError:
            # no lock file: a process between mkdir and open (give it a minute) or one that died there
            with suppress(OSError):
                if entry.is_dir() and _age(entry) > 60:
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry)
            continue
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # its process is alive
        try:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        finally:
            os.close(fd)
    return removed


def _age(path: Path) -> float:
    import time

    return time.time() - path.stat().st_mtime


def private_dir() -> Path:
    """This process's private directory (created on first use, after removing dead processes' ones)."""
    global _mine
    with _lock:
        if _mine is not None and _mine[0] == os.getpid():
            return _mine[1]
        base = _base()  # after a fork the child makes its own: the parent's goes with the parent
        remove_stale(base)
        directory = base / f"{os.getpid()}-{secrets.token_hex(4)}"
        directory.mkdir(mode=0o700)
        fd = os.open(directory / "held", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.set_inheritable(fd, False)
        _mine = (os.getpid(), directory, fd)
        atexit.register(_remove, os.getpid())
        return directory


def _remove(pid: int) -> None:
    global _mine
    if _mine is None or _mine[0] != pid or os.getpid() != pid:
        return
    shutil.rmtree(_mine[1], ignore_errors=True)
    with suppress(OSError):
        os.close(_mine[2])
    _mine = None


@contextmanager
def private_tempdir(prefix: str = "tmp-") -> Iterator[Path]:
    """A new directory inside the private one, removed when the block ends."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=private_dir()))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
