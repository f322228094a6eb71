"""The dump: pg_dump for the schema, COPY for the rows, on one exported snapshot.

A psycopg connection opens ``REPEATABLE READ READ ONLY`` and exports its snapshot. On that snapshot
``pg_dump --schema-only -Fc -Z0`` writes the schema archive (streamed from its stdout; we compress
and encrypt, the tool does not), and the same connection streams each table with ``COPY ... TO
STDOUT`` (text format, primary-key order where there is one; plain COPY with synchronized scans
off otherwise), so the schema and every table come from one moment and an unchanged table gives a
byte-identical stream. Session settings (DateStyle, TimeZone, extra_float_digits, bytea_output,
client_encoding) are pinned so the bytes do not depend on server configuration.

Unchanged tables are not read again: each table gets a marker in the snapshot, and a table whose
marker says its rows are those of its previous dump reuses that stream (``markers`` says how).

The schema stream is a small JSON header (magic ``MGPG1 <length>\\n``) followed by the archive.
The header holds what the archive cannot tell a restore: each table's catalog oid (to find its
TOC entry), the columns COPY wrote (generated columns excluded), which table owns each foreign
key, and every sequence's ``last_value``/``is_called``. Sequence values are not in a
``--schema-only`` archive (``SEQUENCE SET`` is data-section) and ``--exclude-table-data`` would
drop them too, so they are read on the snapshot connection exactly as pg_dump reads them (a
sequence is not transactional: a value may be ahead of the snapshot, which only leaves gaps).
It also says which materialized views were populated (``matviews``): a ``--schema-only`` archive
creates them ``WITH NO DATA``, and the restore refreshes those that were.

Given a ``snapshot`` (exported by a restore that has stopped the writers, for its pre-restore
snapshot), the dump imports it instead of taking its own: the schema, every table's rows, its row
count and its marker then all describe the moment the restore's locks were granted. That restore
holds EXCLUSIVE locks meanwhile, which our ACCESS SHARE ones do not conflict with; but a DDL
statement queued behind the restore would queue our locks behind itself, a wait no deadlock
detector sees (the restore waits for us in the client), so such a dump waits at most
``SNAPSHOT_LOCK_WAIT_MS`` for a lock and then fails (and the restore with it, changing nothing).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from ....errors import GuardError
from ....private import private_dir
from ..base import DumpResult, StreamRef, StreamWriter, TableDump
from .connection import (
    FORMAT,
    MAGIC,
    PIECE,
    USER_RELATION,
    ConnectionSettings,
    Tools,
    copy_pieces,
    error_message,
    one_row,
    psycopg_module,
    qualified_name,
    resolve_tables,
    stderr_tail,
    user_tables,
)
from .markers import MarkerBasis, marker_basis

if TYPE_CHECKING:
    from .connection import Conn

COPY_CONNECTIONS = 4  # at most this many connections COPY tables at once (no more than CPUs)
SNAPSHOT_LOCK_WAIT_MS = 60_000  # the longest a dump on an imported snapshot waits for a table lock


def take_dump(
    settings: ConnectionSettings,
    tools: Callable[[], Tools],
    write: StreamWriter,
    tables: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    previous: Mapping[str, TableDump] | None = None,
    snapshot: str | None = None,
) -> DumpResult:
    """``Engine.dump`` for PostgreSQL; ``tools`` gives pg_dump (checked once, by the engine).

    ``snapshot``: an exported snapshot to dump instead of the database as it is now (see the
    module doc); locks are then waited for at most ``SNAPSHOT_LOCK_WAIT_MS``."""
    from psycopg import IsolationLevel

    pg_dump, _pg_restore, version, _restore_version = tools()
    psycopg = psycopg_module()
    try:
        conn = settings.connect() if snapshot is None else snapshot_connection(settings, snapshot)
    except psycopg.Error as exc:  # the snapshot is gone, say
        raise GuardError(f"PostgreSQL dump failed: {error_message(exc)}") from None
    try:
        server = one_row(conn.execute("SHOW server_version"))[0].split()[0]
        num = int(one_row(conn.execute("SHOW server_version_num"))[0])
        lock_wait = None
        if snapshot is None:
            conn.autocommit = False
            conn.isolation_level = IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            # The first statement fixes the transaction's snapshot; pg_dump imports it.
            snapshot = one_row(conn.execute("SELECT pg_catalog.pg_export_snapshot()"))[0]
        else:
            lock_wait = SNAPSHOT_LOCK_WAIT_MS
            conn.execute("SELECT pg_catalog.set_config('lock_timeout', %s, true)", (f"{lock_wait}ms",))
        meta, all_tables, depends = _catalog(conn, num)
        known = [(s, n) for _oid, s, n, _kind in all_tables]
        wanted = set(known if tables is None else resolve_tables(tables, known, strict=True))
        wanted -= set(resolve_tables(exclude, known, strict=False))
        chosen = [t for t in known if t in wanted]  # catalog order, whatever order was asked
        _lock(conn, chosen)
        basis = marker_basis(conn, [meta["tables"][f"{s}.{n}"] for s, n in chosen], num)

        with settings.tool_env() as env:
            refs, rows, markers = _dump_streams(
                settings, conn, write, snapshot, meta, chosen, pg_dump, env, basis, previous or {}, lock_wait
            )
        dumps = [
            TableDump(
                name,
                schema,
                rows.get(f"{schema}.{name}", 0),
                refs[f"{schema}.{name}"],
                depends_on=depends.get(f"{schema}.{name}", []),
                marker=markers.get(f"{schema}.{name}"),
            )
            for schema, name in chosen
        ]
        conn.rollback()
    except psycopg.Error as exc:
        raise GuardError(f"PostgreSQL dump failed: {error_message(exc)}") from None
    finally:
        conn.close()
    return DumpResult(
        engine={"tool": "pg_dump", "version": version, "format": FORMAT, "server_version": server},
        schema=refs["schema"],
        tables=dumps,
    )


def _dump_streams(
    settings: ConnectionSettings,
    conn: Conn,
    write: StreamWriter,
    snapshot: str,
    meta: dict[str, Any],
    chosen: Sequence[tuple[str, str]],
    pg_dump: str,
    env: dict[str, str],
    basis: MarkerBasis | None,
    previous: Mapping[str, TableDump],
    lock_wait: int | None = None,
) -> tuple[dict[str, StreamRef], dict[str, int], dict[str, str]]:
    """Write the schema stream and every table's stream; returns their refs, row counts and
    markers. A table whose marker equals its previous dump's reuses that stream unread.

    The schema stream comes first (pg_dump's archive, quick), then the tables' COPYs run at
    once over up to ``COPY_CONNECTIONS`` connections (no more than CPUs): this one, and helpers
    that import its snapshot with ``SET TRANSACTION SNAPSHOT`` as ``pg_dump -j`` does, largest
    table first. A helper that cannot connect is simply not used. A helper takes each table's
    lock with NOWAIT first: were it to queue behind another session's pending ACCESS EXCLUSIVE
    request, which itself waits for this connection's lock, nobody would ever finish; such a
    table is left to this connection, which holds every lock already."""
    psycopg = psycopg_module()
    from psycopg import sql

    refs: dict[str, StreamRef] = {
        "schema": write("schema", _schema_stream(settings, pg_dump, env, snapshot, meta, lock_wait)),
    }
    rows: dict[str, int] = {}
    markers: dict[str, str] = {}
    jobs: deque[tuple[str, str]] = deque()
    for schema, name in chosen:
        if meta["tables"][f"{schema}.{name}"]["partitioned"]:  # no rows of its own: an empty stream
            refs[f"{schema}.{name}"] = write(f"{schema}.{name}", iter(()))
            rows[f"{schema}.{name}"] = 0
        else:
            jobs.append((schema, name))
    if len(jobs) > 1:
        sizes: dict[int, int | None] = dict(
            conn.execute(
                "SELECT c.oid::int8, pg_catalog.pg_table_size(c.oid) FROM pg_catalog.pg_class c "
                "WHERE c.oid = ANY(%s::oid[])",
                ([meta["tables"][f"{s}.{n}"]["oid"] for s, n in jobs],),
            ).fetchall()
        )
        jobs = deque(sorted(jobs, key=lambda t: -(sizes.get(meta["tables"][f"{t[0]}.{t[1]}"]["oid"]) or 0)))

    mutex = threading.Lock()
    stop = threading.Event()
    failures: list[BaseException] = []
    left: list[tuple[str, str]] = []  # tables a helper could not lock at once
    helpers: list[Conn] = []  # their connections, to cancel on failure

    def copy_table(c: Conn, schema: str, name: str) -> None:
        qualified = f"{schema}.{name}"
        info = meta["tables"][qualified]
        marker = basis.marker(c, schema, name, info) if basis is not None else None
        earlier = previous.get(qualified)
        if marker is not None and earlier is not None and basis is not None and basis.same(marker, earlier.marker):
            with mutex:
                refs[qualified], rows[qualified], markers[qualified] = earlier.stream, earlier.rows, marker
            return
        counter = [0]
        ref = write(qualified, _copy_out(c, schema, name, info["columns"], info["order_by"], counter))
        with mutex:
            refs[qualified] = ref
            rows[qualified] = counter[0]
            if marker is not None:
                markers[qualified] = marker

    def next_job() -> tuple[str, str] | None:
        with mutex:
            return jobs.popleft() if jobs and not stop.is_set() else None

    def fail(exc: BaseException) -> None:
        with mutex:
            failures.append(exc)
        stop.set()

    def helper_job(c: Conn) -> None:
        try:
            while (job := next_job()) is not None:
                target = qualified_name(*job)
                try:
                    with c.transaction():  # a savepoint: a refused lock leaves the transaction usable
                        c.execute(sql.SQL("LOCK TABLE ONLY {} IN ACCESS SHARE MODE NOWAIT").format(target))
                except psycopg.errors.LockNotAvailable:
                    with mutex:
                        left.append(job)
                    continue
                copy_table(c, *job)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            fail(exc)

    threads: list[threading.Thread] = []
    try:
        for _ in range(min(COPY_CONNECTIONS, os.cpu_count() or 1, len(jobs)) - 1):
            try:
                helper = snapshot_connection(settings, snapshot)
            except (GuardError, psycopg.Error):
                break  # too many connections, say: this one does the work
            helpers.append(helper)
            threads.append(threading.Thread(target=helper_job, args=(helper,), name="migrate-guard-copy", daemon=True))
            threads[-1].start()
        while (job := next_job()) is not None:
            copy_table(conn, *job)
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]
        for job in left:
            copy_table(conn, *job)
    except BaseException:
        stop.set()
        for helper in helpers:
            with suppress(Exception):  # best effort; it is closed below anyway
                helper.cancel()
        raise
    finally:
        for thread in threads:
            thread.join()
        for helper in helpers:
            helper.close()
    return refs, rows, markers


def snapshot_connection(settings: ConnectionSettings, snapshot: str) -> Conn:
    """A connection in a read-only REPEATABLE READ transaction on ``snapshot`` (exported by the
    dump's own connection), with the same pinned session settings."""
    from psycopg import IsolationLevel, sql

    c = settings.connect()
    try:
        c.autocommit = False
        c.isolation_level = IsolationLevel.REPEATABLE_READ
        c.read_only = True
        c.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
    except BaseException:
        c.close()
        raise
    return c


def _catalog(conn: Conn, num: int) -> tuple[dict[str, Any], list[tuple[int, str, str, str]], dict[str, list[str]]]:
    """The schema stream's header (see the module doc), every user table as ``user_tables`` gives
    it, and the tables each table's foreign keys point at."""
    from psycopg import sql

    all_tables = user_tables(conn)
    oids = [oid for oid, _s, _n, _kind in all_tables]
    by_oid = {oid: f"{s}.{n}" for oid, s, n, _kind in all_tables}
    partitioned = {oid for oid, _s, _n, kind in all_tables if kind == "p"}
    generated = " AND a.attgenerated = ''" if num >= 120000 else ""
    columns: dict[int, list[str]] = defaultdict(list)
    for relid, attname in conn.execute(
        "SELECT a.attrelid::int8, a.attname FROM pg_catalog.pg_attribute a "
        f"WHERE a.attrelid = ANY(%s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped{generated} "
        "ORDER BY a.attrelid, a.attnum",
        (oids,),
    ):
        columns[relid].append(attname)
    primary: dict[int, list[str]] = defaultdict(list)
    for relid, attname in conn.execute(
        "SELECT i.indrelid::int8, a.attname FROM pg_catalog.pg_index i "
        "CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) "
        "JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "WHERE i.indisprimary AND i.indrelid = ANY(%s::oid[]) ORDER BY i.indrelid, k.ord",
        (oids,),
    ):
        primary[relid].append(attname)
    fk_owner: dict[str, int] = {}
    depends: dict[str, set[str]] = defaultdict(set)
    for conoid, conrelid, confrelid in conn.execute(
        "SELECT oid::int8, conrelid::int8, confrelid::int8 FROM pg_catalog.pg_constraint WHERE contype = 'f'"
    ):
        fk_owner[str(conoid)] = conrelid
        if conrelid in by_oid and confrelid in by_oid and conrelid != confrelid:
            depends[by_oid[conrelid]].add(by_oid[confrelid])
    sequences: dict[str, dict[str, Any]] = {}
    for seqoid, schema, name in conn.execute(
        "SELECT c.oid::int8, n.nspname, c.relname FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE c.relkind = 'S' AND {USER_RELATION} ORDER BY 1"
    ).fetchall():
        query = sql.SQL("SELECT last_value, is_called FROM {}").format(qualified_name(schema, name))
        last_value, is_called = one_row(conn.execute(query))
        sequences[str(seqoid)] = {"schema": schema, "name": name, "last_value": last_value, "is_called": is_called}
    matviews = {
        str(oid): populated
        for oid, populated in conn.execute(
            "SELECT c.oid::int8, c.relispopulated FROM pg_catalog.pg_class c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE c.relkind = 'm' AND {USER_RELATION}"
        )
    }
    tables = {
        by_oid[oid]: {
            "oid": oid,
            "columns": columns.get(oid, []),
            "order_by": primary.get(oid, []),
            "partitioned": oid in partitioned,
        }
        for oid in oids
    }
    meta = {
        "format": "migrate-guard/postgresql-schema",
        "version": 1,
        "tables": tables,
        "fk_owner": fk_owner,
        "sequences": sequences,
        "matviews": matviews,
    }
    return meta, all_tables, {k: sorted(v) for k, v in depends.items()}


def _lock(conn: Conn, chosen: Sequence[tuple[str, str]]) -> None:
    """ACCESS SHARE on the tables we COPY later: no DROP/ALTER can slip in before we read them."""
    from psycopg import sql

    for start in range(0, len(chosen), 500):
        batch = chosen[start : start + 500]
        targets = sql.SQL(", ").join(qualified_name(s, n) for s, n in batch)
        conn.execute(sql.SQL("LOCK TABLE ONLY {} IN ACCESS SHARE MODE").format(targets))


def _schema_stream(
    settings: ConnectionSettings,
    pg_dump: str,
    env: dict[str, str],
    snapshot: str,
    meta: dict[str, Any],
    lock_wait: int | None = None,
) -> Iterator[bytes]:
    """The schema stream: the JSON header, then pg_dump's archive as it writes it (waiting at most
    ``lock_wait`` milliseconds for each table lock, when given)."""
    header = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    yield MAGIC + str(len(header)).encode() + b"\n" + header
    args = [
        pg_dump, "--dbname", settings.conninfo, "--snapshot", snapshot, "--schema-only",
        "--format=custom", "--compress=0", "--no-subscriptions",
    ]  # fmt: skip
    if lock_wait is not None:
        args.append(f"--lock-wait-timeout={lock_wait}")
    with tempfile.TemporaryFile(dir=private_dir()) as err:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, env=env)
        assert proc.stdout is not None  # stdout=PIPE
        try:
            while piece := proc.stdout.read(PIECE):
                yield piece
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        if rc != 0:
            raise GuardError(f"pg_dump failed (exit {rc}): {stderr_tail(err)}")


def _copy_out(
    conn: Conn, schema: str, name: str, columns: list[str], order_by: list[str], counter: list[int]
) -> Iterator[bytes]:
    """A table's ``COPY ... TO STDOUT`` (primary-key order where it has one), in pieces."""
    from psycopg import sql

    target = qualified_name(schema, name)
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    if order_by and columns:
        keys = sql.SQL(", ").join(map(sql.Identifier, order_by))
        query = sql.SQL("COPY (SELECT {} FROM ONLY {} ORDER BY {}) TO STDOUT").format(cols, target, keys)
    elif columns:
        query = sql.SQL("COPY {} ({}) TO STDOUT").format(target, cols)
    else:
        query = sql.SQL("COPY {} TO STDOUT").format(target)
    return copy_pieces(conn, query.as_bytes(conn), counter)
