"""Alembic's side of the guard: the script directory, which revisions to read, and rendering them
offline through the project's own env.py while recording what each revision does.

Capture works by hooking three Alembic internals for the duration of one run:
``Operations.invoke`` (every ``op.*`` and batch op, with the caller's line), ``DefaultImpl.static_output``
(every SQL statement the offline run emits, which catches ``op.execute`` and
``op.get_bind().execute(text(...))`` alike) and ``BatchOperationsImpl.flush`` (a batch block's own
rebuild SQL, which is not the user's; a batch op that is not a rebuild gets the SQL it renders alone).
Each revision's ``upgrade()`` is wrapped so that one revision failing offline does not stop the others;
its source is then read statically instead, as is the source of a revision module that fails to import.
"""

from __future__ import annotations

import ast
import contextlib
import io
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any, TextIO, cast

import alembic.util as alembic_util
from alembic.ddl.impl import DefaultImpl
from alembic.operations import Operations
from alembic.operations.base import AbstractOperations
from alembic.operations.batch import BatchOperationsImpl
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import HeadMaintainer, MigrationContext, MigrationStep
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError

from .analysis.alembic_ops import from_alembic
from .analysis.operations import Operation
from .analysis.sqltext import classify_sql, mark_transaction_blocks
from .config import Project, dialect_family
from .errors import ConfigError, RevisionError, UsageError, one_line

# --- the script directory and revision selection ----------------------------------------------


@contextlib.contextmanager
def project_cwd(project: Project) -> Iterator[None]:
    """Run Alembic from the project's directory, as its own CLI would be (relative
    ``script_location`` and ``prepend_sys_path`` are relative to it)."""
    before = os.getcwd()
    os.chdir(project.root)
    added = str(project.root) not in sys.path
    if added:
        sys.path.insert(0, str(project.root))
    try:
        yield
    finally:
        os.chdir(before)
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(str(project.root))


# ``check``'s cache: (the script directory, a revision file) -> that file's remembered graph attributes
CachedGraph = Callable[[ScriptDirectory, Path], "Mapping[str, Any] | None"]


