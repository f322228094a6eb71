"""SQLite: a consistent database image through the online backup API.

The whole database file is one stream, ``image``: the online backup API copies it page by page, so
the image is page-aligned and a page no write touched is byte-identical in the next backup. The
repository's content-defined chunks (FastCDC) cut unchanged regions of the file the same way each
time, so they deduplicate, which is what makes backups incremental. Per-table entries in the manifest
carry exact row counts and foreign-key dependencies; their data lives in the image.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import NoReturn
from urllib.parse import quote

from ...errors import GuardError
from ...private import private_tempdir
from .base import DumpResult, Engine, StreamReader, StreamRef, StreamWriter, TableDump

PIECE = 1 << 20  # bytes per piece handed to the repository (a multiple of every page size)
BUSY_TIMEOUT = 30.0  # seconds to wait for another connection's lock


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


SQLITE_FULL = 13  # the primary result code of "database or disk is full"


def _error(action: str, exc: BaseException, path: Path | None = None) -> GuardError:
    """One line for a failed SQLite call; a full disk is the filesystem's refusal (exit 1, with the path
    and the free space), not a database error."""
    if isinstance(exc, sqlite3.Error) and (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == SQLITE_FULL:
        from ..storage import StorageError

        return StorageError(OSError(errno.ENOSPC, "No space left on device"), path or "the database", "write")
    return GuardError(f"SQLite {action} failed: {exc}")


def _tables(conn: sqlite3.Connection, schema: str = "main") -> list[str]:
    rows = conn.execute(
        f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
        "ORDER BY name"
    ).fetchall()
    return [r[0] for r in rows]


def _resolve(names: Iterable[str], known: Sequence[str], *, strict: bool) -> list[str]:
    """Map user-given names (``t`` or ``main.t``, any case) to the tables' own spelling."""
    by_lower = {k.lower(): k for k in known}
    out: list[str] = []
    for name in names:
        key = name.lower()
        if key not in by_lower and key.startswith("main."):
            key = key[5:]
        if key in by_lower:
            if by_lower[key] not in out:
                out.append(by_lower[key])
        elif strict:
            raise GuardError(f"no table {name!r} in the SQLite snapshot (it has: {', '.join(known) or 'no tables'})")
    return out


