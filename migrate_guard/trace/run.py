"""The ``trace`` use case: run the pending revisions on a scratch copy of the server and report, per
statement, what the server did (locks, rewrites, scans, failures), beside ``check``'s findings.

Each revision runs through the project's env.py as ``alembic upgrade <rev>`` would, in its own
transaction, on a database that holds the target's schema and nothing else (scratch.py). While it
runs, SQLAlchemy's cursor events hand every statement to the dialect's observer (postgresql.py,
observers.py), and the call stack names the revision file and line it came from. A revision that
fails is reported with the server's message, stamped as done, and the trace goes on with the next.

Safety: every database connection opened while tracing is checked on connect; one that reaches
any database but the scratch one (an env.py reading its own URL from the environment) stops the
trace before a statement runs there. ``--in-place`` runs in the target itself, in one transaction
that is always rolled back, and only on a database the settings name disposable.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from .. import alembic_bridge as bridge
from ..analysis.acks import parse_cli_allow
from ..analysis.check import CheckReport, analyse, rules_for
from ..analysis.engine import Evaluator, Finding, exit_code_for
from ..analysis.operations import Operation
from ..config import Project, dialect_family
from ..errors import ConfigError, GuardError, UsageError, one_line
from ..safe.sequence import COOKBOOK_HINT, env_form, session_settings, sqlite_transactional_ddl, timeout_statements
from .observers import MysqlObserver, SqliteObserver
from .postgresql import Measured, Observer

# SQLSTATEs of a statement refused because it ran inside a transaction block
_IN_TRANSACTION_STATES = frozenset({"25001", "55P04"})  # active_sql_transaction, unsafe_new_enum_value_usage
_PROBED = re.compile(
    r"^\s*(ALTER\s+(ONLINE\s+|IGNORE\s+)*TABLE|CREATE\s+(UNIQUE\s+|FULLTEXT\s+|SPATIAL\s+)?INDEX|DROP\s+INDEX)\b", re.I
)


@dataclass
class TraceOptions:
    target: str = "heads"  # the pending revisions run up to this one (migrate-safe --dry-run --trace TARGET)
    range: str | None = None
    revisions: Sequence[str] = ()
    scratch_url: str | None = None
    in_place: bool = False
    sample_rows: int = 0
    allow: Sequence[str] = ()
    fail_on: str | None = None
    lock_timeout: str | None = None
    statement_timeout: str | None = None


@dataclass
class StatementTrace:
    line: int | None
    sql: str
    duration_ms: float
    locks: list[dict[str, Any]] = field(default_factory=list)
    rewrites: list[str] = field(default_factory=list)
    seq_scans: dict[str, int] = field(default_factory=dict)
    rows_written: dict[str, int] = field(default_factory=dict)
    algorithm: str | None = None
    error: str | None = None
    sqlstate: str | None = None
    transaction: int = 0  # which transaction of the revision it ran in (autocommit statements: their own)
    holding: dict[str, str] = field(default_factory=dict)  # table -> strongest mode held after it (postgresql.py)

    def to_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "sql": self.sql,
            "duration_ms": round(self.duration_ms, 3),
            "locks": [{k: lock[k] for k in ("relation", "kind", "mode", "blocks")} for lock in self.locks],
            "rewrites": list(self.rewrites),
            "seq_scans": dict(self.seq_scans),
            "rows_written": dict(self.rows_written),
            "algorithm": self.algorithm,
            "error": self.error,
        }


@dataclass
class RevisionTrace:
    revision: str
    file: str
    error: str | None = None
    statements: list[StatementTrace] = field(default_factory=list)
    duration_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "file": self.file,
            "error": self.error,
            "statements": [s.to_dict() for s in self.statements],
        }


@dataclass
class TraceReport:
    server: str
    dialect: str
    revisions: list[RevisionTrace]
    check: CheckReport  # its findings are check's and the trace's, acknowledged together
    scratch: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def findings(self) -> list[Finding]:
        return self.check.findings

    @property
    def exit_code(self) -> int:
        return exit_code_for(self.check.findings, self.check.fail_on)


# --- the use case ------------------------------------------------------------------------------


def run_trace(project: Project, options: TraceOptions, say: Any = None) -> TraceReport:
    if not project.url:
        raise ConfigError("trace needs the database it traces: set sqlalchemy.url or pass --url")
    try:
        url = make_url(project.url)
    except Exception as exc:  # noqa: BLE001 - whatever make_url raises, the URL is bad
        raise ConfigError(f"bad database URL: {exc}") from None
    dialect = dialect_family(url.get_backend_name())
    if dialect not in ("postgresql", "mysql", "sqlite"):
        raise UsageError(f"trace supports PostgreSQL, MariaDB/MySQL and SQLite, not {url.get_backend_name()}")
    if options.sample_rows < 0:
        raise UsageError("--sample-rows must be 0 or more")
    if options.in_place and options.scratch_url:
        raise UsageError("--in-place and --scratch-url cannot be combined; pick one")
    timeouts = timeout_statements(dialect, options.lock_timeout, options.statement_timeout)
    rules = rules_for(project)
    cli_acks = [parse_cli_allow(spec, frozenset(rules)) for spec in options.allow]
    script = bridge.open_scripts(project)
    heads, why = bridge.database_heads(project)
    if heads is None:
        raise GuardError(f"cannot read the database's revision ({why}): trace needs the database it traces")
    run, traced, description = _plan(project, script, heads, options)
    check = analyse(
        project,
        script,
        bridge.Selection(traced, description),
        dialect,
        rules=rules,
        fail_on=options.fail_on or project.settings.fail_on,
        acknowledge=False,
    )
    files = {s.revision: bridge.script_file(project, s) for s in run}
    tracer = _Tracer(dialect, files)
    notes = list(check.notes)
    if options.in_place:
        where = _disposable(project, url, dialect)
        if env_form(project, script) != "cookbook":
            raise UsageError(f"--in-place runs env.py on trace's own connection, to roll it back: {COOKBOOK_HINT}")
        with tracer.installed(lambda c: _is(c, dialect, where)), session_settings(timeouts):
            scratch = {"database": where, "in_place": True, "build_seconds": 0.0}
            records = _run_in_place(project, script, run, tracer)
    else:
        from .scratch import scratch_copy

        with scratch_copy(project.url, scratch_url=options.scratch_url, sample_rows=options.sample_rows) as copy:
            if say:
                say(f"trace: scratch database {copy.name} built in {copy.build_seconds:.2f}s")
            notes += copy.notes
            scratch = {"database": copy.name, "in_place": False, "build_seconds": round(copy.build_seconds, 3)}
            expected = os.path.realpath(copy.name) if dialect == "sqlite" else copy.name
            with tracer.installed(lambda c: _is(c, dialect, expected)), session_settings(timeouts):
                records = _run_on_scratch(project, script, run, tracer, copy.url, dialect)
    chosen = {s.revision for s in traced}
    reported = [r for r in records if r.revision in chosen]
    evaluator = Evaluator(rules, project.settings, dialect, script_dir=script.dir)
    evaluator.tracing = True
    found = _trace_findings(evaluator, reported, check.findings)
    findings = evaluator.acknowledge([*check.findings, *found], check.operations, cli_acks, report_stale=True)
    order = {r.revision: i for i, r in enumerate(reported)}
    findings.sort(key=lambda f: (order.get(f.revision or "", -1), f.line or 0))
    check.findings = findings
    check.notes = notes
    return TraceReport(tracer.server or dialect, dialect, reported, check, scratch, notes)


def _plan(
    project: Project, script: Any, heads: Sequence[str], options: TraceOptions
) -> tuple[list[Any], list[Any], str]:
    """What runs (the database's revision up to the last one traced) and what is reported."""
    pending = bridge.upgrade_path(script, list(heads) or "base", options.target)
    if options.range and options.revisions:
        raise UsageError("--range and --revision cannot be combined; pick one")
    if options.range:
        selection = bridge.select_by_range(script, options.range)
    elif options.revisions:
        selection = bridge.select_by_revisions(project, script, options.revisions)
    else:
        at = ",".join(heads) or "base"
        return pending, pending, f"pending after {at}" if heads else "base:heads (empty database)"
    names = [s.revision for s in pending]
    ran = [s.revision for s in selection.scripts if s.revision not in names]
    if ran:
        raise UsageError(
            f"the database already ran {', '.join(ran[:3])}{' ...' if len(ran) > 3 else ''}: "
            f"trace only revisions it has not run (it is at {','.join(heads) or 'base'})"
        )
    last = max(names.index(s.revision) for s in selection.scripts) if selection.scripts else -1
    return pending[: last + 1], list(selection.scripts), selection.description


def _disposable(project: Project, url: Any, dialect: str) -> str:
    name = os.path.basename(url.database or "") if dialect == "sqlite" else (url.database or "")
    patterns = project.settings.trace_in_place_ok
    if dialect == "mysql":
        raise UsageError(
            "--in-place needs transactional DDL: MariaDB/MySQL commit every ALTER; trace on a scratch copy"
        )
    if not name or not any(fnmatch.fnmatchcase(name, p) for p in patterns):
        raise UsageError(
            f"--in-place on {name or 'this database'}: not declared disposable "
            f'(add it to [trace] in_place_ok = ["{name or "test_*"}"] in the settings), or trace on a scratch copy'
        )
    if dialect == "sqlite":
        return os.path.realpath(os.path.join(project.root, url.database) if url.database else "")
    return name


# --- running the revisions ---------------------------------------------------------------------


def _run_on_scratch(
    project: Project, script: Any, run: list[Any], tracer: _Tracer, scratch_url: str, dialect: str
) -> list[RevisionTrace]:
    from alembic import command

    engine = sa.create_engine(scratch_url, poolclass=sa.pool.NullPool)
    if dialect == "sqlite":
        sqlite_transactional_ddl(engine)
    records: list[RevisionTrace] = []
    cfg = project.alembic
    previous = cfg.get_main_option("sqlalchemy.url")
    cfg.set_main_option("sqlalchemy.url", scratch_url.replace("%", "%%"))
    try:
        with engine.connect() as conn, _scripts_from(script), bridge.project_cwd(project):
            tracer.server = _server_name(conn)
            cfg.attributes["connection"] = conn  # env.py in the cookbook form runs on it
            for s in run:
                record = tracer.start(s.revision)
                try:
                    command.upgrade(cfg, s.revision)
                    if conn.in_transaction():
                        conn.commit()
                except Exception as exc:  # noqa: BLE001 - the revision failed on the server: reported, then skipped
                    if tracer.refused is not None:
                        raise tracer.refused from None
                    record.error = record.error or _message(exc)
                    _settle(conn)
                    command.stamp(cfg, s.revision)  # as if it ran, so the next one can
                    if conn.in_transaction():
                        conn.commit()
                finally:
                    tracer.finish()
                records.append(record)
    finally:
        cfg.attributes.pop("connection", None)
        cfg.set_main_option("sqlalchemy.url", (previous or "").replace("%", "%%"))
        engine.dispose()
    return records


def _run_in_place(project: Project, script: Any, run: list[Any], tracer: _Tracer) -> list[RevisionTrace]:
    """In the target, in one transaction that is rolled back; each revision in a savepoint."""
    from alembic import command

    assert project.url is not None
    engine = sa.create_engine(project.url, poolclass=sa.pool.NullPool)
    if engine.dialect.name == "sqlite":
        sqlite_transactional_ddl(engine)
    records: list[RevisionTrace] = []
    cfg = project.alembic
    try:
        with engine.connect() as conn, _scripts_from(script), bridge.project_cwd(project):
            tracer.server = _server_name(conn)
            outer = conn.begin()
            cfg.attributes["connection"] = conn
            try:
                for s in run:
                    record = tracer.start(s.revision)
                    savepoint = conn.begin_nested()
                    try:
                        command.upgrade(cfg, s.revision)
                        savepoint.commit()
                    except Exception as exc:  # noqa: BLE001 - reported, then skipped
                        if tracer.refused is not None:
                            raise tracer.refused from None
                        record.error = record.error or _message(exc)
                        if savepoint.is_active:
                            savepoint.rollback()
                        command.stamp(cfg, s.revision)
                    finally:
                        tracer.finish()
                    records.append(record)
            finally:
                outer.rollback()  # in place means nothing of it stays
                cfg.attributes.pop("connection", None)
    finally:
        engine.dispose()
    return records


def _settle(conn: sa.Connection) -> None:
    with contextlib.suppress(Exception):
        if conn.in_transaction():
            conn.rollback()
    with contextlib.suppress(Exception):
        conn.rollback()


@contextlib.contextmanager
def _scripts_from(script: Any) -> Iterator[None]:
    """Alembic's commands load the script directory once here, not once per revision."""
    from alembic.script import ScriptDirectory

    original = ScriptDirectory.from_config
    ScriptDirectory.from_config = classmethod(lambda cls, config: script)  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        ScriptDirectory.from_config = original  # type: ignore[method-assign]


def _server_name(conn: sa.Connection) -> str:
    version = ".".join(str(v) for v in (conn.dialect.server_version_info or ()))
    name = {"postgresql": "PostgreSQL", "mysql": "MySQL", "mariadb": "MariaDB", "sqlite": "SQLite"}.get(
        conn.dialect.name, conn.dialect.name
    )
    if conn.dialect.name == "mysql" and getattr(conn.dialect, "is_mariadb", False):
        name = "MariaDB"
    return f"{name} {version}".strip()


def _message(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    diag = getattr(orig, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    if primary:
        return str(primary)
    if isinstance(orig, AssertionError) and not str(orig):
        return "AssertionError inside Alembic (autocommit_block() cannot run --in-place: it would commit)"
    args: tuple[Any, ...] = tuple(getattr(orig, "args", ()))
    if len(args) >= 2 and isinstance(args[0], int):  # pymysql: (errno, message)
        return f"({args[0]}) {args[1]}"
    return one_line(orig)


def _is(dbapi_connection: Any, dialect: str, expected: str) -> str | None:
    """The database a new connection reached, when it is not ``expected``."""
    if dialect == "postgresql":
        name = str(dbapi_connection.info.dbname)
    elif dialect == "mysql":
        db = getattr(dbapi_connection, "db", None)
        name = db.decode() if isinstance(db, bytes) else str(db or "")
    else:
        cursor = dbapi_connection.cursor()
        try:
            rows = cursor.execute("PRAGMA database_list").fetchall()
        finally:
            cursor.close()
        name = next((os.path.realpath(r[2]) for r in rows if r[1] == "main" and r[2]), ":memory:")
    return None if name == expected else name


# --- the statements, as they run ---------------------------------------------------------------


class _Tracer:
    """SQLAlchemy's engine events while tracing: the statement's revision line, its duration and
    the observer's measurements; a connection to anything but the traced database is refused."""

    def __init__(self, dialect: str, files: dict[str, str]) -> None:
        self.dialect = dialect
        self.files = {os.path.realpath(path): rev for rev, path in files.items()}
        self.paths = files
        self._real: dict[str, str] = {}
        self.observer: Any = (
            Observer(self._monitor)
            if dialect == "postgresql"
            else (MysqlObserver() if dialect == "mysql" else SqliteObserver())
        )
        self.record: RevisionTrace | None = None
        self.server = ""
        self.refused: GuardError | None = None
        self._started = 0.0
        self._where: int | None = None
        self._transaction = 0
        self._monitor_params: dict[str, Any] | None = None
        self.thread = threading.get_ident()

    def start(self, revision: str) -> RevisionTrace:
        self.record = RevisionTrace(revision, self.paths[revision])
        self.observer.start_revision(None)
        self._transaction += 1
        return self.record

    def finish(self) -> None:
        self.record = None

    def _line(self) -> int | None:
        """The line of the revision file the statement comes from, or None (Alembic's own, env.py)."""
        assert self.record is not None
        want = self.record.revision
        frame: Any = sys._getframe(1)
        while frame is not None:
            name = frame.f_code.co_filename
            real = self._real.get(name)
            if real is None:
                real = self._real[name] = os.path.realpath(name)
            if self.files.get(real) == want:
                return int(frame.f_lineno)
            frame = frame.f_back
        return None

    # -- events --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def installed(self, reached: Any) -> Iterator[None]:
        self.thread = threading.get_ident()  # the application's other threads are not traced, nor refused

        def on_connect(dbapi_connection: Any, _record: Any) -> None:
            if threading.get_ident() != self.thread:
                return
            other = reached(dbapi_connection)
            if other is not None:
                self.refused = GuardError(
                    f"env.py connected to {other}, not the database trace runs on: nothing was run there "
                    "(env.py must use sqlalchemy.url or config.attributes['connection'])"
                )
                raise self.refused
            if self.dialect == "postgresql" and self._monitor_params is None:
                self._monitor_params = {
                    "conninfo": dbapi_connection.info.dsn,
                    "password": dbapi_connection.info.password,
                }

        listeners: list[tuple[Any, str, Any]] = [
            (sa.pool.Pool, "connect", on_connect),
            (sa.engine.Engine, "before_cursor_execute", self._before),
            (sa.engine.Engine, "after_cursor_execute", self._after),
            (sa.engine.Engine, "handle_error", self._error),
            (sa.engine.Engine, "commit", self._ended),
            (sa.engine.Engine, "rollback", self._ended),
            (sa.engine.Engine, "rollback_savepoint", self._ended_savepoint),
        ]
        if self.dialect == "mysql":
            listeners += [(sa.engine.Engine, "do_execute", self._do_execute)]
        for target, name, fn in listeners:
            sa.event.listen(target, name, fn, insert=name == "connect")
        try:
            yield
        finally:
            for target, name, fn in listeners:
                sa.event.remove(target, name, fn)

    def _monitor(self) -> Any:
        import psycopg

        params = self._monitor_params or {}
        kwargs = {"password": params["password"]} if params.get("password") else {}
        return psycopg.connect(params.get("conninfo", ""), autocommit=True, **kwargs)

    def _mine(self) -> bool:
        return self.record is not None and threading.get_ident() == self.thread

    def _before(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if not self._mine():
            return
        self._where = None if self.dialect == "sqlite" and statement == "BEGIN" else self._line()
        self.observer.before(conn.connection.dbapi_connection)
        self._started = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if not self._mine():
            return
        elapsed = (time.perf_counter() - self._started) * 1000
        probe = getattr(self.observer, "probe", None)
        measured: Measured = self.observer.after(conn.connection.dbapi_connection)
        if self._where is None:
            return
        st = StatementTrace(
            self._where,
            _shown(statement),
            elapsed,
            measured.locks,
            measured.rewrites,
            measured.seq_scans,
            measured.rows_written,
            transaction=self._transaction,
            holding=measured.holding,
        )
        if probe is not None:
            st.algorithm = probe.algorithm
        if self.dialect == "mysql" and statement.lstrip()[:6].upper() in ("UPDATE", "DELETE", "INSERT"):
            table, count = _dml_table(statement), int(getattr(cursor, "rowcount", 0) or 0)
            if table and count > 0:
                st.rows_written = {table: count}
        assert self.record is not None  # _mine()
        self.record.statements.append(st)
        if getattr(conn.connection.dbapi_connection, "autocommit", False):
            self._transaction += 1

    def _error(self, context: Any) -> None:
        if not self._mine():
            return
        self.observer.failed()
        if self._where is None or context.statement is None:
            return
        elapsed = (time.perf_counter() - self._started) * 1000
        exc = context.original_exception
        message = _message(exc)
        st = StatementTrace(self._where, _shown(context.statement), elapsed, error=message)
        st.sqlstate = getattr(exc, "sqlstate", None)
        st.transaction = self._transaction
        assert self.record is not None  # _mine()
        self.record.statements.append(st)
        self.record.error = self.record.error or message
        self._where = None

    def _ended(self, conn: Any) -> None:
        if threading.get_ident() != self.thread:
            return
        self.observer.transaction_ended()
        self._transaction += 1

    def _ended_savepoint(self, conn: Any, name: Any, context: Any) -> None:
        if threading.get_ident() == self.thread:
            self.observer.transaction_ended()

    def _do_execute(self, cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        if not self._mine() or not _PROBED.match(statement):
            return False
        from .mysql import execute_probed

        probe = execute_probed(cursor, statement, parameters)
        self.observer.probe = probe
        return True


def _shown(statement: str) -> str:
    return " ".join(statement.split())


_DML_TABLE = re.compile(r"^\s*(?:UPDATE|DELETE\s+FROM|INSERT\s+INTO)\s+`?(?:\w+`?\.`?)?(\w+)", re.I)


def _dml_table(statement: str) -> str | None:
    m = _DML_TABLE.match(statement)
    return m.group(1).lower() if m else None


# --- findings ------------------------------------------------------------------------------------


def _trace_findings(evaluator: Evaluator, records: list[RevisionTrace], check: list[Finding]) -> list[Finding]:
    """The trace's own findings, apart from those ``check`` already made on the same line."""
    seen = {(f.rule, f.file, f.line, f.table) for f in check}
    found: list[Finding] = []
    for record in records:
        for op in _operations(record):
            for f in evaluator.matched(op):
                if (f.rule, f.file, f.line, f.table) not in seen:
                    seen.add((f.rule, f.file, f.line, f.table))
                    found.append(f)
    return found


def _operations(record: RevisionTrace) -> Iterator[Operation]:
    held: dict[
        tuple[int, str], int | None
    ] = {}  # (transaction, table) -> line of the statement that took ACCESS EXCLUSIVE

    def op(kind: str, st: StatementTrace, table: str | None = None, **details: Any) -> Operation:
        return Operation(
            kind,
            table,
            revision=record.revision,
            file=record.file,
            line=st.line,
            statement=st.sql,
            source="trace",
            details=details,
        )

    for st in record.statements:
        if st.error is not None:
            kind = "trace_fails_in_transaction" if st.sqlstate in _IN_TRANSACTION_STATES else "trace_failed"
            yield op(kind, st, error=st.error)
            continue
        modes = {**st.holding, **{lock["relation"]: lock["mode"] for lock in st.locks if lock["kind"] == "table"}}
        for table in st.rows_written:
            taker = held.get((st.transaction, table))
            if taker is not None and taker != st.line and st.sql[:6].upper() in ("UPDATE", "DELETE"):
                yield op(
                    "backfill_under_lock",
                    st,
                    table,
                    command=st.sql.split()[0].upper(),
                    locked_by=f"the statement on line {taker}",
                )
        for table, mode in modes.items():
            if mode == "AccessExclusiveLock":
                held.setdefault((st.transaction, table), st.line)
        if st.algorithm == "copy":
            lock = next((lock for lock in st.locks), None)
            blocked = ", ".join(lock["blocks"]) if lock and lock["blocks"] else "nothing"
            yield op("trace_copy", st, st.rewrites[0] if st.rewrites else None, blocked=blocked)
            continue
        for table in st.rewrites:
            yield op("trace_rewrite", st, table, mode=modes.get(table, "rewritten"))
        for table, scans in st.seq_scans.items():
            if modes.get(table) == "AccessExclusiveLock" and table not in st.rewrites:
                yield op("trace_access_exclusive_scan", st, table, scans=scans)
