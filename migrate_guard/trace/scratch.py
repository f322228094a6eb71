"""The scratch copy of a target database that ``trace`` runs pending revisions against.

``scratch_copy(target_url)`` builds a new database holding the target's whole schema, the rows of its
Alembic version table (so it is at the target's revision) and, with ``sample_rows``, up to that many
rows of every other table. It is dropped when the block ends, however the block ends: normally, by an
exception, by Ctrl-C, or by SIGTERM (turned into ``Terminated`` while the block runs).

The target is only read, and the build never waits long behind another session's lock on it:

- PostgreSQL: a new database on the target's server (or ``scratch_url``'s). ONE ``pg_dump --schema-only``
  of the target (ACCESS SHARE locks, what a SELECT takes, each waited for at most ``LOCK_WAIT_SECONDS``)
  into a private temporary file while ``CREATE DATABASE`` runs, so pg_dump holds its locks only as long
  as it reads; then ONE ``pg_restore --single-transaction`` into the scratch database. Rows go by COPY
  through psycopg, one autocommit statement per table on the target (its locks last one statement); the
  sampled ones with ``session_replication_role = replica`` so foreign keys and triggers accept a sample.
- MariaDB/MySQL: a new database on the same server (or ``scratch_url``'s), filled from ``mariadb-dump
  --no-data --single-transaction`` (a consistent read, no LOCK TABLES) through the ``mariadb`` client. The
  dump is rewritten first so that nothing in it reaches back to the target: its ``ALTER DATABASE `target```
  lines (written around routines and triggers) and ``target.object`` references in routine, trigger and
  event bodies name the scratch database instead, DEFINER clauses are dropped (the scratch's objects
  belong to the loading user, as pg_restore --no-owner does) and events are created DISABLEd. Sampled rows
  are copied before the triggers are created, so no trigger fires on them.
- SQLite: a file in this process's private directory; the target attached READ-ONLY (``mode=ro``), its
  tables created, the rows copied, then its indexes, views and triggers.
"""

from __future__ import annotations

import re
import secrets
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

from ..errors import GuardError
from ..private import private_dir, private_tempdir

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from ..backup.engines.postgresql.connection import Conn

LOCK_WAIT_SECONDS = 5.0  # the longest the build waits behind another session's lock on the target
MYSQL_STATEMENT_SECONDS = 10  # MariaDB: bound on each statement of the schema dump (metadata-lock waits)
DROP_CONNECT_TIMEOUT = 10  # seconds; dropping must not hang on a server that went away
PREFIX = "mg_trace_"


@dataclass
class Scratch:
    """The scratch database a ``scratch_copy`` block works on."""

    url: str  # SQLAlchemy URL of the scratch database, password included
    dialect: str  # "postgresql" | "mysql" (MariaDB and MySQL) | "sqlite"
    name: str  # the scratch database's name (its file path for SQLite)
    build_seconds: float
    notes: list[str] = field(default_factory=list)  # one line each, for the user


class Terminated(SystemExit):
    """SIGTERM arrived while a scratch database existed. Raised in the main thread so the database is
    dropped on the way out; uncaught, the process exits 143, as the signal would have ended it."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


def scratch_name() -> str:
    return f"{PREFIX}{secrets.token_hex(6)}"


@contextmanager
def scratch_copy(
    target_url: str,
    *,
    scratch_url: str | None = None,
    sample_rows: int = 0,
    version_table: str = "alembic_version",
    version_table_schema: str | None = None,
) -> Iterator[Scratch]:
    """A scratch copy of the target's schema (see the module notes), dropped when the block exits.

    ``scratch_url``: another server (same dialect) to build it on; its database part is only used to
    connect. ``sample_rows``: copy up to that many rows of every user table. A failure while building
    drops what was created and raises a one-line ``GuardError``."""
    if sample_rows < 0:
        raise GuardError(f"--sample-rows must be 0 or more, not {sample_rows}")
    target = _parse_url(target_url, "target")
    server = _parse_url(scratch_url, "scratch server") if scratch_url else None
    dialect = _dialect(target)
    if server is not None and _dialect(server) != dialect:
        raise GuardError(f"the scratch server must be {dialect} like the target, not {server.get_backend_name()}")
    builders: dict[str, type[_Builder]] = {"postgresql": _PostgreSQL, "mysql": _MySQL, "sqlite": _SQLite}
    builder = builders[dialect](target, server, sample_rows, version_table, version_table_schema)
    with _sigterm_raises():
        failure: BaseException | None = None
        started = time.monotonic()
        try:
            scratch = builder.build()
            scratch.build_seconds = time.monotonic() - started
            yield scratch
        except BaseException as exc:
            failure = exc
            raise
        finally:
            with _signals_deferred():  # a second Ctrl-C must not leave the database behind
                problem = builder.drop()
            if problem is not None:
                if isinstance(failure, GuardError):
                    raise GuardError(f"{failure.message}; also, {problem}", failure.exit_code) from None
                if failure is None:
                    raise GuardError(problem)
                failure.add_note(problem)


# --- signals ----------------------------------------------------------------------------------------------


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM raises ``Terminated`` for the block's duration, where nobody handles it already."""
    if not _in_main_thread() or signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
        yield
        return

    def terminated(signum: int, frame: FrameType | None) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done, then are raised again."""
    if not _in_main_thread():
        yield  # Python runs signal handlers in the main thread only: this one is not interrupted
        return
    caught: list[int] = []

    def defer(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    saved: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) not in (signal.SIG_IGN, None):
            saved[sig] = signal.signal(sig, defer)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)


# --- shared -------------------------------------------------------------------------------------------------


def _parse_url(url: str, what: str) -> URL:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        raise GuardError(f"the {what} URL is not a database URL (dialect://user@host/database)") from None


def _dialect(url: URL) -> str:
    backend = url.get_backend_name()
    family = {"postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql", "sqlite": "sqlite"}.get(backend)
    if family is None:
        raise GuardError(f"trace supports PostgreSQL, MariaDB/MySQL and SQLite databases, not {backend}")
    return family


def _full(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def _tool_failure(err: IO[bytes], what: str) -> str:
    """``what: <the tool's first error line>`` on one line."""
    err.seek(0)
    lines = [line.strip() for line in err.read().decode("utf-8", "replace").splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()] or lines or ["exited with an error and no message"]
    return f"{what}: {' '.join(errors[0].split())}"


