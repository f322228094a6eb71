"""MariaDB / MySQL backups on the native tools: ``mariadb-dump`` (or ``mysqldump``) and ``mariadb`` (or ``mysql``).

One snapshot is ONE ``mariadb-dump --single-transaction`` run over the whole selection, so every table's
rows come from the same InnoDB read view and each table's ``CREATE TABLE`` is read in that same run,
right before its rows. Its output is split while it streams (never a table in memory):

- the schema stream: the dump's header (session settings), every "Table structure" section
  (``DROP TABLE IF EXISTS`` + ``CREATE TABLE``), and the dump's footer, in dump order;
- one stream per table: its "Dumping data" section — the INSERTs, then the table's triggers, which
  mariadb-dump writes after the rows, so a restore creates them after loading (they never fire on it).

Section boundaries are the dump's own three-line comment blocks (``--`` / ``-- Table structure for table
`t``` / ``--``); string values never contain a raw newline in a dump (they are escaped), so a block can
only be a real boundary, and a block is only taken as one when it names the table expected next.

Rows are counted while streaming: top-level ``(`` of the extended INSERTs, outside quoted strings and
identifiers (a small state machine over ~1 MB pieces; quoted strings are skipped by regexes in C).

The options make a table's stream depend on its rows only (``--skip-dump-date``, ``--order-by-primary``,
pinned ``--net-buffer-length``, ``--hex-blob``, ``--tz-utc``, utf8mb4), so an unchanged table gives a
byte-identical stream and the repository stores nothing new for it. Schema-level differences (e.g.
``AUTO_INCREMENT=``) live in the small schema stream only.

Why one run rather than a separate ``--no-data`` run for the schema: with one run each CREATE TABLE is
read immediately before that table's rows, inside the dump's transaction; two runs would be two points
in time, consistent only if nothing changed in between. The split costs one regex pass over the output.

Restore pipes one script into one ``mariadb`` session: the dump's header (NAMES utf8mb4, TIME_ZONE
'+00:00', SQL_MODE, checks off), ``SET FOREIGN_KEY_CHECKS=0``, then per table ``DROP TABLE IF EXISTS``,
its CREATE TABLE from the snapshot, its rows and triggers, then the footer and ``FOREIGN_KEY_CHECKS=1``.
A table is always re-created, so one whose columns a migration changed comes back exactly as dumped;
foreign keys of other tables that point at it are kept by InnoDB (by name) and enforced again.

Not covered: stored routines and events (not table-scoped: ``--skip-routines``), views and sequences
(not listed as tables, left alone by restore), the history rows of system-versioned tables, and the
consistency of non-transactional (MyISAM/Aria) tables, which ``--single-transaction`` cannot give.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import IO, Any

from ...errors import GuardError
from .base import DumpResult, Engine, StreamReader, StreamWriter, TableDump, require_tool

PACKAGE = "mariadb-client"
DUMP_TOOLS = ["mariadb-dump", "mysqldump"]
CLIENT_TOOLS = ["mariadb", "mysql"]
FORMAT = "sql-split/1"
PIECE = 1 << 20  # bytes read from the dump per step
MAX_MARKER = 4096  # a section marker is shorter than this (identifiers are at most 64 characters)

DUMP_OPTIONS = [
    "--single-transaction",  # one consistent InnoDB snapshot for all tables
    "--quick",  # stream rows, never buffer a table in the tool
    "--skip-dump-date",
    "--order-by-primary",
    "--hex-blob",
    "--default-character-set=utf8mb4",
    "--no-tablespaces",
    "--tz-utc",  # TIMESTAMPs in UTC, whatever the server's zone
    "--triggers",  # written after each table's rows: they go with the table
    "--skip-routines",  # not table-scoped; see the module notes
    "--skip-events",
    "--add-drop-table",
    "--add-locks",  # "UNLOCK TABLES;" ends the rows of a table (row counting stops there)
    "--no-autocommit",  # one COMMIT per table on load: much faster than per statement
    "--extended-insert",
    "--net-buffer-length=1046528",  # pinned: it decides where INSERTs are cut, so stream bytes
    "--max-allowed-packet=1G",
    "--skip-complete-insert",
]

# A section marker starts at a line start (a raw newline only ever ends a statement or comment line in
# the data part of a dump: values are escaped). A blank line before a block belongs to the block, so a
# table's stream ends the same whether or not another table follows it. A marker's own line end is left
# to the text after it, where it is the next marker's leading newline.
_MARKER = re.compile(
    rb"\n(?:\n?--\n-- (Table structure for table|Dumping data for table) `((?:[^`\n]|``)*)`\n--"
    rb"|(UNLOCK TABLES;)"
    rb"|\n?(/\*!40103 SET TIME_ZONE=@OLD_TIME_ZONE \*/;))(?=\n)"
)
_STRUCTURE, _DATA, _UNLOCK, _FOOTER = "structure", "data", "unlock", "footer"

# Row counting: runs of complete tokens outside an open quote, and quoted strings/identifiers.
_TOKENS = re.compile(rb"(?:[^'`]++|'(?:[^'\\]++|\\.)*+'|`[^`]*+`)*+", re.S)
_QUOTED = re.compile(rb"'(?:[^'\\]++|\\.)*+'|`[^`]*+`", re.S)
_STRING_BODY = re.compile(rb"(?:[^'\\]++|\\.)*+", re.S)
_OUT, _SQ, _BT = 0, 1, 2


class RowCounter:
    """Counts the rows of extended INSERTs fed in arbitrary pieces: one per ``(`` outside quotes.

    Values in a dump are literals only (numbers, NULL, '...' strings with backslash escapes, 0x hex,
    b'bits'), so the only parentheses outside strings open and close row tuples."""

    def __init__(self) -> None:
        self.rows = 0
        self._state = _OUT
        self._escape = False  # a backslash ended the previous piece inside a string

    def feed(self, data: bytes) -> None:
        pos, n = 0, len(data)
        while pos < n:
            if self._state == _SQ:
                if self._escape:
                    self._escape = False
                    pos += 1
                    continue
                end = _STRING_BODY.match(data, pos).end()  # type: ignore[union-attr]
                if end == n:
                    return
                if data[end] == 0x5C:  # a lone backslash at the very end of the piece
                    self._escape = True
                    return
                self._state, pos = _OUT, end + 1
            elif self._state == _BT:
                end = data.find(b"`", pos)
                if end < 0:
                    return
                self._state, pos = _OUT, end + 1
            else:
                # Fast path: up to the piece's last newline all quotes are complete (values never hold
                # a raw newline), so strip quoted strings in one C pass and count what is left.
                cut = data.rfind(b"\n", pos)
                if cut > pos:
                    run = data[pos:cut]
                    if b"'" in run or b"`" in run:
                        run = _QUOTED.sub(b"", run)
                    self.rows += run.count(b"(")
                    pos = cut
                end = _TOKENS.match(data, pos).end()  # type: ignore[union-attr]
                run = data[pos:end]
                if b"'" in run or b"`" in run:
                    run = _QUOTED.sub(b"", run)
                self.rows += run.count(b"(")
                if end == n:
                    return
                self._state = _SQ if data[end] == 0x27 else _BT  # an unterminated quote opens here
                pos = end + 1


def _raw(conn: Any, statement: str) -> list[Any]:
    """Run a statement with no parameters on the DBAPI cursor, so a ``%`` in an identifier is not
    taken for a placeholder."""
    cursor = conn.connection.cursor()
    try:
        cursor.execute(statement)
        return list(cursor.fetchall()) if cursor.description else []
    finally:
        cursor.close()


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _marker_name(raw: bytes) -> str:
    return raw.replace(b"``", b"`").decode("utf-8", "replace")


def _pieces(stream: IO[bytes]) -> Iterator[bytes]:
    while True:
        piece = stream.read(PIECE)
        if not piece:
            return
        yield piece


def _events(pieces: Iterable[bytes]) -> Iterator[tuple[str, bytes, str | None]]:
    """Split a dump into ("text", bytes, None) and (kind, marker bytes, table name) events, holding back
    at most MAX_MARKER bytes (a marker cut between two pieces) whatever the line lengths."""
    buf = b""
    for piece in pieces:
        buf = buf + piece if buf else piece
        # A marker starting before the first newline of the last MAX_MARKER bytes is complete in buf.
        cut = buf.find(b"\n", max(0, len(buf) - MAX_MARKER))
        pos = yield from _scan(buf, len(buf) if cut < 0 else cut)
        buf = buf[pos:]
    if buf:
        yield from _scan(buf, len(buf) + 1)


def _scan(buf: bytes, hold: int) -> Generator[tuple[str, bytes, str | None], None, int]:
    """Events for buf's markers that start (at their leading newline) before ``hold``, and the text
    between them up to ``hold``; returns where the unscanned rest begins."""
    pos = 0
    for m in _MARKER.finditer(buf):
        if m.start() >= hold:
            break
        start = m.start() + 1  # the newline ends the text before the marker
        if start > pos:
            yield "text", buf[pos:start], None
        if m.group(1):
            kind = _STRUCTURE if m.group(1) == b"Table structure for table" else _DATA
            yield kind, buf[start : m.end()], _marker_name(m.group(2))
        else:
            yield (_UNLOCK if m.group(3) else _FOOTER), buf[start : m.end()], None
        pos = m.end()
    end = min(max(hold, pos), len(buf))
    if end > pos:
        yield "text", buf[pos:end], None
        pos = end
    return pos


def split_schema(data: bytes, names: Iterable[str]) -> tuple[bytes, dict[str, bytes], bytes]:
    """The schema stream as (header, {table: "Table structure" section}, footer)."""
    expected = set(names)
    header: list[bytes] = []
    footer: list[bytes] = []
    sections: dict[str, list[bytes]] = {}
    current: list[bytes] = header
    for kind, chunk, name in _events([data]):
        if kind == _STRUCTURE and name in expected and name not in sections:
            current = sections.setdefault(name, [])
        elif kind == _FOOTER and current is not header and current is not footer and len(sections) == len(expected):
            current = footer
        current.append(chunk)
    return b"".join(header), {k: b"".join(v) for k, v in sections.items()}, b"".join(footer)


class _Lookahead:
    def __init__(self, it: Iterator[tuple[str, bytes, str | None]]) -> None:
        self._it = it
        self._back: list[tuple[str, bytes, str | None]] = []

    def __iter__(self) -> _Lookahead:
        return self

    def __next__(self) -> tuple[str, bytes, str | None]:
        return self._back.pop() if self._back else next(self._it)

    def push(self, event: tuple[str, bytes, str | None]) -> None:
        self._back.append(event)


def _client_message(stderr: bytes, what: str) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line or "error" in line]
    text = (errors or lines or ["exited with an error and no message"])[0]
    return f"{what}: {text}"


class MySQLEngine(Engine):
    dialect = "mysql"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        from sqlalchemy.engine import make_url

        self._url = make_url(url)
        if not self._url.database:
            raise GuardError("the MariaDB/MySQL database URL names no database")
        self.database: str = self._url.database

    # --- connections ------------------------------------------------------------------------------------

    def _sa_engine(self) -> Any:
        import sqlalchemy as sa

        url = self._url
        if "+" not in url.drivername:  # mysql:// means mysqlclient; use PyMySQL when that is absent
            try:
                import MySQLdb  # noqa: F401
            except ImportError:
                url = url.set(drivername=f"{url.get_backend_name()}+pymysql")
        return sa.create_engine(url, poolclass=sa.pool.NullPool)

    @contextmanager
    def _connect(self) -> Iterator[Any]:
        engine = self._sa_engine()
        try:
            with engine.connect() as conn:
                yield conn
        except GuardError:
            raise
        except Exception as exc:  # noqa: BLE001 - connection refused, access denied ... : one line, no traceback
            orig = getattr(exc, "orig", None) or exc
            raise GuardError(f"MariaDB/MySQL: {orig}") from None
        finally:
            engine.dispose()

    @contextmanager
    def _tool_args(self) -> Iterator[list[str]]:
        """Connection options for the native tools; the password goes through a 0600 option file that
        is deleted afterwards, never on the command line. ``--defaults-extra-file`` must come first."""
        url = self._url
        args: list[str] = []
        path = None
        try:
            if url.password:
                fd, path = tempfile.mkstemp(prefix="mg-my-", suffix=".cnf")  # created 0600
                value = str(url.password)
                for old, new in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
                    value = value.replace(old, new)
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(f'[client]\npassword="{value}"\n')
                args.append(f"--defaults-extra-file={path}")
            socket = url.query.get("unix_socket")
            if socket:
                args += ["--protocol=SOCKET", f"--socket={socket if isinstance(socket, str) else socket[0]}"]
            else:
                args += ["--protocol=TCP", f"--host={url.host or 'localhost'}", f"--port={url.port or 3306}"]
            if url.username:
                args.append(f"--user={url.username}")
            yield args
        finally:
            if path:
                with suppress(OSError):
                    os.unlink(path)

    # --- Engine ---------------------------------------------------------------------------------------------

    def check_tools(self) -> None:
        require_tool(DUMP_TOOLS, PACKAGE)
        require_tool(CLIENT_TOOLS, PACKAGE)

    def list_tables(self) -> list[tuple[str | None, str]]:
        return [(None, name) for name in self._table_names()]

    def _table_names(self) -> list[str]:
        with self._connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s"
                " AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') ORDER BY TABLE_NAME",
                (self.database,),
            ).fetchall()
        return [r[0] for r in rows]

    def _foreign_keys(self) -> dict[str, list[str]]:
        with self._connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT DISTINCT TABLE_NAME, REFERENCED_TABLE_NAME FROM information_schema.KEY_COLUMN_USAGE"
                " WHERE TABLE_SCHEMA = %s AND REFERENCED_TABLE_SCHEMA = %s AND REFERENCED_TABLE_NAME IS NOT NULL",
                (self.database, self.database),
            ).fetchall()
        deps: dict[str, set[str]] = {}
        for table, referenced in rows:
            if table != referenced:
                deps.setdefault(table, set()).add(referenced)
        return {t: sorted(r) for t, r in deps.items()}

    def _select(self, tables: Sequence[str] | None, exclude: Sequence[str] = ()) -> list[str]:
        present = self._table_names()
        if tables is None:
            chosen = present
        else:
            missing = [t for t in tables if t not in present]
            if missing:
                raise GuardError(f"no such table in database {self.database}: {', '.join(missing)}")
            chosen = list(dict.fromkeys(tables))
        skip = set(exclude)
        chosen = [t for t in chosen if t not in skip]
        bad = [t for t in chosen if "\n" in t or "\r" in t]
        if bad:
            raise GuardError(f"cannot back up a table whose name holds a line break: {bad[0]!r}")
        return chosen

    def dump(
        self,
        write: StreamWriter,
        tables: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        previous: Mapping[str, TableDump] | None = None,
    ) -> DumpResult:
        tool = require_tool(DUMP_TOOLS, PACKAGE)
        names = self._select(tables, exclude)
        deps = self._foreign_keys()
        engine_info: dict[str, Any] = {"tool": os.path.basename(tool), "version": None, "format": FORMAT}
        if not names:
            return DumpResult(engine_info, write("schema", iter(())), [])

        with (
            self._tool_args() as conn_args,
            tempfile.TemporaryFile() as err,
            tempfile.SpooledTemporaryFile(max_size=8 << 20) as schema,
        ):
            cmd = [tool, *conn_args, *DUMP_OPTIONS, "--", self.database, *names]
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
            assert proc.stdout is not None
            try:
                results = self._split_dump(proc.stdout, names, deps, write, schema)
                proc.stdout.close()
                rc = proc.wait()
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            if rc != 0:
                err.seek(0)
                raise GuardError(_client_message(err.read(), f"{os.path.basename(tool)} failed"))
            if len(results) != len(names):
                lost = [n for n in names if n not in {r.name for r in results}]
                raise GuardError(f"{os.path.basename(tool)} output had no data for table(s): {', '.join(lost)}")
            schema.seek(0)
            head = schema.read(4096)
            version = re.search(rb"^-- (?:MariaDB|MySQL) dump (\S+)\s+Distrib (\S+?),", head, re.M)
            server = re.search(rb"^-- Server version\s+(\S+)", head, re.M)
            if version:
                engine_info["version"] = version.group(2).decode()
                engine_info["tool_version"] = version.group(1).decode()
            if server:
                engine_info["server"] = server.group(1).decode()
            schema.seek(0)
            schema_ref = write("schema", _pieces(schema))
        return DumpResult(engine_info, schema_ref, results)

    def _split_dump(
        self, stdout: IO[bytes], names: list[str], deps: dict[str, list[str]], write: StreamWriter, schema: Any
    ) -> list[TableDump]:
        remaining = set(names)
        results: list[TableDump] = []
        events = _Lookahead(_events(_pieces(stdout)))
        current: str | None = None  # the table whose structure section we are in
        for kind, chunk, name in events:
            if kind == _STRUCTURE and name in remaining:
                remaining.discard(name)
                current = name
            elif kind == _DATA and name is not None and name == current:
                counter = RowCounter()
                finished: list[bool] = []
                ref = write(name, self._table_stream(chunk, events, counter, remaining, done=finished))
                if not finished:
                    raise GuardError(f"the repository did not read the whole stream of table {name}")
                results.append(
                    TableDump(name=name, schema=None, rows=counter.rows, stream=ref, depends_on=deps.get(name, []))
                )
                current = None
                continue
            schema.write(chunk)
        return results

    @staticmethod
    def _table_stream(
        first: bytes, events: _Lookahead, counter: RowCounter, remaining: set[str], done: list[bool]
    ) -> Iterator[bytes]:
        """The table's data section: its INSERTs (counted up to "UNLOCK TABLES;") and its triggers,
        up to the next expected table's structure section or, after the last table, the footer."""
        yield first
        counting = True
        for event in events:
            kind, chunk, name = event
            if (kind == _STRUCTURE and name in remaining) or (kind == _FOOTER and not remaining):
                events.push(event)
                break
            if kind == _UNLOCK:
                counting = False
            elif counting:
                counter.feed(chunk)
            yield chunk
        done.append(True)

    def restore(
        self,
        dump: DumpResult,
        read: StreamReader,
        tables: Sequence[str] | None = None,
        before_commit: Callable[[], None] | None = None,
        pre_snapshot: Callable[[Engine], None] | None = None,
    ) -> None:
        if pre_snapshot is not None:  # TODO(issue 14): writers stopped from here until the restore is done
            pre_snapshot(self)
        if before_commit is not None:  # what is written here cannot be rolled back: check first
            before_commit()
        tool = require_tool(CLIENT_TOOLS, PACKAGE)
        by_name = {t.name: t for t in dump.tables}
        if tables is None:
            chosen = [t.name for t in dump.tables]
        else:
            unknown = [t for t in tables if t not in by_name]
            if unknown:
                raise GuardError(f"the snapshot has no table {', '.join(unknown)}")
            wanted = set(tables)
            chosen = [t.name for t in dump.tables if t.name in wanted]  # dump order
        if not chosen:
            return
        header, sections, footer = split_schema(b"".join(read(dump.schema)), by_name)
        missing = [n for n in chosen if n not in sections]
        if missing:
            raise GuardError(f"the snapshot's schema stream has no CREATE TABLE for {', '.join(missing)}")

        def script() -> Iterator[bytes]:
            yield header
            yield b"SET FOREIGN_KEY_CHECKS=0;\n"
            for name in chosen:
                yield f"DROP TABLE IF EXISTS {_quote(name)};\n".encode()
                yield sections[name]
                yield from read(by_name[name].stream)
            yield footer
            yield b"SET FOREIGN_KEY_CHECKS=1;\n"

        what = f"restore of {'database ' + self.database if tables is None else 'table(s) ' + ', '.join(chosen)}"
        self._run_client(tool, script(), what)

    def _run_client(self, tool: str, script: Iterable[bytes], what: str) -> None:
        """Stream ``script`` into the client's stdin; its first error becomes a one-line GuardError."""
        with self._tool_args() as conn_args, tempfile.TemporaryFile() as err:
            cmd = [
                tool,
                *conn_args,
                "--default-character-set=utf8mb4",
                "--binary-mode",
                "--comments",
                "--batch",
                "--max-allowed-packet=1G",
                "--",
                self.database,
            ]
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
            assert proc.stdin is not None
            try:
                try:
                    for chunk in script:
                        if chunk:
                            proc.stdin.write(chunk)
                    proc.stdin.close()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped at an error: its message is in stderr
                rc = proc.wait()
            except BaseException:
                proc.kill()  # a half-sent statement must not run
                proc.wait()
                raise
            finally:
                if proc.stdin and not proc.stdin.closed:
                    with suppress(OSError):
                        proc.stdin.close()
            if rc != 0:
                err.seek(0)
                raise GuardError(_client_message(err.read(), f"{what} failed"))

    def row_counts(self, tables: Sequence[str] | None = None) -> dict[str, int]:
        names = self._table_names() if tables is None else list(tables)
        counts: dict[str, int] = {}
        with self._connect() as conn:
            for name in names:
                counts[name] = int(_raw(conn, f"SELECT COUNT(*) FROM {_quote(name)}")[0][0])
        return counts

    def drop_tables(self, tables: Sequence[str]) -> None:
        if not tables:
            return
        with self._connect() as conn:
            _raw(conn, "SET FOREIGN_KEY_CHECKS=0")
            try:
                _raw(conn, "DROP TABLE IF EXISTS " + ", ".join(_quote(t) for t in tables))
            finally:
                _raw(conn, "SET FOREIGN_KEY_CHECKS=1")
