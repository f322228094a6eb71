"""``PostgreSQLEngine``: the ``Engine`` interface over the dump and restore modules.

The engine holds the connection settings taken from its URL and the tools it found (checked once);
``dump`` and ``restore`` hand both to ``dump.take_dump`` and ``restore.restore_dump``. Listing,
counting and dropping tables are a query each and live here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

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
from .dump import take_dump
from .restore import restore_dump


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

    def list_tables(self) -> list[tuple[str | None, str]]:
        conn = self._settings.connect()
        try:
            return [(s, n) for _oid, s, n, _kind in user_tables(conn)]
        except psycopg_module().Error as exc:
            raise GuardError(f"listing PostgreSQL tables failed: {error_message(exc)}") from None
        finally:
            conn.close()

    def row_counts(self, tables: Sequence[str] | None = None) -> dict[str, int]:
        from psycopg import IsolationLevel, sql

        conn = self._settings.connect()
        try:
            conn.autocommit = False
            conn.isolation_level = IsolationLevel.REPEATABLE_READ
            conn.read_only = True
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
        if pre_snapshot is not None:  # TODO(issue 14): writers stopped from here until the restore is done
            pre_snapshot(self)
        restore_dump(self._settings, self._checked_tools, dump, read, tables, before_commit)
