"""What the dump and the restore share: how to reach the server and its tools, and libpq helpers.

``ConnectionSettings`` holds the libpq parameters taken from the SQLAlchemy URL and the password,
kept apart: psycopg gets it as an argument, pg_dump/pg_restore in a 0600 passfile, never in argv.
A connection it opens has the session settings in ``SESSION`` pinned, so the bytes a COPY writes
do not depend on the server's or the role's configuration. ``find_tools`` locates pg_dump and
pg_restore and refuses ones older than the server.

psycopg is imported lazily (``psycopg_module``): a missing module is a ``ToolMissing`` with the
install command, not an ImportError when the engine is merely selected. ``copy_pieces`` reads a
``COPY ... TO STDOUT`` through libpq directly, in pieces of ``PIECE`` bytes.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO, TYPE_CHECKING, NamedTuple, NoReturn

from ....errors import GuardError
from ....private import private_tempdir
from ..base import ToolMissing, require_tool

if TYPE_CHECKING:
    from typing import TypeAlias

    from psycopg import Connection, Cursor, sql
    from psycopg.pq.abc import PGconn, PGresult
    from psycopg.rows import TupleRow

    Conn: TypeAlias = Connection[TupleRow]

PIECE = 1 << 20  # bytes per piece handed to the repository
MAGIC = b"MGPG1 "  # starts the schema stream's JSON header
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


def psycopg_module() -> ModuleType:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - a dependency of the package
        raise ToolMissing("the psycopg module is not installed: pip install 'psycopg[binary]'") from None
    return psycopg


def error_message(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = primary or str(exc) or type(exc).__name__
    return " ".join(text.split())


def qualified_name(schema: str, name: str) -> sql.Composed:
    from psycopg import sql

    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def one_row(cursor: Cursor[TupleRow]) -> TupleRow:
    """The row of a query that always returns one (``SHOW``, an aggregate without GROUP BY)."""
    row = cursor.fetchone()
    assert row is not None, "the query returned no row"
    return row


def tool_major(version: str) -> tuple[int, ...]:
    """The major version of a tool's version string: ``(15,)`` for 15.4, ``(9, 6)`` for 9.6.24."""
    m = re.search(r"(\d+)(?:\.(\d+))?", version)
    if not m:
        return (0,)
    major = int(m.group(1))
    return (major,) if major >= 10 else (major, int(m.group(2) or 0))


