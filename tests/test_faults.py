"""A CI-sized run of benchmarks/faults.py (issue 13): kill -9 at seeded random moments during migrate-safe,
recover, restore, backup and prune, on two databases sharing one project and one backup repository, the
application writing into both before the operator's next command; every trial exact, no row lost.

SQLite: three killed migrate-safe runs (on A, B, A) and one of each other operation; PostgreSQL and
MariaDB: two killed migrate-safe runs (A, then B). The long version: ``benchmarks/faults.py --trials 20``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "faults.py"


@pytest.fixture(scope="module")
def faults():
    spec = importlib.util.spec_from_file_location("mg_faults", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["mg_faults"] = module  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("mg_faults", None)


def test_killed_operations_lose_no_row_and_leave_no_database_broken(faults, db_url):
    dialect = faults.family(sa.engine.make_url(db_url).get_backend_name())
    if dialect == "sqlite":
        plan = {"migrate-safe": 3, "recover": 1, "restore": 1, "backup": 1, "prune": 1}
    else:
        plan = {"migrate-safe": 2}
    lines: list[str] = []
    # db_url: the server to create this run's databases on (SQLite: files in a temporary directory)
    rows = faults.run_dialect(
        dialect, plan, seed=13, server_url=db_url, pause_max=faults.QUICK_PAUSE_MAX, say=lines.append
    )
    log = "\n".join(lines)
    assert {(r.operation, r.database) for r in rows} == {
        (op, f"{dialect} {db}") for op, n in plan.items() for db in "AB"[: min(n, 2)]
    }, log
    assert sum(r.trials for r in rows) == sum(plan.values()), log
    for r in rows:
        assert (r.exact, r.lost, r.broken) == (r.trials, 0, 0), f"{r.operation} on {r.database}:\n{log}"