def _reap(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


class _Builder(ABC):
    dialect: str

    def __init__(
        self, target: URL, server: URL | None, sample_rows: int, version_table: str, version_schema: str | None
    ) -> None:
        self.target_url = target
        self.server_url = server
        self.sample_rows = sample_rows
        self.version_table = version_table
        self.version_schema = version_schema
        self.notes: list[str] = []

    @abstractmethod
    def build(self) -> Scratch:
        """Create and fill the scratch database; on failure raise a GuardError (``drop`` still runs)."""

    @abstractmethod
    def drop(self) -> str | None:
        """Remove whatever ``build`` created, if anything; a one-line problem when that failed."""


# --- PostgreSQL ---------------------------------------------------------------------------------------------

# GUCs whose value is a list pg_dump quotes element by element (its variable_is_guc_list_quote)
_GUC_LISTS = {
    "local_preload_libraries",
    "search_path",
    "session_preload_libraries",
    "shared_preload_libraries",
    "temp_tablespaces",
    "unix_socket_directories",
}
_PG_LOCK_QUERY = re.compile(r"Query was:\s*LOCK TABLE\s+(?:ONLY\s+)?(\S+?)(?:,| IN )")


@dataclass
class _PgTable:
    schema: str
    name: str
    relkind: str
    columns: list[str]
    is_version: bool

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


def split_guc_list(value: str) -> list[str]:
    """The elements of a list-valued setting as the catalog stores it: ``a, "$user", "x,y"``."""
    items: list[str] = []
    i, n = 0, len(value)
    while i < n:
        while i < n and value[i].isspace():
            i += 1
        if i < n and value[i] == '"':
            j, buf = i + 1, []
            while j < n and not (value[j] == '"' and value[j + 1 : j + 2] != '"'):
                buf.append(value[j])
                j += 2 if value[j] == '"' else 1
            items.append("".join(buf))
            i = value.find(",", j)
        else:
            j = value.find(",", i)
            items.append(value[i : n if j < 0 else j].strip())
            i = j
        if i < 0:
            break
        i += 1
    return items or [""]


class _PostgreSQL(_Builder):
    dialect = "postgresql"

    def __init__(
        self, target: URL, server: URL | None, sample_rows: int, version_table: str, version_schema: str | None
    ) -> None:
        from ..backup.engines.postgresql.connection import ConnectionSettings

        super().__init__(target, server, sample_rows, version_table, version_schema)
        self.target = ConnectionSettings.from_url(_full(target))
        if not self.target.params.get("dbname"):
            raise GuardError("the PostgreSQL target URL names no database")
        self.admin = ConnectionSettings.from_url(_full(server)) if server is not None else self.target
        self.name = scratch_name()
        self.scratch = ConnectionSettings({**self.admin.params, "dbname": self.name}, self.admin.password)
        self.url = (server or target).set(database=self.name)
        where = ("host", "port")
        self.same_server = [self.admin.params.get(k) for k in where] == [self.target.params.get(k) for k in where]
        self.created = False  # CREATE DATABASE was sent: drop it

    def build(self) -> Scratch:
        from ..backup.engines.postgresql.connection import error_message, find_tools, psycopg_module

        psycopg = psycopg_module()
        tools = find_tools(self.target)
        conn = self.target.connect()
        try:
            try:
                tables = self._tables(conn)
            except psycopg.Error as exc:
                raise GuardError(f"reading the PostgreSQL target failed: {error_message(exc)}") from None
            with ExitStack() as stack:
                archive = stack.enter_context(tempfile.TemporaryFile(dir=private_dir()))
                err = stack.enter_context(tempfile.TemporaryFile(dir=private_dir()))
                env = stack.enter_context(self.target.tool_env())
                dump = subprocess.Popen(
                    self._dump_args(tools.pg_dump), stdin=subprocess.DEVNULL, stdout=archive, stderr=err, env=env
                )
                stack.callback(_reap, dump)
                self._create(conn)  # while pg_dump reads the target
                if dump.wait() != 0:
                    raise GuardError(self._dump_failure(err))
                archive.seek(0)
                self._restore(tools.pg_restore, archive)
            conn.execute("SET default_transaction_read_only = on")  # from here on the target is only read
            conn.execute(f"SET lock_timeout = '{int(LOCK_WAIT_SECONDS * 1000)}ms'")
            if any(t.is_version for t in tables) or self.sample_rows:
                self._copy_rows(conn, tables)
        except psycopg.Error as exc:  # the server went away, say
            raise GuardError(f"building the PostgreSQL scratch database failed: {error_message(exc)}") from None
        finally:
            conn.close()
        return Scratch(_full(self.url), self.dialect, self.name, 0.0, self.notes)

    def _tables(self, conn: Conn) -> list[_PgTable]:
        """The version table and, when sampling, every user table with its columns (generated ones left out)."""
        from psycopg import sql

        from ..backup.engines.postgresql.connection import USER_RELATION

        parts = [self.version_table] if self.version_schema is None else [self.version_schema, self.version_table]
        version = sql.SQL(".").join(map(sql.Identifier, parts)).as_string(conn)
        generated = "AND a.attgenerated = ''" if conn.info.server_version >= 120000 else ""
        rows = conn.execute(
            "SELECT n.nspname, c.relname, c.relkind::text, c.oid = pg_catalog.to_regclass(%(version)s),"
            " ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0"
            f"       AND NOT a.attisdropped {generated} ORDER BY a.attnum)"
            " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " WHERE (c.oid = pg_catalog.to_regclass(%(version)s) AND c.relkind IN ('r', 'p'))"
            f" OR (%(sample)s AND c.relkind = 'r' AND {USER_RELATION})"
            " ORDER BY n.nspname, c.relname",
            {"version": version, "sample": self.sample_rows > 0},
        ).fetchall()
        return [_PgTable(r[0], r[1], r[2], list(r[4]), bool(r[3])) for r in rows if r[4]]

    def _create(self, target: Conn) -> None:
        """CREATE DATABASE with the target's encoding, locale and database-level settings."""
        from psycopg import errors, sql

        from ..backup.engines.postgresql.connection import error_message, one_row

        num = target.info.server_version
        provider = "d.datlocprovider::text" if num >= 150000 else "'c'"
        icu = "d.datlocale" if num >= 170000 else "d.daticulocale" if num >= 150000 else "NULL::text"
        encoding, collate, ctype, prov, locale, settings = one_row(
            target.execute(
                f"SELECT pg_catalog.pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, {provider}, {icu},"
                " coalesce((SELECT s.setconfig FROM pg_catalog.pg_db_role_setting s"
                "           WHERE s.setdatabase = d.oid AND s.setrole = 0), '{}'::text[])"
                " FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()"
            )
        )
        name = sql.Identifier(self.name)
        plain = sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {}").format(name, sql.Literal(encoding))
        same = plain + sql.SQL(" LC_COLLATE {} LC_CTYPE {}").format(sql.Literal(collate), sql.Literal(ctype))
        if prov == "i" and locale:
            same += sql.SQL(" LOCALE_PROVIDER icu ICU_LOCALE {}").format(sql.Literal(locale))
        elif prov == "b" and locale:
            same += sql.SQL(" LOCALE_PROVIDER builtin BUILTIN_LOCALE {}").format(sql.Literal(locale))
        admin = target if self.admin is self.target else self.admin.connect()
        try:
            self.created = True  # set first: an interrupt may land after the server has created it
            try:
                admin.execute(same)
            except (errors.InsufficientPrivilege, errors.DuplicateDatabase):
                raise
            except errors.Error as exc:  # the target's locale is not on the scratch server, say
                admin.execute(plain)
                self.notes.append(f"the scratch database has the server's default locale: {error_message(exc)}")
            for entry in settings:
                self._set(admin, entry)
        except errors.Error as exc:
            self.created = False  # the server refused it: a database of that name is not ours to drop
            where = self.scratch.where().rsplit("/", 1)[0]
            hint = " (the role needs CREATEDB)" if isinstance(exc, errors.InsufficientPrivilege) else ""
            raise GuardError(f"cannot create the scratch database on {where}: {error_message(exc)}{hint}") from None
        finally:
            if admin is not target:
                admin.close()

    def _set(self, admin: Conn, entry: str) -> None:
        """``ALTER DATABASE scratch SET`` one of the target's database-level settings (``name=value``)."""
        from psycopg import errors, sql

        from ..backup.engines.postgresql.connection import error_message

        param, _, value = entry.partition("=")
        values = split_guc_list(value) if param.lower() in _GUC_LISTS else [value]
        statement = sql.SQL("ALTER DATABASE {} SET {} TO {}").format(
            sql.Identifier(self.name),
            sql.SQL(".").join(map(sql.Identifier, param.split("."))),
            sql.SQL(", ").join(map(sql.Literal, values)),
        )
        try:
            admin.execute(statement)
        except errors.Error as exc:
            self.notes.append(f"the target's database setting {param} is not set on the scratch: {error_message(exc)}")

    def _dump_args(self, pg_dump: str) -> list[str]:
        return [
            pg_dump, "--dbname", self.target.conninfo, "--schema-only", "--format=custom", "--compress=0",
            "--no-owner", "--no-privileges", "--no-subscriptions", "--no-publications",
            f"--lock-wait-timeout={int(LOCK_WAIT_SECONDS * 1000)}",
        ]  # fmt: skip

    def _dump_failure(self, err: IO[bytes]) -> str:
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
        m = _PG_LOCK_QUERY.search(text)
        if m and ("timeout" in text or "canceling statement" in text):
            return (
                f"pg_dump waited {LOCK_WAIT_SECONDS:g}s for a read lock on {m.group(1)} in the target and gave up: "
                "another session holds a conflicting lock (ALTER TABLE, VACUUM FULL, ...); try again when it is done"
            )
        return _tool_failure(err, "pg_dump of the target's schema failed")

    def _restore(self, pg_restore: str, archive: IO[bytes]) -> None:
        args = [
            pg_restore, "--dbname", self.scratch.conninfo, "--format=custom", "--no-owner", "--no-privileges",
            "--exit-on-error", "--single-transaction",
        ]  # fmt: skip
        if not self.same_server:  # the target's tablespaces and label providers may not exist there
            args += ["--no-tablespaces", "--no-security-labels"]
        with self.scratch.tool_env() as env, tempfile.TemporaryFile(dir=private_dir()) as err:
            proc = subprocess.run(args, stdin=archive, stdout=subprocess.DEVNULL, stderr=err, env=env, check=False)
            if proc.returncode != 0:
                raise GuardError(_tool_failure(err, f"pg_restore into the scratch database {self.name} failed"))

    def _copy_rows(self, target: Conn, tables: list[_PgTable]) -> None:
        """The version table's rows, then up to ``sample_rows`` of every other table, by COPY."""
        from psycopg import errors

        from ..backup.engines.postgresql.connection import error_message

        conn = self.scratch.connect()
        try:
            if self.sample_rows:
                try:
                    conn.execute("SET session_replication_role = replica")
                except errors.Error as exc:
                    raise GuardError(
                        "--sample-rows needs a role that may set session_replication_role on the scratch server "
                        f"(a superuser, or GRANT SET ON PARAMETER session_replication_role): {error_message(exc)}"
                    ) from None
            for table in sorted(tables, key=lambda t: not t.is_version):
                try:
                    self._copy(target, conn, table)
                except errors.Error as exc:
                    if table.is_version or target.closed or conn.closed:
                        what = "the version table" if table.is_version else "sample rows of"
                        raise GuardError(
                            f"copying {what} {table.qualified} into the scratch database failed: {error_message(exc)}"
                        ) from None
                    self.notes.append(f"table {table.qualified}: no sample rows copied ({error_message(exc)})")
            if self.sample_rows:
                self._copy_sequences(target, conn)
        finally:
            conn.close()

    def _copy(self, target: Conn, scratch: Conn, table: _PgTable) -> None:
        from psycopg import sql

        from ..backup.engines.postgresql.connection import qualified_name

        name = qualified_name(table.schema, table.name)
        columns = sql.SQL(", ").join(map(sql.Identifier, table.columns))
        if table.is_version:
            select = sql.SQL("SELECT {} FROM {}").format(columns, name)
        else:  # ONLY: a parent's rows are its own, its children are sampled as tables of their own
            select = sql.SQL("SELECT {} FROM ONLY {} LIMIT {}").format(columns, name, sql.Literal(self.sample_rows))
        with (
            target.cursor() as out_cur,
            scratch.cursor() as in_cur,
            out_cur.copy(sql.SQL("COPY ({}) TO STDOUT").format(select)) as out,
            in_cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(name, columns)) as into,
        ):
            for data in out:
                into.write(data)

    def _copy_sequences(self, target: Conn, scratch: Conn) -> None:
        """The target's sequence positions, so new rows do not collide with sampled ones."""
        from psycopg import errors, sql

        from ..backup.engines.postgresql.connection import error_message, qualified_name

        rows = target.execute(
            "SELECT schemaname, sequencename, last_value FROM pg_catalog.pg_sequences WHERE last_value IS NOT NULL"
        ).fetchall()
        if not rows:
            return
        calls = [
            sql.SQL("pg_catalog.setval({}, {})").format(sql.Literal(qualified_name(s, n).as_string(scratch)), v)
            for s, n, v in rows
        ]
        try:
            scratch.execute(sql.SQL("SELECT ") + sql.SQL(", ").join(calls))
        except errors.Error as exc:
            self.notes.append(f"sequence positions not copied: {error_message(exc)}")

    def drop(self) -> str | None:
        if not self.created:
            return None
        from psycopg import errors, sql

        from ..backup.engines.postgresql.connection import ConnectionSettings, error_message

        params = {"connect_timeout": str(DROP_CONNECT_TIMEOUT), **self.admin.params}
        try:
            conn = ConnectionSettings(params, self.admin.password).connect()
        except GuardError as exc:
            return f"could not drop the scratch database {self.name} ({exc.message}): drop it by hand"
        try:
            name = sql.Identifier(self.name)
            if conn.info.server_version >= 130000:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
            else:
                conn.execute(
                    "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE datname = %s",
                    (self.name,),
                )
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(name))
        except errors.Error as exc:
            return f"could not drop the scratch database {self.name} ({error_message(exc)}): drop it by hand"
        finally:
            conn.close()
        self.created = False
        return None


