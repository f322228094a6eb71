"""The migrate-safe sequence: lock -> pending revisions -> check -> safety snapshot -> upgrade ->
constraints hook -> commit -> journal; on any failure roll back, or restore from the snapshot.

Where DDL is transactional and the project's env.py uses the connection we hand it
(``config.attributes["connection"]``), every pending revision runs in one transaction we own, and a
failure is a rollback. Everywhere else (MariaDB/MySQL, ``autocommit_block``, an env.py that opens its
own engine) a failure is undone by restoring the affected tables from the verified safety snapshot,
dropping tables the failed run created, and stamping ``alembic_version`` back.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import signal
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from .. import alembic_bridge as bridge
from ..analysis.acks import parse_cli_allow
from ..analysis.check import CheckReport, analyse, rules_for
from ..backup import service
from ..backup.identity import DatabaseIdentity
from ..config import Project
from ..errors import EXIT_BLOCKED, EXIT_FAILED, EXIT_OK, GuardError, UsageError
from ..schema import guard as schema_guard
from .journal import refuse_if_unfinished
from .lock import migration_lock
from .undo import Interrupted, Say, failure_reason, fingerprints, never_fails, qualified_tables, schema_shape, undo

SCOPES = ("affected", "full", "none")
TRANSACTIONAL_DDL = ("postgresql", "sqlite")


@dataclass
class SafeOptions:
    target: str = "heads"
    down: str | None = None
    dry_run: bool = False
    yes: bool = False
    backup_scope: str = "affected"
    lock_wait: float = 0
    lock_timeout: str | None = None
    statement_timeout: str | None = None
    allow: Sequence[str] = ()


@dataclass
class SafeResult:
    exit_code: int
    message: str
    report: CheckReport | None = None
    snapshot_id: str | None = None
    lines: list[str] = field(default_factory=list)  # the plan (dry run) or what was done


# --- reading the project --------------------------------------------------------------------------


def env_form(project: Project, script: Any) -> str:
    """``cookbook`` when env.py uses a connection handed in through ``config.attributes``, else ``stock``."""
    path = os.path.join(project.root, script.env_py_location)
    try:
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read())
    except (OSError, SyntaxError):
        return "stock"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "attributes":
            return "cookbook"
    return "stock"


COOKBOOK_HINT = (
    "in env.py's run_migrations_online(), use the connection migrate-safe passes: "
    '`connectable = config.attributes.get("connection")` and, when it is set, configure with it '
    "instead of creating an engine "
    "(Alembic cookbook: 'Sharing a Connection across one or more programmatic migration commands')"
)


def protection(dialect: str, form: str, report: CheckReport) -> tuple[bool, str]:
    """Whether a failure can be rolled back, and the sentence that says what protects the run."""
    autocommit = any(
        o.kind == "transaction" and o.details.get("action") == "commit" for r in report.operations for o in r.operations
    )
    if dialect not in TRANSACTIONAL_DDL:
        name = "MySQL/MariaDB" if dialect in ("mysql", "mariadb") else dialect
        env = (
            "env.py uses the connection migrate-safe passes (cookbook form)"
            if form == "cookbook"
            else "env.py opens its own connection (stock form)"
        )
        return (
            False,
            f"{name} commits every DDL statement on its own: "
            f"a failure is undone by restoring the safety snapshot; {env}",
        )
    if autocommit:
        return False, "a revision uses autocommit_block(): a failure is undone by restoring the safety snapshot"
    if form != "cookbook":
        return True, (
            "env.py opens its own connection: Alembic's own transaction covers the run, and after a failure "
            "migrate-safe compares the database with its state before and restores the safety snapshot if "
            f"anything remained. For one transaction that migrate-safe owns, {COOKBOOK_HINT}"
        )
    return True, "all pending revisions run in one transaction that migrate-safe owns: a failure is rolled back"


# MySQL's UPDATE a JOIN b / UPDATE a, b / DELETE x FROM ... write tables other than the first one named
_MULTI_TABLE_DML = re.compile(
    r"\bJOIN\b|^\s*UPDATE\s+[^;]*?,[^;]*?\bSET\b|^\s*DELETE\s+(?!FROM\b)\S", re.IGNORECASE | re.DOTALL
)
# maintenance and explicit locks (REINDEX, VACUUM, CLUSTER, LOCK TABLE) change no row; DETACH PARTITION
# moves rows out of the parent table, so the table it names is backed up
_NO_TABLE_DATA = frozenset(
    {"transaction", "set", "set_lock_timeout", "select", "other", "create_schema"}
    | {"reindex", "vacuum", "cluster", "lock_table"}
)
_TABLELESS_OK = frozenset(
    {"create_other", "alter_other", "drop_other", "drop_index", "drop_constraint", "create_table"}
)


def affected_tables(report: CheckReport, url: str) -> tuple[list[str] | None, str | None]:
    """Tables the pending operations touch, plus tables whose foreign keys point at them; ``None`` when
    an operation's table is unknown (unparsed SQL, a revision read statically), i.e. back up everything."""
    touched: set[str] = set()
    for rev in report.operations:
        if rev.failure:
            return None, f"revision {rev.revision} could not be analysed completely"
        for op in rev.operations:
            if op.kind in _NO_TABLE_DATA:
                continue
            if op.table is None:
                if op.kind in _TABLELESS_OK:
                    continue
                return (
                    None,
                    f"revision {rev.revision} line {op.line}: {op.kind} on a table that cannot be named offline",
                )
            if op.kind in ("update", "delete") and _MULTI_TABLE_DML.search(op.statement or ""):
                return (
                    None,
                    f"revision {rev.revision} line {op.line}: "
                    f"a multi-table {op.kind.upper()} may write tables it does not name first",
                )
            touched.add(op.table.lower())
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        inspector = sa.inspect(engine)
        existing = {t.lower(): t for t in inspector.get_table_names()}
        scope = {existing[t] for t in touched if t in existing}
        for name in existing.values():
            for fk in inspector.get_foreign_keys(name):
                if fk.get("referred_table", "").lower() in touched:
                    scope.add(name)
    finally:
        engine.dispose()
    if "alembic_version" in existing:
        scope.add(existing["alembic_version"])
    return sorted(scope), None


