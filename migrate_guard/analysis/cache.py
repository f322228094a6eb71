"""What ``check`` remembers between runs, in ``.migrate-guard/cache/check/`` beside alembic.ini.

Two kinds of record, each one file named by the digest of everything it depends on, written with
pickle and read back by an unpickler that constructs nothing but the builtin containers and the
analysis' own dataclasses (a damaged or planted record cannot run code, it is only ignored):

- per revision (``rev-*``): its graph attributes and what it does (the ``RevisionOps`` the offline
  rendering, or a static reading, produced), so an unchanged revision is neither imported nor
  rendered; the findings are always computed afresh from them, so a cached run reports the same
  bytes. Beside them one ``env-*`` record per context: what env.py itself emitted, and the project
  modules the run loaded (models, helpers), whose contents every ``rev-*`` key includes.
- per command (``run-*``): the rendered report of one ``check`` invocation whose selection did not ask
  the database, with every input it read (files, directory listings, modules that failed to import).
  Replaying it needs neither Alembic nor SQLAlchemy loaded: that is what makes a second run cheap.

A context key covers: the package version and its code, Python, Alembic, SQLAlchemy and sqlparse, the
alembic config file (script_location, sqlalchemy.url, ...) and the effective URL, the dialect, env.py,
the guard settings as loaded (server versions included), every rule file, and the acknowledgements
and other options given on the command line. Not covered: environment variables env.py or a revision
reads, and modules a revision would import that live inside the Python installation (site-packages):
``--no-cache`` is the answer there. The cache is never a reason to fail: an unreadable or unwritable
one is ignored, with one note.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import io
import json
import os
import pickle
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import Project, find_config_path
from ..errors import GuardError

CACHE_DIR = Path(".migrate-guard") / "cache" / "check"
SUFFIX = ".rec"
FORMAT = 2  # bump when a record's layout changes
MAX_BYTES = 64 * 1024 * 1024  # the oldest records go once the cache holds more
MAX_FILES = 20_000
_STALE_TEMP = 3600.0  # seconds: a temporary file this old was left by a killed run

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:40]


def file_digest(path: str | os.PathLike[str]) -> str:
    """The content's digest; ``-`` for a file that is not there (its absence is an input too)."""
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()[:40]
    except OSError:
        return "-"


def listing_digest(directory: str, recursive: bool, pattern: str = "") -> str:
    """The names under ``directory`` (ending in ``pattern``; below it too when ``recursive``), __pycache__ apart."""
    names: list[str] = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__") if recursive else []
        rel = os.path.relpath(root, directory)
        names.extend(os.path.join(rel, f) for f in sorted(files) if f.endswith(pattern))
        names.extend(os.path.join(rel, d) + os.sep for d in dirs)
    return digest(sorted(names))


def rule_files(dirs: Iterable[Path]) -> list[Path]:
    """Every rule file, and the data files below a rule directory (the built-in server behaviour)."""
    return [f for d in dirs for f in sorted(Path(d).rglob("*.toml"))]


_code: str | None = None


def code_digest() -> str:
    """This package's own code and the libraries that read revisions: a changed checkout or upgrade
    invalidates everything, even without a new version number."""
    global _code
    if _code is None:
        files = sorted(_PACKAGE_DIR.rglob("*.py"))
        libraries = []
        for name in ("alembic", "sqlalchemy", "sqlparse"):
            spec = importlib.util.find_spec(name)  # a top-level name: found, not imported
            origin = spec.origin if spec else None
            libraries.append((name, origin, file_digest(origin) if origin else "-"))
        _code = digest(
            FORMAT,
            __version__,
            sys.version,
            sys.executable,
            [(str(f.relative_to(_PACKAGE_DIR)), file_digest(f)) for f in files],
            libraries,
        )
    return _code


def project_modules(exclude: Iterable[str] = ()) -> dict[str, str]:
    """Source files of the modules loaded now that are not the Python installation's nor this
    package's: the project's own (models, helpers), whichever revision or env.py imported them."""
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    installed = tuple(
        {os.path.join(p, "") for p in prefixes} | {os.path.join(os.path.realpath(p), "") for p in prefixes}
    )
    own = (str(_PACKAGE_DIR) + os.sep, os.path.dirname(os.path.dirname(__file__)) + os.sep)
    skip = set(exclude)
    found: dict[str, str] = {}
    for module in list(sys.modules.values()):
        filename = getattr(module, "__file__", None)
        if not isinstance(filename, str) or not filename.endswith(".py") or filename.startswith(installed + own):
            continue
        path = os.path.realpath(filename)
        if path in skip or path.startswith(installed + own) or "site-packages" in path or "dist-packages" in path:
            continue
        found[path] = file_digest(path)
    return found


