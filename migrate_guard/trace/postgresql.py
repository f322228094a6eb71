"""What a statement did on PostgreSQL, read from the server by the backend that ran it.

After each statement, on the same connection (inside the same transaction, so uncommitted catalogue
changes are visible): ``pg_locks`` of its own backend (the locks a transaction takes are held until
it ends, so a statement's locks are those it holds now that it did not hold before it), the
``relfilenode`` of every relation in the user's schemas (a new one is a rewrite of the same
relation) and ``pg_stat_xact_user_tables`` (sequential scans and rows written in this transaction).

A statement run outside a transaction (``autocommit_block()``: CREATE INDEX CONCURRENTLY, VACUUM)
holds its locks only while it runs: a second connection reads ``pg_locks`` of the traced backend
every few milliseconds meanwhile, and the transaction statistics of such a statement are not known.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# relkind -> the kind the report names
_KINDS = {"r": "table", "p": "table", "m": "table", "f": "table", "i": "index", "I": "index", "S": "sequence"}
_TABLES = frozenset({"r", "m"})  # relations whose data a rewrite copies (a partitioned parent has none)

_RELATIONS = """
SELECT c.oid::int8, c.relname, c.relkind::text, c.relfilenode::int8
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
"""
_LOCKS = """
SELECT relation::int8, mode FROM pg_locks
WHERE pid = {pid} AND locktype = 'relation' AND granted
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
_STATS = "SELECT relid::int8, seq_scan, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_xact_user_tables"

# Which application statements wait for each table lock mode (PostgreSQL's conflict table, for a
# plain SELECT = ACCESS SHARE, INSERT/UPDATE/DELETE = ROW EXCLUSIVE, and DDL = ACCESS EXCLUSIVE)
BLOCKS = {
    "AccessShareLock": ["DDL"],
    "RowShareLock": ["DDL"],
    "RowExclusiveLock": ["DDL"],
    "ShareUpdateExclusiveLock": ["DDL"],
    "ShareLock": ["INSERT/UPDATE/DELETE", "DDL"],
    "ShareRowExclusiveLock": ["INSERT/UPDATE/DELETE", "DDL"],
    "ExclusiveLock": ["INSERT/UPDATE/DELETE", "DDL"],
    "AccessExclusiveLock": ["SELECT", "INSERT/UPDATE/DELETE", "DDL"],
}
_STRENGTH = {mode: i for i, mode in enumerate(BLOCKS)}


@dataclass
class Relation:
    name: str
    kind: str  # relkind
    node: int


@dataclass
class Measured:
    """What one statement did: locks (relation, kind, mode), rewritten tables, scans, rows written."""

    locks: list[dict[str, Any]] = field(default_factory=list)
    rewrites: list[str] = field(default_factory=list)
    seq_scans: dict[str, int] = field(default_factory=dict)
    rows_written: dict[str, int] = field(default_factory=dict)
    # the strongest mode held on each table once it ran, whichever statement of the transaction took it
    holding: dict[str, str] = field(default_factory=dict)


