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

Restore loads the chosen tables beside the live ones under scratch names (one ``mariadb`` session: the
dump's header, each CREATE TABLE and its rows, renamed), while one session holds ``LOCK TABLES ... READ``
on the live tables (writers wait, readers do not; the pre-snapshot is taken then). One atomic ``RENAME
TABLE`` swaps them in; then other tables' foreign keys are pointed back at the restored tables (InnoDB
moves them to the renamed old ones), the old tables dropped, the new tables' foreign keys renamed back
and their triggers created. A journal table lets the next restore finish or undo a killed one; see
"restore: load beside, swap in one RENAME" below.

Not covered: views, sequences, stored routines and events (the snapshot's engine record lists them under
"lacks"), the history rows of system-versioned tables, and the consistency of non-transactional
(MyISAM/Aria) tables, which ``--single-transaction`` cannot give.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import secrets
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, suppress
from typing import IO, TYPE_CHECKING, Any

from ...errors import GuardError
from ...private import private_tempdir
from .base import DumpResult, Engine, StreamReader, StreamWriter, TableDump, require_tool

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

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


# Where a table's INSERT statements end is chosen by content (rebreak_inserts): FastCDC over the rows,
# each cut moved on to the next row boundary. Pinned, like --net-buffer-length was: they decide the bytes.
STATEMENT_CDC = (64 << 10, 256 << 10, 1 << 20)  # min, avg, max bytes of rows per statement (before the snap)


def _open_quotes(data: bytes | bytearray) -> int:
    """The number of string quotes in ``data`` that are not escaped, for data that starts outside a
    string: the dump's values hold backslashes and quotes only inside strings (escapes are ``\\x``
    pairs), so after dropping the escaped backslashes a quote is escaped exactly when a backslash
    precedes it. An odd number: ``data`` ends inside a string."""
    run = data.replace(b"\\\\", b"") if b"\\\\" in data else data
    return run.count(b"'") - run.count(b"\\'")