def still_missing(names: Iterable[str], root: Path) -> bool:
    """Whether each module a revision failed to import is still not there to import."""
    names = list(names)
    if names:
        importlib.invalidate_caches()  # a directory's listing is cached by its mtime, which may not have moved
    for name in names:
        top = name.split(".", 1)[0]
        if not top:
            continue
        if importlib.machinery.PathFinder.find_spec(top, [str(root), *sys.path]) is not None:
            return False
    return True


# --- the store ------------------------------------------------------------------------------------


@dataclass
class Store:
    """JSON records under ``directory``: written atomically, read best-effort, bounded in size."""

    directory: Path
    notes: list[str] = field(default_factory=list)
    wrote: bool = False
    _broken: bool = False

    @classmethod
    def beside(cls, config_path: Path) -> Store:
        return cls(config_path.parent / CACHE_DIR)

    def get(self, key: str) -> Any:
        try:
            with open(self.directory / f"{key}{SUFFIX}", "rb") as fh:
                record = decode(fh.read())
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError) as exc:  # unreadable, torn or not ours: as if absent
            self._note(f"check cache entry ignored ({type(exc).__name__})")
            return None
        if not isinstance(record, dict) or record.get("key") != key:
            return None
        return record.get("value")

    def put(self, key: str, value: Any) -> None:
        if self._broken:
            return
        try:
            data = encode({"key": key, "value": value})
        except TypeError:
            return  # something not representable: that record is simply not kept
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=SUFFIX)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, self.directory / f"{key}{SUFFIX}")  # readers see the old record or the new one
            except BaseException:
                with _quiet():
                    os.unlink(tmp)
                raise
        except OSError as exc:
            self._broken = True
            self._note(f"check cache not written ({exc.strerror or type(exc).__name__}: {self.directory})")
            return
        self.wrote = True

    def evict(self, max_bytes: int = MAX_BYTES, max_files: int = MAX_FILES) -> None:
        """Drop the oldest records beyond the bounds, and temporary files a killed run left."""
        if not self.wrote:
            return
        try:
            entries = []
            now = time.time()
            with os.scandir(self.directory) as it:
                for entry in it:
                    st = entry.stat()
                    if entry.name.startswith(".tmp-"):
                        if now - st.st_mtime > _STALE_TEMP:
                            with _quiet():
                                os.unlink(entry.path)
                        continue
                    entries.append((st.st_mtime, st.st_size, entry.path))
            total = sum(size for _, size, _ in entries)
            entries.sort()
            while entries and (total > max_bytes or len(entries) > max_files):
                _, size, path = entries.pop(0)
                with _quiet():
                    os.unlink(path)  # another run may have removed it already
                total -= size
        except OSError:
            return

    def _note(self, text: str) -> None:
        if not self.notes:
            self.notes.append(text)


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        return kind is not None and issubclass(kind, OSError)


# --- values: RevisionOps and what it holds, kept so that they read back equal ---------------------


_CLASSES: dict[str, type] = {}


def _dataclasses() -> dict[str, type]:
    """The classes a record may hold (and decode may construct): the analysis' own data."""
    if not _CLASSES:
        from .acks import Acknowledgement, BadAcknowledgement
        from .engine import RevisionOps
        from .operations import Operation

        for c in (RevisionOps, Operation, Acknowledgement, BadAcknowledgement):
            _CLASSES[f"{c.__module__}.{c.__qualname__}"] = c
    return _CLASSES


class _Pickler(pickle.Pickler):
    """Refuses anything but the builtin containers and scalars (which never reach this method) and
    the analysis dataclasses, so what is written is what :class:`_Unpickler` reads back."""

    def reducer_override(self, obj: Any) -> Any:
        if f"{type(obj).__module__}.{type(obj).__qualname__}" in _CLASSES:
            return NotImplemented  # pickled as usual: its class, then its fields
        if isinstance(obj, type) and f"{obj.__module__}.{obj.__qualname__}" in _CLASSES:
            return NotImplemented
        raise TypeError(f"cannot keep a {type(obj).__name__}")


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        cls = _dataclasses().get(f"{module}.{name}")
        if cls is None:  # never construct, nor call, anything not listed
            raise pickle.UnpicklingError(f"{module}.{name} is not a cache value")
        return cls


def encode(value: Any) -> bytes:
    """``value`` as bytes; TypeError for anything but builtin data and the analysis dataclasses."""
    _dataclasses()
    buffer = io.BytesIO()
    try:
        _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    except (pickle.PicklingError, RecursionError) as exc:
        raise TypeError(str(exc)) from exc
    return buffer.getvalue()


