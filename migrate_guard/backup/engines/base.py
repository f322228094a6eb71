"""The interface every backup engine implements, and the data it hands the repository.

An engine turns a live database into named byte streams (a schema stream, one stream per table)
and back. It never sees blobs, keys or files: it writes a stream through ``StreamWriter`` and reads
one through ``StreamReader``, so memory stays bounded whatever the database size.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from ...errors import GuardError


@dataclass
class StreamRef:
    """Where a stream lives in the repository: its blobs in order, and its plaintext size."""

    blobs: list[str]
    bytes: int


class StreamWriter(Protocol):
    def __call__(self, name: str, chunks: Iterable[bytes]) -> StreamRef: ...


class StreamReader(Protocol):
    def __call__(self, ref: StreamRef) -> Iterator[bytes]: ...


@dataclass
class TableDump:
    name: str
    schema: str | None
    rows: int
    stream: StreamRef
    depends_on: list[str] = field(default_factory=list)  # tables its foreign keys point at
    # A fingerprint of the table's rows as dumped, where the engine can take one without reading
    # them (PostgreSQL): an equal marker in a later dump means the stream may be reused as it is.
    marker: str | None = None

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


@dataclass
class DumpResult:
    engine: dict[str, Any]  # {"tool": "pg_dump", "version": "15.19", "format": "..."}
    schema: StreamRef
    tables: list[TableDump]


class ToolMissing(GuardError):
    """A native dump tool is not installed; the message says which package to install."""


def require_tool(names: Sequence[str], package: str) -> str:
    """Path of the first of ``names`` on PATH, else a one-line error naming the package."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise ToolMissing(f"{names[0]} not found: install it (Debian/Ubuntu: apt-get install {package})")


class Engine(ABC):
    """Backup and restore for one database, given by its SQLAlchemy URL."""

    dialect: ClassVar[str]

    def __init__(self, url: str) -> None:
        self.url = url

    @abstractmethod
    def check_tools(self) -> None:
        """Raise ``ToolMissing`` when a native tool this engine needs is absent."""

    @abstractmethod
    def list_tables(self) -> list[tuple[str | None, str]]:
        """(schema, name) of every user table, ``alembic_version`` included."""

    @abstractmethod
    def dump(
        self,
        write: StreamWriter,
        tables: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        previous: Mapping[str, TableDump] | None = None,
    ) -> DumpResult:
        """One consistent snapshot of ``tables`` (all when None, minus ``exclude``).

        ``previous`` maps qualified table names to their newest earlier dump whose blobs are all in
        the repository: an engine that takes markers reuses such a stream when the marker is equal."""

    @abstractmethod
    def restore(
        self,
        dump: DumpResult,
        read: StreamReader,
        tables: Sequence[str] | None = None,
        before_commit: Callable[[], None] | None = None,
        pre_snapshot: Callable[[Engine], None] | None = None,
    ) -> None:
        """Make ``tables`` (all in the dump when None) equal to the dump: schema and rows.
        Other tables are left alone; foreign keys between them survive.

        ``before_commit`` is called at the last moment the engine can still undo everything (an
        exception from it must leave the database as it was): before committing where the restore
        is one transaction, before touching anything where it is not.

        ``pre_snapshot`` is called once, before anything is changed, after writers to the tables being
        restored have been stopped, with an engine whose ``dump`` reads the database as it is at that
        moment: the caller takes its pre-restore snapshot through it. Writers stay stopped until the
        restore has committed (or, where it cannot be one transaction, is complete), so every write
        lands either before the pre-snapshot (and is in it) or after the restore; none vanishes. An
        exception from it leaves the database as it was."""

    def finish_interrupted(self) -> list[str]:
        """Finish, or undo, what a restore killed half-way left in this database, before anything reads it
        (MariaDB: the scratch tables of a restore killed around its RENAME); one line per thing done. A
        restore still running is left alone. Engines whose restore is one transaction have nothing to do."""
        return []

    @abstractmethod
    def row_counts(self, tables: Sequence[str] | None = None) -> dict[str, int]:
        """Exact row count per table (qualified name as in ``TableDump.qualified``)."""

    @abstractmethod
    def drop_tables(self, tables: Sequence[str]) -> None:
        """Drop these tables (those a failed migration created)."""
