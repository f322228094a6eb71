#!/usr/bin/env python3
"""How much does the second backup of a table store after 1% new rows were inserted in its middle?

In one run, on a MariaDB server (default), a PostgreSQL one (``--url postgresql+psycopg://...``) or
SQLite (``--url sqlite://``: a file in a temporary directory, backed up as its page image):

1. creates a database of its own (a unique name, dropped at the end) holding one table ``items`` of
   ``--rows`` rows with even ids 0, 2, 4, ... (~160 bytes a row in the dump: ~80 MB at the default),
   generated server-side;
2. backs it up through the project's real path (the dialect's backup engine ``dump`` writing into a
   fresh encrypted ``Repository``'s ``write_stream``, as ``service.take_snapshot`` does), twice: with
   the repository's content-defined chunking (FastCDC, backup/chunker.py) and, the baseline, with the
   fixed-size cutting migrate-guard used before (every ``chunk_size`` bytes), each into its own
   repository;
3. inserts 1% more rows, odd ids, as one block in the middle of the id range (MariaDB and PostgreSQL
   dump in primary-key order, so they land in the middle of the table's stream);
4. backs up again into each repository and prints, per cutter: the table's stream bytes, the new
   chunks' plaintext bytes and the repository bytes the second backup added, with ratios against the
   stream (goal: new plaintext / stream <= 0.05 for content-defined chunking), and both backups'
   times (the cutters' cost on their own, cutting the stream in memory, too).

    .venv/bin/python benchmarks/table_dedup_bench.py [--url URL] [--rows N] [--chunk-size BYTES]
                                                     [--repeat N]

``--url`` names the server (its database part is ignored: the script makes its own). ``--chunk-size``
sets the repositories' chunk size (default: the repository default, 4 MiB). ``--repeat N`` times each
backup N times (fresh copies of the repository) and keeps the fastest.

Measured (Dec 2026, 500k rows, 4 MiB chunk_size): PostgreSQL 0.024 new/stream with FastCDC against
0.56 fixed; SQLite 0.12 against 0.18; MariaDB 0.50 against 0.54: mariadb-dump's extended INSERTs end
every ~1 MB (``--net-buffer-length``), by length and not by content, so after the inserted rows every
statement break moves, and nearly every ~1.3 MB chunk holds one (0.11 at chunk_size 256 KiB, 0.04 at
64 KiB). Meeting the goal there needs statement breaks that depend on the rows (the engine's business).
Backup time, FastCDC / fixed, on 2 CPUs: first backup 1.06 to 1.11, second 0.79 to 1.06.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from units import human  # benchmarks/units.py: the directory of a script run as a file is on sys.path

from migrate_guard.backup import chunker
from migrate_guard.backup import repository as repository_module
from migrate_guard.backup.crypto import decode_key, generate_key
from migrate_guard.backup.engines.base import StreamRef
from migrate_guard.backup.repository import DEFAULT_CHUNK_SIZE, KeySource, Repository
from migrate_guard.backup.service import database_engine

DEFAULT_URL = "mysql+pymysql://root@127.0.0.1:3306/mysql"
TABLE = "items"
GOAL = 0.05

MYSQL_SCHEMA = f"""CREATE TABLE {TABLE} (
    id BIGINT PRIMARY KEY, customer VARCHAR(64) NOT NULL, email VARCHAR(128) NOT NULL,
    amount DECIMAL(12,2) NOT NULL, qty INT NOT NULL, created_at DATETIME NOT NULL, note VARCHAR(255)
) ENGINE=InnoDB"""
MYSQL_ROWS = f"""INSERT INTO {TABLE}
SELECT 2 * seq + {{odd}}, CONCAT('customer ', (seq * 7919 + {{salt}}) %% 100000),
       CONCAT(LEFT(MD5(seq + {{salt}}), 12), '@example.com'), ((seq * 104729 + {{salt}}) %% 10000000) / 100,
       (seq + {{salt}}) %% 17, TIMESTAMP '2026-01-01 00:00:00' + INTERVAL (seq * 37 + {{salt}}) SECOND,
       CONCAT(MD5(seq * 3 + {{salt}}), ' ', SHA1(seq + {{salt}}))
FROM seq_{{first}}_to_{{last}}"""
PG_SCHEMA = f"""CREATE TABLE {TABLE} (
    id bigint PRIMARY KEY, customer text NOT NULL, email text NOT NULL, amount numeric(12,2) NOT NULL,
    qty integer NOT NULL, created_at timestamp NOT NULL, note text
)"""
PG_ROWS = f"""INSERT INTO {TABLE}
SELECT 2 * seq + {{odd}}, 'customer ' || ((seq * 7919 + {{salt}}) %% 100000),
       left(md5((seq + {{salt}})::text), 12) || '@example.com', ((seq * 104729 + {{salt}}) %% 10000000) / 100.0,
       (seq + {{salt}}) %% 17, TIMESTAMP '2026-01-01 00:00:00' + (seq * 37 + {{salt}}) * INTERVAL '1 second',
       md5((seq * 3 + {{salt}})::text) || ' ' || md5((seq + {{salt}})::text || 'x') || left(md5(seq::text), 8)