def decode(data: bytes) -> Any:
    """What :func:`encode` was given; ValueError for anything else (torn, damaged, not ours)."""
    try:
        return _Unpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as exc:
        raise ValueError(f"not a cache record ({type(exc).__name__})") from exc


# --- a whole `check` command, replayed ----------------------------------------------------------


@dataclass
class CheckOutput:
    """What a ``check`` command prints: its notes (stderr), its report, its exit code."""

    notes: list[str]
    text: str
    exit_code: int


@dataclass
class RunInputs:
    """Everything a run read, filled in as it goes; the run record is valid while all of it is unchanged."""

    files: dict[str, str] = field(default_factory=dict)  # path -> file_digest
    listings: dict[str, tuple[bool, str, str]] = field(default_factory=dict)  # dir -> (recursive, suffix, digest)
    missing: set[str] = field(default_factory=set)  # modules revisions failed to import
    replayable: bool = False  # the selection did not depend on the database or git

    def add_file(self, path: str | os.PathLike[str], known: str | None = None, resolved: bool = False) -> str:
        name = str(path) if resolved else os.path.realpath(path)
        value = self.files.get(name) or known or file_digest(name)
        self.files[name] = value
        return value

    def add_listing(self, directory: str | os.PathLike[str], recursive: bool, suffix: str = "") -> None:
        name = os.path.realpath(directory)
        self.listings[name] = (recursive, suffix, listing_digest(name, recursive, suffix))


def run_key(config_path: Path, keyed: Mapping[str, Any], fmt: str) -> str:
    return digest("run", code_digest(), str(config_path), sorted(keyed.items()), fmt, os.getcwd())


def replay(config_path: Path, keyed: Mapping[str, Any], fmt: str) -> CheckOutput | None:
    """The output of an earlier identical ``check`` whose every input is unchanged, or None."""
    store = Store.beside(config_path)
    record = store.get("run-" + run_key(config_path, keyed, fmt))
    try:
        if not isinstance(record, dict):
            return None
        for path, value in record["files"].items():
            if file_digest(path) != value:
                return None
        for path, (recursive, suffix, value) in record["listings"].items():
            if listing_digest(path, recursive, suffix) != value:
                return None
        if not still_missing(record["missing"], config_path.parent):
            return None
        return CheckOutput(list(record["notes"]), str(record["text"]), int(record["exit_code"]))
    except (KeyError, TypeError, ValueError):
        return None


def remember(
    config_path: Path,
    keyed: Mapping[str, Any],
    fmt: str,
    output: CheckOutput,
    inputs: RunInputs,
) -> list[str]:
    """Keep ``output`` for :func:`replay`; returns the cache's note, if it could not."""
    store = Store.beside(config_path)
    if inputs.replayable:
        store.put(
            "run-" + run_key(config_path, keyed, fmt),
            {
                "files": inputs.files,
                "listings": {k: list(v) for k, v in inputs.listings.items()},
                "missing": sorted(inputs.missing),
                "notes": output.notes,
                "text": output.text,
                "exit_code": output.exit_code,
            },
        )
    store.evict()
    return store.notes


# --- revisions: what each one does, remembered across runs ----------------------------------------


