#!/usr/bin/env python3
"""What does `migrate-guard trace` cost beyond the statements it runs?

Creates a PostgreSQL database with a 50-table schema (indexes, foreign keys), a project of N
generated revisions over those tables (columns, indexes, type changes, constraints, updates), and
times `migrate-guard trace` over the first 10 and over all N revisions. Prints:

- the scratch build time (pg_dump + pg_restore of the schema, from the trace's own report):
  goal <= 2 s for 50 tables;
- the time per revision beyond the statements' own time, from the difference of the two runs
  (so start-up, the check pass and the scratch build cancel out): goal <= 100 ms.

    python benchmarks/trace_bench.py [-n 100] [--tables 50] [--url postgresql+psycopg://postgres@127.0.0.1/postgres]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from units import ENV_PY  # benchmarks/units.py: the directory of a script run as a file is on sys.path

BIN = Path(sys.executable).parent

BODIES = [
    'op.add_column("t{t}", sa.Column("c{i}", sa.Text(), nullable=True))',
    'op.create_index("ix_t{t}_{i}", "t{t}", ["name"])',
    'op.alter_column("t{t}", "n", existing_type=sa.Integer(), type_=sa.BigInteger())',
    'op.create_check_constraint("ck_t{t}_{i}", "t{t}", "n >= 0")',
    'op.execute("UPDATE t{t} SET name = lower(name) WHERE id > 0")',
    'op.alter_column("t{t}", "name", existing_type=sa.String(80), type_=sa.String(120))',
    'op.add_column("t{t}", sa.Column("d{i}", sa.Integer(), nullable=False, server_default="0"))',
    'op.create_table("n{i}", sa.Column("id", sa.Integer, primary_key=True), sa.Column("t_id", sa.Integer, '
    'sa.ForeignKey("t{t}.id")))',
]


def schema(tables: int) -> list[str]:
    out = []
    for t in range(tables):
        ref = f", parent_id int REFERENCES t{t - 1}(id)" if t else ""
        out.append(f"CREATE TABLE t{t} (id int PRIMARY KEY, name varchar(80), n int DEFAULT 0{ref})")
        out.append(f"CREATE INDEX t{t}_name ON t{t} (name)")
    return out


def make_project(root: Path, url: str, n: int, tables: int) -> list[str]:
    versions = root / "migrations" / "versions"
    versions.mkdir(parents=True)
    (root / "migrations" / "env.py").write_text(ENV_PY)
    (root / "alembic.ini").write_text(
        f"[alembic]\nscript_location = %(here)s/migrations\npath_separator = os\nsqlalchemy.url = {url}\n"
    )
    previous, ids = None, []
    for i in range(n):
        rev = f"{i:012x}"
        body = BODIES[i % len(BODIES)].format(i=i, t=i % tables)
        (versions / f"{rev}_step.py").write_text(
            f'"""step {i}"""\nfrom alembic import op\nimport sqlalchemy as sa\n\n'
            f"revision = {rev!r}\ndown_revision = {previous!r}\nbranch_labels = None\ndepends_on = None\n\n\n"
            f"def upgrade():\n    {body}\n\n\ndef downgrade():\n    pass\n"
        )
        previous = rev
        ids.append(rev)
    return ids


def trace(root: Path, *args: str) -> tuple[float, dict]:
    cmd = [str(BIN / "migrate-guard"), "trace", "--format", "json", "--fail-on", "never", *args]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    return elapsed, json.loads(done.stdout)


def statement_seconds(report: dict) -> float:
    return sum(s["duration_ms"] for r in report["revisions"] for s in r["statements"]) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100, help="revisions to generate (default 100)")
    parser.add_argument("--tables", type=int, default=50, help="tables in the schema (default 50)")
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres", help="a server")
    args = parser.parse_args()

    name = f"mg_trace_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(args.url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    target = sa.engine.make_url(args.url).set(database=name).render_as_string(hide_password=False)
    work = Path(tempfile.mkdtemp(prefix="mg-trace-bench-"))
    try:
        engine = sa.create_engine(target, poolclass=sa.pool.NullPool)
        with engine.begin() as conn:
            for statement in schema(args.tables):
                conn.exec_driver_sql(statement)
        engine.dispose()
        ids = make_project(work, target.replace("%", "%%"), args.n, args.tables)
        few = min(10, args.n - 1)
        trace(work, "--range", f"base:{ids[few - 1]}")  # warm the file cache and bytecode
        t_few, r_few = trace(work, "--range", f"base:{ids[few - 1]}")
        t_all, r_all = trace(work)
        builds = [r_few["scratch"]["build_seconds"], r_all["scratch"]["build_seconds"]]
        beyond = (t_all - t_few) - (statement_seconds(r_all) - statement_seconds(r_few)) - (builds[1] - builds[0])
        per_revision = beyond / (args.n - few)
        print(f"schema: {args.tables} tables   revisions: {args.n} (and {few})")
        print(f"trace of {args.n:3d} revisions       : {t_all:7.2f} s  (statements {statement_seconds(r_all):.2f} s)")
        print(f"trace of {few:3d} revisions       : {t_few:7.2f} s  (statements {statement_seconds(r_few):.2f} s)")
        print(f"scratch build ({args.tables} tables)     : {max(builds):7.2f} s   (goal <= 2 s)")
        print(f"per revision beyond statements : {per_revision * 1000:7.1f} ms  (goal <= 100 ms)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


if __name__ == "__main__":
    main()