FROM generate_series({{first}}::bigint, {{last}}::bigint) AS seq"""
SQLITE_SCHEMA = f"""CREATE TABLE {TABLE} (
    id INTEGER PRIMARY KEY, customer TEXT NOT NULL, email TEXT NOT NULL, amount NUMERIC NOT NULL,
    qty INTEGER NOT NULL, created_at TEXT NOT NULL, note TEXT
)"""
SQLITE_ROWS = f"""WITH RECURSIVE s(seq) AS (SELECT {{first}} UNION ALL SELECT seq + 1 FROM s WHERE seq < {{last}})
INSERT INTO {TABLE}
SELECT 2 * seq + {{odd}}, 'customer ' || ((seq * 7919 + {{salt}}) % 100000),
       printf('%012x@example.com', (seq + {{salt}}) * 2654435761 % 281474976710656),
       ((seq * 104729 + {{salt}}) % 10000000) / 100.0, (seq + {{salt}}) % 17,
       datetime('2026-01-01 00:00:00', '+' || (seq * 37 + {{salt}}) || ' seconds'),
       printf('%016x%016x %016x%08x', (seq * 3 + {{salt}}) * 11400714819323198485 % 9223372036854775807,
              (seq + {{salt}}) * 6364136223846793005 % 9223372036854775807,
              (seq + {{salt}}) * 1442695040888963407 % 9223372036854775807, seq % 4294967296)