class RevisionCache:
    """The per-revision records of one ``check`` run (see the module docstring). A context's ``env-*``
    record names the one pack (``pack-*``) that holds its revisions' records, keyed by file path: a run
    that rendered anything writes a new pack with every record it knows, so a run costs one write."""

    def __init__(self, store: Store, root: Path, context: Callable[[str], str], inputs: RunInputs) -> None:
        self.store = store
        self.root = root
        self._context_for = context  # env.py's path -> the context key
        self.inputs = inputs
        self.context: str | None = None
        self.env: dict[str, Any] | None = None  # the context's env record, its project modules unchanged
        self.pack: dict[str, Any] = {}  # real path -> record, as the env record's pack holds them
        self.hits: dict[str, dict[str, Any]] = {}  # real path -> its record, for files unchanged since
        self.digests: dict[str, str] = {}  # real path -> content digest
        self._operations: dict[str, Any] = {}

    def _start(self, env_py: str) -> None:
        self.context = self._context_for(env_py)
        record = self.store.get("env-" + self.context)
        try:
            if isinstance(record, dict) and all(file_digest(p) == v for p, v in record["deps"].items()):
                pack = self.store.get(str(record["pack"]))
                if isinstance(pack, dict):
                    self.env, self.pack = record, pack
        except (KeyError, AttributeError, TypeError):
            self.env, self.pack = None, {}

    def graph_for(self, env_py: str, path: Path) -> dict[str, Any] | None:
        """The remembered graph attributes of revision file ``path``, or None to import it."""
        if self.context is None:
            self._start(env_py)
        real = str(path)  # Alembic resolved it
        self.digests[real] = self.inputs.add_file(real, resolved=True)
        record = self.pack.get(real)
        try:
            if not isinstance(record, dict) or record["digest"] != self.digests[real]:
                return None
            if not still_missing(record["missing"], self.root):
                return None
            graph = decode(record["graph"])
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        if not isinstance(graph, dict):
            return None
        self.hits[real] = record
        self.inputs.missing.update(record["missing"])
        return graph

    def graph_in(self, script: Any, path: Path) -> dict[str, Any] | None:
        """``graph_for`` as ``alembic_bridge.open_scripts`` asks it, with the ScriptDirectory."""
        return self.graph_for(str(script.env_py_location), path)

    def operations(self, path: str) -> Any:
        """The remembered ``RevisionOps`` of a revision ``graph_for`` answered for, or None."""
        real = os.path.normpath(path)
        if real not in self._operations:
            record = self.hits.get(real)
            try:
                self._operations[real] = decode(record["ops"]) if record is not None else None
            except (KeyError, TypeError, ValueError, AttributeError):
                self._operations[real] = None
        return self._operations[real]

    def finish(
        self,
        rendered: Iterable[tuple[str, Any, Mapping[str, Any] | None, str | None]],
        env: Mapping[str, Any] | None,
        exclude: Iterable[str],
    ) -> None:
        """Keep the revisions rendered this run (path, RevisionOps, graph, missing module) beside the
        remembered ones, and the context's env record (``env``: what env.py emitted, if it ran)."""
        if self.context is None:
            return
        rendered = list(rendered)
        self.inputs.missing.update(missing for _, _, _, missing in rendered if missing)
        deps = dict(self.env["deps"]) if self.env else {}
        deps.update(project_modules(exclude=[*self.digests, *exclude]))
        for path in deps:
            self.inputs.add_file(path, deps[path])
        if env is None and (self.env is None or deps == self.env["deps"]):
            return  # nothing rendered, nothing new loaded: what is kept still holds
        env_record = dict(self.env or {})
        try:
            if env is not None:
                env_record.update(env, env_operations=encode(env["env_operations"]))
        except TypeError:
            return  # what env.py emitted cannot be kept: nothing of this context is
        pack = dict(self.hits)
        for path, ops, graph, missing in rendered:
            real = os.path.normpath(path)
            if graph is None or real not in self.digests:
                continue
            try:
                pack[real] = {
                    "digest": self.digests[real],
                    "graph": encode(dict(graph)),
                    "ops": encode(ops),
                    "missing": [missing] if missing else [],
                }
            except TypeError:
                continue  # something the cache cannot represent: rendered again next time
        name = "pack-" + digest(self.context, os.getpid(), time.time_ns())
        self.store.put(name, pack)
        if self.store.wrote:  # only then may the env record name it
            env_record.update(deps=deps, pack=name)
            self.store.put("env-" + self.context, env_record)
        self.store.evict()


# --- the command --------------------------------------------------------------------------------


def check_command(
    load: Callable[[], Project],
    options: Mapping[str, Any],
    fmt: str,
    *,
    keyed: Mapping[str, Any],
    config: str | None,
    use_cache: bool = True,
) -> CheckOutput:
    """``check`` as the command runs it: replayed when an identical earlier run's inputs are all
    unchanged, else run (from the per-revision records where they hold) and remembered. ``options``
    are ``CheckOptions``' fields; ``keyed`` every command-line value (a replay needs all of them equal)."""
    config_path = None
    if use_cache:
        try:
            config_path = find_config_path(config)
        except GuardError:
            config_path = None  # the run below says what is wrong
        if config_path is not None:
            replayed = replay(config_path, keyed, fmt)
            if replayed is not None:
                return replayed
    from .check import CheckOptions, run_check
    from .report import render

    project = load()
    report = run_check(project, CheckOptions(**options, cache=use_cache))
    output = CheckOutput(list(report.notes), render(report, fmt, config_path=project.config_path), report.exit_code)
    cache_notes = list(report.cache_notes)
    if use_cache and report.inputs is not None and config_path == project.config_path:
        cache_notes += remember(project.config_path, keyed, fmt, output, report.inputs)
    output.notes.extend(cache_notes[:1])
    return output