# --- MariaDB / MySQL ----------------------------------------------------------------------------------------

# A dump's tokens: whitespace, strings, `identifiers`, comments (not /*! ... */, which is code), words.
_MY_TOKEN = re.compile(
    r"""(?P<ws>\s+)
    | (?P<str>'(?:[^'\\]|\\.|'')*+'|"(?:[^"\\]|\\.|"")*+")
    | (?P<ident>`(?:[^`]|``)*+`)
    | (?P<comment>(?:--(?=\s)|\#)[^\n]*|/\*(?!M?!)(?:[^*]|\*(?!/))*+\*/)
    | (?P<code>/\*M?!\d*)
    | (?P<word>[A-Za-z0-9_$\x80-\xff]+)
    | (?P<other>.)""",
    re.X | re.S,
)
_REMOTE_ENGINES = {"FEDERATED", "CONNECT", "SPIDER"}  # their rows live elsewhere: never written to
_GENERATED = re.compile(r"\b(?:VIRTUAL|STORED|PERSISTENT) GENERATED\b", re.I)


@dataclass
class Retargeted:
    """A schema dump rewritten for the scratch database, and what was changed or left."""

    sql: bytes
    references: int = 0  # target.object references pointed at the scratch database
    definers: int = 0  # DEFINER clauses dropped
    events: int = 0  # events created DISABLEd
    left: int = 0  # mentions of the target database that could not be rewritten (strings, unknown names)


