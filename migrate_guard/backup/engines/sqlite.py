"""SQLite: a consistent database image through the online backup API.

The whole database file is one stream, ``image``: the online backup API copies it page by page, so
the image is page-aligned and a page no write touched is byte-identical in the next backup. Under
the repository's fixed-size chunking (a multiple of every SQLite page size) unchanged regions of
the file deduplicate, which is what makes backups incremental. Per-table entries in the manifest
carry exact row counts and foreign-key dependencies; their data lives in the image.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from urllib.parse import quote

from ...errors import GuardError
from .base import DumpResult, Engine, StreamReader, StreamRef, StreamWriter, TableDump

PIECE = 1 << 20  # bytes per piece handed to the repository (a multiple of every page size)
BUSY_TIMEOUT = 30.0  # seconds to wait for another connection's lock


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _error(action: str, exc: BaseException) -> GuardError:
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
            raise _error(f"opening {str(self.path)!r}", exc) from None

    # --- Engine -----------------------------------------------------------------------------------

    def check_tools(self) -> None:
        """Nothing to install: Python's sqlite3 module is the tool."""

    def list_tables(self) -> list[tuple[str | None, str]]:
        with closing(self._connect()) as conn:
            return [(None, t) for t in _tables(conn)]

    def row_counts(self, tables: Sequence[str] | None = None) -> dict[str, int]:
        with closing(self._connect()) as conn:
            try:
                conn.execute("BEGIN")  # one read transaction: counts from one moment
                known = _tables(conn)
                names = known if tables is None else _resolve(tables, known, strict=False)
                counts = {t: conn.execute(f"SELECT count(*) FROM main.{_q(t)}").fetchone()[0] for t in names}
                conn.execute("COMMIT")
                return counts
            except sqlite3.Error as exc:
                raise _error("counting rows", exc) from None

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
                raise _error("dropping tables", exc) from None
            finally:
                conn.execute(f"PRAGMA foreign_keys = {int(previous)}")

    def dump(
        self,
        write: StreamWriter,
        tables: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        previous: Mapping[str, TableDump] | None = None,
    ) -> DumpResult:
        with tempfile.TemporaryDirectory(prefix="migrate-guard-") as tmp:
            copy = Path(tmp) / "image.db"
            with closing(self._connect()) as source, closing(sqlite3.connect(copy)) as dest:
                try:
                    # pages=-1: the whole database in one step, under one read lock: a consistent
                    # image even while other connections write (they wait, or in WAL mode go on).
                    source.backup(dest, pages=-1)
                except sqlite3.Error as exc:
                    raise _error("online backup", exc) from None

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
        if pre_snapshot is not None:  # TODO(issue 14): writers stopped from here until the restore is done
            pre_snapshot(self)
        if before_commit is not None:  # what is written here cannot be rolled back: check first
            before_commit()
        with tempfile.TemporaryDirectory(prefix="migrate-guard-") as tmp:
            copy = Path(tmp) / "image.db"
            fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                for piece in read(dump.schema):
                    out.write(piece)
            if tables is None:
                self._restore_full(copy)
            else:
                self._restore_tables(copy, dump, tables)

    def _restore_full(self, copy: Path) -> None:
        """Write the image back through the backup API: the live file is rewritten under SQLite's
        own locking, so connections other processes hold stay valid and see the restored data."""
        with closing(sqlite3.connect(copy, isolation_level=None)) as snap, closing(self._connect(create=True)) as live:
            try:
                snap.backup(live, pages=-1)
            except sqlite3.Error as exc:
                raise _error("restoring the database image", exc) from None

    def _restore_tables(self, copy: Path, dump: DumpResult, tables: Sequence[str]) -> None:
        listed = [t.name for t in dump.tables]
        names = _resolve(tables, listed, strict=True)
        with closing(self._connect()) as live:
            previous = live.execute("PRAGMA foreign_keys").fetchone()[0]
            live.execute("PRAGMA foreign_keys = OFF")  # only takes effect outside a transaction
            try:
                live.execute("ATTACH DATABASE ? AS snap", (f"file:{quote(str(copy))}?mode=ro&immutable=1",))
            except sqlite3.Error as exc:
                live.execute(f"PRAGMA foreign_keys = {int(previous)}")
                raise _error("attaching the snapshot", exc) from None
            try:
                live.execute("BEGIN IMMEDIATE")
                for name in names:
                    self._copy_table(live, name)
                self._check_foreign_keys(live, names)
                live.execute("COMMIT")
            except (sqlite3.Error, GuardError) as exc:
                if live.in_transaction:
                    live.execute("ROLLBACK")
                if isinstance(exc, GuardError):
                    raise
                raise _error(f"restoring {', '.join(names)} (nothing was changed)", exc) from None
            finally:
                live.execute("DETACH DATABASE snap")
                live.execute(f"PRAGMA foreign_keys = {int(previous)}")

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


def _file_pieces(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while piece := f.read(PIECE):
            yield piece
