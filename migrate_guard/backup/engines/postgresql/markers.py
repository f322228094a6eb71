"""Change markers: how a dump knows a table's rows are those of an earlier dump without reading them.

Each table gets a marker in the snapshot: a SHA-256 over what decides its COPY bytes besides its
rows (server, timeline, database, server and extension versions, enum labels, composite and domain
types, the table's oid and every attribute, dropped ones and their missing values included, the
COPY's columns and order) and over its rows' transaction ids: their count and two 64-bit hash sums
over the multiset of ``xmin``s (grouped per xmin, so a table written by few transactions is hashed
in a few steps). Every insert or update leaves a tuple whose xmin was not committed at the earlier
snapshot (it lies in [that snapshot's xmin, now)), a delete removes one that was: the multiset
changes with any change to the rows, and the sums miss it with a chance of about 2^-128 --
provided no xid of that range has the same 32 bits as the xmin of a tuple that was there before
(xids wrap around, and frozen tuples keep their raw xmin from any earlier epoch). So a marker also
records its snapshot's 64-bit xmin s and the smallest forward distance d from s (mod 2^32) to any
of the table's xmins, and a later snapshot with horizon h may use it only when h - s <= d: then
every xid that could have written a tuple since lies strictly before every earlier xmin, and the
two cannot be confused. (A table written while some transaction was running at the earlier
snapshot has a small d and is read again once.) An equal marker lets the dump reuse the earlier
stream (its blobs still in the repository): the second backup of an unchanged database reads the
catalog and scans each table's tuple headers, nothing more.

A marker reads ``pg2:<s>:<d>:<sha256 hex>``; docs/repository-format.md describes it for readers of
a repository.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .connection import FORMAT, SESSION, one_row, psycopg_module, qualified_name

if TYPE_CHECKING:
    from .connection import Conn

MARKER_PREFIX = "pg2"
XID_WRAP = 1 << 32

# What besides a table's own rows decides its COPY bytes: checked as one fingerprint per snapshot.
_BASIS_QUERIES = (
    "SELECT system_identifier::text FROM pg_catalog.pg_control_system()",
    "SELECT timeline_id::text FROM pg_catalog.pg_control_checkpoint()",
    "SELECT oid::text FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()",
    "SELECT pg_catalog.current_setting('server_version_num')",
    "SELECT pg_catalog.string_agg(extname || '=' || extversion, ',' ORDER BY extname) FROM pg_catalog.pg_extension",
    "SELECT pg_catalog.string_agg(enumtypid || ':' || enumsortorder || ':' || enumlabel, ','"
    " ORDER BY enumtypid, enumsortorder)"
    " FROM pg_catalog.pg_enum",
    "SELECT pg_catalog.string_agg(concat_ws(':', a.attrelid, a.attnum, a.attname, a.atttypid, a.atttypmod,"
    " a.attisdropped), ','"
    " ORDER BY a.attrelid, a.attnum) FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid"
    " WHERE c.relkind = 'c' AND a.attnum > 0",
    "SELECT pg_catalog.string_agg(concat_ws(':', oid, typbasetype, typtypmod, typnotnull), ',' ORDER BY oid)"
    " FROM pg_catalog.pg_type WHERE typtype = 'd'",
)


@dataclass
class MarkerBasis:
    """The per-snapshot part of every table marker, and each table's attributes (see the module doc)."""

    xmin: int  # the snapshot's 64-bit xmin: every xid before it had finished
    horizon: int  # the snapshot's 64-bit xid horizon (xmax): every xid from it on had not started
    server: str  # fingerprint of _BASIS_QUERIES' answers and of how we COPY
    attributes: dict[int, str]  # table oid -> its pg_attribute rows, dropped ones included

    def marker(self, conn: Conn, schema: str, name: str, info: dict[str, Any]) -> str:
        """The marker of table ``schema.name`` in this snapshot (``info``: its entry in the
        schema header, as the dump's catalog read gives it)."""
        from psycopg import sql

        query = sql.SQL(
            "SELECT coalesce(sum(c), 0)::text, coalesce(sum(c * pg_catalog.hashint8extended(v, 1)), 0)::text,"
            " coalesce(sum(c * pg_catalog.hashint8extended(v, 2)), 0)::text,"
            " coalesce(min(((v - %(s)s) %% %(wrap)s + %(wrap)s) %% %(wrap)s), %(wrap)s)::text"
            " FROM (SELECT xmin::text::int8 AS v, count(*)::numeric AS c FROM ONLY {} GROUP BY xmin) AS per_xmin"
        ).format(qualified_name(schema, name))
        count, sum1, sum2, distance = one_row(conn.execute(query, {"s": self.xmin % XID_WRAP, "wrap": XID_WRAP}))
        body = json.dumps(
            [
                self.server,
                info["oid"],
                self.attributes.get(info["oid"], ""),
                info["columns"],
                info["order_by"],
                count,
                sum1,
                sum2,
            ],
            separators=(",", ":"),
        )
        return f"{MARKER_PREFIX}:{self.xmin}:{distance}:{hashlib.sha256(body.encode()).hexdigest()}"

    def same(self, marker: str, earlier: str | None) -> bool:
        """True when ``earlier`` (from a previous snapshot) says the rows are those ``marker`` describes."""
        if not earlier:
            return False
        try:
            prefix, xmin, distance, digest = earlier.split(":")
            then, room = int(xmin), int(distance)
        except ValueError:
            return False
        return prefix == MARKER_PREFIX and 0 <= self.horizon - then <= room and digest == marker.rsplit(":", 1)[1]


def marker_basis(conn: Conn, tables: Sequence[dict[str, Any]], num: int) -> MarkerBasis | None:
    """The snapshot's marker basis, or None (no markers, every table is read) where the server
    does not let us see all of it. ``num`` is the server's ``server_version_num``."""
    psycopg = psycopg_module()
    if num < 120000:  # attgenerated and the pg_control functions for everyone: PostgreSQL 12
        return None
    try:
        with conn.transaction():  # a savepoint: a refused catalog read leaves the dump going
            answers = [conn.execute(q).fetchone() for q in _BASIS_QUERIES]
            xmin, horizon = (
                int(x)
                for x in one_row(
                    conn.execute(
                        "SELECT pg_catalog.txid_snapshot_xmin(s), pg_catalog.txid_snapshot_xmax(s)"
                        " FROM pg_catalog.txid_current_snapshot() AS s"
                    )
                )
            )
            attributes: dict[int, str] = dict(
                conn.execute(
                    "SELECT a.attrelid::int8, pg_catalog.string_agg(concat_ws(':', a.attnum, a.attname, a.atttypid,"
                    " a.atttypmod, a.attisdropped, a.atthasmissing, a.attmissingval::text, a.attgenerated,"
                    " a.attcollation), ','"
                    " ORDER BY a.attnum) FROM pg_catalog.pg_attribute a WHERE a.attrelid = ANY(%s::oid[])"
                    " AND a.attnum > 0 GROUP BY a.attrelid",
                    ([t["oid"] for t in tables],),
                ).fetchall()
            )
    except psycopg.Error:
        return None
    if any(a is None for a in answers[:3]):
        return None
    server = hashlib.sha256(json.dumps([FORMAT, SESSION, [a[0] if a else None for a in answers]]).encode()).hexdigest()
    return MarkerBasis(xmin, horizon, server, attributes)