def rebreak_inserts(chunks: Iterable[bytes], table: str) -> Iterator[bytes]:
    """A table's data section with its extended INSERTs re-cut where the rows say, not where a byte
    count says: mariadb-dump ends a statement every ``--net-buffer-length`` bytes, so one row inserted
    in the middle moved every later statement's end, and every later blob changed with it. Here the
    statements are joined into one run of rows and cut again: FastCDC chooses a point by content
    (``STATEMENT_CDC``), the cut moves on to the next row boundary, and the next statement starts
    there, so boundaries resynchronise a few rows after any change.

    Both layouts of mariadb-dump are understood: a statement on one line (``VALUES (..),(..);``, where a
    row boundary ``),(`` counts only outside a string) and a row per line (``VALUES`` then ``(..),`` lines:
    values hold no raw newline, so ``),\\n(`` is always a boundary). A statement ends at ``;\\n`` (again:
    no raw newline in a value). Everything before the first INSERT and after the last passes unchanged."""
    from pyfastcdc import FastCDC

    low, avg, high = STATEMENT_CDC
    cdc = FastCDC(avg, min_size=low, max_size=high, normalized_chunking=1)
    start = b"INSERT INTO " + _quote(table).encode() + b" VALUES"
    header = b""  # start and the byte after it (" " or a newline): how each statement begins
    sep = b""  # what lies between two rows: "),(" or "),\n("
    rows = bytearray()  # rows not yet in a statement, the separators between them included
    buf = b""  # input not yet looked at
    before, inside, after = 0, 1, 2
    state = before

    def statements(final: bool) -> Iterator[bytes]:
        while rows:
            if not final and len(rows) < 2 * high:
                return  # a cut needs the rows after it too (up to a maximal statement, and the snap)
            first = next(iter(cdc.cut_buf(rows[:high]))).length  # a copy: rows change before the chunk goes
            at, scanned, opened = max(first - 1, 0), 0, 0
            while True:
                q = rows.find(sep, at)
                if q < 0:
                    if not final:
                        return  # a row longer than what is buffered: wait for its end
                    q = len(rows) - 1  # the last statement: every row left
                    break
                if sep == b"),(":  # a row per statement line: quotes from the statement's start
                    opened += _open_quotes(rows[scanned : q + 1])
                    scanned = q + 1
                    if opened % 2:
                        at = q + 1  # inside a string: the next one
                        continue
                break
            yield header + rows[: q + 1] + b";\n"
            del rows[: q + len(sep) - 1]  # and the separator up to the next row's "("

    def step(at_end: bool) -> Iterator[bytes]:
        nonlocal buf, state, header, sep
        while True:
            if state == before:
                i = buf.find(b"\n" + start)
                if i < 0 or len(buf) < i + len(start) + 2:
                    keep = 0 if at_end else len(start) + 2
                    if len(buf) > keep:
                        yield buf[: len(buf) - keep]
                        buf = buf[len(buf) - keep :]
                    return
                yield buf[: i + 1]
                header = buf[i + 1 : i + len(start) + 2]
                sep = b"),(" if header.endswith(b" ") else b"),\n("
                buf, state = buf[i + len(start) + 2 :], inside
            elif state == inside:
                end = buf.find(b";\n")
                if end < 0:
                    keep = 0 if at_end else 1  # a ";" at the very end may be half of ";\n"
                    rows.extend(buf[: len(buf) - keep])
                    buf = buf[len(buf) - keep :]
                    yield from statements(final=at_end)
                    return
                rest = buf[end + 2 : end + 2 + len(header)]
                if not at_end and len(rest) < len(header) and header.startswith(rest):
                    rows.extend(buf[:end])  # whether another statement follows is not known yet
                    buf = buf[end:]
                    return
                rows.extend(buf[:end])
                if rest == header:  # the next statement: its rows join these
                    rows.extend(sep[1:-1])
                    buf = buf[end + 2 + len(header) :]
                    yield from statements(final=False)
                    continue
                yield from statements(final=True)
                buf, state = buf[end + 2 :], after
            else:
                if buf:
                    yield buf
                    buf = b""
                return

    for chunk in chunks:
        buf = buf + chunk if buf else bytes(chunk)
        out = list(step(at_end=False))
        if out:
            yield b"".join(out)
    out = list(step(at_end=True))
    if out:
        yield b"".join(out)


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


# --- restore: load beside, swap in one RENAME ---------------------------------------------------------------
#
# A restore loads the snapshot's tables under scratch names "#mg#<token>#n<i>", swaps them in with one
# atomic RENAME TABLE (each current table to "#mg#<token>#o<i>", each new one to its name), then finishes:
# re-points other tables' foreign keys (InnoDB moves them to the renamed old table), drops the old tables,
# gives the new tables' foreign keys their own names back and creates their triggers. A journal table
# "#mg#<token>#j" records every step's input, so the next restore can finish (after the RENAME) or undo
# (before it) a restore that was killed. Scratch names are never listed as user tables.

SCRATCH = re.compile(r"#mg#([0-9a-f]{8})#")
RESTORE_LOCK_WAIT = 10  # seconds a restore waits for another restore of the same database
SWAP_WAIT = 60  # seconds the RENAME may take to queue behind the read locks

_FK_LINE = re.compile(
    r"^  CONSTRAINT (?P<name>`(?:[^`]|``)+`) (?P<fk>FOREIGN KEY \(.*?\) REFERENCES )"
    r"(?P<db>`(?:[^`]|``)+`\.)?(?P<ref>`(?:[^`]|``)+`)(?P<rest> \(.*?)(?P<comma>,?)$",
    re.M,
)
_TRIGGERS_START = re.compile(rb"\n(?:/\*!50003 |DELIMITER )")


def _scratch(token: str, kind: str, index: int | str = "") -> str:
    return f"#mg#{token}#{kind}{index}"


