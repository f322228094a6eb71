"""PostgreSQL: pg_dump/pg_restore for the schema, COPY for the rows, on one exported snapshot.

Dump
    A psycopg connection opens ``REPEATABLE READ READ ONLY`` and exports its snapshot. On that
    snapshot ``pg_dump --schema-only -Fc -Z0`` writes the schema archive (streamed from its stdout;
    we compress and encrypt, the tool does not), and the same connection streams each table with
    ``COPY ... TO STDOUT`` (text format, primary-key order where there is one; plain COPY with
    synchronized scans off otherwise), so the schema and every table come from one moment and an
    unchanged table gives a byte-identical stream. Session settings (DateStyle, TimeZone,
    extra_float_digits, bytea_output, client_encoding) are pinned so the bytes do not depend on
    server configuration.

    Unchanged tables are not read again. Each table gets a marker in the snapshot: a SHA-256 over
    what decides its COPY bytes besides its rows (server, timeline, database, server and extension
    versions, enum labels, composite and domain types, the table's oid and every attribute,
    dropped ones and their missing values included, the COPY's columns and order) and over its
    rows' transaction ids: their count and two 64-bit hash sums over the multiset of ``xmin``s
    (grouped per xmin, so a table written by few transactions is hashed in a few steps). Every
    insert or update leaves a tuple whose xmin was not committed at the earlier snapshot (it lies in
    [that snapshot's xmin, now)), a delete removes one that was: the multiset changes with any
    change to the rows, and the sums miss it with a chance of about 2^-128 -- provided no xid of
    that range has the same 32 bits as the xmin of a tuple that was there before (xids wrap around,
    and frozen tuples keep their raw xmin from any earlier epoch). So a marker also records its
    snapshot's 64-bit xmin s and the smallest forward distance d from s (mod 2^32) to any of the
    table's xmins, and a later snapshot with horizon h may use it only when h - s <= d: then every
    xid that could have written a tuple since lies strictly before every earlier xmin, and the two
    cannot be confused. (A table written while some transaction was running at the earlier snapshot
    has a small d and is read again once.) An equal marker lets the dump reuse the earlier stream
    (its blobs still in the repository): the second backup of an unchanged database reads the
    catalog and scans each table's tuple headers, nothing more.

    The schema stream is a small JSON header (magic ``MGPG1 <length>\\n``) followed by the archive.
    The header holds what the archive cannot tell a restore: each table's catalog oid (to find its
    TOC entry), the columns COPY wrote (generated columns excluded), which table owns each foreign
    key, and every sequence's ``last_value``/``is_called``. Sequence values are not in a
    ``--schema-only`` archive (``SEQUENCE SET`` is data-section) and ``--exclude-table-data`` would
    drop them too, so they are read on the snapshot connection exactly as pg_dump reads them (a
    sequence is not transactional: a value may be ahead of the snapshot, which only leaves gaps).

Restore
    Everything runs in ONE transaction on one connection, so a failure changes nothing: pg_restore
    does not touch the database, it turns the archive into SQL (``--file=-``) that we execute entry
    by entry. The entries to restore are chosen from the archive's own dependency graph
    (``pg_restore --verbose`` prints each TOC entry's id, catalog id and dependencies): the tables
    being restored, and everything that depends on them (sequences they own, defaults, indexes,
    constraints, triggers, rules, policies, comments, grants, views), which is what
    ``DROP TABLE ... CASCADE`` removes. Foreign keys belong to the table that owns them: the
    restored tables' own foreign keys come from the archive; foreign keys OTHER tables hold on
    them are read live (``pg_get_constraintdef``) before the drop and re-added afterwards.

    Steps: remember those foreign keys; ``DROP TABLE ... CASCADE``; pre-data; ``COPY ... FROM
    STDIN`` per table (no constraints or triggers exist yet, so the order does not matter); set
    the sequences; post-data (indexes, constraints, triggers); re-add the remembered foreign keys
    (validated, so a restore that would leave a dangling reference fails and rolls back).

    A full restore (``tables=None``) also restores the objects that belong to no table (schemas,
    types, functions, standalone sequences, ...): pg_restore's ``--clean --if-exists`` drops go
    first (each in a savepoint; one that fails because something outside the restore still uses
    the object is skipped, and so is the matching "already exists" on create; schemas,
    extensions and publications are never dropped). A partial restore creates such objects only
    when a restored table needs them and they are missing.

    Partitioned tables are listed (no rows of their own, an empty stream) and restore as a tree:
    a partition cannot be restored without its partitioned table, nor an inheritance parent
    without its children. Large objects are not part of a snapshot (and are left alone). Needs
    PostgreSQL 11 or newer.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import subprocess
import tempfile
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import GuardError
from .base import DumpResult, Engine, StreamReader, StreamRef, StreamWriter, TableDump, ToolMissing, require_tool

PIECE = 1 << 20  # bytes per piece handed to the repository
COPY_CONNECTIONS = 4  # at most this many connections COPY tables at once (no more than CPUs)
MAGIC = b"MGPG1 "
FORMAT = "pg_dump-custom-schema+copy-text"
PACKAGE = "postgresql-client"

# Pinned so a table's COPY bytes do not depend on the server's or the role's settings.
SESSION = (
    "SET client_encoding = 'UTF8'",
    "SET DateStyle = 'ISO, YMD'",
    "SET IntervalStyle = 'postgres'",
    "SET TimeZone = 'UTC'",
    "SET extra_float_digits = 3",
    "SET bytea_output = 'hex'",
    "SET synchronize_seqscans = off",  # a plain COPY starts at block 0, not mid-table
)

USER_RELATION = """
    n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
    AND c.relpersistence <> 't'
    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                    WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                      AND d.objid = c.oid AND d.deptype = 'e')
