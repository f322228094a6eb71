"""The application's files in a snapshot: ``[backup] paths`` (uploads, configuration) beside the database.

A backup walks the configured paths (``exclude`` patterns left out), stores each regular file's content
as a stream (content-defined chunks, deduplicated and encrypted like table streams) and lists every
entry in the manifest's ``files`` section: path, type, mode, mtime and, for files, size, SHA-256 and
blobs; symlinks keep their target, empty directories are entries too. A file whose size, mtime, inode
and ctime match its entry in the newest earlier snapshot of the same paths on this host is not read
again: its blobs are reused (restic's rule). A file that changes while it is read is reported.

A restore writes only beneath the paths configured now (or beneath ``--to DIR``), each file to a
temporary name beside it, checked against its SHA-256, then renamed into place; it never deletes a file.
docs/repository-format.md ("Files") is the format.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import secrets
import socket
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import BackupSettings
from ..errors import EXIT_FAILED, ConfigError, GuardError, UsageError
from .crypto import IntegrityError
from .engines.base import StreamRef
from .manifest import file_entries
from .repository import Repository

READ_SIZE = 1 << 20
_LEFTOVER = re.compile(r"\..+\.mg-restore-[0-9a-f]{8}")  # a restore's temporary file (see restore_files)
READERS = 4  # files read and stored at once


# --- patterns ------------------------------------------------------------------------------------------


def matches(patterns: Sequence[str], path: str, is_dir: bool) -> bool:
    """Whether ``path`` (an entry path, ``/``-separated) matches one of the patterns, gitignore-like: a
    pattern without ``/`` matches any component's name (``*.tmp``, ``.env``); one ending in ``/`` only
    directories (``cache/``); one with a ``/`` inside the whole path from the start (``config/*.key``)."""
    name = path.rsplit("/", 1)[-1]
    for pattern in patterns:
        directory_only = pattern.endswith("/")
        body = pattern.rstrip("/")
        if directory_only and not is_dir:
            continue
        if "/" in body:
            if fnmatch.fnmatchcase(path, body.lstrip("/")) or fnmatch.fnmatchcase(path, body):
                return True
        elif fnmatch.fnmatchcase(name, body):
            return True
    return False


def configured_paths(settings: BackupSettings) -> list[str]:
    """The paths a backup walks: ``paths``, and the secret paths that name a file rather than a pattern."""
    paths = list(settings.paths)
    for secret in settings.secret_paths:
        literal = secret.rstrip("/")
        if not any(c in literal for c in "*?[") and not _under_any(literal, paths):
            paths.append(os.path.normpath(literal).replace(os.sep, "/"))
    return paths


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _under_any(path: str, roots: Iterable[str]) -> bool:
    return any(_under(path, r) for r in roots)


def _absolute(root: Path, path: str) -> Path:
    return Path(path) if os.path.isabs(path) else root / path


# --- backup ----------------------------------------------------------------------------------------------


@dataclass
class _Found:
    path: str  # the entry path: a configured path, then '/'-separated components
    full: Path
    st: os.stat_result
    kind: str  # file | dir | symlink
    secret: bool = False


@dataclass
class FilesBackup:
    """What a files backup stored: the manifest's ``files`` section, and what to tell the user."""

    section: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def _scan(
    root: Path, settings: BackupSettings, warnings: list[str], skip: Path | None = None
) -> tuple[list[_Found], list[str]]:
    found: list[_Found] = []
    missing: list[str] = []
    exclude = settings.exclude

    def visit(entry_path: str, full: Path, top: bool, inherited: bool = False) -> None:
        try:
            st = os.lstat(full)
            if top and stat.S_ISLNK(st.st_mode) and os.path.isdir(full):
                st = os.stat(full)  # a configured path that links to a directory (a shared uploads dir): its content
        except FileNotFoundError:
            if top:
                missing.append(entry_path)
            return
        except OSError as exc:
            warnings.append(f"{entry_path}: cannot be read ({exc.strerror or exc}): not in this snapshot")
            return
        is_dir = stat.S_ISDIR(st.st_mode)
        if not top and (matches(exclude, entry_path, is_dir) or _LEFTOVER.fullmatch(full.name)):
            return  # excluded, or a killed restore's temporary file (the next restore removes it)
        try:
            entry_path.encode("utf-8")
        except UnicodeEncodeError:
            warnings.append(f"{entry_path!r}: the name is not UTF-8: not in this snapshot")
            return
        secret = inherited or matches(settings.secret_paths, entry_path, is_dir)  # keys/: everything in it
        if stat.S_ISLNK(st.st_mode):
            found.append(_Found(entry_path, full, st, "symlink", secret))
        elif stat.S_ISREG(st.st_mode):
            found.append(_Found(entry_path, full, st, "file", secret))
        elif is_dir:
            if skip is not None and os.path.realpath(full) == str(skip):
                warnings.append(f"{entry_path}/: the backup repository itself: not in this snapshot")
                return
            found.append(_Found(entry_path, full, st, "dir", secret))
            try:
                names = sorted(os.listdir(full))
            except OSError as exc:
                warnings.append(
                    f"{entry_path}/: cannot be listed ({exc.strerror or exc}): its contents are not in this snapshot"
                )
                return
            for name in names:
                visit(f"{entry_path}/{name}", full / name, False, secret)
        else:
            warnings.append(f"{entry_path}: not a file, directory or symlink: not in this snapshot")

    for path in configured_paths(settings):
        visit(path.rstrip("/") or path, _absolute(root, path), True)
    found.sort(key=lambda f: f.path)
    # a secret path that is not there (no .env on this machine) is not missing: nothing to keep
    return found, [m for m in missing if m in settings.paths]


def _cache_key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def _entry(f: _Found) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "path": f.path,
        "type": f.kind,
        "mode": stat.S_IMODE(f.st.st_mode),
        "mtime_ns": f.st.st_mtime_ns,
    }
    if f.secret:
        entry["secret"] = True
    return entry


@dataclass
class FilesScan:
    """The configured paths as walked (``scan_files``): what ``backup_files`` stores."""

    root: Path
    settings: BackupSettings
    found: list[_Found]
    missing: list[str]
    warnings: list[str]


def scan_files(root: Path, settings: BackupSettings, encrypted: bool, location: str) -> FilesScan:
    """Walk the configured paths. A secret file (``secret_paths``) for a repository that is not encrypted
    is refused here, before the backup stores anything, database included."""
    warnings: list[str] = []
    local = "://" not in location or location.startswith("file://")
    skip = Path(os.path.realpath(location.removeprefix("file://"))) if local else None
    found, missing = _scan(root, settings, warnings, skip)
    secret = [f.path for f in found if f.secret and f.kind == "file"]
    if secret and not encrypted:
        raise ConfigError(
            f"{secret[0]} is a secret (backup.secret_paths) and {location} is not encrypted: "
            "set a key (migrate-guard key add) or exclude it"
        )
    return FilesScan(root, settings, found, missing, warnings)


def backup_files(
    repo: Repository,
    scan: FilesScan,
    previous: Sequence[dict[str, Any]],
    on_file: Callable[[str], None] | None = None,
) -> FilesBackup:
    """Store the scanned files; ``previous`` are earlier manifests (oldest first) whose unchanged files
    need not be read again."""
    root, settings, found, missing = scan.root, scan.settings, scan.found, scan.missing
    warnings = list(scan.warnings)
    reuse = _reusable(repo, root, previous)
    changed: list[str] = []

    def store(f: _Found) -> dict[str, Any]:
        entry = _entry(f)
        if f.kind == "symlink":
            entry["target"] = os.readlink(f.full)
            return entry
        if f.kind == "dir":
            return entry
        old = reuse.get(f.path)
        if old is not None and old.get("cache") == _cache_key(f.st):
            entry.update(size=old["size"], sha256=old["sha256"], blobs=list(old["blobs"]), cache=old["cache"])
            return entry
        if on_file is not None:
            on_file(f.path)
        return _store_file(repo, f, entry, changed)

    with ThreadPoolExecutor(READERS, thread_name_prefix="migrate-guard-files") as pool:
        entries = [e for e in pool.map(store, found) if not e.get("vanished")]
    warnings += [f"{p}: changed while it was read (the snapshot holds what was read)" for p in sorted(changed)]
    warnings += [f"{p}: not found (backup.paths)" for p in missing]
    files = [e for e in entries if e["type"] == "file"]
    section = {
        "root": str(root),
        "host": socket.gethostname(),
        "paths": configured_paths(settings),
        "exclude": list(settings.exclude),
        "entries": entries,
        "count": len(files),
        "bytes": sum(e["size"] for e in files),
        "changed": sorted(changed),
        "missing": missing,
    }
    return FilesBackup(section, warnings)


def _store_file(repo: Repository, f: _Found, entry: dict[str, Any], changed: list[str]) -> dict[str, Any]:
    digest = hashlib.sha256()
    try:
        fd = os.open(f.full, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return {**entry, "vanished": True}
    with os.fdopen(fd, "rb", buffering=0) as handle:
        before = os.fstat(handle.fileno())
        size = 0

        def pieces() -> Iterator[bytes]:
            nonlocal size
            while True:
                piece = handle.read(READ_SIZE)
                if not piece:
                    return
                size += len(piece)
                digest.update(piece)
                yield piece

        ref = repo.write_stream(f.path, pieces())
        after = os.fstat(handle.fileno())
    scanned, opened, done = _cache_key(f.st), _cache_key(before), _cache_key(after)
    entry.update(size=ref.bytes, sha256=digest.hexdigest(), blobs=ref.blobs, mtime_ns=after.st_mtime_ns)
    if opened[:2] != scanned[:2] or done != opened or size != after.st_size:
        changed.append(f.path)  # no cache: read again next time
    else:
        entry["cache"] = done
    return entry


def _reusable(repo: Repository, root: Path, previous: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each file's newest earlier entry taken from this root on this host (whatever paths that backup
    covered: a `--paths` backup in between does not make the next one read everything), when all its
    blobs are present and none is recorded damaged."""
    host = socket.gethostname()
    found: dict[str, dict[str, Any]] = {}
    known: set[str] | None = None
    damaged: dict[str, Any] = {}
    for manifest in reversed(previous):  # newest first
        section = manifest.get("files")
        if not isinstance(section, dict) or section.get("root") != str(root) or section.get("host") != host:
            continue
        if known is None:
            known, damaged = repo.known_blobs(), repo.damaged_blobs()
        for e in file_entries(manifest):
            if (
                e.get("type") == "file"
                and e.get("path") not in found
                and e.get("cache")
                and all(b in known and b not in damaged for b in e.get("blobs", []))
            ):
                found[e["path"]] = e
    return found


# --- verify ------------------------------------------------------------------------------------------------


def _stream(entry: dict[str, Any]) -> StreamRef:
    """A file entry's content, as the repository reads it."""
    return StreamRef(list(entry["blobs"]), int(entry["size"]))


def verify_files(repo: Repository, manifest: dict[str, Any]) -> list[str]:
    """Read every file of the snapshot back: its blobs (tags and ids), then its size and SHA-256."""
    problems = []
    for entry in file_entries(manifest):
        if entry.get("type") != "file":
            continue
        digest = hashlib.sha256()
        try:
            for piece in repo.read_stream(_stream(entry)):
                digest.update(piece)
        except IntegrityError as exc:
            problems.append(f"file {entry['path']}: {exc.message}")
            continue
        if digest.hexdigest() != entry.get("sha256"):
            problems.append(f"file {entry['path']}: its content does not match its SHA-256")
    return problems


# --- restore ------------------------------------------------------------------------------------------------


@dataclass
class FileAction:
    entry: dict[str, Any]
    target: Path
    action: str  # create | replace | metadata (mode or mtime only) | unchanged | skip
    why: str = ""
    top: bool = False  # a configured path itself, in place: followed when it is a symlink (to a shared dir)


@dataclass
class FilesPlan:
    actions: list[FileAction]
    into: str  # where: "in place" or the --to directory
    kept: list[str]  # files there now that the snapshot does not hold: left as they are
    limits: list[Path]  # resolved: nothing is written outside these

    @property
    def replaces(self) -> list[FileAction]:
        return [a for a in self.actions if a.action == "replace"]

    def describe(self, verbose: bool = False) -> list[str]:
        counts: dict[str, int] = {}
        for a in self.actions:
            counts[a.action] = counts.get(a.action, 0) + 1
        summary = ", ".join(f"{n} {what}" for what, n in counts.items()) or "nothing"
        lines = [f"files {self.into}: {summary}"]
        for a in self.actions:
            if verbose or a.action not in ("unchanged",):
                lines.append(f"  {a.action:9} {a.entry['path']}" + (f" ({a.why})" if a.why else ""))
        if self.kept:
            shown = ", ".join(self.kept[:5]) + (", ..." if len(self.kept) > 5 else "")
            lines.append(f"  {len(self.kept)} file(s) there now are not in the snapshot and are kept: {shown}")
        return lines


def _safe_entry_path(path: Any) -> bool:
    if not isinstance(path, str) or not path or "\0" in path:
        return False
    parts = path.lstrip("/").split("/")
    return all(p not in ("", ".", "..") for p in parts)


def plan_files(
    manifest: dict[str, Any],
    root: Path,
    settings: BackupSettings,
    to_dir: Path | None = None,
    only: Sequence[str] = (),
) -> FilesPlan:
    """What restoring the snapshot's files would do. In place, only beneath the paths configured now;
    with ``to_dir``, beneath it. ``only``: entry paths (or directories of them) to restore. A target
    that resolves outside (a symlinked directory on the way) is refused here, before anything is written."""
    section = manifest.get("files")
    if not isinstance(section, dict):
        raise UsageError(f"snapshot {manifest['id']} holds no files")
    allowed = configured_paths(settings)
    bounds = [to_dir] if to_dir is not None else [_absolute(root, p) for p in allowed]
    limits = [Path(os.path.realpath(b)) for b in bounds]
    wanted = [p.strip().rstrip("/") for p in only if p.strip()]
    entries = [e for e in section.get("entries", []) if not wanted or _under_any(str(e.get("path")), wanted)]
    if wanted and not entries:
        raise UsageError(f"not in snapshot {manifest['id']}: {', '.join(wanted)}")
    actions = []
    outside = []
    for entry in entries:
        path = entry.get("path")
        if not _safe_entry_path(path):
            actions.append(FileAction(entry, Path("."), "skip", "not a safe relative path"))
            continue
        if to_dir is None and not _under_any(path, allowed):
            actions.append(FileAction(entry, _absolute(root, path), "skip", "outside the paths configured now"))
            continue
        target = to_dir / path.lstrip("/") if to_dir is not None else _absolute(root, path)
        top = path in allowed and to_dir is None
        if not _within(target, limits, top):
            outside.append(f"{target} (resolves to {_resolved(target, top)})")
        action = _compare(entry, target, top)
        action.top = top
        actions.append(action)
    if outside:
        raise GuardError(
            f"{outside[0]} is outside the paths a restore may write"
            + (f", and {len(outside) - 1} more" if len(outside) > 1 else "")
            + ": a symlinked directory leads elsewhere; nothing was written",
            EXIT_FAILED,
        )
    kept = _extra_files(section, entries, root, to_dir, wanted)
    return FilesPlan(actions, f"into {to_dir}" if to_dir is not None else "in place", kept, limits)


def _resolved(path: Path, follow: bool = False) -> Path:
    """Where ``path`` is once the directories leading to it are resolved; the name itself is not
    followed (a restore replaces a symlink, it does not write through it) unless ``follow``."""
    if follow:
        return Path(os.path.realpath(path))
    existing, rest = path.parent, [path.name]
    while not existing.exists() and existing != existing.parent:
        rest.append(existing.name)
        existing = existing.parent
    return Path(os.path.realpath(existing)).joinpath(*reversed(rest))


def _within(path: Path, limits: list[Path], follow: bool = False) -> bool:
    real = _resolved(path, follow)
    return any(real == lim or lim in real.parents for lim in limits)


def _compare(entry: dict[str, Any], target: Path, top: bool = False) -> FileAction:
    try:
        st = os.stat(target) if top else os.lstat(target)
    except FileNotFoundError:
        return FileAction(entry, target, "create")
    kind = entry.get("type")
    if kind == "dir":
        if stat.S_ISDIR(st.st_mode):
            return FileAction(entry, target, _metadata(entry, st))
        return FileAction(entry, target, "skip", "something else is there now, not a directory: left as it is")
    if stat.S_ISDIR(st.st_mode):
        return FileAction(entry, target, "skip", "a directory is there now: left as it is")
    if kind == "symlink":
        same = stat.S_ISLNK(st.st_mode) and os.readlink(target) == entry.get("target")
        return FileAction(entry, target, "unchanged" if same else "replace")
    if not stat.S_ISREG(st.st_mode) or st.st_size != entry.get("size"):
        return FileAction(entry, target, "replace")
    return FileAction(entry, target, _metadata(entry, st) if _sha256(target) == entry.get("sha256") else "replace")


def _metadata(entry: dict[str, Any], st: os.stat_result) -> str:
    same = stat.S_IMODE(st.st_mode) == entry.get("mode") and st.st_mtime_ns == entry.get("mtime_ns")
    return "unchanged" if same else "metadata"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while piece := handle.read(READ_SIZE):
            digest.update(piece)
    return digest.hexdigest()


def _extra_files(
    section: dict[str, Any], entries: list[dict[str, Any]], root: Path, to_dir: Path | None, wanted: list[str]
) -> list[str]:
    held = {e.get("path") for e in entries}
    extra = []
    for entry in entries:
        if entry.get("type") != "dir" or not _safe_entry_path(entry.get("path")):
            continue
        path = entry["path"]
        base = to_dir / path.lstrip("/") if to_dir is not None else _absolute(root, path)
        try:
            names = os.listdir(base)
        except OSError:
            continue
        extra += [f"{path}/{n}" for n in names if f"{path}/{n}" not in held and not _LEFTOVER.fullmatch(n)]
    return sorted(extra)


def restore_files(repo: Repository, plan: FilesPlan) -> int:
    """Carry out a plan: directories, then files and symlinks (each to a temporary name beside it,
    checked, renamed into place), then the directories' modes and mtimes, deepest first. Every target
    is checked against the plan's limits again just before it is written. Returns the entries written."""
    written = 0
    dirs: list[FileAction] = []
    _remove_leftovers(plan)
    for a in plan.actions:
        if a.action in ("skip",):
            continue
        _inside(a, plan.limits)
        kind = a.entry["type"]
        if kind == "dir":
            if a.action == "create":
                a.target.mkdir(parents=True, exist_ok=True)
            dirs.append(a)
            continue
        if a.action in ("unchanged", "metadata"):
            if kind == "file":
                os.chmod(a.target, a.entry["mode"], follow_symlinks=False)
            _set_times(a, follow=kind != "symlink")
            written += a.action == "metadata"
            continue
        a.target.parent.mkdir(parents=True, exist_ok=True)
        temp = a.target.parent / f".{a.target.name}.mg-restore-{secrets.token_hex(4)}"
        try:
            if kind == "symlink":
                os.symlink(a.entry["target"], temp)
            else:
                _write_file(repo, a.entry, temp)
            os.replace(temp, a.target)
        except BaseException:
            with suppress(OSError):
                os.unlink(temp)
            raise
        _set_times(a, follow=kind != "symlink")
        written += 1
    for a in sorted(dirs, key=lambda d: d.target, reverse=True):  # deepest first: their contents are written
        _inside(a, plan.limits)
        os.chmod(a.target, a.entry["mode"])
        _set_times(a, follow=True)
        written += a.action in ("create", "metadata")
    return written


def _remove_leftovers(plan: FilesPlan) -> None:
    """Delete the temporary files a killed restore left beside the files it was writing (``.name.mg-
    restore-<8 hex>``, this module's own names), in the directories this restore writes to."""
    seen: set[Path] = set()
    for a in plan.actions:
        folder = a.target.parent
        if a.action == "skip" or folder in seen or not _within(a.target, plan.limits, a.top):
            continue
        seen.add(folder)
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if _LEFTOVER.fullmatch(name):
                with suppress(OSError):
                    os.unlink(folder / name)


def _inside(a: FileAction, limits: list[Path]) -> None:
    """Refuse the action's target unless it is one of ``limits`` or beneath one once the directories
    leading to it are resolved (a symlinked directory on the way cannot lead out); checked again right
    before anything is written there (the plan checked it first)."""
    if not _within(a.target, limits, a.top):
        raise GuardError(
            f"{a.target}: resolves to {_resolved(a.target, a.top)}, outside the paths a restore may write: "
            "nothing written there",
            EXIT_FAILED,
        )


def _write_file(repo: Repository, entry: dict[str, Any], temp: Path) -> None:
    digest = hashlib.sha256()
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "wb") as out:
        for piece in repo.read_stream(_stream(entry)):
            digest.update(piece)
            out.write(piece)
        out.flush()
        os.fsync(out.fileno())
    if digest.hexdigest() != entry.get("sha256"):
        raise IntegrityError(f"file {entry['path']}: its content does not match its SHA-256")
    os.chmod(temp, entry["mode"])


def _set_times(a: FileAction, follow: bool) -> None:
    mtime = a.entry.get("mtime_ns")
    if not isinstance(mtime, int):
        return
    with suppress(OSError):
        os.utime(a.target, ns=(mtime, mtime), follow_symlinks=follow)