def _unquote_ident(text: str) -> str:
    return text[1:-1].replace("``", "`") if text.startswith("`") else text


def retarget_dump(dump: bytes, database: str, scratch: str, objects: Collection[str], fold_case: bool) -> Retargeted:
    """Rewrite a ``mariadb-dump`` of ``database`` so that loading it into ``scratch`` touches nothing else.

    - ``ALTER DATABASE `database``` / ``USE database`` name ``scratch`` instead;
    - ``database.object`` in code (routine, trigger, event bodies) names ``scratch.object`` when ``object``
      is one of ``objects`` (tables, views, routines, sequences) or a third part follows; otherwise the
      first part may be a table alias, and it is left (and counted);
    - ``DEFINER=user@host`` clauses are dropped; ``ON COMPLETION ... PRESERVE ENABLE`` becomes DISABLE.

    Works on the bytes as latin-1 (one character per byte), so nothing outside the rewritten tokens changes."""
    text = dump.decode("latin-1")
    db = database.encode("utf-8").decode("latin-1")
    new_name = "`" + scratch.replace("`", "``") + "`"

    def norm(value: str) -> str:
        return value.lower() if fold_case else value

    target, known = norm(db), {o.encode("utf-8").decode("latin-1").lower() for o in objects}
    tokens = [(m.lastgroup or "other", m.group()) for m in _MY_TOKEN.finditer(text)]
    out = [t for _, t in tokens]
    sig = [i for i, (kind, _) in enumerate(tokens) if kind not in ("ws", "comment")]
    result = Retargeted(b"")
    mention = re.compile(r"(?<![\w$])`?" + re.escape(db) + r"`?\s*\.", 0 if not fold_case else re.I)

    def tok(pos: int) -> tuple[str, str]:
        return tokens[sig[pos]] if 0 <= pos < len(sig) else ("", "")

    def word(pos: int) -> str:
        kind, t = tok(pos)
        return t.upper() if kind == "word" else ""

    for pos, i in enumerate(sig):
        kind, t = tokens[i]
        if kind == "str":
            if mention.search(t):
                result.left += 1
            continue
        if kind == "word" and t.upper() == "DEFINER" and tok(pos + 1)[1] == "=":
            end = pos + 2
            if word(end) == "CURRENT_USER" and tok(end + 1)[1] == "(" and tok(end + 2)[1] == ")":
                end += 2
            if tok(end + 1)[1] == "@":
                end += 2
            for j in range(sig[pos], sig[min(end, len(sig) - 1)] + 1):
                out[j] = ""
            result.definers += 1
            continue
        if kind == "word" and t.upper() == "ENABLE" and word(pos - 1) == "PRESERVE":
            out[i] = "DISABLE"
            result.events += 1
            continue
        if kind not in ("word", "ident") or norm(_unquote_ident(t)) != target:
            continue
        if tok(pos + 1)[1] == ".":
            second_kind, second = tok(pos + 2)
            third = tok(pos + 3)[1] == "."
            if second_kind in ("word", "ident") and (third or _unquote_ident(second).lower() in known):
                out[i] = new_name
                result.references += 1
            else:
                result.left += 1
        elif word(pos - 1) == "USE" or (word(pos - 1) in ("DATABASE", "SCHEMA") and word(pos - 2) == "ALTER"):
            out[i] = new_name
    result.sql = "".join(out).encode("latin-1")
    return result