def _reached(script: Any, heads: list[str], target: str) -> bool:
    """Whether ``target`` is one of ``heads`` or an ancestor of them."""
    try:
        wanted = script.get_revision(target).revision
        return any(s.revision == wanted for s in script.iterate_revisions(tuple(heads), "base"))
    except Exception:  # noqa: BLE001 - an unknown target is reported by the upgrade path itself
        return False


# --- the run ---------------------------------------------------------------------------------------


def run(project: Project, options: SafeOptions, say: Say) -> SafeResult:
    if options.backup_scope not in SCOPES:
        raise UsageError(f"--backup-scope {options.backup_scope!r}: choose {', '.join(SCOPES)}")
    if options.down and options.target != "heads":
        raise UsageError(f"give either TARGET ({options.target}) or --down REV ({options.down}), not both")
    say = never_fails(say)
    url = service.database_url(project)
    dialect = service.database_engine(url).dialect
    identity = service.current_database(project, url)
    repo = None if options.dry_run else service.open_repository(project, create=True)
    # bad values are usage errors, before anything happens
    timeouts = timeout_statements(dialect, options.lock_timeout, options.statement_timeout)
    rules = rules_for(project)
    cli_acks = [parse_cli_allow(spec, frozenset(rules)) for spec in options.allow]
    schema_guard.load(project)  # a broken constraints file is a configuration error (exit 2) before anything happens

    with migration_lock(url, wait=options.lock_wait):
        if repo is not None:
            refuse_if_unfinished(repo, identity)  # under the lock: a run still going holds it, a crashed one not
        script = bridge.open_scripts(project)
        heads, why = bridge.database_heads(project)
        if heads is None:
            raise GuardError(f"cannot read the database's revision: {why}")
        before = list(heads)
        if options.down:
            scripts = bridge.downgrade_path(script, before, options.down)
            direction, target = "downgrade", options.down
        else:
            if before and options.target != "heads" and _reached(script, before, options.target):
                return SafeResult(
                    EXIT_OK, f"nothing to do: the database ({','.join(before)}) is at or past {options.target}"
                )
            scripts = bridge.upgrade_path(script, before or "base", options.target)
            direction, target = "upgrade", options.target
        if not scripts:
            return SafeResult(EXIT_OK, f"nothing to do: the database is at {','.join(before) or 'base'}")
        selection = bridge.Selection(scripts, f"{','.join(before) or 'base'} -> {target}")
        report = analyse(
            project, script, selection, dialect, rules=rules, cli_acks=cli_acks, fail_on="error", direction=direction
        )
        from_to = f"{','.join(before) or 'base'} -> {target}"
        form = env_form(project, script)
        transactional, how = protection(dialect, form, report)

        blocked = [f for f in report.findings if f.severity == "error" and not f.allowed]
        if blocked:
            return SafeResult(
                EXIT_BLOCKED,
                f"blocked: {len(blocked)} unreviewed error finding{'s' if len(blocked) != 1 else ''} "
                f"in {from_to}; nothing was touched (review them, then acknowledge in the revision file)",
                report=report,
            )

        scope, scope_note = (None, None)
        if options.backup_scope == "affected":
            scope, scope_note = affected_tables(report, url)
            if scope == []:
                scope, scope_note = None, "none of the tables the revisions touch exists yet"
        plan = [
            f"{direction} {from_to}: {len(scripts)} revision{'s' if len(scripts) != 1 else ''} "
            f"({', '.join(s.revision for s in scripts)})",
            f"protection: {how}",
            "safety snapshot: "
            + (
                "none (--backup-scope none)"
                if options.backup_scope == "none"
                else ("all tables" + (f" ({scope_note})" if scope_note else ""))
                if scope is None
                else f"{len(scope)} tables: {', '.join(scope)}"
            ),
        ]
        if options.dry_run:
            plan.append(f"estimated snapshot size: {_estimate(url, scope)}")
            plan.append("SQL:")
            plan.extend("  " + line for line in offline_sql(project, before, target, direction))
            return SafeResult(EXIT_OK, "dry run: nothing was touched", report=report, lines=plan)
        if options.backup_scope == "none" and not options.yes:
            raise UsageError("--backup-scope none leaves nothing to restore from: add --yes to confirm")
        say(f"database: {identity.describe()}")
        for line in plan:
            say(line)
        one_transaction = transactional and form == "cookbook"
        return _execute(
            project,
            options,
            url,
            identity,
            repo,
            report,
            before,
            direction,
            target,
            scope,
            (transactional, one_transaction),
            timeouts,
            say,
        )