def server_major(num: int) -> tuple[int, ...]:
    """The major version of a ``server_version_num``, as ``tool_major`` gives it."""
    return (num // 10000,) if num >= 100000 else (num // 10000, num // 100 % 100)


def stderr_tail(f: IO[bytes]) -> str:
    """The last error line a tool wrote to ``f`` (else its last line), on one line."""
    f.seek(0)
    lines = [line.strip() for line in f.read().decode("utf-8", "replace").splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()] or lines
    return " ".join(errors[-1].split()) if errors else "no message"


class Tools(NamedTuple):
    pg_dump: str
    pg_restore: str
    dump_version: str
    restore_version: str


@dataclass(frozen=True)
class ConnectionSettings:
    """The libpq parameters of one database, and its password (kept out of ``params``)."""

    params: dict[str, str]
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_url(cls, url: str) -> ConnectionSettings:
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
        return cls(params, u.password)

    @property
    def conninfo(self) -> str:
        from psycopg.conninfo import make_conninfo

        try:
            return make_conninfo("", **self.params)
        except Exception as exc:  # noqa: BLE001 - any refusal means a bad URL parameter, said in one line
            raise GuardError(f"bad PostgreSQL URL parameters: {error_message(exc)}") from None

    def where(self) -> str:
        p = self.params
        return f"{p.get('host', 'localhost')}:{p.get('port', '5432')}/{p.get('dbname', '')}"

    def connect(self) -> Conn:
        """An autocommit connection with the ``SESSION`` settings."""
        psycopg = psycopg_module()
        kwargs = {"password": self.password} if self.password is not None else {}
        try:
            conn: Conn = psycopg.connect(self.conninfo, autocommit=True, **kwargs)
        except psycopg.Error as exc:
            raise GuardError(f"cannot connect to PostgreSQL at {self.where()}: {error_message(exc)}") from None
        try:
            for statement in SESSION:
                conn.execute(statement)
        except psycopg.Error as exc:
            conn.close()
            raise GuardError(f"PostgreSQL session setup failed: {error_message(exc)}") from None
        return conn

    @contextmanager
    def tool_env(self) -> Iterator[dict[str, str]]:
        """Environment for pg_dump/pg_restore: the password in a 0600 PGPASSFILE, never in argv.

        The passfile lives in this process's private directory (``private_tempdir``): removed when
        the block ends, and by the next migrate-guard process should this one be killed -9 first."""
        env = dict(os.environ)
        with private_tempdir("pg-") as tmp:
            if self.password is not None:
                env.pop("PGPASSWORD", None)  # it would win over the passfile
                if "\n" in self.password or "\r" in self.password:
                    env["PGPASSWORD"] = self.password  # a passfile cannot hold a line break
                else:
                    passfile = Path(tmp) / "pgpass"
                    fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    escaped = self.password.replace("\\", "\\\\").replace(":", "\\:")
                    with os.fdopen(fd, "w") as f:
                        f.write(f"*:*:*:*:{escaped}\n")
                    env["PGPASSFILE"] = str(passfile)
            yield env


def find_tools(settings: ConnectionSettings) -> Tools:
    """pg_dump and pg_restore with their versions; ``ToolMissing`` when one is absent, does not
    run, or is older than the server."""
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
    conn = settings.connect()
    try:
        num = int(one_row(conn.execute("SHOW server_version_num"))[0])
        server = one_row(conn.execute("SHOW server_version"))[0].split()[0]
    finally:
        conn.close()
    for path, version in versions.items():
        if tool_major(version) < server_major(num):
            major = ".".join(map(str, server_major(num)))
            raise ToolMissing(
                f"{Path(path).name} {version} is older than the PostgreSQL {server} server: install a client "
                f"at least as new (Debian/Ubuntu: apt-get install postgresql-client-{major})"
            )
    return Tools(pg_dump, pg_restore, versions[pg_dump], versions[pg_restore])


# --- catalog ---------------------------------------------------------------------------------------


def user_tables(conn: Conn) -> list[tuple[int, str, str, str]]:
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


def resolve_tables(
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


# --- libpq ---------------------------------------------------------------------------------------------


def _wait(sock: int, write: bool = False) -> None:
    """Block (without the GIL) until the libpq socket is readable (or, with ``write``, either)."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN | (select.POLLOUT if write else 0))
        poller.poll()
    else:  # pragma: no cover - Windows
        select.select([sock], [sock] if write else [], [])


def _result(pgconn: PGconn) -> PGresult | None:
    """The next result of the query in progress, waiting for it; None when there is no more."""
    while True:
        pgconn.consume_input()
        if not pgconn.is_busy():
            return pgconn.get_result()
        _wait(pgconn.socket)


def _raise_for(conn: Conn, res: PGresult | None) -> NoReturn:
    """Raise the psycopg error a failed result stands for (after draining the query's results)."""
    from psycopg import errors

    pgconn = conn.pgconn
    while _result(pgconn) is not None:
        pass
    if res is None:
        raise errors.OperationalError("the server sent no result")
    raise errors.error_from_result(res, encoding=conn.info.encoding)


def copy_pieces(conn: Conn, query: bytes, counter: list[int]) -> Iterator[bytes]:
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
    wait: Callable[[], object]
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        wait = poller.poll
    else:  # pragma: no cover - Windows

        def select_wait() -> None:
            select.select([sock], [], [])

        wait = select_wait

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