def _my_error(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    args: tuple[Any, ...] = getattr(orig, "args", ())
    text = args[1] if len(args) >= 2 and isinstance(args[1], str) else str(orig) or type(orig).__name__
    return " ".join(text.split())


def _run(conn: Any, statement: str, params: Sequence[Any] | None = None) -> list[Any]:
    """A statement on the DBAPI cursor (with ``params``, ``%`` in it must be doubled)."""
    cursor = conn.connection.cursor()
    try:
        if params is None:
            cursor.execute(statement)
        else:
            cursor.execute(statement, tuple(params))
        return list(cursor.fetchall()) if cursor.description else []
    finally:
        cursor.close()


@dataclass
class _MyTarget:
    charset: str
    collation: str
    fold_case: bool
    mariadb: bool
    objects: set[str]  # tables, views, routines, sequences: what database.name may point at
    tables: dict[str, list[str]]  # base tables to sample -> their insertable columns
    version: tuple[str, list[str]] | None  # (database, insertable columns) of the version table
    statement_copy: bool  # the binary log is statement-based: INSERT ... SELECT would lock the target's rows


class _MySQL(_Builder):
    dialect = "mysql"

    def __init__(
        self, target: URL, server: URL | None, sample_rows: int, version_table: str, version_schema: str | None
    ) -> None:
        super().__init__(target, server, sample_rows, version_table, version_schema)
        if not target.database:
            raise GuardError("the MariaDB/MySQL target URL names no database")
        self.database: str = target.database
        self.admin_url = server if server is not None else target
        self.name = scratch_name()
        self.url = self.admin_url.set(database=self.name)
        self.same_server = server is None
        self.created = False

    @contextmanager
    def _connect(self, url: URL, what: str, timeout: int | None = None) -> Iterator[Any]:
        from ..backup.engines.mysql import sa_engine

        args = {"connect_args": {"connect_timeout": timeout}} if timeout else {}
        engine = sa_engine(url, isolation_level="AUTOCOMMIT", **args)
        try:
            try:
                conn = engine.connect()
            except Exception as exc:  # noqa: BLE001 - refused, access denied, unknown database: one line
                where = f"{url.host or 'localhost'}:{url.port or 3306}/{url.database or ''}"
                raise GuardError(f"cannot connect to {what} at {where}: {_my_error(exc)}") from None
            with conn:
                yield conn
        finally:
            engine.dispose()

    def build(self) -> Scratch:
        from ..backup.engines.base import require_tool
        from ..backup.engines.mysql import CLIENT_TOOLS, DUMP_TOOLS, PACKAGE

        dump_tool, client = require_tool(DUMP_TOOLS, PACKAGE), require_tool(CLIENT_TOOLS, PACKAGE)
        with ExitStack() as stack:
            conn = stack.enter_context(self._connect(self.target_url, "the MariaDB/MySQL target"))
            step = "reading the target"
            try:
                info = self._target(conn)
                step = "creating the scratch database"
                admin = conn if self.same_server else stack.enter_context(self._connect(self.admin_url, "the server"))
                self.created = True  # set first: an interrupt may land after the server has created it
                try:
                    _run(
                        admin, f"CREATE DATABASE {_q(self.name)} CHARACTER SET {info.charset} COLLATE {info.collation}"
                    )
                except Exception:
                    self.created = False  # the server refused it: a database of that name is not ours to drop
                    raise
                # without a sample, one dump; with one, the triggers come after the rows (none fires on them)
                self._load(dump_tool, client, info, "all" if not self.sample_rows else "schema")
                step = "copying rows"
                scratch = conn if self.same_server else stack.enter_context(self._connect(self.url, "the scratch"))
                _run(scratch, "SET SESSION FOREIGN_KEY_CHECKS = 0")
                self._copy_rows(conn, scratch, info)
                if self.sample_rows:
                    self._load(dump_tool, client, info, "triggers")
            except GuardError:
                raise
            except Exception as exc:  # noqa: BLE001 - a server error: one line
                raise GuardError(f"MariaDB/MySQL scratch copy failed {step}: {_my_error(exc)}") from None
        return Scratch(_full(self.url), self.dialect, self.name, 0.0, self.notes)

    def _target(self, conn: Any) -> _MyTarget:
        db = self.database
        _run(conn, f"SET SESSION lock_wait_timeout = {max(1, int(LOCK_WAIT_SECONDS))}")
        # INSERT ... SELECT reads the target as a consistent read (no row locks) only under READ COMMITTED
        _run(conn, "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        found = _run(
            conn,
            "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA"
            " WHERE SCHEMA_NAME = %s",
            [db],
        )
        if not found:
            raise GuardError(f"no database {db} on the MariaDB/MySQL server")
        charset, collation = found[0]
        lower, version, log_bin, binlog_format = _run(
            conn, "SELECT @@lower_case_table_names, VERSION(), @@log_bin, @@binlog_format"
        )[0]
        tables = _run(
            conn, "SELECT TABLE_NAME, TABLE_TYPE, ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", [db]
        )
        routines = _run(conn, "SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s", [db])
        version_db = self.version_schema or db
        columns: dict[tuple[str, str], list[str]] = {}
        for schema, table, column, extra in _run(
            conn,
            "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, EXTRA FROM information_schema.COLUMNS"
            " WHERE TABLE_SCHEMA = %s OR (TABLE_SCHEMA = %s AND TABLE_NAME = %s) ORDER BY ORDINAL_POSITION",
            [db if self.sample_rows else "", version_db, self.version_table],
        ):
            if not _GENERATED.search(extra or ""):
                columns.setdefault((schema, table), []).append(column)
        sample: dict[str, list[str]] = {}
        for name, kind, engine in tables:
            if kind not in ("BASE TABLE", "SYSTEM VERSIONED") or (version_db, name) == (db, self.version_table):
                continue
            if self.sample_rows and (engine or "").upper() in _REMOTE_ENGINES:
                self.notes.append(
                    f"table {name}: no sample rows copied (a {engine} table's rows live on another server)"
                )
            elif self.sample_rows and (db, name) in columns:
                sample[name] = columns[(db, name)]
        vcols = columns.get((version_db, self.version_table))
        return _MyTarget(
            charset,
            collation,
            int(lower) != 0,
            "mariadb" in str(version).lower(),
            {r[0] for r in tables} | {r[0] for r in routines},
            sample,
            (version_db, vcols) if vcols else None,
            bool(int(log_bin or 0)) and str(binlog_format).upper() == "STATEMENT",
        )

    def _load(self, dump_tool: str, client: str, info: _MyTarget, part: str) -> None:
        """Dump (``all``, the ``schema`` without triggers, or only the ``triggers``), rewrite, load."""
        from ..backup.engines.mysql import tool_args

        options = {
            "all": ["--routines", "--triggers", "--events"],
            "schema": ["--routines", "--skip-triggers", "--events"],
            "triggers": ["--no-create-info", "--skip-routines", "--triggers", "--skip-events"],
        }[part]
        dump_args = [
            "--no-data", "--single-transaction", "--skip-lock-tables", "--skip-add-locks", "--skip-add-drop-table",
            "--skip-comments", "--no-tablespaces", "--default-character-set=utf8mb4", *options,
        ]  # fmt: skip
        if info.mariadb and _supports(dump_tool, "--max-statement-time"):
            dump_args.append(f"--max-statement-time={MYSQL_STATEMENT_SECONDS}")
        name = Path(dump_tool).name
        with tool_args(self.target_url) as conn_args, tempfile.TemporaryFile(dir=private_dir()) as err:
            proc = subprocess.run(
                [dump_tool, *conn_args, *dump_args, "--", self.database],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                check=False,
            )
            if proc.returncode != 0:
                raise GuardError(_tool_failure(err, f"{name} of the target's schema failed"))
        script = retarget_dump(proc.stdout, self.database, self.name, info.objects, info.fold_case)
        if script.events:
            self.notes.append(f"{script.events} event(s) created DISABLEd in the scratch database")
        if script.left:
            self.notes.append(
                f"{script.left} mention(s) of the target database {self.database} in the schema (in strings, or "
                "naming no table) were left as they are: check that no routine or trigger reaches the target"
            )
        with tool_args(self.admin_url) as conn_args, tempfile.TemporaryFile(dir=private_dir()) as err:
            loaded = subprocess.run(
                [client, *conn_args, "--default-character-set=utf8mb4", "--binary-mode", "--comments", "--batch",
                 "--max-allowed-packet=1G", "--", self.name],
                input=script.sql,
                stdout=subprocess.DEVNULL,
                stderr=err,
                check=False,
            )  # fmt: skip
            if loaded.returncode != 0:
                raise GuardError(_tool_failure(err, f"loading the schema into the scratch database {self.name} failed"))

    def _copy_rows(self, target: Any, scratch: Any, info: _MyTarget) -> None:
        """The version table's rows, then up to ``sample_rows`` of every other table."""
        if info.version is not None:
            version_db, columns = info.version
            if version_db != self.database:  # it lives in another database: copy it into the scratch one
                self._version_elsewhere(target, scratch, version_db)
            try:
                self._copy(target, scratch, version_db, self.version_table, columns, None, info)
            except Exception as exc:  # noqa: BLE001 - any refusal is the build's failure, said in one line
                raise GuardError(
                    f"copying the version table into the scratch database failed: {_my_error(exc)}"
                ) from None
        for table, columns in info.tables.items():
            try:
                self._copy(target, scratch, self.database, table, columns, self.sample_rows, info)
            except Exception as exc:  # noqa: BLE001 - a table that cannot be sampled is a note
                self.notes.append(f"table {table}: no sample rows copied ({_my_error(exc)})")

    def _version_elsewhere(self, target: Any, scratch: Any, version_db: str) -> None:
        source = f"{_q(version_db)}.{_q(self.version_table)}"
        if self.same_server:
            _run(scratch, f"CREATE TABLE {_q(self.name)}.{_q(self.version_table)} LIKE {source}")
        else:
            _run(scratch, _run(target, f"SHOW CREATE TABLE {source}")[0][1])
        self.notes.append(
            f"the version table {version_db}.{self.version_table} is copied into the scratch database itself"
        )

    def _copy(
        self, target: Any, scratch: Any, db: str, table: str, columns: list[str], limit: int | None, info: _MyTarget
    ) -> None:
        cols = ", ".join(map(_q, columns))
        select = f"SELECT {cols} FROM {_q(db)}.{_q(table)}" + (f" LIMIT {limit}" if limit is not None else "")
        if self.same_server and not info.statement_copy:
            _run(target, f"INSERT INTO {_q(self.name)}.{_q(table)} ({cols}) {select}")
            return
        rows = _run(target, select)
        if rows:
            insert = (
                f"INSERT INTO {_q(table)} ({cols})".replace("%", "%%") + f" VALUES ({', '.join(['%s'] * len(columns))})"
            )
            cursor = scratch.connection.cursor()
            try:
                cursor.executemany(insert, rows)
            finally:
                cursor.close()

    def drop(self) -> str | None:
        if not self.created:
            return None
        try:
            with self._connect(self.admin_url, "the server", timeout=DROP_CONNECT_TIMEOUT) as conn:
                # like PostgreSQL's WITH (FORCE): sessions still in the scratch database would hold the DROP
                for (session,) in _run(
                    conn,
                    "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s AND ID <> CONNECTION_ID()",
                    [self.name],
                ):
                    with suppress(Exception):
                        _run(conn, f"KILL CONNECTION {int(session)}")
                _run(conn, "SET SESSION lock_wait_timeout = 60")
                _run(conn, f"DROP DATABASE IF EXISTS {_q(self.name)}")
        except GuardError as exc:
            return f"could not drop the scratch database {self.name} ({exc.message}): drop it by hand"
        except Exception as exc:  # noqa: BLE001 - said in one line
            return f"could not drop the scratch database {self.name} ({_my_error(exc)}): drop it by hand"
        self.created = False
        return None


def _q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


_SUPPORTS: dict[tuple[str, str], bool] = {}


def _supports(tool: str, option: str) -> bool:
    """Whether ``tool --help`` lists ``option`` (MySQL's mysqldump lacks some of MariaDB's)."""
    key = (tool, option)
    if key not in _SUPPORTS:
        try:
            out = subprocess.run([tool, "--help"], capture_output=True, timeout=30, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            out = b""
        _SUPPORTS[key] = option.encode() in out
    return _SUPPORTS[key]


# --- SQLite -------------------------------------------------------------------------------------------------

_SQLITE_ORDER = {"table": 0, "index": 1, "view": 2, "trigger": 3}  # views before INSTEAD OF triggers on them


def _sqlite_uri(path: Path, mode: str) -> str:
    return f"file:{quote(str(path.resolve()), safe='/')}?mode={mode}"


def _sq(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _table_kinds(conn: sqlite3.Connection, objects: list[tuple[str, str, str]]) -> dict[str, str]:
    """Each table's kind: "table", "virtual", or "shadow" (a virtual table's storage, which it creates itself)."""
    kinds = {name: kind for _schema, name, kind, *_ in conn.execute("PRAGMA mg_target.table_list")}
    if kinds:
        return kinds
    # SQLite before 3.37 has no table_list: tell them apart by their SQL, and shadow tables by their names
    virtual = [name for kind, name, sql in objects if kind == "table" and re.match(r"(?i)\s*CREATE\s+VIRTUAL\b", sql)]
    for kind, name, _sql in objects:
        if kind == "table":
            shadow = any(name.startswith(f"{v}_") for v in virtual)
            kinds[name] = "virtual" if name in virtual else "shadow" if shadow else "table"
    return kinds


class _SQLite(_Builder):
    dialect = "sqlite"

    def __init__(
        self, target: URL, server: URL | None, sample_rows: int, version_table: str, version_schema: str | None
    ) -> None:
        super().__init__(target, server, sample_rows, version_table, version_schema)
        if server is not None:
            raise GuardError("a SQLite target's scratch copy is a private temporary file: leave the scratch URL out")
        if not target.database or target.database == ":memory:" or target.query.get("mode") == "memory":
            raise GuardError("the SQLite target is an in-memory database: there is nothing to copy")
        if version_schema not in (None, "main"):
            raise GuardError(
                f"the version table schema {version_schema!r} is an attached SQLite database: trace reads main only"
            )
        self.path = Path(target.database)
        self.stack = ExitStack()

    def build(self) -> Scratch:
        if not self.path.is_file():
            raise GuardError(f"no SQLite database at {self.path}")
        directory = self.stack.enter_context(private_tempdir("trace-"))
        path = directory / "scratch.db"
        try:
            conn = sqlite3.connect(_sqlite_uri(path, "rwc"), uri=True, isolation_level=None, timeout=LOCK_WAIT_SECONDS)
        except sqlite3.Error as exc:
            raise GuardError(f"cannot create the SQLite scratch database {path}: {exc}") from None
        try:
            self._fill(conn)
        except sqlite3.Error as exc:
            raise GuardError(f"SQLite scratch copy of {self.path} failed: {' '.join(str(exc).split())}") from None
        finally:
            conn.close()
        url = self.target_url.set(database=str(path), query={})
        return Scratch(_full(url), self.dialect, str(path), 0.0, self.notes)

    def _fill(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute("ATTACH DATABASE ? AS mg_target", (_sqlite_uri(self.path, "ro"),))
        try:
            objects = conn.execute(
                "SELECT type, name, sql FROM mg_target.sqlite_master"
                " WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY rowid"
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise GuardError(f"cannot read the SQLite database {self.path}: {exc}") from None
        kinds = _table_kinds(conn, objects)
        ordered = sorted(
            (o for o in objects if o[0] in _SQLITE_ORDER and kinds.get(o[1]) != "shadow"),  # virtual tables make those
            key=lambda o: _SQLITE_ORDER[o[0]],
        )
        conn.execute("BEGIN")
        for _kind, _name, statement in (o for o in ordered if o[0] == "table"):
            conn.execute(statement)
        for _kind, name, _statement in (o for o in ordered if o[0] == "table" and kinds.get(o[1]) == "table"):
            is_version = name == self.version_table
            if not is_version and not self.sample_rows:
                continue
            columns = ", ".join(
                _sq(r[1]) for r in conn.execute(f"PRAGMA mg_target.table_xinfo({_sq(name)})") if not r[6]
            )
            limit = "" if is_version else f" LIMIT {self.sample_rows}"
            insert = f"INSERT INTO main.{_sq(name)} ({columns}) SELECT {columns} FROM mg_target.{_sq(name)}{limit}"
            try:
                conn.execute(insert)
            except sqlite3.Error as exc:
                if is_version:
                    raise
                self.notes.append(f"table {name}: no sample rows copied ({exc})")
        counters = "SELECT 1 FROM {}.sqlite_master WHERE name = 'sqlite_sequence'"
        if self.sample_rows and all(conn.execute(counters.format(db)).fetchone() for db in ("mg_target", "main")):
            # AUTOINCREMENT counters at the target's: new rows do not collide with the sample
            conn.execute("DELETE FROM main.sqlite_sequence")
            conn.execute(
                "INSERT INTO main.sqlite_sequence (name, seq) SELECT name, seq FROM mg_target.sqlite_sequence"
                " WHERE name IN (SELECT name FROM main.sqlite_master WHERE type = 'table')"
            )
        for _kind, _name, statement in (o for o in ordered if o[0] != "table"):
            conn.execute(statement)
        (user_version,) = conn.execute("PRAGMA mg_target.user_version").fetchone()
        conn.execute(f"PRAGMA main.user_version = {int(user_version)}")
        conn.execute("COMMIT")
        conn.execute("DETACH DATABASE mg_target")

    def drop(self) -> str | None:
        self.stack.close()
        return None