class SQLiteEngine(Engine):
    dialect = "sqlite"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        from sqlalchemy.engine import make_url

        database = make_url(url).database
        if not database or database == ":memory:" or database.startswith("file::memory:"):
            raise GuardError("cannot back up an in-memory SQLite database: give the URL of a database file")
        self.path = Path(database)

    # --- connections ------------------------------------------------------------------------------

    def _connect(self, *, create: bool = False) -> sqlite3.Connection:
        if not create and not self.path.exists():
            raise GuardError(f"SQLite database {str(self.path)!r} does not exist")
        mode = "rwc" if create else "rw"
        uri = f"file:{quote(str(self.path.resolve()))}?mode={mode}"
        try:
            return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT, isolation_level=None)
        except sqlite3.Error as exc:
            raise _error(f"opening {str(self.path)!r}", exc, self.path) from None

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The connection ``list_tables``, ``row_counts`` and ``dump`` read through: a new one, closed after."""
        with closing(self._connect()) as conn:
            yield conn

    # --- Engine -----------------------------------------------------------------------------------

    def check_tools(self) -> None:
        """Nothing to install: Python's sqlite3 module is the tool."""

    def list_tables(self) -> list[tuple[str | None, str]]:
        with self._reading() as conn:
            return [(None, t) for t in _tables(conn)]

    def row_counts(self, tables: Sequence[str] | None = None) -> dict[str, int]:
        with self._reading() as conn:
            try:
                conn.execute("BEGIN")  # one read transaction: counts from one moment
                known = _tables(conn)
                names = known if tables is None else _resolve(tables, known, strict=False)
                counts = {t: conn.execute(f"SELECT count(*) FROM main.{_q(t)}").fetchone()[0] for t in names}
                conn.execute("COMMIT")
                return counts
            except sqlite3.Error as exc:
                raise _error("counting rows", exc, self.path) from None

    def drop_tables(self, tables: Sequence[str]) -> None:
        if not tables:
            return
        with closing(self._connect()) as conn:
            previous = conn.execute("PRAGMA foreign_keys").fetchone()[0]
            conn.execute("PRAGMA foreign_keys = OFF")  # no implicit DELETE, any order
            try:
                conn.execute("BEGIN IMMEDIATE")
                for name in _resolve(tables, _tables(conn), strict=False):
                    conn.execute(f"DROP TABLE IF EXISTS main.{_q(name)}")
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise _error("dropping tables", exc, self.path) from None
            finally:
                conn.execute(f"PRAGMA foreign_keys = {int(previous)}")

    def dump(
        self,
        write: StreamWriter,
        tables: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        previous: Mapping[str, TableDump] | None = None,
    ) -> DumpResult:
        # The copy is plaintext user data: in the private directory, which outlives no process (kill -9 included).
        with private_tempdir(prefix="sqlite-dump-") as tmp:
            copy = tmp / "image.db"
            with self._reading() as source, closing(sqlite3.connect(copy)) as dest:
                try:
                    # pages=-1: the whole database in one step, under one read lock: a consistent
                    # image even while other connections write (they wait, or in WAL mode go on).
                    source.backup(dest, pages=-1)
                except sqlite3.Error as exc:
                    raise _error("online backup", exc, copy) from None  # the copy is what is written

            entries = self._describe(copy, tables, exclude)
            # The image is always the whole database: ``tables``/``exclude`` only choose what the
            # manifest lists (and what a partial restore may name).
            image = write("image", _file_pieces(copy))

        return DumpResult(
            engine={"tool": "sqlite3", "version": sqlite3.sqlite_version, "format": "image"},
            schema=image,
            tables=entries,
        )

    def _describe(self, copy: Path, tables: Sequence[str] | None, exclude: Sequence[str]) -> list[TableDump]:
        uri = f"file:{quote(str(copy))}?mode=ro&immutable=1"
        with closing(sqlite3.connect(uri, uri=True, isolation_level=None)) as snap:
            known = _tables(snap)
            wanted = set(known if tables is None else _resolve(tables, known, strict=True))
            wanted -= set(_resolve(exclude, known, strict=False))
            out = []
            for name in known:  # sqlite_master order by name, whatever order was asked
                if name not in wanted:
                    continue
                rows = snap.execute(f"SELECT count(*) FROM main.{_q(name)}").fetchone()[0]
                parents = {r[2] for r in snap.execute(f"PRAGMA main.foreign_key_list({_q(name)})")}
                depends = sorted(p for p in (_resolve(parents, known, strict=False)) if p != name)
                empty = StreamRef(blobs=[], bytes=0)  # the rows live in the image
                out.append(TableDump(name=name, schema=None, rows=rows, stream=empty, depends_on=depends))
            return out

    def restore(
        self,
        dump: DumpResult,
        read: StreamReader,
        tables: Sequence[str] | None = None,
        before_commit: Callable[[], None] | None = None,
        pre_snapshot: Callable[[Engine], None] | None = None,
    ) -> None:
        """Into an existing database, one transaction on one connection: ``BEGIN IMMEDIATE`` takes the
        write lock, ``pre_snapshot`` dumps the state the lock froze (see ``_LockedView``), the tables
        are replaced, ``before_commit`` runs, then COMMIT. Other connections' writes wait (their busy
        timeout) and land after the restore; readers go on until the commit. A database file that does
        not exist yet gets the image through the online backup API."""
        names = None if tables is None else _resolve(tables, [t.name for t in dump.tables], strict=True)
        with private_tempdir(prefix="sqlite-restore-") as tmp:  # plaintext: never left in /tmp by kill -9
            copy = tmp / "image.db"
            fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:  # read before the lock: writers wait only for the restore itself
                for piece in read(dump.schema):
                    out.write(piece)
            if names is None and pre_snapshot is None and not self.path.exists():
                if before_commit is not None:  # the backup API commits as it finishes: check first
                    before_commit()
                self._restore_image(copy)
            else:
                self._restore_locked(copy, names, before_commit, pre_snapshot)

    def _restore_image(self, copy: Path) -> None:
        """Write the image into a new database file through the backup API."""
        with closing(sqlite3.connect(copy, isolation_level=None)) as snap, closing(self._connect(create=True)) as live:
            try:
                snap.backup(live, pages=-1)
            except sqlite3.Error as exc:
                raise _error("restoring the database image", exc, self.path) from None

    def _restore_locked(
        self,
        copy: Path,
        names: Sequence[str] | None,
        before_commit: Callable[[], None] | None,
        pre_snapshot: Callable[[Engine], None] | None,
    ) -> None:
        """Replace ``names`` (every object when None) from the image in one write transaction, the
        pre-snapshot taken inside it; anything raised rolls everything back."""
        what = "the database" if names is None else ", ".join(names)
        with closing(self._connect(create=True)) as live:
            previous = live.execute("PRAGMA foreign_keys").fetchone()[0]
            live.execute("PRAGMA foreign_keys = OFF")  # only takes effect outside a transaction
            try:  # ATTACH cannot run inside a transaction: before the lock
                live.execute("ATTACH DATABASE ? AS snap", (f"file:{quote(str(copy))}?mode=ro&immutable=1",))
            except sqlite3.Error as exc:
                live.execute(f"PRAGMA foreign_keys = {int(previous)}")
                raise _error("attaching the snapshot", exc, self.path) from None
            try:
                live.execute("BEGIN IMMEDIATE")  # the write lock: other writers wait from here to COMMIT
                if pre_snapshot is not None:
                    pre_snapshot(_LockedView(self.url, live))
                if names is None:
                    self._replace_all(live)
                else:
                    for name in names:
                        self._copy_table(live, name)
                    self._check_foreign_keys(live, names)
                if before_commit is not None:
                    before_commit()
                live.execute("COMMIT")
            except BaseException as exc:
                if live.in_transaction:
                    live.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise _error(f"restoring {what} (nothing was changed)", exc, self.path) from None
                raise
            finally:
                live.execute("DETACH DATABASE snap")
                live.execute(f"PRAGMA foreign_keys = {int(previous)}")

    def _replace_all(self, live: sqlite3.Connection) -> None:
        """Make main equal to the attached image: every view and table dropped, the image's tables (rows,
        indexes, triggers, AUTOINCREMENT counters), views and header versions created. Foreign keys are
        not checked: the image is restored as it was, as the backup API would."""
        listed = "SELECT name FROM {}.sqlite_master WHERE type = 'view' ORDER BY name"
        for view in [r[0] for r in live.execute(listed.format("main"))]:
            live.execute(f"DROP VIEW IF EXISTS main.{_q(view)}")  # its INSTEAD OF triggers go with it
        for table in _tables(live):
            live.execute(f"DROP TABLE IF EXISTS main.{_q(table)}")  # its sqlite_sequence row goes with it
        for table in _tables(live, "snap"):
            self._copy_table(live, table)
        views = live.execute(
            "SELECT sql FROM snap.sqlite_master WHERE type = 'view' AND sql IS NOT NULL ORDER BY rowid"
        ).fetchall()
        for (sql,) in views:
            live.execute(sql)
        view_triggers = live.execute(
            "SELECT t.sql FROM snap.sqlite_master t JOIN snap.sqlite_master v ON v.name = t.tbl_name "
            "WHERE t.type = 'trigger' AND v.type = 'view' AND t.sql IS NOT NULL ORDER BY t.rowid"
        ).fetchall()
        for (sql,) in view_triggers:
            live.execute(sql)
        for pragma in ("user_version", "application_id"):
            value = int(live.execute(f"PRAGMA snap.{pragma}").fetchone()[0])
            live.execute(f"PRAGMA main.{pragma} = {value}")

    @staticmethod
    def _copy_table(live: sqlite3.Connection, name: str) -> None:
        objects = live.execute(
            "SELECT type, sql FROM snap.sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL "
            "ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 ELSE 2 END, rowid",
            (name,),
        ).fetchall()
        if not objects or objects[0][0] != "table":
            raise GuardError(f"table {name!r} is not in the SQLite snapshot")
        live.execute(f"DROP TABLE IF EXISTS main.{_q(name)}")  # its indexes and triggers go with it
        live.execute(objects[0][1])  # unqualified CREATE TABLE: lands in main
        # Generated columns cannot be inserted; hidden = 2 or 3 marks them.
        columns = [r[1] for r in live.execute(f"PRAGMA snap.table_xinfo({_q(name)})") if r[6] in (0, 1)]
        cols = ", ".join(_q(c) for c in columns)
        live.execute(f"INSERT INTO main.{_q(name)} ({cols}) SELECT {cols} FROM snap.{_q(name)}")
        # Indexes and triggers after the rows: faster, and no trigger fires for restored rows.
        for _kind, sql in objects[1:]:
            live.execute(sql)
        has_seq = "SELECT 1 FROM {}.sqlite_master WHERE name = 'sqlite_sequence'"
        if live.execute(has_seq.format("main")).fetchone():
            live.execute("DELETE FROM main.sqlite_sequence WHERE name = ?", (name,))
            if live.execute(has_seq.format("snap")).fetchone():
                live.execute(
                    "INSERT INTO main.sqlite_sequence (name, seq) "
                    "SELECT name, seq FROM snap.sqlite_sequence WHERE name = ?",
                    (name,),
                )

    @staticmethod
    def _check_foreign_keys(live: sqlite3.Connection, names: Sequence[str]) -> None:
        """Refuse (roll back) a restore that leaves a foreign key broken on a restored table's
        side, either direction: as PostgreSQL does when it re-adds a constraint."""
        restored = {n.lower() for n in names}
        for table in _tables(live):
            parents = {r[2].lower() for r in live.execute(f"PRAGMA main.foreign_key_list({_q(table)})")}
            if table.lower() not in restored and not parents & restored:
                continue
            for child, rowid, parent, _fkid in live.execute(f"PRAGMA main.foreign_key_check({_q(table)})"):
                if child.lower() in restored or parent.lower() in restored:
                    raise GuardError(
                        f"restoring {', '.join(names)} would break a foreign key: row {rowid} of {child!r} "
                        f"references a missing row of {parent!r}; restore {child!r} and {parent!r} together "
                        "(nothing was changed)"
                    )


class _LockedView(SQLiteEngine):
    """The database as it is while the restoring connection ``held`` has the write lock and has not
    changed anything yet: what ``pre_snapshot`` receives. ``dump``, ``list_tables`` and ``row_counts``
    read through connections of their own (the backup API refuses a source connection that is in a write
    transaction): with the lock held nobody can commit, so they see exactly the state the lock froze. It
    cannot restore or drop, and refuses to read once the lock is gone."""

    def __init__(self, url: str, held: sqlite3.Connection) -> None:
        super().__init__(url)
        self._held = held

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        if not self._held.in_transaction:
            raise GuardError("the pre-restore view of a SQLite database is used after its lock was released")
        with super()._reading() as conn:
            yield conn

    def _refuse(self) -> NoReturn:
        raise GuardError("the pre-restore view of a SQLite database can only be read")

    def restore(
        self,
        dump: DumpResult,
        read: StreamReader,
        tables: Sequence[str] | None = None,
        before_commit: Callable[[], None] | None = None,
        pre_snapshot: Callable[[Engine], None] | None = None,
    ) -> None:
        self._refuse()

    def drop_tables(self, tables: Sequence[str]) -> None:
        self._refuse()


def _file_pieces(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while piece := f.read(PIECE):
            yield piece
