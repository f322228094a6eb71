"""PostgreSQL: pg_dump/pg_restore for the schema, COPY for the rows, on one exported snapshot.

``dump``
    One ``REPEATABLE READ READ ONLY`` snapshot, exported: pg_dump writes the schema archive on it
    and COPY streams every table from it (over a few connections that import it), so the schema
    and the rows come from one moment and an unchanged table gives a byte-identical stream.
``markers``
    Each table's change marker, which lets a later dump reuse an unchanged table's stream unread.
``restore``
    pg_restore turns the archive into SQL that we run, with each table's COPY, in ONE
    transaction: a failure changes nothing.
``connection``
    What both sides share: connection settings, tools, session settings, libpq helpers.
``engine``
    ``PostgreSQLEngine``, the ``Engine`` interface over them.

Partitioned tables are listed (no rows of their own, an empty stream) and restore as a tree.
Large objects are not part of a snapshot (and are left alone). Needs PostgreSQL 11 or newer.
"""

from __future__ import annotations

from .engine import PostgreSQLEngine

__all__ = ["PostgreSQLEngine"]