def _unquote(quoted: str) -> str:
    return quoted[1:-1].replace("``", "`")


def new_structure(
    section: bytes, name: str, new: str, renames: Mapping[str, str], temp_names: Iterator[str]
) -> tuple[bytes, list[tuple[str, str, str]]]:
    """A "Table structure" section that creates ``name`` as ``new``, its foreign keys under temporary
    names (InnoDB wants them unique in the database while the old table still has them) and pointing
    at the new copies of tables restored with it (``renames``), so that the RENAME carries them over.
    Also returns (temporary name, real name, clause) per foreign key, to rename them back afterwards."""
    text = section.decode("utf-8")
    old_q, new_q = _quote(name), _quote(new)
    for statement in ("DROP TABLE IF EXISTS {};", "\nCREATE TABLE {} ("):
        if statement.format(old_q) not in text:
            raise GuardError(f"the snapshot's structure section of table {name} has no {statement.format(old_q)!r}")
        text = text.replace(statement.format(old_q), statement.format(new_q), 1)
    own: list[tuple[str, str, str]] = []

    def rewrite(m: re.Match[str]) -> str:
        temp = next(temp_names)
        ref = _unquote(m["ref"])
        clause = f"{m['fk']}{m['db'] or ''}{m['ref']}{m['rest']}"
        target = _quote(renames[ref]) if not m["db"] and ref in renames else m["ref"]
        own.append((temp, _unquote(m["name"]), clause))
        return f"  CONSTRAINT {_quote(temp)} {m['fk']}{m['db'] or ''}{target}{m['rest']}{m['comma']}"

    return _FK_LINE.sub(rewrite, text).encode("utf-8"), own


def retarget(chunks: Iterable[bytes], old: str, new: str, triggers: list[bytes]) -> Iterator[bytes]:
    """A table's data section loading into ``new`` instead of ``old``; its triggers (which come after the
    rows) are held back into ``triggers``: their names are taken until the old table is gone.

    Only statement starts are rewritten: each begins a line, and a raw newline never occurs inside a
    value, so a pattern (a newline, then text without one) cannot straddle a cut made at a newline."""
    o, n = _quote(old).encode(), _quote(new).encode()
    subs = [(b"\n" + p + o, b"\n" + p + n) for p in (b"LOCK TABLES ", b"/*!40000 ALTER TABLE ", b"INSERT INTO ")]
    unlock = b"\nUNLOCK TABLES;"
    hold = max(len(a) for a, _ in subs) + len(unlock)
    carry = b""
    tail: list[bytes] | None = None  # after UNLOCK TABLES: COMMIT, autocommit back, the triggers

    def renamed(part: bytes) -> bytes:
        for a, b in subs:
            part = part.replace(a, b)
        return part

    for chunk in chunks:
        if tail is not None:
            tail.append(chunk)
            continue
        data = carry + chunk
        cut = data.rfind(b"\n", max(0, len(data) - hold))
        cut = len(data) if cut < 0 else cut
        part, carry = data[:cut], data[cut:]
        at = part.find(unlock)
        if at >= 0:
            yield renamed(part[:at]) + unlock
            tail = [part[at + len(unlock) :], carry]
            carry = b""
        else:
            yield renamed(part)
    if tail is None:
        yield renamed(carry)
        return
    rest = b"".join(tail)
    m = _TRIGGERS_START.search(rest)
    if m is None:
        yield rest
        return
    yield rest[: m.start() + 1]
    triggers.append(rest[m.start() + 1 :].replace(b"/*!50003 CREATE*/", b"/*!50003 CREATE OR REPLACE*/"))


def sa_engine(url: URL, **kwargs: Any) -> Any:
    """A SQLAlchemy engine for ``url`` without a pool; ``mysql://`` (mysqlclient) falls back to PyMySQL when
    mysqlclient is not installed."""
    import sqlalchemy as sa

    if "+" not in url.drivername:  # mysql:// means mysqlclient; use PyMySQL when that is absent
        try:
            import MySQLdb  # noqa: F401
        except ImportError:
            url = url.set(drivername=f"{url.get_backend_name()}+pymysql")
    return sa.create_engine(url, poolclass=sa.pool.NullPool, **kwargs)


