"""What a statement did on SQLite and on MariaDB/MySQL (PostgreSQL: postgresql.py).

SQLite has no lock per table and no statistics: a table whose root page changed was rebuilt (batch
mode's copy-and-rename). MariaDB/MySQL: for each ALTER the server was asked which algorithm and lock
it accepts (mysql.execute_probed); a copy rewrites the table and blocks what its lock blocks.
"""

from __future__ import annotations

from typing import Any

from .postgresql import Measured

_ROOTPAGES = "SELECT name, rootpage FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"


class SqliteObserver:
    def __init__(self, ignore: frozenset[str] = frozenset({"alembic_version"})) -> None:
        self.ignore = ignore
        self.pages: dict[str, int] | None = None
        self.existing: dict[str, int] = {}
        self.reported: set[str] = set()

    def start_revision(self, dbapi_connection: Any | None) -> None:
        if dbapi_connection is not None:
            self.pages = self._pages(dbapi_connection)
        self.existing, self.reported = dict(self.pages or {}), set()

    def transaction_ended(self) -> None:
        return None

    def before(self, dbapi_connection: Any) -> None:
        if self.pages is None:
            self.pages = self._pages(dbapi_connection)
            self.existing = dict(self.pages)

    def after(self, dbapi_connection: Any) -> Measured:
        # a batch rebuild drops the table and renames its copy: compared with the revision's start
        self.pages = self._pages(dbapi_connection)
        measured = Measured()
        for name, page in sorted(self.pages.items()):
            old = self.existing.get(name)
            if old is not None and old != page and name not in self.reported and name not in self.ignore:
                self.reported.add(name)
                measured.rewrites.append(name)
        return measured

    def failed(self) -> None:
        return None

    @staticmethod
    def _pages(dbapi_connection: Any) -> dict[str, int]:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(_ROOTPAGES)
            return {str(name).lower(): int(page) for name, page in cursor.fetchall()}
        finally:
            cursor.close()


class MysqlObserver:
    """Takes the probe of the statement just run (set by the ``do_execute`` hook) and reports it."""

    def __init__(self, ignore: frozenset[str] = frozenset({"alembic_version"})) -> None:
        self.ignore = ignore
        self.probe: Any = None
        self.rowcount: int | None = None

    def start_revision(self, dbapi_connection: Any | None) -> None:
        return None

    def transaction_ended(self) -> None:
        return None

    def before(self, dbapi_connection: Any) -> None:
        self.probe = None

    def after(self, dbapi_connection: Any) -> Measured:
        probe, self.probe = self.probe, None
        measured = Measured()
        if probe is None or probe.algorithm is None or not probe.table or probe.table in self.ignore:
            return measured
        mode = (probe.lock or "exclusive").upper()
        measured.locks.append({"relation": probe.table, "kind": "table", "mode": mode, "blocks": list(probe.blocks)})
        if probe.algorithm == "copy":
            measured.rewrites.append(probe.table)
        return measured

    def failed(self) -> None:
        self.probe = None