def open_scripts(
    project: Project, *, read_unimportable: bool = False, cached: CachedGraph | None = None
) -> ScriptDirectory:
    """The project's ScriptDirectory with every revision file loaded. With ``read_unimportable`` a
    revision module that raises on import is replaced by a stand-in read from its source (see
    ``_stand_in``), so the graph stays whole; only ``check`` wants that, never a run that migrates.
    A file ``cached`` remembers is not imported at all: its stand-in carries the remembered graph."""
    loading: contextlib.AbstractContextManager[list[ScriptDirectory]] = (
        _loading_as_stand_ins(read_unimportable, cached) if read_unimportable or cached else contextlib.nullcontext([])
    )
    try:
        with project_cwd(project), loading as made:
            script = ScriptDirectory.from_config(project.alembic)
            made.append(script)
            _ = script.revision_map.heads  # loads every revision module now, so errors surface here
    except SyntaxError as exc:
        where = os.path.join(project.root, exc.filename or "<revision>")
        raise RevisionError(f"{_display(where)}:{exc.lineno}: syntax error: {exc.msg}") from None
    except CommandError as exc:
        raise ConfigError(f"{project.config_path.name}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a revision module that raises on import
        frame = _project_frame(exc.__traceback__, project)
        hint = (
            " (is the project importable? check prepend_sys_path in alembic.ini or PYTHONPATH)"
            if isinstance(exc, ImportError)
            else ""
        )
        raise RevisionError(f"{frame or 'cannot load revisions'}: {one_line(exc)}{hint}") from None
    return script


# set on a stand-in module: (what failed, the line of the revision file it failed at)
_IMPORT_FAILURE = "__migrate_guard_import_failure__"
_MISSING_MODULE = "__migrate_guard_missing_module__"  # the module whose absence made the import fail
_FROM_CACHE = "__migrate_guard_from_cache__"  # a stand-in built from check's cache: never rendered
_GRAPH_NAMES = ("revision", "down_revision", "branch_labels", "depends_on")
_UNREADABLE: Any = object()  # a graph attribute whose value is not a literal


class UnimportableRevision(RuntimeError):
    """Raised by a stand-in's ``upgrade()``/``downgrade()``: the real module could not be imported."""


def import_failure(module: Any) -> tuple[str, int | None] | None:
    """Why a revision module is a stand-in (see ``open_scripts``), or None for a module that imported."""
    failure: tuple[str, int | None] | None = getattr(module, _IMPORT_FAILURE, None)
    return failure


def missing_module(module: Any) -> str | None:
    """The module a stand-in's import did not find (``ModuleNotFoundError.name``), if that was why."""
    name: str | None = getattr(module, _MISSING_MODULE, None)
    return name


def from_cache(module: Any) -> bool:
    """Whether ``module`` is a stand-in ``check``'s cache supplied (see ``open_scripts``)."""
    return bool(getattr(module, _FROM_CACHE, False))


def graph_of(module: Any) -> dict[str, Any] | None:
    """What Alembic reads of a revision module to place it in the graph; None when it has no
    ``revision`` (Alembic then reads the file name)."""
    if not hasattr(module, "revision"):
        return None
    return {
        "revision": module.revision,
        "down_revision": getattr(module, "down_revision", None),
        "branch_labels": getattr(module, "branch_labels", None),
        "depends_on": getattr(module, "depends_on", None),
        "doc": module.__doc__,
    }


def _cached_stand_in(path: Path, graph: Mapping[str, Any]) -> ModuleType:
    module = ModuleType(re.sub(r"\W", "_", path.name))
    module.__file__ = str(path)
    module.__doc__ = graph.get("doc")
    for name in _GRAPH_NAMES:
        setattr(module, name, graph.get(name))
    setattr(module, _FROM_CACHE, True)

    def not_loaded(*args: Any, **kw: Any) -> None:
        raise RuntimeError(f"{_display(str(path))}: a cached stand-in cannot run")  # a bug if it ever does

    setattr(module, "upgrade", not_loaded)  # noqa: B010
    setattr(module, "downgrade", not_loaded)  # noqa: B010
    return module


@contextlib.contextmanager
def _loading_as_stand_ins(read_unimportable: bool, cached: CachedGraph | None) -> Iterator[list[ScriptDirectory]]:
    """Yields a list to put the ScriptDirectory in once made: ``cached`` is asked with it."""
    original = alembic_util.load_python_file
    script: list[ScriptDirectory] = []

    def load(dir_: Any, filename: Any) -> ModuleType:
        path = Path(dir_) / Path(filename).name
        if cached is not None and path.suffix == ".py" and script:
            graph = cached(script[0], path)
            if graph is not None:
                return _cached_stand_in(path, graph)
        try:
            return original(dir_, filename)
        except SyntaxError:
            raise  # nothing to read statically either
        except Exception as exc:  # noqa: BLE001 - any failure at import: read the source instead
            if not read_unimportable:
                raise
            stand_in = _stand_in(path, exc)
            if stand_in is None:
                raise
            return stand_in

    setattr(alembic_util, "load_python_file", load)  # noqa: B010 - ScriptDirectory calls it through the module
    try:
        yield script
    finally:
        setattr(alembic_util, "load_python_file", original)  # noqa: B010


def _stand_in(path: Path, exc: Exception) -> ModuleType | None:
    """A module with the revision's graph attributes, read from its source as literals, and an
    ``upgrade()``/``downgrade()`` that raise; None when the source does not give them."""
    if path.suffix != ".py":
        return None
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    except (OSError, SyntaxError, ValueError):
        return None
    found: dict[str, Any] = {}
    for node in tree.body:
        target, value = (node.targets[0], node.value) if isinstance(node, ast.Assign) else (None, None)
        if isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        if isinstance(target, ast.Name) and target.id in _GRAPH_NAMES and value is not None:
            try:
                found[target.id] = ast.literal_eval(value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                found[target.id] = _UNREADABLE
    if not isinstance(found.get("revision"), str) or found.get("down_revision", _UNREADABLE) is _UNREADABLE:
        return None
    message, line = _describe_import_failure(tree, path, exc)
    module = ModuleType(re.sub(r"\W", "_", path.name))
    module.__file__ = str(path)
    module.__doc__ = ast.get_docstring(tree)
    for name in _GRAPH_NAMES:
        value = found.get(name)
        setattr(module, name, None if value is _UNREADABLE else value)
    setattr(module, _IMPORT_FAILURE, (message, line))
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        setattr(module, _MISSING_MODULE, exc.name)

    def not_imported(*args: Any, **kw: Any) -> None:
        raise UnimportableRevision(f"{_display(str(path))}: {message}")

    setattr(module, "upgrade", not_imported)  # noqa: B010
    setattr(module, "downgrade", not_imported)  # noqa: B010
    return module


def _describe_import_failure(tree: ast.Module, path: Path, exc: Exception) -> tuple[str, int | None]:
    """``could not import myapp.models: ModuleNotFoundError: ...`` and the line of the revision file."""
    line = _line_in(exc.__traceback__, os.path.realpath(path), resolve=True)
    statement = next(
        (
            n
            for n in ast.walk(tree)
            if isinstance(n, (ast.Import, ast.ImportFrom)) and line and n.lineno <= line <= (n.end_lineno or n.lineno)
        ),
        None,
    )
    if isinstance(statement, ast.ImportFrom):
        return f"could not import {'.' * statement.level}{statement.module or ''}: {one_line(exc)}", line
    if isinstance(statement, ast.Import):
        missing = getattr(exc, "name", None) or ""
        names = [a.name for a in statement.names]
        name = next((n for n in names if missing and (n == missing or n.startswith(missing + "."))), names[0])
        return f"could not import {name}: {one_line(exc)}", line
    return f"the revision module failed to import: {one_line(exc)}", line


def _project_frame(tb: Any, project: Project) -> str | None:
    """``file:line`` of the innermost traceback frame inside the project, for error messages."""
    root = os.path.realpath(project.root) + os.sep
    found = None
    while tb is not None:
        filename = os.path.realpath(os.path.join(project.root, tb.tb_frame.f_code.co_filename))
        if filename.startswith(root):
            found = f"{_display(filename)}:{tb.tb_lineno}"
        tb = tb.tb_next
    return found


def script_file(project: Project, script: Script) -> str:
    """Absolute path of a revision file (Alembic keeps it relative to where it was run)."""
    return os.path.normpath(os.path.join(project.root, script.path))


@dataclass
class Selection:
    scripts: list[Script]  # in upgrade order
    description: str  # what was selected, for the report
    note: str | None = None  # said to the user on stderr


def all_in_order(script: ScriptDirectory) -> list[Script]:
    return upgrade_path(script, "base", "heads")


def upgrade_path(script: ScriptDirectory, lower: str | Sequence[str], upper: str) -> list[Script]:
    """Revisions an upgrade from ``lower`` to ``upper`` runs, in the order it runs them."""
    try:
        revs = script.iterate_revisions(upper, lower if isinstance(lower, str) else tuple(lower), implicit_base=True)
        return list(reversed(list(revs)))
    except Exception as exc:  # noqa: BLE001 - alembic raises CommandError or RevisionError subclasses
        raise UsageError(f"revision range {_fmt(lower)}:{upper}: {exc}") from None


def downgrade_path(script: ScriptDirectory, heads: Sequence[str], target: str) -> list[Script]:
    """Revisions a downgrade from ``heads`` to ``target`` undoes, in the order it undoes them."""
    if not heads:
        return []
    try:
        return list(script.iterate_revisions(tuple(heads), target, select_for_downgrade=True))
    except Exception as exc:  # noqa: BLE001 - alembic raises CommandError or RevisionError subclasses
        raise UsageError(f"downgrade {','.join(heads)} -> {target}: {exc}") from None


def _fmt(rev: str | Sequence[str]) -> str:
    return rev if isinstance(rev, str) else ",".join(rev) or "base"


def select_by_range(script: ScriptDirectory, spec: str) -> Selection:
    if ":" not in spec:
        raise UsageError(f"--range {spec!r}: expected FROM:TO, e.g. base:heads")
    lower, upper = (
        part.strip() or default for part, default in zip(spec.split(":", 1), ("base", "heads"), strict=True)
    )
    scripts = upgrade_path(script, lower, upper)
    if not scripts and _comes_after(script, lower, upper):
        raise UsageError(f"--range {lower}:{upper}: {lower} comes after {upper} (give it as {upper}:{lower})")
    return Selection(scripts, f"{lower}:{upper}")


def _comes_after(script: ScriptDirectory, lower: str, upper: str) -> bool:
    """Whether ``lower`` is a strict descendant of ``upper``: a range given the wrong way round."""
    try:
        later = {s.revision for s in script.get_revisions(lower) if s is not None}
        earlier = {s.revision for s in script.get_revisions(upper) if s is not None}
        ancestors = {s.revision for s in script.iterate_revisions(tuple(later), "base")} if later else set()
    except Exception:  # noqa: BLE001 - a relative or odd spec alembic resolves its own way: not ours to judge
        return False
    return bool(later) and later != earlier and earlier <= ancestors


def select_by_revisions(project: Project, script: ScriptDirectory, revisions: Sequence[str]) -> Selection:
    """``--revision`` takes revision ids (or unique prefixes) and revision file paths."""
    by_path = {os.path.realpath(script_file(project, s)): s for s in script.walk_revisions()}
    wanted: set[str] = set()
    for ref in revisions:
        if ref.endswith(".py") or os.sep in ref:
            found = by_path.get(os.path.realpath(ref))
            if found is None:
                raise UsageError(f"--revision {ref}: not a revision file of this project")
            wanted.add(found.revision)
            continue
        try:
            found = script.get_revision(ref)
        except Exception as exc:  # noqa: BLE001 - alembic's errors for an unknown or ambiguous revision
            raise UsageError(f"--revision {ref}: {exc}") from None
        if found is None:
            raise UsageError(f"--revision {ref}: not a single revision")
        wanted.add(found.revision)
    ordered = [s for s in all_in_order(script) if s.revision in wanted]
    return Selection(ordered, ", ".join(s.revision for s in ordered))


def select_since(project: Project, script: ScriptDirectory, git_ref: str) -> Selection:
    """Revisions whose files changed since ``git_ref`` (committed, staged, unstaged or untracked)."""
    changed = _git_changed_files(git_ref, project.root)
    ordered = [s for s in all_in_order(script) if os.path.realpath(script_file(project, s)) in changed]
    note = None if ordered else f"no revision file changed since {git_ref}"
    return Selection(ordered, f"changed since {git_ref}", note)


def _git_changed_files(git_ref: str, cwd: Path) -> set[str]:
    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise UsageError("--since needs git, which is not installed") from None
        if done.returncode != 0:
            raise UsageError(f"--since {git_ref}: {(done.stderr.strip().splitlines() or ['git failed'])[-1]}")
        return done.stdout

    top = git("rev-parse", "--show-toplevel").strip()
    names = git("diff", "--name-only", "--no-renames", git_ref, "--").splitlines()
    names += git("ls-files", "--others", "--exclude-standard", "--full-name").splitlines()
    return {os.path.realpath(os.path.join(top, n)) for n in names if n}


def select_pending(project: Project, script: ScriptDirectory) -> Selection:
    """The revisions the database has not run; all of them when it does not answer."""
    heads, why = database_heads(project)
    if heads is None:
        note = "no database URL configured" if not project.url else f"database not reachable ({why})"
        return Selection(all_in_order(script), "base:heads", f"{note}; checking base:heads")
    if not heads:
        return Selection(all_in_order(script), "base:heads (empty database)")
    return Selection(upgrade_path(script, heads, "heads"), f"pending after {','.join(heads)}")


def database_heads(project: Project, url: Any = None) -> tuple[tuple[str, ...] | None, str]:
    """The heads of the database at ``url`` (default: the project's), or ``None`` and why when it cannot be asked."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    given = url or project.url
    if not given:
        return None, "no sqlalchemy.url"
    try:
        url = make_url(given)
    except Exception as exc:  # noqa: BLE001 - whatever make_url raises, the URL is bad
        return None, f"bad URL: {exc}"
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            return None, "in-memory SQLite"
        path = database if os.path.isabs(database) else os.path.join(project.root, database)
        if not os.path.exists(path):
            return (), "new SQLite file"  # never create the file just to look
    connect_args = {"connect_timeout": 3} if url.get_backend_name() in ("postgresql", "mysql", "mariadb") else {}
    previous_disable = logging.root.manager.disable
    logging.disable(logging.INFO)  # "Context impl ..." is noise here
    try:
        with project_cwd(project):
            engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args=connect_args)
            with engine.connect() as conn:
                return tuple(MigrationContext.configure(conn).get_current_heads()), "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means the database cannot be asked
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip(": ")
    finally:
        logging.disable(previous_disable)


# --- offline capture ----------------------------------------------------------------------------


@dataclass
class RevisionCapture:
    script: Script
    path: str  # absolute
    operations: list[Operation] = field(default_factory=list)
    failure: str | None = None  # why it could not be rendered offline
    failure_line: int | None = None
    ran: bool = False
    imported: bool = True  # False: its module failed to import, nothing of it ran (see open_scripts)

    @property
    def revision(self) -> str:
        return self.script.revision


@dataclass
class CaptureResult:
    revisions: list[RevisionCapture]
    dialect: str
    env_operations: list[Operation]  # SQL env.py itself emitted (e.g. SET lock_timeout)
    notes: list[str]


class _Recorder:
    """Collects what the revision being rendered does; the hooks below feed it."""

    def __init__(self, dialect_hint: str) -> None:
        self.dialect = dialect_hint
        self.current: RevisionCapture | None = None
        self.current_file = ""
        self.op_stack: list[tuple[list[Operation] | None, int | None, list[str]]] = []
        self.flush_depth = 0
        self.env_operations: list[Operation] = []
        self.batched: dict[int, list[tuple[Any, list[Operation]]]] = {}  # id(batch impl) -> its ops, in order
        self.rendering: list[str] | None = None  # SQL goes here while one batch op is rendered alone

    def locate(self) -> int | None:
        """Line of the innermost frame in the revision file being rendered."""
        frame: FrameType | None = sys._getframe(2)
        target = self.current_file
        while frame is not None:
            if frame.f_code.co_filename == target:
                return frame.f_lineno
            frame = frame.f_back
        return None

    def on_invoke(self, impl_dialect: Any, operation: Any) -> tuple[list[Operation] | None, int | None, list[str]]:
        converted = from_alembic(operation, impl_dialect)
        line = self.locate()
        if converted is not None and self.current is not None:
            for o in converted:
                o.line, o.source, o.revision, o.file = line, "op", self.current.revision, self.current.path
            self.current.operations.extend(converted)
        entry: tuple[list[Operation] | None, int | None, list[str]] = (converted, line, [])
        self.op_stack.append(entry)
        return entry

    def on_sql(self, text: str) -> None:
        if self.flush_depth:
            return  # a batch block rebuilding its table; the batch ops themselves were recorded
        statement = text.strip().rstrip(";").strip()
        if not statement or statement.startswith("-- Running"):
            return
        if self.current is None:
            self.env_operations.extend(classify_sql(statement, self.dialect))
            return
        converted, line, statements = self.op_stack[-1] if self.op_stack else (None, None, [])
        if converted is not None:
            statements.append(statement)  # the SQL of a modelled op: kept for the report
            if _IMPLICIT_TYPE.match(statement):  # an enum a create_table/add_column creates first
                for o in classify_sql(statement, self.dialect):
                    o.line, o.source, o.revision, o.file = line, "op", self.current.revision, self.current.path
                    self.current.operations.append(o)
            return
        if line is None:
            line = self.locate()
        for o in classify_sql(statement, self.dialect):
            o.line, o.source, o.revision, o.file = line, "sql", self.current.revision, self.current.path
            self.current.operations.append(o)


_IMPLICIT_TYPE = re.compile(r"CREATE\s+TYPE\b", re.IGNORECASE)
_STATEMENT_OF = {  # which of an op's statements shows it: the first that starts so (and names it)
    "create_table": r"CREATE\s+(?:\w+\s+)*TABLE\b",
    "column_type": r"CREATE\s+(?:\w+\s+)*TABLE\b",
    "reference_table": r"(?:CREATE\s+(?:\w+\s+)*TABLE|ALTER\s+TABLE)\b",
    "create_index": r"CREATE\s+(?:UNIQUE\s+)?INDEX\b",
    "add_constraint": r"ALTER\s+TABLE\b",
    "add_column": r"ALTER\s+TABLE\b",
}


def statement_for(op: Operation, statements: list[str]) -> str:
    """The statement of ``statements`` (all an Alembic op emitted) that is ``op``'s own."""
    pattern = _STATEMENT_OF.get(op.kind)
    if pattern is None or len(statements) == 1:
        return statements[0]
    fitting = [s for s in statements if re.match(pattern, s, re.IGNORECASE)]
    name = op.details.get("name")
    if name and op.kind in ("create_index", "add_constraint", "reference_table"):
        fitting = [s for s in fitting if str(name).lower() in s.lower()] or fitting
    return fitting[0] if fitting else statements[0]


_active: _Recorder | None = None


@contextlib.contextmanager
def _hooks(recorder: _Recorder) -> Iterator[None]:
    global _active
    original_invoke = AbstractOperations.invoke
    original_output = DefaultImpl.static_output
    original_flush = BatchOperationsImpl.flush
    original_update = HeadMaintainer.update_to_step

    def invoke(self: AbstractOperations, operation: Any) -> Any:
        rec = _active
        if rec is None or rec.current is None:
            return original_invoke(self, operation)
        converted, _, statements = rec.on_invoke(self.migration_context.dialect, operation)
        try:
            return original_invoke(self, operation)
        finally:
            rec.op_stack.pop()
            if converted and statements:
                for o in converted:
                    o.statement = o.statement or statement_for(o, statements)
            if converted and isinstance(self.impl, BatchOperationsImpl):
                rec.batched.setdefault(id(self.impl), []).append((operation, converted))

    def render_alone(batch: BatchOperationsImpl, operation: Any) -> str | None:
        """The SQL a batch op in ALTER mode runs: what the same op renders on the enclosing context."""
        rec = _active
        if rec is None:
            return None
        rec.rendering = []
        try:
            original_invoke(batch.operations, operation)
        except Exception:  # noqa: BLE001 - the flush below raises it again, where a failure belongs
            return None
        finally:
            rendered, rec.rendering = rec.rendering, None
        statements = [t.strip().rstrip(";").strip() for t in rendered or ()]
        return "; ".join(t for t in statements if t) or None

    def static_output(self: DefaultImpl, text: str) -> None:
        if _active is not None and _active.rendering is not None:
            _active.rendering.append(text)
        elif _active is not None:
            _active.dialect = self.dialect.name
            _active.on_sql(text)

    def flush(self: BatchOperationsImpl) -> None:
        if _active is not None:
            pending = _active.batched.pop(id(self), [])
            # a recreated table has no statement per op: check shows the op's Python statement instead
            if pending and not self._should_recreate():
                for operation, converted in pending:
                    statement = render_alone(self, operation)
                    for o in converted:
                        o.statement = o.statement or statement
            _active.flush_depth += 1
        try:
            original_flush(self)
        finally:
            if _active is not None:
                _active.flush_depth -= 1

    def update_to_step(self: HeadMaintainer, step: Any) -> None:
        # a selection need not be a contiguous chain; the version table is not ours to render
        self.heads.add(step.revision.revision)

    AbstractOperations.invoke = invoke  # type: ignore[method-assign]
    DefaultImpl.static_output = static_output  # type: ignore[method-assign]
    BatchOperationsImpl.flush = flush  # type: ignore[method-assign]
    HeadMaintainer.update_to_step = update_to_step  # type: ignore[method-assign]
    _active = recorder
    try:
        yield
    finally:
        _active = None
        AbstractOperations.invoke = original_invoke  # type: ignore[method-assign]
        DefaultImpl.static_output = original_output  # type: ignore[method-assign]
        BatchOperationsImpl.flush = original_flush  # type: ignore[method-assign]
        HeadMaintainer.update_to_step = original_update  # type: ignore[method-assign]


@contextlib.contextmanager
def _wrapped_migrations(recorder: _Recorder, captures: list[RevisionCapture], direction: str) -> Iterator[None]:
    """Wrap each selected revision's ``upgrade()`` (or ``downgrade()``) so its failure is recorded, not raised."""
    originals = []
    for cap in captures:
        module = cap.script.module
        original = getattr(module, direction)
        originals.append((module, original))

        def upgrade(
            *args: Any,
            _cap: RevisionCapture = cap,
            _orig: Any = original,
            module_file: str = module.__file__ or "",
            **kw: Any,
        ) -> None:
            _cap.ran = True
            failed_import = import_failure(_cap.script.module)
            if failed_import is not None:
                _cap.failure, _cap.failure_line = failed_import
                return
            recorder.current, recorder.current_file = _cap, module_file
            try:
                _orig(*args, **kw)
            except Exception as exc:  # noqa: BLE001 - the revision's own code failed offline; read it statically
                _cap.failure, _cap.failure_line = one_line(exc), _line_in(exc.__traceback__, module_file)
            finally:
                recorder.current, recorder.op_stack[:] = None, []
                recorder.batched.clear()  # a block that raised before its flush
            if dialect_family(recorder.dialect) == "postgresql":
                # in the order they ran, before a static reading is merged in by line: Alembic runs
                # each revision inside a transaction there, autocommit_block() leaves it
                mark_transaction_blocks(_cap.operations, start="inside")

        setattr(module, direction, upgrade)
    try:
        yield
    finally:
        for module, original in originals:
            setattr(module, direction, original)


class _Discard(io.TextIOBase):
    def write(self, s: str) -> int:
        return len(s)


def capture(
    project: Project,
    script: ScriptDirectory,
    scripts: Sequence[Script],
    dialect: str,
    render_url: str | None = None,
    direction: str = "upgrade",
) -> CaptureResult:
    """Render ``scripts`` offline through the project's env.py and record what each one does.
    ``render_url`` (e.g. ``postgresql://``) replaces sqlalchemy.url for the run, to pick the dialect."""
    captures = [RevisionCapture(s, script_file(project, s), imported=import_failure(s.module) is None) for s in scripts]
    recorder = _Recorder(dialect)
    notes: list[str] = []
    if not captures:
        return CaptureResult([], dialect, [], notes)

    def steps(rev: Any, context: Any) -> list[Any]:
        make = MigrationStep.upgrade_from_script if direction == "upgrade" else MigrationStep.downgrade_from_script
        return [make(script.revision_map, c.script) for c in captures]

    previous_buffer = project.alembic.output_buffer
    previous_disable = logging.root.manager.disable
    previous_url = project.alembic.get_main_option("sqlalchemy.url")
    if render_url:
        project.alembic.set_main_option("sqlalchemy.url", render_url)
    project.alembic.output_buffer = cast(TextIO, _Discard())
    logging.disable(logging.INFO)  # env.py's fileConfig would print "Running upgrade" lines
    try:
        with project_cwd(project), _hooks(recorder), _wrapped_migrations(recorder, captures, direction):
            try:
                with (
                    contextlib.redirect_stdout(io.StringIO()),
                    EnvironmentContext(
                        project.alembic,
                        script,
                        fn=steps,
                        as_sql=True,
                        starting_rev=None,
                        destination_rev=captures[-1].revision,
                        tag=None,
                    ),
                ):
                    script.run_env()
            except Exception as exc:  # noqa: BLE001 - an env.py that cannot run offline; rendered without it
                if not all(c.ran for c in captures):
                    notes.append(f"env.py failed in offline mode ({one_line(exc)}); rendered without it")
            pending = [c for c in captures if not c.ran]
            if pending:
                _render_without_env(recorder, pending, dialect, direction)
    finally:
        project.alembic.output_buffer = previous_buffer
        if render_url:
            project.alembic.set_main_option("sqlalchemy.url", (previous_url or "").replace("%", "%%"))
        logging.disable(previous_disable)
    return CaptureResult(captures, recorder.dialect, recorder.env_operations, notes)


def _render_without_env(recorder: _Recorder, pending: list[RevisionCapture], dialect: str, direction: str) -> None:
    """Offline context of our own, for an env.py that cannot run offline."""
    context = MigrationContext.configure(
        dialect_name=dialect, opts={"as_sql": True, "output_buffer": _Discard(), "literal_binds": True}
    )
    with Operations.context(context):
        for cap in pending:
            getattr(cap.script.module, direction)()


def _line_in(tb: Any, filename: str, resolve: bool = False) -> int | None:
    """The last line of ``filename`` a traceback passes through (``resolve``: compare real paths)."""
    line = None
    while tb is not None:
        code_file = tb.tb_frame.f_code.co_filename
        if (os.path.realpath(code_file) if resolve else code_file) == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _display(path: str | None) -> str:
    if not path:
        return "<revision>"
    try:
        return os.path.relpath(path)
    except ValueError:
        return path