@contextmanager
def tool_args(url: URL) -> Iterator[list[str]]:
    """Connection options for the native tools; the password goes through a 0600 option file in this
    process's private directory (removed afterwards, and with the directory even after a kill -9),
    never on the command line. ``--defaults-extra-file`` must come first."""
    args: list[str] = []
    with ExitStack() as stack:
        if url.password:
            path = stack.enter_context(private_tempdir(prefix="mg-my-")) / "client.cnf"
            value = str(url.password)
            for old, new in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
                value = value.replace(old, new)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
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
        return sa_engine(self._url)

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

    def _tool_args(self) -> AbstractContextManager[list[str]]:
        """``tool_args`` for this engine's server."""
        return tool_args(self._url)

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
        return [r[0] for r in rows if not SCRATCH.match(r[0])]  # a restore's scratch tables are not the user's

    def _foreign_keys(self) -> dict[str, list[str]]:
        with self._connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT DISTINCT TABLE_NAME, REFERENCED_TABLE_NAME FROM information_schema.KEY_COLUMN_USAGE"
                " WHERE TABLE_SCHEMA = %s AND REFERENCED_TABLE_SCHEMA = %s AND REFERENCED_TABLE_NAME IS NOT NULL",
                (self.database, self.database),
            ).fetchall()
        deps: dict[str, set[str]] = {}
        for table, referenced in rows:
            if table != referenced and not SCRATCH.match(table):
                deps.setdefault(table, set()).add(referenced)
        return {t: sorted(r) for t, r in deps.items()}

    def _lacks(self) -> list[str]:
        """What of this database a snapshot does not hold and a restore does not bring back, one
        "kind name" each: views, sequences, stored routines and events (triggers go with their tables)."""
        queries = [
            "SELECT 'view', TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = %(db)s",
            "SELECT 'sequence', TABLE_NAME FROM information_schema.TABLES"
            " WHERE TABLE_SCHEMA = %(db)s AND TABLE_TYPE = 'SEQUENCE'",
            "SELECT LOWER(ROUTINE_TYPE), ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %(db)s",
            "SELECT 'event', EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %(db)s",
        ]
        with self._connect() as conn:
            found = [tuple(r) for q in queries for r in conn.exec_driver_sql(q, {"db": self.database}).fetchall()]
        return [f"{kind} {name}" for kind, name in sorted(found)]

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
        lacks = self._lacks()
        if lacks:
            engine_info["lacks"] = lacks
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
                section = self._table_stream(chunk, events, counter, remaining, done=finished)
                ref = write(name, rebreak_inserts(section, name))
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
        """Load the chosen tables beside the current ones, then swap them in with one RENAME.

        One session holds ``LOCK TABLES ... READ`` on the current tables from before ``pre_snapshot``
        until the RENAME: writers wait, readers (the pre-snapshot's dump, the application) do not.
        MariaDB refuses RENAME TABLE in a session holding any table lock, so another session queues the
        RENAME (its exclusive metadata lock then has priority over the waiting writers) and the locks are
        released only once it is waiting: the first thing to touch the tables after them is the RENAME."""
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
        header, sections, footer = split_schema(b"".join(read(dump.schema)), by_name) if chosen else (b"", {}, b"")
        missing = [n for n in chosen if n not in sections]
        if missing:
            raise GuardError(f"the snapshot's schema stream has no CREATE TABLE for {', '.join(missing)}")
        what = f"restore of {'database ' + self.database if tables is None else 'table(s) ' + ', '.join(chosen)}"

        with self._connect() as guard:
            self._restore_lock(guard)
            for token in sorted({m[1] for m in map(SCRATCH.match, self._scratch_tables()) if m}):
                self._settle(tool, token)  # a killed restore's leftovers: finished or undone
            present = set(self._table_names())
            locked = [n for n in chosen if n in present]
            _raw(guard, "SET SESSION lock_wait_timeout = 300")
            if locked:
                _raw(guard, "LOCK TABLES " + ", ".join(f"{_quote(n)} READ" for n in locked))
            token = None
            try:
                if pre_snapshot is not None:
                    pre_snapshot(self)  # writers are stopped, the database is untouched
                if not chosen:
                    if before_commit is not None:
                        before_commit()
                    return
                token = secrets.token_hex(4)
                self._load(tool, token, chosen, present, (header, sections, footer), by_name, read, what)
                if before_commit is not None:
                    before_commit()  # the last moment: nothing but scratch tables exists yet
                self._swap(guard, token, bool(locked))
            except BaseException:
                with suppress(Exception):
                    _raw(guard, "UNLOCK TABLES")
                if token is not None:
                    with suppress(Exception):
                        self._settle(tool, token)  # before the RENAME: drops the scratch tables
                raise
            self._settle(tool, token)

    def _restore_lock(self, guard: Any, wait: float = RESTORE_LOCK_WAIT) -> bool:
        """One restore per database at a time: the next one's clean-up must not take a running one's
        scratch tables for leftovers. Released when the session ends, also when its process is killed.
        With ``wait`` 0 a held lock is not an error: False."""
        name = "migrate-guard-restore:" + hashlib.sha1(self.database.encode()).hexdigest()[:24]
        if _raw(guard, f"SELECT GET_LOCK('{name}', {wait})")[0][0] == 1:
            return True
        if not wait:
            return False
        raise GuardError(f"another restore of database {self.database} is running")

    def finish_interrupted(self) -> list[str]:
        tokens = sorted({m[1] for m in map(SCRATCH.match, self._scratch_tables()) if m})
        if not tokens:
            return []
        tool = require_tool(CLIENT_TOOLS, PACKAGE)
        with self._connect() as guard:
            if not self._restore_lock(guard, wait=0):
                return []  # a restore is running: its scratch tables are its own
            for token in tokens:
                self._settle(tool, token)
        return [f"finished or undone the restore {t} a killed process left in {self.database}" for t in tokens]

    def _scratch_tables(self, token: str | None = None) -> list[str]:
        with self._connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME LIKE '#mg#%%'",
                (self.database,),
            ).fetchall()
        prefix = None if token is None else _scratch(token, "")
        return sorted(r[0] for r in rows if SCRATCH.match(r[0]) and (prefix is None or r[0].startswith(prefix)))

    def _load(
        self,
        tool: str,
        token: str,
        chosen: list[str],
        present: set[str],
        schema: tuple[bytes, dict[str, bytes], bytes],
        by_name: Mapping[str, TableDump],
        read: StreamReader,
        what: str,
    ) -> None:
        """Create the journal, load every chosen table under its scratch name, then journal what the
        swap and the finish need (triggers, other tables' foreign keys) and mark the load complete."""
        header, sections, footer = schema
        journal = _quote(_scratch(token, "j"))
        renames = {name: _scratch(token, "n", i) for i, name in enumerate(chosen)}
        temps = (_scratch(token, "k", i) for i in itertools.count())
        structures = {}
        entries: list[tuple[str, str, str | None, str | None, bytes | None]] = []
        for i, name in enumerate(chosen):
            structures[name], own = new_structure(sections[name], name, renames[name], renames, temps)
            entries.append(("table", name, renames[name], _scratch(token, "o", i) if name in present else None, None))
            entries += [("own", name, temp, real, clause.encode()) for temp, real, clause in own]
        with self._connect() as conn:
            _raw(
                conn,
                f"CREATE TABLE {journal} (seq INT AUTO_INCREMENT PRIMARY KEY, kind VARCHAR(8) NOT NULL,"
                " tbl VARCHAR(64) NOT NULL, a VARCHAR(64), b VARCHAR(64), body LONGBLOB) DEFAULT CHARSET=utf8mb4",
            )
            self._journal(conn, journal, entries)
        triggers: dict[str, list[bytes]] = {}

        def script() -> Iterator[bytes]:
            yield header
            yield b"SET FOREIGN_KEY_CHECKS=0;\n"
            for name in chosen:
                yield structures[name]
                yield from retarget(read(by_name[name].stream), name, renames[name], triggers.setdefault(name, []))
            yield footer

        self._run_client(tool, script(), what)
        later: list[tuple[str, str, str | None, str | None, bytes | None]] = [
            ("trig", name, None, None, header + b"".join(parts)) for name, parts in triggers.items() if parts
        ]
        for i, (child, constraint, clause) in enumerate(self._children(chosen, present)):
            later.append(("child", child, constraint, _scratch(token, "c", i), clause.encode()))
        later.append(("loaded", "", None, None, None))
        with self._connect() as conn:
            self._journal(conn, journal, later)

    @staticmethod
    def _journal(conn: Any, journal: str, entries: Sequence[tuple[Any, ...]]) -> None:
        if entries:
            conn.exec_driver_sql(f"INSERT INTO {journal} (kind, tbl, a, b, body) VALUES (%s, %s, %s, %s, %s)", entries)
            conn.commit()

    def _children(self, chosen: list[str], present: set[str]) -> list[tuple[str, str, str]]:
        """(table, constraint, clause) of every foreign key of a table NOT restored that points at one
        that is: InnoDB moves it along with the old table on RENAME, so it must be pointed back."""
        targets = set(chosen) & present
        found = []
        with self._connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT TABLE_NAME, CONSTRAINT_NAME, REFERENCED_TABLE_NAME"
                " FROM information_schema.REFERENTIAL_CONSTRAINTS"
                " WHERE CONSTRAINT_SCHEMA = %s AND UNIQUE_CONSTRAINT_SCHEMA = %s ORDER BY TABLE_NAME, CONSTRAINT_NAME",
                (self.database, self.database),
            ).fetchall()
            for child, constraint, parent in rows:
                if parent not in targets or child in chosen or SCRATCH.match(child):
                    continue
                create = _raw(conn, f"SHOW CREATE TABLE {_quote(child)}")[0][1]
                for m in _FK_LINE.finditer(create):
                    if _unquote(m["name"]) == constraint:
                        found.append((child, constraint, f"{m['fk']}{m['db'] or ''}{m['ref']}{m['rest']}"))
        return found

    def _swap(self, guard: Any, token: str, locked: bool) -> None:
        """The one RENAME, from a second session, queued before the guard's read locks are released."""
        with self._connect() as conn:
            rows = _raw(conn, f"SELECT tbl, a, b FROM {_quote(_scratch(token, 'j'))} WHERE kind = 'table' ORDER BY seq")
            pairs = []
            for name, new, old in rows:
                if old is not None:
                    pairs.append(f"{_quote(name)} TO {_quote(old)}")
                pairs.append(f"{_quote(new)} TO {_quote(name)}")
            session = _raw(conn, "SELECT CONNECTION_ID()")[0][0]
            failed: list[BaseException] = []

            def rename() -> None:
                try:
                    _raw(conn, "RENAME TABLE " + ", ".join(pairs))
                except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                    failed.append(exc)

            worker = threading.Thread(target=rename, name="migrate-guard-rename", daemon=True)
            worker.start()
            if locked:
                self._wait_queued(session, worker)
            _raw(guard, "UNLOCK TABLES")
            worker.join()
            if failed:
                orig = getattr(failed[0], "orig", None) or failed[0]
                raise GuardError(f"MariaDB/MySQL: swapping in the restored tables failed: {orig}")

    def _wait_queued(self, session: int, worker: threading.Thread) -> None:
        deadline = time.monotonic() + SWAP_WAIT
        with self._connect() as conn:
            while worker.is_alive():
                state = _raw(conn, f"SELECT STATE FROM information_schema.PROCESSLIST WHERE ID = {int(session)}")
                if state and "metadata lock" in (state[0][0] or ""):
                    return
                if time.monotonic() > deadline:
                    _raw(conn, f"KILL QUERY {int(session)}")
                    raise GuardError("the RENAME that swaps in the restored tables did not start")
                time.sleep(0.005)

    def _settle(self, tool: str, token: str) -> None:
        """Finish (after its RENAME) or undo (before it) the restore ``token``. Every step can run again."""
        journal = _scratch(token, "j")
        existing = set(self._scratch_tables(token))
        with self._connect() as conn:
            _raw(conn, "SET SESSION FOREIGN_KEY_CHECKS=0")
            rows = (
                _raw(conn, f"SELECT kind, tbl, a, b, body FROM {_quote(journal)} ORDER BY seq")
                if journal in existing
                else []
            )
            new_names = {a for kind, _t, a, _b, _body in rows if kind == "table"}
            swapped = any(kind == "loaded" for kind, *_ in rows) and not new_names & existing
            if not swapped:
                for name in sorted(existing - {journal}):
                    _raw(conn, f"DROP TABLE IF EXISTS {_quote(name)}")
                _raw(conn, f"DROP TABLE IF EXISTS {_quote(journal)}")
                return
            for kind, child, constraint, temp, clause in rows:
                if kind == "child":
                    self._repoint(conn, child, constraint, temp, clause.decode())
            for name in sorted(existing - {journal}):  # the old tables; their triggers go with them
                _raw(conn, f"DROP TABLE IF EXISTS {_quote(name)}")
            for kind, table, temp, real, clause in rows:
                if kind == "own" and temp in self._constraints(conn, table):
                    _raw(
                        conn,
                        f"ALTER TABLE {_quote(table)} ADD CONSTRAINT {_quote(real)} {clause.decode()},"
                        f" DROP FOREIGN KEY {_quote(temp)}",
                    )
        scripts = [body for kind, _t, _a, _b, body in rows if kind == "trig"]
        if scripts:
            self._run_client(tool, scripts, f"re-creating the triggers of restored tables in {self.database}")
        with self._connect() as conn:
            _raw(conn, f"DROP TABLE IF EXISTS {_quote(journal)}")

    def _repoint(self, conn: Any, child: str, constraint: str, temp: str, clause: str) -> None:
        """Point ``child``'s foreign key back at the table of its name, in two ALTERs (MariaDB refuses to
        drop and add one name in one), each atomic, so the key is always there under one name or the other."""
        current = self._constraints(conn, child)
        parent = _unquote(_FK_LINE.match(f"  CONSTRAINT `x` {clause}")["ref"])  # type: ignore[index]
        if current.get(constraint, parent) != parent and temp not in current:
            _raw(
                conn,
                f"ALTER TABLE {_quote(child)} ADD CONSTRAINT {_quote(temp)} {clause},"
                f" DROP FOREIGN KEY {_quote(constraint)}",
            )
            current = self._constraints(conn, child)
        if temp in current:
            _raw(
                conn,
                f"ALTER TABLE {_quote(child)} ADD CONSTRAINT {_quote(constraint)} {clause},"
                f" DROP FOREIGN KEY {_quote(temp)}",
            )

    def _constraints(self, conn: Any, table: str) -> dict[str, str]:
        """Foreign key name -> referenced table, of ``table``."""
        rows = conn.exec_driver_sql(
            "SELECT CONSTRAINT_NAME, REFERENCED_TABLE_NAME FROM information_schema.REFERENTIAL_CONSTRAINTS"
            " WHERE CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s",
            (self.database, table),
        ).fetchall()
        return {r[0]: r[1] for r in rows}

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
