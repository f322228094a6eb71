#!/usr/bin/env python3
"""How much slower is `migrate-guard check` than Alembic rendering the same revisions offline?

Generates N revisions (a realistic mix: tables, columns, indexes, constraints, raw SQL, batch
blocks, a few destructive ones) in a temporary project, then times, in one run and alternating,

    migrate-guard check --range base:heads      (the guard)
    alembic upgrade base:heads --sql            (the baseline)

and prints the ratio of the medians. Goal (issue 3): <= 1.3. The guard runs with ``--no-cache`` there,
so every revision is rendered; then (issue 15) a first run into an empty cache and a second run over
the unchanged revisions, which replays the cache. Goals: first <= 1.3x alembic, second <= 0.2x first.

    python benchmarks/check_bench.py [-n 1000] [--repeat 3] [--dialect postgresql]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent

ENV_PY = """
from alembic import context
config = context.config
context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
with context.begin_transaction():
    context.run_migrations()
"""

BODIES = [
    'op.create_table("t{i}", sa.Column("id", sa.Integer, primary_key=True), '
    'sa.Column("name", sa.String(80), nullable=False))',
    'op.add_column("t{p}", sa.Column("note_{i}", sa.Text(), nullable=True))',
    'op.create_index("ix_t{p}_name_{i}", "t{p}", ["name"])',
    'op.execute("UPDATE t{p} SET name = lower(name) WHERE id > 0")',
    'op.alter_column("t{p}", "name", existing_type=sa.String(80), type_=sa.String(120))',
    'with op.batch_alter_table("t{p}") as batch_op:\n'
    '        batch_op.add_column(sa.Column("flag_{i}", sa.Boolean(), nullable=True))',
    'op.create_unique_constraint("uq_t{p}_{i}", "t{p}", ["name"])',
    "op.execute(\"INSERT INTO t{p} (name) VALUES ('seed {i}; DROP TABLE x')\")",
    'op.drop_column("t{p}", "note_{i}")',
    'op.execute("DELETE FROM t{p}")',
]


def make_project(root: Path, n: int, dialect: str) -> None:
    versions = root / "migrations" / "versions"
    versions.mkdir(parents=True)
    (root / "migrations" / "env.py").write_text(ENV_PY)
    (root / "alembic.ini").write_text(
        f"[alembic]\nscript_location = %(here)s/migrations\npath_separator = os\nsqlalchemy.url = {dialect}://\n"
    )
    previous = None
    for i in range(n):
        rev = f"{i:012x}"
        body = BODIES[i % len(BODIES)].format(i=i, p=(i // len(BODIES)) * len(BODIES))
        if i % len(BODIES) == 8:  # drop the column added a cycle earlier... in the same table family
            body = (
                f'op.add_column("t{(i // len(BODIES)) * len(BODIES)}", sa.Column("note_{i}", sa.Text()))\n'
                f'    op.drop_column("t{(i // len(BODIES)) * len(BODIES)}", "note_{i}")'
            )
        (versions / f"{rev}_step.py").write_text(
            f'"""step {i}"""\nfrom alembic import op\nimport sqlalchemy as sa\n\n'
            f"revision = {rev!r}\ndown_revision = {previous!r}\nbranch_labels = None\ndepends_on = None\n\n\n"
            f"def upgrade():\n    {body}\n\n\ndef downgrade():\n    pass\n"
        )
        previous = rev


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 3):
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="revisions to generate (default 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each command (default 3)")
    parser.add_argument("--dialect", default="postgresql", help="dialect to render in (default postgresql)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mg-bench-"))
    try:
        make_project(work, args.n, args.dialect)
        cached = [str(BIN / "migrate-guard"), "check", "--range", "base:heads", "--format", "json"]
        guard = [*cached, "--no-cache"]
        baseline = [str(BIN / "alembic"), "upgrade", "base:heads", "--sql"]
        timed(guard, work), timed(baseline, work)  # warm the file cache and bytecode
        guard_times, base_times, first_times, second_times = [], [], [], []
        for _ in range(args.repeat):
            base_times.append(timed(baseline, work))
            guard_times.append(timed(guard, work))
            shutil.rmtree(work / ".migrate-guard", ignore_errors=True)
            first_times.append(timed(cached, work))
            second_times.append(timed(cached, work))
        g, b = statistics.median(guard_times), statistics.median(base_times)
        first, second = statistics.median(first_times), statistics.median(second_times)
        print(f"revisions: {args.n}  dialect: {args.dialect}  runs: {args.repeat}")
        print(f"alembic upgrade base:heads --sql : {b:7.3f} s (median)")
        print(f"migrate-guard check --no-cache   : {g:7.3f} s (median)")
        print(f"ratio check / alembic --sql      : {g / b:7.2f}   (goal <= 1.3)")
        print(f"check, first run (empty cache)   : {first:7.3f} s (median)  {first / b:5.2f}x alembic (goal <= 1.3)")
        print(
            f"check, second run (cache)        : {second:7.3f} s (median)  {second / first:5.2f}x first (goal <= 0.2)"
        )  # noqa: E501
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