def _execute(
    project: Project,
    options: SafeOptions,
    url: str,
    identity: DatabaseIdentity,
    repo: Any,
    report: CheckReport,
    before: list[str],
    direction: str,
    target: str,
    scope: list[str] | None,
    protection: tuple[bool, bool],
    timeouts: list[str],
    say: Say,
) -> SafeResult:
    transactional, one_transaction = protection
    engine = service.database_engine(url)
    for line in engine.finish_interrupted():  # a restore (an undo, a recover) killed half-way
        say(line)
    dialect = engine.dialect
    snapshot = None
    if options.backup_scope != "none":
        say("taking the safety snapshot")
        for attempt in (1, 2):
            snapshot = service.take_snapshot(
                project,
                url=url,
                tables=scope,
                label=f"migrate-safe {','.join(before) or 'base'} -> {target}",
                kind="safety",
                repo=repo,
                engine=engine,  # interrupted restores finished above
            )
            results = service.verify(project, [snapshot["id"]], repo=repo)
            if results[0].ok:
                break
            if attempt == 1:  # a damaged blob it reused is recorded now: a second snapshot stores it again
                say(f"the safety snapshot {snapshot['id']} did not verify ({results[0].problems[0]}): taking it again")
        assert snapshot is not None
        if not results[0].ok:
            return SafeResult(
                EXIT_FAILED,
                f"the safety snapshot {snapshot['id']} did not verify ({results[0].problems[0]}), twice; nothing "
                "was migrated: run `migrate-guard repair` and look at the repository's storage",
                report=report,
                snapshot_id=snapshot["id"],
            )
        say(f"safety snapshot {snapshot['id']} verified")
    tables_before = qualified_tables(engine.list_tables())
    shape_before = schema_shape(url)
    content_before = {}
    if not one_transaction:  # what tells `recover` whether a killed run changed rows it cannot roll back
        content = [t for t in (scope if scope is not None else tables_before) if t != "alembic_version"]
        content_before = fingerprints(url, [t for t in content if t in tables_before])
    run_id = uuid.uuid4().hex[:12]
    started = time.monotonic()
    record = {
        "run": run_id,
        **service.who(),
        "started_at": service.iso(service.utcnow()),
        "direction": direction,
        "from": before,
        "to": target,
        "snapshot": snapshot["id"] if snapshot else None,
        "snapshot_tables": service.table_names(snapshot) if snapshot else [],
        "scope": scope,
        "tables_before": tables_before,
        "shape_before": shape_before,
        "content_before": content_before,
        "one_transaction": one_transaction,
        "findings": [f.to_dict() for f in report.findings],
        "state": "started",
        "dialect": dialect,
        "database": identity.to_dict(),
    }
    journal = repo.append_journal if repo is not None else (lambda r: None)
    journal(record)
    try:
        with _signals_as_failures():
            _migrate(project, url, dialect, direction, target, timeouts, say)
    except BaseException as exc:  # noqa: BLE001 - every failure, Ctrl-C and SIGTERM included, takes this path
        reason = failure_reason(exc)
        with _shielded():  # a second Ctrl-C, SIGTERM or SIGHUP does not cut the undo or its journal record short
            say(f"the {direction} failed: {reason}")
            with schema_guard.reviewed_environment(dialect):  # a restore drops protected tables: the run was reviewed
                outcome = undo(project, url, engine, snapshot, record, transactional, say)
            journal(
                {
                    **record,
                    "state": outcome.state,
                    "finished_at": service.iso(service.utcnow()),
                    "error": reason,
                    "seconds": round(time.monotonic() - started, 3),
                }
            )
        return SafeResult(
            outcome.code,
            f"failed ({reason}); {outcome.message}",
            report=report,
            snapshot_id=snapshot["id"] if snapshot else None,
        )
    after, _ = bridge.database_heads(project)
    journal(
        {
            **record,
            "state": "succeeded",
            "finished_at": service.iso(service.utcnow()),
            "to": list(after or []),
            "seconds": round(time.monotonic() - started, 3),
        }
    )
    return SafeResult(
        EXIT_OK,
        f"{direction}d {','.join(before) or 'base'} -> {','.join(after or []) or 'base'}"
        + (f"; safety snapshot {snapshot['id']}" if snapshot else ""),
        report=report,
        snapshot_id=snapshot["id"] if snapshot else None,
    )


