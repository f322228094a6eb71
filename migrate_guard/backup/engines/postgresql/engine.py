"""``PostgreSQLEngine``: the ``Engine`` interface over the dump and restore modules.

The engine holds the connection settings taken from its URL and the tools it found (checked once);
``dump`` and ``restore`` hand both to ``dump.take_dump`` and ``restore.restore_dump``. Listing,
counting and dropping tables are a query each and live here.

A restore's ``pre_snapshot`` callback gets a ``SnapshotView``: the same engine, reading the
snapshot the restore exported once it had stopped the writers (see ``restore``), so that what the
caller dumps through it is exactly what the restore is about to replace.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from ....errors import GuardError
from ..base import DumpResult, Engine, StreamReader, StreamWriter, TableDump
from .connection import (
    ConnectionSettings,
    Tools,
    error_message,
    find_tools,
    one_row,
    psycopg_module,
    qualified_name,
    resolve_tables,
    user_tables,
)
from .dump import snapshot_connection, take_dump
from .restore import restore_dump

if TYPE_CHECKING:
    from .connection import Conn


class PostgreSQLEngine(Engine):
    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._settings = ConnectionSettings.from_url(url)
        self._tools: Tools | None = None  # pg_dump, pg_restore, their versions

    # --- tools ----------------------------------------------------------------------------------------

    def check_tools(self) -> None:
        self._tools = None
        self._checked_tools()

    def _checked_tools(self) -> Tools:
        if self._tools is None:
            self._tools = find_tools(self._settings)
        return self._tools

    # --- catalog --------------------------------------------------------------------------------------

    def _reader(self) -> Conn:
        """A connection in a read-only REPEATABLE READ transaction: every query sees one moment."""
        from psycopg import IsolationLevel

        conn = self._settings.connect()
        conn.autocommit = False
        conn.isolation_level = IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        return conn

    def list_tables(self) -> list[tuple[str | None, str]]:
        conn = self._reader()
        try:
            return [(s, n) for _oid, s, n, _kind in user_tables(conn)]
        except psycopg_module().Error as exc:
            raise GuardError(f"listing PostgreSQL tables failed: {error_message(exc)}") from None
        finally:
            conn.close()

    def row_counts(self, tables: Sequence[str] | None = None) -> dict[str, int]:
        from psycopg import sql

        conn = self._reader()
        try:
            known = [(s, n) for _oid, s, n, _kind in user_tables(conn)]
            chosen = known if tables is None else resolve_tables(tables, known, strict=False)
            counts = {}
            for schema, name in chosen:
                query = sql.SQL("SELECT count(*) FROM ONLY {}.{}").format(sql.Identifier(schema), sql.Identifier(name))
                counts[f"{schema}.{name}"] = one_row(conn.execute(query))[0]
            conn.rollback()
            return counts
        except psycopg_module().Error as exc:
            raise GuardError(f"counting rows failed: {error_message(exc)}") from None
        finally:
            conn.close()

    def drop_tables(self, tables: Sequence[str]) -> None:
        from psycopg import sql

        if not tables:
            return
        conn = self._settings.connect()
        try:
            known = [(s, n) for _oid, s, n, _kind in user_tables(conn)]
            chosen = resolve_tables(tables, known, strict=False)
            if chosen:
                targets = sql.SQL(", ").join(qualified_name(s, n) for s, n in chosen)
                with conn.transaction():
                    conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(targets))
        except psycopg_module().Error as exc:
            raise GuardError(f"dropping tables failed: {error_message(exc)}") from None
        finally:
            conn.close()

    # --- dump and restore -----------------------------------------------------------------------------

    def dump(
        self,
        write: StreamWriter,
        tables: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        previous: Mapping[str, TableDump] | None = None,
    ) -> DumpResult:
        return take_dump(self._settings, self._checked_tools, write, tables, exclude, previous)

    def restore(
        self,
        dump: DumpResult,
        read: StreamReader,
        tables: Sequence[str] | None = None,
        before_commit: Callable[[], None] | None = None,
        pre_snapshot: Callable[[Engine], None] | None = None,
    ) -> None:
        def on_snapshot(snapshot: str) -> None:
            assert pre_snapshot is not None
            pre_snapshot(SnapshotView(self, snapshot))

        restore_dump(
            self._settings,
            self._checked_tools,
            dump,
            read,
            tables,
            before_commit,
            on_snapshot if pre_snapshot is not None else None,
        )


class SnapshotView(PostgreSQLEngine):
    """The database as a snapshot exported by a restore in progress shows it, read-only.

    The restore holds its locks (writers to the restored tables wait) and keeps the snapshot
    importable until it commits or rolls back, so the view is valid only inside the restore's
    ``pre_snapshot`` callback. ``dump``, ``list_tables`` and ``row_counts`` import the snapshot;
    changing anything through the view is refused: it would wait for the restore's own locks."""

    def __init__(self, engine: PostgreSQLEngine, snapshot: str) -> None:
        super().__init__(engine.url)
        self._tools = engine._tools
        self.snapshot = snapshot

    def _reader(self) -> Conn:
        try:
            return snapshot_connection(self._settings, self.snapshot)
        except psycopg_module().Error as exc:
            raise GuardError(f"the restore's snapshot cannot be read: {error_message(exc)}") from None

    def dump(
        self,
        write: StreamWriter,
        tables: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        previous: Mapping[str, TableDump] | None = None,
    ) -> DumpResult:
        return take_dump(self._settings, self._checked_tools, write, tables, exclude, previous, snapshot=self.snapshot)

    def restore(
        self,
        dump: DumpResult,
        read: StreamReader,
        tables: Sequence[str] | None = None,
        before_commit: Callable[[], None] | None = None,
        pre_snapshot: Callable[[Engine], None] | None = None,
    ) -> None:
        raise GuardError("a restore's pre-restore snapshot view is read-only: it cannot restore")

    def drop_tables(self, tables: Sequence[str]) -> None:
        raise GuardError("a restore's pre-restore snapshot view is read-only: it cannot drop tables")