"""

DUPLICATE = {"42710", "42P07", "42723", "42P06"}  # duplicate object/table/function/schema
IN_USE = "2BP01"  # dependent_objects_still_exist
NOT_OWNER = "42501"  # insufficient_privilege: e.g. COMMENT ON EXTENSION as a non-superuser
DECORATION = {"COMMENT", "ACL", "SECURITY LABEL"}  # skipped when not ours to change (as pg_restore would)
NEVER_DROP = (b"DROP SCHEMA ", b"DROP EXTENSION ", b"DROP PUBLICATION ")

TOC_LINE = re.compile(rb"^-- TOC entry (\d+) \(class (\d+) OID (\d+)\)")


def _is_protection(entry: _Entry) -> bool:
    """An object of migrate-guard's protection (schema/protect.py). It belongs to a database, not to
    its data: a restore neither drops nor recreates it, so the target keeps the protection it has
    (a protected table recreated there gets its TRUNCATE trigger from the protection's event trigger)
    and a restore into another database needs no superuser for event triggers."""
    from ...schema.protect import EVENT_TRIGGERS, PG_SCHEMA, TRUNCATE_TRIGGER

    return (
        (entry.desc == "SCHEMA" and entry.name == PG_SCHEMA)
        or entry.schema == PG_SCHEMA
        or (entry.desc == "EVENT TRIGGER" and entry.name in EVENT_TRIGGERS)
        or (entry.desc == "TRIGGER" and entry.name.rsplit(" ", 1)[-1] == TRUNCATE_TRIGGER)
    )


def _psycopg():
    try:
        import psycopg
    except ImportError:  # pragma: no cover - a dependency of the package
        raise ToolMissing("the psycopg module is not installed: pip install 'psycopg[binary]'") from None
    return psycopg


def _message(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = primary or str(exc) or type(exc).__name__
    return " ".join(text.split())


def _qualified(schema: str, name: str):
    from psycopg import sql

    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def _major(version: str) -> tuple[int, ...]:
    m = re.search(r"(\d+)(?:\.(\d+))?", version)
    if not m:
        return (0,)
    major = int(m.group(1))
    return (major,) if major >= 10 else (major, int(m.group(2) or 0))


def _server_major(num: int) -> tuple[int, ...]:
    return (num // 10000,) if num >= 100000 else (num // 10000, num // 100 % 100)


def _tail(f) -> str:
    f.seek(0)
    lines = [line.strip() for line in f.read().decode("utf-8", "replace").splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()] or lines
    return " ".join(errors[-1].split()) if errors else "no message"


def _wait(sock: int, write: bool = False) -> None:
    """Block (without the GIL) until the libpq socket is readable (or, with ``write``, either)."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN | (select.POLLOUT if write else 0))
        poller.poll()
    else:  # pragma: no cover - Windows
        select.select([sock], [sock] if write else [], [])


def _result(pgconn):
    """The next result of the query in progress, waiting for it; None when there is no more."""
    while True:
        pgconn.consume_input()
        if not pgconn.is_busy():
            return pgconn.get_result()
        _wait(pgconn.socket)


def _raise_for(conn, res) -> None:
    """Raise the psycopg error a failed result stands for (after draining the query's results)."""
    from psycopg import errors

    pgconn = conn.pgconn
    while _result(pgconn) is not None:
        pass
    if res is None:
        raise errors.OperationalError("the server sent no result")
    raise errors.error_from_result(res, encoding=conn.info.encoding)


def _copy_pieces(conn, query: bytes, counter: list[int]) -> Iterator[bytes]:
    """``COPY ... TO STDOUT`` as pieces of about ``PIECE`` bytes, ``counter[0]`` counting rows.

    The server sends one message per row; psycopg's ``Copy`` spends a Python generator round trip
    on each, which made reading cost more CPU than the server spent writing. This loop asks libpq
    for the rows directly (``PQgetCopyData`` non-blocking, waiting in ``poll`` without the GIL
    when its buffer is empty). The connection is left idle in its transaction afterwards, as
    psycopg would leave it; an error surfaces as the same psycopg exception."""
    from psycopg import pq

    pgconn = conn.pgconn
    pgconn.send_query(query)
    while pgconn.flush():  # non-blocking connection: the query may not be sent whole at once
        _wait(pgconn.socket, write=True)
        pgconn.consume_input()
    res = _result(pgconn)
    if res is None or res.status != pq.ExecStatus.COPY_OUT:
        _raise_for(conn, res)
    get = pgconn.get_copy_data
    consume = pgconn.consume_input
    sock = pgconn.socket
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        wait = poller.poll
    else:  # pragma: no cover - Windows

        def wait() -> None:
            select.select([sock], [], [])

    buf = bytearray()
    while True:
        nbytes, data = get(1)
        if nbytes > 0:
            buf += data
            if len(buf) >= PIECE:
                counter[0] += buf.count(b"\n")  # text COPY: one line per row, newlines escaped
                yield bytes(buf)
                buf.clear()
        elif nbytes == 0:  # libpq's buffer holds no whole row: wait for the socket
            wait()
            consume()
        else:  # -1: the COPY is over (-2, an error, is raised by psycopg)
            break
    res = _result(pgconn)
    if res is None or res.status != pq.ExecStatus.COMMAND_OK:
        _raise_for(conn, res)
    while _result(pgconn) is not None:
        pass
    if buf:
        counter[0] += buf.count(b"\n")
        yield bytes(buf)


@dataclass
class _Entry:
    id: int
    classid: int
    objid: int
    deps: list[int] = field(default_factory=list)
    desc: str = ""
    name: str = ""
    schema: str = ""

    @property
    def label(self) -> str:
        where = f"{self.schema}." if self.schema and self.schema != "-" else ""
        return f"{self.desc} {where}{self.name}".strip()


@dataclass
class _Plan:
    order: list[int]  # entry ids in archive order (pg_restore -L restores in list order)
    strict: set[int]  # must be created
    tolerant: set[int]  # created unless it already exists
    entries: dict[int, _Entry]


MARKER_PREFIX = "pg2"
XID_WRAP = 1 << 32

# What besides a table's own rows decides its COPY bytes: checked as one fingerprint per snapshot.
_BASIS_QUERIES = (
    "SELECT system_identifier::text FROM pg_catalog.pg_control_system()",
    "SELECT timeline_id::text FROM pg_catalog.pg_control_checkpoint()",
    "SELECT oid::text FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()",
    "SELECT pg_catalog.current_setting('server_version_num')",
    "SELECT pg_catalog.string_agg(extname || '=' || extversion, ',' ORDER BY extname) FROM pg_catalog.pg_extension",
    "SELECT pg_catalog.string_agg(enumtypid || ':' || enumsortorder || ':' || enumlabel, ',' ORDER BY enumtypid, enumsortorder)"
    " FROM pg_catalog.pg_enum",
    "SELECT pg_catalog.string_agg(concat_ws(':', a.attrelid, a.attnum, a.attname, a.atttypid, a.atttypmod, a.attisdropped), ','"
    " ORDER BY a.attrelid, a.attnum) FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid"
    " WHERE c.relkind = 'c' AND a.attnum > 0",
    "SELECT pg_catalog.string_agg(concat_ws(':', oid, typbasetype, typtypmod, typnotnull), ',' ORDER BY oid)"
    " FROM pg_catalog.pg_type WHERE typtype = 'd'",
)


@dataclass
class _MarkerBasis:
    """The per-snapshot part of every table marker, and each table's attributes (see the module doc)."""

    xmin: int  # the snapshot's 64-bit xmin: every xid before it had finished
    horizon: int  # the snapshot's 64-bit xid horizon (xmax): every xid from it on had not started
    server: str  # fingerprint of _BASIS_QUERIES' answers and of how we COPY
    attributes: dict[int, str]  # table oid -> its pg_attribute rows, dropped ones included

    def marker(self, conn, schema: str, name: str, info: dict[str, Any]) -> str:
        from psycopg import sql

        query = sql.SQL(
            "SELECT coalesce(sum(c), 0)::text, coalesce(sum(c * pg_catalog.hashint8extended(v, 1)), 0)::text,"
            " coalesce(sum(c * pg_catalog.hashint8extended(v, 2)), 0)::text,"
            " coalesce(min(((v - %(s)s) %% %(wrap)s + %(wrap)s) %% %(wrap)s), %(wrap)s)::text"
            " FROM (SELECT xmin::text::int8 AS v, count(*)::numeric AS c FROM ONLY {} GROUP BY xmin) AS per_xmin"
        ).format(_qualified(schema, name))
        count, sum1, sum2, distance = conn.execute(query, {"s": self.xmin % XID_WRAP, "wrap": XID_WRAP}).fetchone()
        body = json.dumps(
            [
                self.server,
                info["oid"],
                self.attributes.get(info["oid"], ""),
                info["columns"],
                info["order_by"],
                count,
                sum1,
                sum2,
            ],
            separators=(",", ":"),
        )
        return f"{MARKER_PREFIX}:{self.xmin}:{distance}:{hashlib.sha256(body.encode()).hexdigest()}"

    def same(self, marker: str, earlier: str | None) -> bool:
        """True when ``earlier`` (from a previous snapshot) says the rows are those ``marker`` describes."""
        if not earlier:
            return False
        try:
            prefix, xmin, distance, digest = earlier.split(":")
            then, room = int(xmin), int(distance)
        except ValueError:
            return False
        return prefix == MARKER_PREFIX and 0 <= self.horizon - then <= room and digest == marker.rsplit(":", 1)[1]


def _marker_basis(conn, tables: Sequence[dict[str, Any]], num: int) -> _MarkerBasis | None:
    """The snapshot's marker basis, or None (no markers, every table is read) where the server
    does not let us see all of it."""
    psycopg = _psycopg()
    if num < 120000:  # attgenerated and the pg_control functions for everyone: PostgreSQL 12
        return None
    try:
        with conn.transaction():  # a savepoint: a refused catalog read leaves the dump going
            answers = [conn.execute(q).fetchone() for q in _BASIS_QUERIES]
            xmin, horizon = (
                int(x)
                for x in conn.execute(
                    "SELECT pg_catalog.txid_snapshot_xmin(s), pg_catalog.txid_snapshot_xmax(s)"
                    " FROM pg_catalog.txid_current_snapshot() AS s"
                ).fetchone()
            )
            attributes = dict(
                conn.execute(
                    "SELECT a.attrelid::int8, pg_catalog.string_agg(concat_ws(':', a.attnum, a.attname, a.atttypid, a.atttypmod,"
                    " a.attisdropped, a.atthasmissing, a.attmissingval::text, a.attgenerated, a.attcollation), ','"
                    " ORDER BY a.attnum) FROM pg_catalog.pg_attribute a WHERE a.attrelid = ANY(%s::oid[]) AND a.attnum > 0"
                    " GROUP BY a.attrelid",
                    ([t["oid"] for t in tables],),
                ).fetchall()
            )
    except psycopg.Error:
        return None
    if any(a is None for a in answers[:3]):
        return None
    server = hashlib.sha256(json.dumps([FORMAT, SESSION, [a[0] if a else None for a in answers]]).encode()).hexdigest()
    return _MarkerBasis(xmin, horizon, server, attributes)


class PostgreSQLEngine(Engine):
    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        from sqlalchemy.engine import make_url

        u = make_url(url)
        params: dict[str, str] = {}
        if u.host:
            params["host"] = u.host
        if u.port:
            params["port"] = str(u.port)
        if u.username:
            params["user"] = u.username
        if u.database:
            params["dbname"] = u.database
        for key, value in u.query.items():
            params[key] = value if isinstance(value, str) else value[-1]
        self._params = params
        self._password = u.password
        self._tools: tuple[str, str, str, str] | None = None  # pg_dump, pg_restore, their versions

    # --- connections and tools ----------------------------------------------------------------------

    @property
    def _conninfo(self) -> str:
        from psycopg.conninfo import make_conninfo

        try:
            return make_conninfo("", **self._params)
        except Exception as exc:
            raise GuardError(f"bad PostgreSQL URL parameters: {_message(exc)}") from None

    def _where(self) -> str:
        p = self._params
        return f"{p.get('host', 'localhost')}:{p.get('port', '5432')}/{p.get('dbname', '')}"

    def _connect(self):
        psycopg = _psycopg()
        kwargs = {"password": self._password} if self._password is not None else {}
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True, **kwargs)
        except psycopg.Error as exc:
            raise GuardError(f"cannot connect to PostgreSQL at {self._where()}: {_message(exc)}") from None
        try:
            for statement in SESSION:
                conn.execute(statement)
        except psycopg.Error as exc:
            conn.close()
            raise GuardError(f"PostgreSQL session setup failed: {_message(exc)}") from None
        return conn

    @contextmanager
    def _tool_env(self) -> Iterator[dict[str, str]]:
        """Environment for pg_dump/pg_restore: the password in a 0600 PGPASSFILE, never in argv."""
        env = dict(os.environ)
        with tempfile.TemporaryDirectory(prefix="migrate-guard-") as tmp:
            if self._password is not None:
                env.pop("PGPASSWORD", None)  # it would win over the passfile
                if "\n" in self._password or "\r" in self._password:
                    env["PGPASSWORD"] = self._password  # a passfile cannot hold a line break
                else:
                    passfile = Path(tmp) / "pgpass"
                    fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    escaped = self._password.replace("\\", "\\\\").replace(":", "\\:")
                    with os.fdopen(fd, "w") as f:
                        f.write(f"*:*:*:*:{escaped}\n")
                    env["PGPASSFILE"] = str(passfile)
            yield env

    def check_tools(self) -> None:
        self._tools = None
        self._checked_tools()

    def _checked_tools(self) -> tuple[str, str, str, str]:
        if self._tools is not None:
            return self._tools
        pg_dump = require_tool(["pg_dump"], PACKAGE)
        pg_restore = require_tool(["pg_restore"], PACKAGE)
        versions = {}
        for path in (pg_dump, pg_restore):
            try:
                out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
            except (OSError, subprocess.SubprocessError) as exc:
                raise ToolMissing(
                    f"{path} does not run ({exc}): reinstall it (Debian/Ubuntu: apt-get install {PACKAGE})"
                ) from None
            m = re.search(r"\d+(?:\.\d+)*", out)
            versions[path] = m.group(0) if m else "0"
        conn = self._connect()
        try:
            num = int(conn.execute("SHOW server_version_num").fetchone()[0])
            server = conn.execute("SHOW server_version").fetchone()[0].split()[0]
        finally:
            conn.close()
        for path, version in versions.items():
            if _major(version) < _server_major(num):
                major = ".".join(map(str, _server_major(num)))
                raise ToolMissing(
                    f"{Path(path).name} {version} is older than the PostgreSQL {server} server: install a client "
                    f"at least as new (Debian/Ubuntu: apt-get install postgresql-client-{major})"
                )
        self._tools = (pg_dump, pg_restore, versions[pg_dump], versions[pg_restore])
        return self._tools

    # --- catalog ------------------------------------------------------------------------------------

    @staticmethod
    def _user_tables(conn) -> list[tuple[int, str, str, str]]:
        """(oid, schema, name, relkind) of ordinary and partitioned tables; a partitioned table
        holds no rows itself (its partitions are tables of their own)."""
        return [
            (r[0], r[1], r[2], r[3])
            for r in conn.execute(
                "SELECT c.oid::int8, n.nspname, c.relname, c.relkind::text FROM pg_catalog.pg_class c "
                "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                f"WHERE c.relkind IN ('r', 'p') AND {USER_RELATION} ORDER BY n.nspname, c.relname"
            )
        ]

    @staticmethod
    def _resolve(
        names: Sequence[str], known: Sequence[tuple[str, str]], *, strict: bool, where: str = "the PostgreSQL database"
    ) -> list[tuple[str, str]]:
        """``schema.table`` or a bare ``table`` (in public, else the one schema that has it)."""
        qualified = {f"{s}.{n}": (s, n) for s, n in known}
        out: list[tuple[str, str]] = []
        for name in names:
            hit = qualified.get(name)
            if hit is None:
                candidates = [(s, n) for s, n in known if n == name]
                if len(candidates) > 1:
                    candidates = [c for c in candidates if c[0] == "public"] or candidates
                if len(candidates) > 1:
                    raise GuardError(
                        f"table name {name!r} is ambiguous: say which of {', '.join(f'{s}.{n}' for s, n in candidates)}"
                    )
                hit = candidates[0] if candidates else None
            if hit is None:
                if strict:
                    raise GuardError(f"no table {name!r} in {where}")
                continue
            if hit not in out:
                out.append(hit)
        return out

    def list_tables(self) -> list[tuple[str | None, str]]:
        conn = self._connect()
        try:
            return [(s, n) for _oid, s, n, _kind in self._user_tables(conn)]
        except _psycopg().Error as exc:
            raise GuardError(f"listing PostgreSQL tables failed: {_message(exc)}") from None
        finally:
            conn.close()

    def row_counts(self, tables: Sequence[str] | None = None) -> dict[str, int]:
        from psycopg import IsolationLevel, sql

        conn = self._connect()
        try:
            conn.autocommit = False
            conn.isolation_level = IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            known = [(s, n) for _oid, s, n, _kind in self._user_tables(conn)]
            chosen = known if tables is None else self._resolve(tables, known, strict=False)
            counts = {}
            for schema, name in chosen:
                query = sql.SQL("SELECT count(*) FROM ONLY {}.{}").format(sql.Identifier(schema), sql.Identifier(name))
                counts[f"{schema}.{name}"] = conn.execute(query).fetchone()[0]
            conn.rollback()
            return counts
        except _psycopg().Error as exc:
            raise GuardError(f"counting rows failed: {_message(exc)}") from None
        finally:
            conn.close()

    def drop_tables(self, tables: Sequence[str]) -> None:
        from psycopg import sql

        if not tables:
            return
        conn = self._connect()
        try:
            chosen = self._resolve(tables, [(s, n) for _oid, s, n, _kind in self._user_tables(conn)], strict=False)
            if chosen:
                targets = sql.SQL(", ").join(_qualified(s, n) for s, n in chosen)
                with conn.transaction():
                    conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(targets))
        except _psycopg().Error as exc:
            raise GuardError(f"dropping tables failed: {_message(exc)}") from None
        finally:
            conn.close()

    # --- dump ---------------------------------------------------------------------------------------

    def dump(
        self,
        write: StreamWriter,
        tables: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        previous: Mapping[str, TableDump] | None = None,
    ) -> DumpResult:
        from psycopg import IsolationLevel

        pg_dump, _pg_restore, version, _restore_version = self._checked_tools()
        psycopg = _psycopg()
        conn = self._connect()
        try:
            server = conn.execute("SHOW server_version").fetchone()[0].split()[0]
            num = int(conn.execute("SHOW server_version_num").fetchone()[0])
            conn.autocommit = False
            conn.isolation_level = IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            # The first statement fixes the transaction's snapshot; pg_dump imports it.
            snapshot = conn.execute("SELECT pg_catalog.pg_export_snapshot()").fetchone()[0]
            meta, all_tables, depends = self._catalog(conn, num)
            known = [(s, n) for _oid, s, n, _kind in all_tables]
            wanted = set(known if tables is None else self._resolve(tables, known, strict=True))
            wanted -= set(self._resolve(exclude, known, strict=False))
            chosen = [t for t in known if t in wanted]  # catalog order, whatever order was asked
            self._lock(conn, chosen)
            basis = _marker_basis(conn, [meta["tables"][f"{s}.{n}"] for s, n in chosen], num)

            with self._tool_env() as env:
                refs, rows, markers = self._dump_streams(
                    conn, write, snapshot, meta, chosen, pg_dump, env, basis, previous or {}
                )
            dumps = [
                TableDump(
                    name,
                    schema,
                    rows.get(f"{schema}.{name}", 0),
                    refs[f"{schema}.{name}"],
                    depends_on=depends.get(f"{schema}.{name}", []),
                    marker=markers.get(f"{schema}.{name}"),
                )
                for schema, name in chosen
            ]
            conn.rollback()
        except psycopg.Error as exc:
            raise GuardError(f"PostgreSQL dump failed: {_message(exc)}") from None
        finally:
            conn.close()
        return DumpResult(
            engine={"tool": "pg_dump", "version": version, "format": FORMAT, "server_version": server},
            schema=refs["schema"],
            tables=dumps,
        )

    def _dump_streams(
        self,
        conn,
        write: StreamWriter,
        snapshot: str,
        meta: dict[str, Any],
        chosen: Sequence[tuple[str, str]],
        pg_dump: str,
        env: dict[str, str],
        basis: _MarkerBasis | None,
        previous: Mapping[str, TableDump],
    ) -> tuple[dict[str, StreamRef], dict[str, int], dict[str, str]]:
        """Write the schema stream and every table's stream; returns their refs, row counts and
        markers. A table whose marker equals its previous dump's reuses that stream unread.

        The schema stream comes first (pg_dump's archive, quick), then the tables' COPYs run at
        once over up to ``COPY_CONNECTIONS`` connections (no more than CPUs): this one, and helpers
        that import its snapshot with ``SET TRANSACTION SNAPSHOT`` as ``pg_dump -j`` does, largest
        table first. A helper that cannot connect is simply not used. A helper takes each table's
        lock with NOWAIT first: were it to queue behind another session's pending ACCESS EXCLUSIVE
        request, which itself waits for this connection's lock, nobody would ever finish; such a
        table is left to this connection, which holds every lock already."""
        psycopg = _psycopg()
        from psycopg import sql

        refs: dict[str, StreamRef] = {"schema": write("schema", self._schema_stream(pg_dump, env, snapshot, meta))}
        rows: dict[str, int] = {}
        markers: dict[str, str] = {}
        jobs: deque[tuple[str, str]] = deque()
        for schema, name in chosen:
            if meta["tables"][f"{schema}.{name}"]["partitioned"]:  # no rows of its own: an empty stream
                refs[f"{schema}.{name}"] = write(f"{schema}.{name}", iter(()))
                rows[f"{schema}.{name}"] = 0
            else:
                jobs.append((schema, name))
        if len(jobs) > 1:
            sizes = dict(
                conn.execute(
                    "SELECT c.oid::int8, pg_catalog.pg_table_size(c.oid) FROM pg_catalog.pg_class c "
                    "WHERE c.oid = ANY(%s::oid[])",
                    ([meta["tables"][f"{s}.{n}"]["oid"] for s, n in jobs],),
                ).fetchall()
            )
            jobs = deque(sorted(jobs, key=lambda t: -(sizes.get(meta["tables"][f"{t[0]}.{t[1]}"]["oid"]) or 0)))

        mutex = threading.Lock()
        stop = threading.Event()
        failures: list[BaseException] = []
        left: list[tuple[str, str]] = []  # tables a helper could not lock at once
        helpers: list[Any] = []  # their connections, to cancel on failure

        def copy_table(c, schema: str, name: str) -> None:
            qualified = f"{schema}.{name}"
            info = meta["tables"][qualified]
            marker = basis.marker(c, schema, name, info) if basis is not None else None
            earlier = previous.get(qualified)
            if marker is not None and earlier is not None and basis.same(marker, earlier.marker):
                with mutex:
                    refs[qualified], rows[qualified], markers[qualified] = earlier.stream, earlier.rows, marker
                return
            counter = [0]
            ref = write(qualified, self._copy_out(c, schema, name, info["columns"], info["order_by"], counter))
            with mutex:
                refs[qualified] = ref
                rows[qualified] = counter[0]
                if marker is not None:
                    markers[qualified] = marker

        def next_job() -> tuple[str, str] | None:
            with mutex:
                return jobs.popleft() if jobs and not stop.is_set() else None

        def fail(exc: BaseException) -> None:
            with mutex:
                failures.append(exc)
            stop.set()

        def helper_job(c) -> None:
            try:
                while (job := next_job()) is not None:
                    target = _qualified(*job)
                    try:
                        with c.transaction():  # a savepoint: a refused lock leaves the transaction usable
                            c.execute(sql.SQL("LOCK TABLE ONLY {} IN ACCESS SHARE MODE NOWAIT").format(target))
                    except psycopg.errors.LockNotAvailable:
                        with mutex:
                            left.append(job)
                        continue
                    copy_table(c, *job)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                fail(exc)

        threads: list[threading.Thread] = []
        try:
            for _ in range(min(COPY_CONNECTIONS, os.cpu_count() or 1, len(jobs)) - 1):
                try:
                    helper = self._snapshot_connection(snapshot)
                except (GuardError, psycopg.Error):
                    break  # too many connections, say: this one does the work
                helpers.append(helper)
                threads.append(
                    threading.Thread(target=helper_job, args=(helper,), name="migrate-guard-copy", daemon=True)
                )
                threads[-1].start()
            while (job := next_job()) is not None:
                copy_table(conn, *job)
            for thread in threads:
                thread.join()
            if failures:
                raise failures[0]
            for job in left:
                copy_table(conn, *job)
        except BaseException:
            stop.set()
            for helper in helpers:
                try:
                    helper.cancel()
                except Exception:  # noqa: BLE001 - best effort; it is closed below anyway
                    pass
            raise
        finally:
            for thread in threads:
                thread.join()
            for helper in helpers:
                helper.close()
        return refs, rows, markers

    def _snapshot_connection(self, snapshot: str):
        """A connection in a read-only REPEATABLE READ transaction on ``snapshot`` (exported by the
        dump's own connection), with the same pinned session settings."""
        from psycopg import IsolationLevel, sql

        c = self._connect()
        try:
            c.autocommit = False
            c.isolation_level = IsolationLevel.REPEATABLE_READ
            c.read_only = True
            c.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        except BaseException:
            c.close()
            raise
        return c

    @staticmethod
    def _catalog(conn, num: int) -> tuple[dict[str, Any], list[tuple[int, str, str, str]], dict[str, list[str]]]:
        from psycopg import sql

        all_tables = PostgreSQLEngine._user_tables(conn)
        oids = [oid for oid, _s, _n, _kind in all_tables]
        by_oid = {oid: f"{s}.{n}" for oid, s, n, _kind in all_tables}
        partitioned = {oid for oid, _s, _n, kind in all_tables if kind == "p"}
        generated = " AND a.attgenerated = ''" if num >= 120000 else ""
        columns: dict[int, list[str]] = defaultdict(list)
        for relid, attname in conn.execute(
            "SELECT a.attrelid::int8, a.attname FROM pg_catalog.pg_attribute a "
            f"WHERE a.attrelid = ANY(%s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped{generated} "
            "ORDER BY a.attrelid, a.attnum",
            (oids,),
        ):
            columns[relid].append(attname)
        primary: dict[int, list[str]] = defaultdict(list)
        for relid, attname in conn.execute(
            "SELECT i.indrelid::int8, a.attname FROM pg_catalog.pg_index i "
            "CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) "
            "JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indisprimary AND i.indrelid = ANY(%s::oid[]) ORDER BY i.indrelid, k.ord",
            (oids,),
        ):
            primary[relid].append(attname)
        fk_owner: dict[str, int] = {}
        depends: dict[str, set[str]] = defaultdict(set)
        for conoid, conrelid, confrelid in conn.execute(
            "SELECT oid::int8, conrelid::int8, confrelid::int8 FROM pg_catalog.pg_constraint WHERE contype = 'f'"
        ):
            fk_owner[str(conoid)] = conrelid
            if conrelid in by_oid and confrelid in by_oid and conrelid != confrelid:
                depends[by_oid[conrelid]].add(by_oid[confrelid])
        sequences: dict[str, dict[str, Any]] = {}
        for seqoid, schema, name in conn.execute(
            "SELECT c.oid::int8, n.nspname, c.relname FROM pg_catalog.pg_class c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE c.relkind = 'S' AND {USER_RELATION} ORDER BY 1"
        ).fetchall():
            query = sql.SQL("SELECT last_value, is_called FROM {}").format(_qualified(schema, name))
            last_value, is_called = conn.execute(query).fetchone()
            sequences[str(seqoid)] = {"schema": schema, "name": name, "last_value": last_value, "is_called": is_called}
        tables = {
            by_oid[oid]: {
                "oid": oid,
                "columns": columns.get(oid, []),
                "order_by": primary.get(oid, []),
                "partitioned": oid in partitioned,
            }
            for oid in oids
        }
        meta = {
            "format": "migrate-guard/postgresql-schema",
            "version": 1,
            "tables": tables,
            "fk_owner": fk_owner,
            "sequences": sequences,
        }
        return meta, all_tables, {k: sorted(v) for k, v in depends.items()}

    @staticmethod
    def _lock(conn, chosen: Sequence[tuple[str, str]]) -> None:
        """ACCESS SHARE on the tables we COPY later: no DROP/ALTER can slip in before we read them."""
        from psycopg import sql

        for start in range(0, len(chosen), 500):
            batch = chosen[start : start + 500]
            targets = sql.SQL(", ").join(_qualified(s, n) for s, n in batch)
            conn.execute(sql.SQL("LOCK TABLE ONLY {} IN ACCESS SHARE MODE").format(targets))

    def _schema_stream(self, pg_dump: str, env: dict[str, str], snapshot: str, meta: dict[str, Any]) -> Iterator[bytes]:
        header = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
        yield MAGIC + str(len(header)).encode() + b"\n" + header
        args = [
            pg_dump, "--dbname", self._conninfo, "--snapshot", snapshot, "--schema-only",
            "--format=custom", "--compress=0", "--no-subscriptions",
        ]  # fmt: skip
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, env=env)
            try:
                while piece := proc.stdout.read(PIECE):
                    yield piece
                rc = proc.wait()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                proc.stdout.close()
            if rc != 0:
                raise GuardError(f"pg_dump failed (exit {rc}): {_tail(err)}")

    @staticmethod
    def _copy_out(
        conn, schema: str, name: str, columns: list[str], order_by: list[str], counter: list[int]
    ) -> Iterator[bytes]:
        from psycopg import sql

        target = _qualified(schema, name)
        cols = sql.SQL(", ").join(map(sql.Identifier, columns))
        if order_by and columns:
            keys = sql.SQL(", ").join(map(sql.Identifier, order_by))
            query = sql.SQL("COPY (SELECT {} FROM ONLY {} ORDER BY {}) TO STDOUT").format(cols, target, keys)
        elif columns:
            query = sql.SQL("COPY {} ({}) TO STDOUT").format(target, cols)
        else:
            query = sql.SQL("COPY {} TO STDOUT").format(target)
        return _copy_pieces(conn, query.as_bytes(conn), counter)

    # --- restore ------------------------------------------------------------------------------------

    def restore(
        self,
        dump: DumpResult,
        read: StreamReader,
        tables: Sequence[str] | None = None,
        before_commit: Callable[[], None] | None = None,
    ) -> None:
        fmt = dump.engine.get("format")
        if fmt != FORMAT:
            raise GuardError(f"this PostgreSQL snapshot has format {fmt!r}; this version restores {FORMAT!r}")
        _pg_dump, pg_restore, _version, restore_version = self._checked_tools()
        if _major(restore_version) < _major(str(dump.engine.get("version", "0"))):
            raise ToolMissing(
                f"pg_restore is older than the pg_dump {dump.engine.get('version')} that took this snapshot: "
                f"install a newer client (Debian/Ubuntu: apt-get install {PACKAGE})"
            )
        full = tables is None
        if full:
            chosen = list(dump.tables)
        else:
            listed = [(t.schema or "public", t.name) for t in dump.tables]
            picked = self._resolve(tables, listed, strict=True, where="this snapshot")
            chosen = [t for t in dump.tables if (t.schema or "public", t.name) in picked]

        meta = self._read_header(read, dump.schema)
        with self._tool_env() as env, tempfile.TemporaryDirectory(prefix="migrate-guard-") as tmp:
            plan = self._plan(self._toc(pg_restore, env, read, dump.schema), meta, chosen, full)
            listing = Path(tmp) / "restore.list"
            listing.write_text("".join(f"{i};\n" for i in plan.order))
            self._apply(pg_restore, env, read, dump, meta, chosen, plan, listing, full, before_commit)

    @staticmethod
    def _open_schema(read: StreamReader, ref: StreamRef) -> tuple[bytes, Iterator[bytes]]:
        """Split the schema stream into its JSON header and the pg_dump archive that follows."""
        pieces = iter(read(ref))
        buf = b""
        while b"\n" not in buf and len(buf) < 64:
            piece = next(pieces, None)
            if piece is None:
                break
            buf += piece
        first, newline, rest = buf.partition(b"\n")
        if not first.startswith(MAGIC) or not newline or not first[len(MAGIC) :].isdigit():
            raise GuardError("the PostgreSQL schema stream is damaged (no header)")
        length = int(first[len(MAGIC) :])
        while len(rest) < length:
            piece = next(pieces, None)
            if piece is None:
                raise GuardError("the PostgreSQL schema stream is damaged (short header)")
            rest += piece

        def archive() -> Iterator[bytes]:
            if len(rest) > length:
                yield rest[length:]
            yield from pieces

        return rest[:length], archive()

    def _read_header(self, read: StreamReader, ref: StreamRef) -> dict[str, Any]:
        header, archive = self._open_schema(read, ref)
        archive.close()
        try:
            meta = json.loads(header)
        except ValueError:
            raise GuardError("the PostgreSQL schema stream is damaged (bad header)") from None
        known = isinstance(meta, dict) and meta.get("format") == "migrate-guard/postgresql-schema"
        if not known or meta.get("version") != 1:
            raise GuardError("the PostgreSQL schema stream has an unknown header version")
        return meta

    def _pg_restore(
        self, pg_restore: str, env: dict[str, str], args: list[str], read: StreamReader, ref: StreamRef
    ) -> Iterator[bytes]:
        """Run pg_restore on the archive (fed to its stdin from the repository) and yield the
        lines of SQL it writes. Nothing is written to disk and nothing touches the database."""
        err = tempfile.TemporaryFile()
        proc = subprocess.Popen(
            [pg_restore, *args, "--file=-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env
        )
        failure: list[BaseException] = []

        def feed() -> None:
            try:
                for piece in self._open_schema(read, ref)[1]:
                    proc.stdin.write(piece)
            except BrokenPipeError:
                pass  # pg_restore stopped reading; its exit status tells why
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                if not (isinstance(exc, ValueError) and proc.stdin.closed):  # closed after a kill
                    failure.append(exc)
            finally:
                try:
                    proc.stdin.close()
                except OSError:
                    pass

        feeder = threading.Thread(target=feed, name="pg_restore-stdin", daemon=True)
        feeder.start()
        rc = None
        try:
            for line in proc.stdout:
                yield line
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            feeder.join()
            proc.stdout.close()
            if rc is None:
                err.close()
        with err:
            if failure:
                raise failure[0]
            if rc != 0:
                raise GuardError(f"pg_restore failed (exit {rc}): {_tail(err)}")

    def _toc(self, pg_restore: str, env: dict[str, str], read: StreamReader, ref: StreamRef) -> list[_Entry]:
        """Every TOC entry of the archive, in restore order, with its dependencies."""
        entries: list[_Entry] = []
        current: _Entry | None = None
        previous = b""
        for line in self._pg_restore(pg_restore, env, ["--verbose"], read, ref):
            if previous == b"--\n" and (m := TOC_LINE.match(line)):
                current = _Entry(int(m.group(1)), int(m.group(2)), int(m.group(3)))
                entries.append(current)
            elif current is not None and line.startswith(b"-- Dependencies:"):
                current.deps = [int(x) for x in line.split(b":", 1)[1].split()]
            elif current is not None and (line.startswith(b"-- Name: ") or line.startswith(b"-- Data for Name: ")):
                text = line.decode("utf-8", "replace").rstrip("\n").split("Name: ", 1)[1]
                left, _, _owner = text.rpartition("; Owner: ")
                left, _, current.schema = left.rpartition("; Schema: ")
                current.name, _, current.desc = left.rpartition("; Type: ")
                current = None
            previous = line
        return entries

    @staticmethod
    def _plan(toc: list[_Entry], meta: dict[str, Any], chosen: Sequence[TableDump], full: bool) -> _Plan:
        entries = {e.id: e for e in toc}
        table_entry = {e.objid: e.id for e in toc if e.desc == "TABLE" and e.classid == 1259}
        want = {}
        for t in chosen:
            info = meta["tables"].get(t.qualified)
            if info is None or info["oid"] not in table_entry:
                raise GuardError(f"the snapshot's schema archive has no table {t.qualified}")
            want[info["oid"]] = t.qualified
        t_set = {table_entry[oid] for oid in want}
        t_other = set(table_entry.values()) - t_set
        dependents: dict[int, set[int]] = defaultdict(set)
        for e in toc:
            for d in e.deps:
                dependents[d].add(e.id)

        def closure(seeds: set[int]) -> set[int]:
            seen, todo = set(seeds), deque(seeds)
            while todo:
                for nxt in dependents.get(todo.popleft(), ()):
                    if nxt not in seen:
                        seen.add(nxt)
                        todo.append(nxt)
            return seen

        c_set, c_other = closure(t_set), closure(t_other)
        for e in toc:
            if e.desc == "TABLE ATTACH" and set(e.deps) & t_set and set(e.deps) & t_other:
                raise GuardError(
                    f"{e.schema}.{e.name} is a partition: restore its partitioned table together with all "
                    "its partitions"
                )
        fk_owner = meta.get("fk_owner", {})
        strict: set[int] = set()
        tolerant: set[int] = set()
        guard = closure({e.id for e in toc if _is_protection(e)})  # with their comments, grants, triggers
        for e in toc:
            if e.id in guard:
                continue
            if e.desc == "FK CONSTRAINT":
                if fk_owner.get(str(e.objid)) in want:  # a restored table's own foreign key
                    strict.add(e.id)
            elif e.id in t_set:
                strict.add(e.id)
            elif e.id in t_other:
                if e.id in c_set:
                    raise GuardError(
                        f"{e.schema}.{e.name} depends on a table being restored (inheritance, partitioning or "
                        "its row type): restore them together"
                    )
            elif e.id in c_set:
                strict.add(e.id)
            elif e.id in c_other:
                pass  # belongs to a table that stays as it is
            elif full:
                tolerant.add(e.id)
        if not full:
            # Objects the restored tables need (types, functions, schemas): create them if missing.
            todo = deque(d for i in strict for d in entries[i].deps)
            while todo:
                d = todo.popleft()
                if (
                    d in entries
                    and d not in strict
                    and d not in tolerant
                    and d not in c_set
                    and d not in c_other
                    and d not in guard
                ):
                    tolerant.add(d)
                    todo.extend(entries[d].deps)
        order = [e.id for e in toc if e.id in strict or e.id in tolerant]
        return _Plan(order=order, strict=strict, tolerant=tolerant, entries=entries)

    def _apply(
        self,
        pg_restore,
        env,
        read,
        dump,
        meta,
        chosen,
        plan: _Plan,
        listing: Path,
        full: bool,
        before_commit: Callable[[], None] | None,
    ) -> None:
        from psycopg import sql

        psycopg = _psycopg()
        conn = self._connect()
        stage = "starting"
        created: set[int] = set()
        try:
            with conn.transaction():
                conn.execute("SELECT pg_catalog.set_config('search_path', '', false)")  # all names qualified
                stage = "reading foreign keys that point at the restored tables"
                remembered = self._referencing_fks(conn, chosen)
                stage = "dropping the tables to restore"
                targets = sql.SQL(", ").join(_qualified(t.schema or "public", t.name) for t in chosen)
                if chosen:
                    conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(targets))

                pre = ["--verbose", "--section=pre-data", f"--use-list={listing}"]
                if full:
                    pre += ["--clean", "--if-exists"]
                stage = "restoring the schema (pre-data)"
                self._execute(conn, self._pg_restore(pg_restore, env, pre, read, dump.schema), plan, created)

                conn.execute("SET client_encoding = 'UTF8'")  # what the COPY streams were written in
                # Tables this transaction itself created (not in a savepoint) take their rows frozen:
                # later reads (the index builds just below, and every reader after) set no hint bits.
                ours = {
                    plan.entries[i].objid for i in created if plan.entries[i].desc == "TABLE" and i not in plan.tolerant
                }
                for t in chosen:
                    stage = f"loading the rows of {t.qualified}"
                    info = meta["tables"][t.qualified]
                    if info.get("partitioned"):
                        continue  # its rows are in its partitions
                    loaded = self._copy_in(conn, t, info["columns"], read, freeze=info["oid"] in ours)
                    if loaded != t.rows:
                        raise GuardError(f"{t.qualified}: loaded {loaded} rows but the snapshot lists {t.rows}")

                stage = "setting sequences"
                for entry_id in plan.order:
                    entry = plan.entries[entry_id]
                    seq = meta["sequences"].get(str(entry.objid)) if entry.desc == "SEQUENCE" else None
                    if seq and (entry_id in plan.strict or entry_id in created):
                        name = _qualified(seq["schema"], seq["name"])
                        conn.execute(
                            sql.SQL("SELECT pg_catalog.setval({}::pg_catalog.regclass, %s, %s)").format(
                                sql.Literal(name.as_string(conn))
                            ),
                            (seq["last_value"], seq["is_called"]),
                        )

                stage = "restoring indexes, constraints and triggers (post-data)"
                post = ["--verbose", "--section=post-data", f"--use-list={listing}"]
                self._execute(conn, self._pg_restore(pg_restore, env, post, read, dump.schema), plan, created)

                for schema, table, name, definition in remembered:
                    stage = f"re-adding foreign key {name} of {schema}.{table}"
                    conn.execute(
                        sql.SQL("ALTER TABLE {}.{} ADD CONSTRAINT {} ").format(
                            sql.Identifier(schema), sql.Identifier(table), sql.Identifier(name)
                        )
                        + sql.SQL(definition)
                    )
                if before_commit is not None:
                    stage = "checking the snapshot before committing"
                    before_commit()
        except (psycopg.Error, GuardError) as exc:
            reason = exc.message if isinstance(exc, GuardError) else _message(exc)
            raise GuardError(f"PostgreSQL restore failed while {stage} (nothing was changed): {reason}") from None
        finally:
            conn.close()

    @staticmethod
    def _referencing_fks(conn, chosen: Sequence[TableDump]) -> list[tuple[str, str, str, str]]:
        schemas = [t.schema or "public" for t in chosen]
        names = [t.name for t in chosen]
        return [
            tuple(r)
            for r in conn.execute(
                """
                WITH restored AS (
                    SELECT c.oid FROM pg_catalog.pg_class c
                    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                    JOIN unnest(%s::text[], %s::text[]) AS r(nspname, relname)
                      ON r.nspname = n.nspname AND r.relname = c.relname
                )
                SELECT n.nspname, c.relname, con.conname, pg_catalog.pg_get_constraintdef(con.oid)
                FROM pg_catalog.pg_constraint con
                JOIN pg_catalog.pg_class c ON c.oid = con.conrelid
                JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE con.contype = 'f' AND con.conparentid = 0
                  AND con.confrelid IN (SELECT oid FROM restored)
                  AND con.conrelid NOT IN (SELECT oid FROM restored)
                ORDER BY 1, 2, 3
                """,
                (schemas, names),
            )
        ]

    @staticmethod
    def _copy_in(conn, t: TableDump, columns: list[str], read: StreamReader, freeze: bool = False) -> int:
        from psycopg import sql

        target = _qualified(t.schema or "public", t.name)
        cols = sql.SQL(" ({})").format(sql.SQL(", ").join(map(sql.Identifier, columns))) if columns else sql.SQL("")
        query = sql.SQL("COPY {}{} FROM STDIN{}").format(target, cols, sql.SQL(" WITH (FREEZE)" if freeze else ""))
        with conn.cursor() as cur:
            with cur.copy(query) as copy:
                for piece in read(t.stream):
                    copy.write(piece)
            return cur.rowcount

    @staticmethod
    def _execute(conn, lines: Iterator[bytes], plan: _Plan, created: set[int]) -> None:
        """Run pg_restore's SQL one TOC entry at a time (bounded by the largest entry)."""
        psycopg = _psycopg()

        def statements(buf: list[bytes]) -> Iterator[bytes]:
            current: list[bytes] = []
            for line in buf:
                if not current and (not line.strip() or line.startswith(b"--")):
                    continue
                current.append(line)
                if line.rstrip().endswith(b";"):
                    yield b"".join(current)
                    current = []
            if current:
                yield b"".join(current)

        def preamble(buf: list[bytes]) -> None:
            # SET statements, then (with --clean) one DROP ... IF EXISTS per line, newest first.
            for statement in statements(buf):
                if statement.startswith(NEVER_DROP):
                    continue
                if statement.startswith(b"DROP ") or statement.startswith(b"ALTER TABLE IF EXISTS "):
                    try:
                        with conn.transaction():
                            conn.execute(statement)
                    except psycopg.Error as exc:
                        if exc.sqlstate not in (IN_USE, NOT_OWNER):
                            raise
                        # still used by something outside the restore, or not ours: it stays as it
                        # is, and its CREATE below fails as a duplicate, which is skipped
                else:
                    conn.execute(statement)

        def entry(entry_id: int, buf: list[bytes]) -> None:
            text = b"".join(buf)
            if not any(line.strip() and not line.startswith(b"--") for line in buf):
                return
            if entry_id in plan.tolerant:
                try:
                    with conn.transaction():
                        conn.execute(text)
                    created.add(entry_id)
                except psycopg.Error as exc:
                    not_ours = exc.sqlstate == NOT_OWNER and plan.entries[entry_id].desc in DECORATION
                    if exc.sqlstate not in DUPLICATE and not not_ours:
                        raise GuardError(f"{plan.entries[entry_id].label}: {_message(exc)}") from None
                return
            try:
                conn.execute(text)
            except psycopg.Error as exc:
                label = plan.entries[entry_id].label if entry_id in plan.entries else f"TOC entry {entry_id}"
                raise GuardError(f"{label}: {_message(exc)}") from None
            created.add(entry_id)

        buf: list[bytes] = []
        current: int | None = None
        for line in lines:
            if line.startswith((b"\\restrict ", b"\\unrestrict ")):
                continue  # psql meta-commands guarding plain-text scripts; not SQL
            if buf and buf[-1] == b"--\n" and (m := TOC_LINE.match(line)):
                buf.pop()
                if current is None:
                    preamble(buf)
                else:
                    entry(current, buf)
                current, buf = int(m.group(1)), [b"--\n", line]
                continue
            buf.append(line)
        if current is None:
            preamble(buf)
        else:
            entry(current, buf)