FROM s"""


def fixed_cut(chunks: Iterable[bytes | bytearray | memoryview], size: int) -> Iterator[bytes]:
    """The baseline: the stream cut every ``size`` bytes (the last piece shorter), as before FastCDC."""
    buf = bytearray()
    for chunk in chunks:
        buf += chunk
        if len(buf) >= size:
            with memoryview(buf) as view:
                whole = len(buf) - len(buf) % size
                for pos in range(0, whole, size):
                    yield bytes(view[pos : pos + size])
            del buf[:whole]
    if buf:
        yield bytes(buf)


@dataclass
class Cutter:
    name: str
    cut: Callable[[Iterable[bytes | bytearray | memoryview], int], Iterator[bytes]]
    location: str = ""
    stream: StreamRef | None = None  # the table's stream in the first backup
    first_stored: int = 0
    first_seconds: float = 0.0
    second: StreamRef | None = None
    second_stored: int = 0
    second_seconds: float = 0.0
    new_plain: int = 0  # plaintext bytes of the second stream's chunks the first backup did not have
    cut_seconds: float = 0.0


def server_admin(url: str) -> sa.Engine:
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


def backup(cutter: Cutter, url: str, keys: KeySource) -> tuple[StreamRef, int, float]:
    """One backup of the database into ``cutter.location``, the repository cutting with the cutter's
    function, as ``service.take_snapshot`` does it: (the table's stream, the bytes the repository grew
    by, seconds)."""
    saved = repository_module.cut
    repository_module.cut = cutter.cut
    try:
        repo = Repository.open(cutter.location, keys)
        engine = database_engine(url)

        def write(name: str, chunks: Iterable[bytes]) -> StreamRef:
            return repo.write_stream(name, chunks)

        start = time.perf_counter()
        with repo.lock("bench"):
            dump = engine.dump(write)
        seconds = time.perf_counter() - start
    finally:
        repository_module.cut = saved
    (table,) = [t for t in dump.tables if t.name == TABLE]
    stream = dump.schema if dump.engine.get("format") == "image" else table.stream  # SQLite: the file's image
    return stream, repo.added_bytes, seconds


def timed_backup(cutter: Cutter, url: str, keys: KeySource, repeat: int) -> tuple[StreamRef, int, float]:
    """The fastest of ``repeat`` backups, each into a fresh copy of the repository as it is now."""
    pristine = cutter.location + ".pristine"
    shutil.copytree(cutter.location, pristine)
    best: tuple[StreamRef, int, float] | None = None
    try:
        for _ in range(repeat):
            shutil.rmtree(cutter.location)
            shutil.copytree(pristine, cutter.location)
            result = backup(cutter, url, keys)
            if best is None or result[2] < best[2]:
                best = result
    finally:
        shutil.rmtree(pristine)
    assert best is not None
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL, help="the MariaDB or PostgreSQL server (its database is ignored)")
    parser.add_argument("--rows", type=int, default=500_000, help="rows in the table (default: ~80 MB of dump)")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help="the repositories' chunk size")
    parser.add_argument("--repeat", type=int, default=1, help="time each backup N times, keep the fastest")
    args = parser.parse_args()

    base = sa.engine.make_url(args.url)
    backend = base.get_backend_name()
    postgres, sqlite = backend == "postgresql", backend == "sqlite"
    database = f"mg_dedup_bench_{uuid.uuid4().hex[:10]}"
    quote = '"' if postgres else "`"
    tmp = Path(tempfile.mkdtemp(prefix="mg-dedup-bench-"))
    if sqlite:  # a file in the temporary directory (the URL's path is ignored)
        url = f"sqlite:///{tmp / database}.db"
        schema, insert, server = SQLITE_SCHEMA, SQLITE_ROWS, f"SQLite {tmp / database}.db"
    else:
        url = base.set(database=database).render_as_string(hide_password=False)
        schema, insert = (PG_SCHEMA, PG_ROWS) if postgres else (MYSQL_SCHEMA, MYSQL_ROWS)
        server = f"{'PostgreSQL' if postgres else 'MariaDB'} {base.host}:{base.port}, database {database}"
    low, avg, high = chunker.cdc_params(args.chunk_size)
    print(f"{server}; {args.rows} rows; chunk_size {args.chunk_size} (FastCDC min/avg/max {low}/{avg}/{high})")

    admin = server_admin(url if sqlite else args.url)
    if not sqlite:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {quote}{database}{quote}")
    try:
        db = server_admin(url)
        start = time.perf_counter()
        with db.connect() as conn:
            conn.exec_driver_sql(schema)
            conn.exec_driver_sql(insert.format(odd=0, salt=0, first=0, last=args.rows - 1))
            if postgres:
                conn.exec_driver_sql(f"VACUUM ANALYZE {TABLE}")
        print(f"seeded {args.rows} rows in {time.perf_counter() - start:.1f} s")

        keys = KeySource(key=decode_key(generate_key()))
        cutters = [Cutter("fixed", fixed_cut), Cutter("FastCDC", chunker.cut)]
        for cutter in cutters:
            cutter.location = str(tmp / cutter.name)
            Repository.init(cutter.location, keys, chunk_size=args.chunk_size)
        for cutter in cutters:
            cutter.stream, cutter.first_stored, cutter.first_seconds = timed_backup(cutter, url, keys, args.repeat)

        new = max(1, args.rows // 100)
        first = args.rows // 2 - new // 2
        with db.connect() as conn:
            conn.exec_driver_sql(insert.format(odd=1, salt=7, first=first, last=first + new - 1))
        print(f"inserted {new} rows (odd ids {2 * first + 1}..{2 * (first + new - 1) + 1}) in the middle")

        for cutter in cutters:
            seen = set(Repository.open(cutter.location, keys).blob_ids())
            cutter.second, cutter.second_stored, cutter.second_seconds = timed_backup(cutter, url, keys, args.repeat)
            stream = b"".join(Repository.open(cutter.location, keys).read_stream(cutter.second))
            start = time.perf_counter()
            sizes = [len(piece) for piece in cutter.cut([stream], args.chunk_size)]  # the cuts are the stream's
            cutter.cut_seconds = time.perf_counter() - start
            for blob, size in zip(cutter.second.blobs, sizes, strict=True):
                if blob not in seen:  # a new chunk (counted once)
                    cutter.new_plain += size
                    seen.add(blob)
        db.dispose()
    finally:
        if not sqlite:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quote}{database}{quote}")
        admin.dispose()
        shutil.rmtree(tmp, ignore_errors=True)

    streams = {c.second.bytes for c in cutters if c.second is not None}
    assert len(streams) == 1, streams  # both cutters backed up the same stream
    (stream_bytes,) = streams
    print()
    header = (
        f"{'cutter':8} {'stream':>10} {'chunks':>7} {'new plain':>10} {'ratio':>7} {'stored 2nd':>11} "
        f"{'ratio':>7} {'stored 1st':>11} {'1st s':>6} {'2nd s':>6} {'cut s':>6}"
    )
    print(header)
    for c in cutters:
        assert c.second is not None
        print(
            f"{c.name:8} {human(stream_bytes):>10} {len(c.second.blobs):>7} {human(c.new_plain):>10} "
            f"{c.new_plain / stream_bytes:>7.4f} {human(c.second_stored):>11} {c.second_stored / stream_bytes:>7.4f} "
            f"{human(c.first_stored):>11} {c.first_seconds:>6.2f} {c.second_seconds:>6.2f} {c.cut_seconds:>6.3f}"
        )
    fixed, cdc = cutters
    print()
    print(
        f"new plaintext / stream: FastCDC {cdc.new_plain / stream_bytes:.4f} (goal <= {GOAL}), "
        f"fixed {fixed.new_plain / stream_bytes:.4f}: FastCDC stores "
        f"{cdc.new_plain / max(1, fixed.new_plain):.3f}x the baseline's new bytes"
    )
    print(
        f"backup time, FastCDC / fixed: first {cdc.first_seconds / fixed.first_seconds:.2f}, "
        f"second {cdc.second_seconds / fixed.second_seconds:.2f}; cutting alone {cdc.cut_seconds:.3f} s "
        f"vs {fixed.cut_seconds:.3f} s for {human(stream_bytes)}"
    )
    return 0 if cdc.new_plain / stream_bytes <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