def _migrate(
    project: Project, url: str, dialect: str, direction: str, target: str, timeouts: list[str], say: Say | None = None
) -> None:
    """Run Alembic on a connection we own, in one transaction where the database allows it."""
    from alembic import command

    definitions = schema_guard.load(project)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    if dialect == "sqlite":
        sqlite_transactional_ddl(engine)
    # The review passed: every connection of this run may touch protected tables (see schema/protect.py).
    session = timeouts + schema_guard.session_statements(dialect)
    with schema_guard.reviewed_environment(dialect), session_settings(session), engine.connect() as conn:
        transaction = conn.begin()
        project.alembic.attributes["connection"] = conn
        try:
            with bridge.project_cwd(project):
                if direction == "upgrade":
                    command.upgrade(project.alembic, target)
                else:
                    command.downgrade(project.alembic, target)
            constraints_hook(conn, project, direction, definitions, say)
            transaction.commit()
        except BaseException:
            if transaction.is_active:
                transaction.rollback()
            raise
        finally:
            project.alembic.attributes.pop("connection", None)
    engine.dispose()


def constraints_hook(
    connection: sa.Connection, project: Project, direction: str, definitions: Any = None, say: Say | None = None
) -> None:
    """After an upgrade, inside the run: integrity checks and CHECK constraints (schema/guard.py). A violation
    raises a GuardError, and the run is rolled back or restored like any other failure."""
    if direction == "upgrade":
        schema_guard.after_upgrade(connection, project, definitions, say)