class Observer:
    """Measures the statements of one traced connection. ``existing``: the relations (by oid) that
    existed when the current revision started; only those are reported (a table the revision creates
    locks nobody out)."""

    def __init__(self, connect_monitor: Any = None, ignore: Iterable[str] = ("alembic_version",)) -> None:
        self.connect_monitor = connect_monitor  # () -> a DBAPI connection for watching autocommit statements
        self.ignore = frozenset(ignore)
        self.relations: dict[int, Relation] | None = None
        self.existing: dict[int, Relation] = {}
        self.locks: set[tuple[int, str]] = set()
        self.inherited: set[tuple[int, str]] = set()
        self.stats: dict[int, tuple[int, int]] = {}
        self._watch: _LockWatch | None = None

    # -- the revision and transaction boundaries -------------------------------------------------

    def start_revision(self, dbapi_connection: Any | None) -> None:
        if dbapi_connection is not None:
            self.relations = self._relations(dbapi_connection)
        self.existing = dict(self.relations or {})
        self.inherited = set(self.locks)  # held by earlier revisions of one transaction (--in-place)

    def transaction_ended(self) -> None:
        self.locks, self.stats, self.inherited = set(), {}, set()

    # -- one statement ---------------------------------------------------------------------------

    def before(self, dbapi_connection: Any) -> None:
        if self.relations is None:
            self.relations = self._relations(dbapi_connection)
            self.existing = dict(self.relations)
        if getattr(dbapi_connection, "autocommit", False) and self.connect_monitor is not None:
            self.transaction_ended()  # each statement is its own transaction
            pid = dbapi_connection.info.backend_pid
            self._watch = _LockWatch(self.connect_monitor, pid)
            self._watch.start()

    def after(self, dbapi_connection: Any) -> Measured:
        watch, self._watch = self._watch, None
        before = self.relations or {}
        after = self._relations(dbapi_connection)
        names = {**before, **after}  # a dropped relation keeps its name
        measured = Measured()
        held: set[tuple[int, str]]
        if watch is not None:
            held = watch.stop()
            stats: dict[int, tuple[int, int]] = {}
            self.locks = set()
        else:
            sql = _LOCKS.format(pid=int(dbapi_connection.info.backend_pid))
            held = {(int(r[0]), str(r[1])) for r in self._query(dbapi_connection, sql)}
            stats = {int(r[0]): (int(r[1] or 0), int(r[2] or 0)) for r in self._query(dbapi_connection, _STATS)}
        taken: dict[int, str] = {}
        for oid, mode in held:
            if oid not in self.existing or oid not in names:
                continue
            rel = names[oid]
            fresh = (oid, mode) not in self.inherited
            if fresh and rel.kind in _TABLES and _stronger(mode, measured.holding.get(rel.name)):
                measured.holding[rel.name] = mode
            if (oid, mode) not in self.locks and _stronger(mode, taken.get(oid)):
                taken[oid] = mode
        if watch is None:
            self.locks |= {(int(oid), mode) for oid, mode in held}
        for oid, mode in sorted(taken.items(), key=lambda item: names[item[0]].name):
            rel = names[oid]
            if rel.name in self.ignore:
                continue
            kind = _KINDS.get(rel.kind, "other")
            measured.locks.append({"relation": rel.name, "kind": kind, "mode": mode, "blocks": BLOCKS.get(mode, [])})
        for oid, rel in after.items():
            old = before.get(oid)
            rewritten = old is not None and old.node != rel.node and rel.kind in _TABLES
            if rewritten and oid in self.existing and rel.name not in self.ignore:
                measured.rewrites.append(rel.name)
        measured.rewrites.sort()
        for oid, (scans, written) in stats.items():
            old_scans, old_written = self.stats.get(oid, (0, 0))
            known = names.get(oid)
            if known is None or known.name in self.ignore:
                continue
            rel = known
            if scans > old_scans:
                measured.seq_scans[rel.name] = scans - old_scans
            if written > old_written:
                measured.rows_written[rel.name] = written - old_written
        self.stats = stats
        self.relations = after
        return measured

    def failed(self) -> None:
        """The statement raised: the transaction is aborted (or the autocommit statement is over)."""
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.stop()

    # -- reading the server ----------------------------------------------------------------------

    def _relations(self, dbapi_connection: Any) -> dict[int, Relation]:
        return {int(r[0]): Relation(r[1], r[2], int(r[3])) for r in self._query(dbapi_connection, _RELATIONS)}

    @staticmethod
    def _query(dbapi_connection: Any, sql: str) -> list[tuple[Any, ...]]:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(sql)
            return list(cursor.fetchall())
        finally:
            cursor.close()


def _stronger(mode: str, than: str | None) -> bool:
    return _STRENGTH.get(mode, -1) > _STRENGTH.get(than or "", -1)


class _LockWatch:
    """Reads the relation locks of backend ``pid`` from another connection until stopped."""

    INTERVAL = 0.002

    def __init__(self, connect: Any, pid: int) -> None:
        self.connect = connect
        self.pid = pid
        self.seen: set[tuple[int, str]] = set()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trace-lock-watch", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(5)

    def _run(self) -> None:
        try:
            conn = self.connect()
        except BaseException as exc:  # noqa: BLE001 - no watcher: the statement's locks go unseen, said by the caller
            self.error = exc
            self._ready.set()
            return
        try:
            conn.autocommit = True
            cursor = conn.cursor()
            sql = _LOCKS.format(pid=int(self.pid))
            self._ready.set()
            while True:
                cursor.execute(sql)
                self.seen |= {(int(r[0]), r[1]) for r in cursor.fetchall()}
                if self._stop.wait(self.INTERVAL):
                    break
        except BaseException as exc:  # noqa: BLE001 - as above
            self.error = exc
        finally:
            self._ready.set()
            conn.close()

    def stop(self) -> set[tuple[int, str]]:
        self._stop.set()
        self._thread.join(5)
        return self.seen