def sqlite_transactional_ddl(engine: sa.Engine) -> None:
    """Let SQLAlchemy issue BEGIN itself, so pysqlite does not run DDL outside the transaction."""

    @sa.event.listens_for(engine, "connect")
    def _no_implicit(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN")


def timeout_statements(dialect: str, lock_timeout: str | None, statement_timeout: str | None) -> list[str]:
    """SET statements for --lock-timeout / --statement-timeout on this database."""
    lock = _seconds("--lock-timeout", lock_timeout)
    statement = _seconds("--statement-timeout", statement_timeout)
    if dialect == "postgresql":
        return [
            f"SET {name} = '{int(value * 1000)}ms'"
            for name, value in (("lock_timeout", lock), ("statement_timeout", statement))
            if value
        ]
    if dialect in ("mysql", "mariadb"):
        return ([f"SET SESSION lock_wait_timeout = {max(1, round(lock))}"] if lock else []) + (
            [f"SET SESSION max_statement_time = {statement:g}"] if statement else []
        )
    if lock or statement:
        raise UsageError(f"--lock-timeout/--statement-timeout are not supported on {dialect}")
    return []


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*$", re.IGNORECASE)


def _seconds(option: str, text: str | None) -> float:
    if text is None:
        return 0.0
    match = _DURATION.match(text)
    if not match or float(match[1]) <= 0:
        raise UsageError(f"{option} {text!r}: expected a duration such as 500ms, 5s, 2m or 1h")
    factor = {"ms": 0.001, "s": 1, None: 1, "m": 60, "min": 60, "h": 3600}[(match[2] or "").lower() or None]
    return float(match[1]) * factor


@contextlib.contextmanager
def session_settings(statements: list[str]) -> Iterator[None]:
    """Run ``statements`` on every new database connection during the run (ours and env.py's),
    at the DBAPI level, before SQLAlchemy begins a transaction on it."""
    if not statements:
        yield
        return

    def apply(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            for statement in statements:
                cursor.execute(statement)
        finally:
            cursor.close()
        dbapi_connection.commit()  # end the driver's implicit transaction; session settings stay

    sa.event.listen(sa.pool.Pool, "connect", apply)
    try:
        yield
    finally:
        sa.event.remove(sa.pool.Pool, "connect", apply)


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _signals_as_failures() -> Iterator[None]:
    """SIGTERM and SIGHUP (a closed terminal or SSH session) fail the run like Ctrl-C: roll back or restore."""

    def on_term(signum: int, _frame: Any) -> None:
        raise Interrupted(f"signal {signal.Signals(signum).name}")

    previous = {s: signal.signal(s, on_term) for s in _STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def _shielded() -> Iterator[None]:
    """While a failed run is undone and journaled: Ctrl-C, SIGTERM and SIGHUP wait (noted, not raised)."""
    deferred: list[int] = []
    previous = {s: signal.signal(s, lambda n, _f: deferred.append(n)) for s in (signal.SIGINT, *_STOP_SIGNALS)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


# --- dry run helpers ----------------------------------------------------------------------------------


def offline_sql(project: Project, before: list[str], target: str, direction: str) -> list[str]:
    """The SQL Alembic would run, rendered offline (``alembic upgrade FROM:TO --sql``)."""
    import io

    from alembic import command

    buffer = io.StringIO()
    previous = project.alembic.output_buffer
    project.alembic.output_buffer = buffer
    start = ",".join(before) or "base"
    import logging

    previous_disable = logging.root.manager.disable
    logging.disable(logging.INFO)  # env.py's logging config would print "Running upgrade" lines
    try:
        with bridge.project_cwd(project), contextlib.redirect_stdout(io.StringIO()):
            if direction == "upgrade":
                command.upgrade(project.alembic, f"{start}:{target}", sql=True)
            else:
                command.downgrade(project.alembic, f"{start}:{target}", sql=True)
    except Exception as exc:  # noqa: BLE001 - e.g. batch mode on SQLite offline
        return [f"(cannot render offline: {failure_reason(exc)})"]
    finally:
        project.alembic.output_buffer = previous
        logging.disable(previous_disable)
    return [line for line in buffer.getvalue().splitlines() if line.strip()]


def _estimate(url: str, scope: list[str] | None) -> str:
    from ..progress import human_bytes

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            name = conn.dialect.name
            if name == "postgresql":
                rows = conn.execute(
                    sa.text(
                        "SELECT c.relname, pg_total_relation_size(c.oid) "
                        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE c.relkind IN ('r','p') AND n.nspname NOT IN ('pg_catalog','information_schema')"
                    )
                ).all()
            elif name in ("mysql", "mariadb"):
                rows = conn.execute(
                    sa.text(
                        "SELECT table_name, data_length + index_length FROM information_schema.tables "
                        "WHERE table_schema = DATABASE()"
                    )
                ).all()
            else:
                page = conn.exec_driver_sql("PRAGMA page_size").scalar() or 0
                pages = conn.exec_driver_sql("PRAGMA page_count").scalar() or 0
                return f"about {human_bytes(page * pages)} before compression (the whole SQLite file)"
    finally:
        engine.dispose()
    wanted = None if scope is None else {t.split(".")[-1].lower() for t in scope}
    total = sum(int(size or 0) for table, size in rows if wanted is None or str(table).lower() in wanted)
    return f"about {human_bytes(total)} on disk before compression"
