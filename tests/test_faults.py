"""A CI-sized run of benchmarks/faults.py: kill -9 at seeded random moments, the application writing
before the next command, two databases sharing one repository; every trial exact, no row lost."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import sqlalchemy as sa

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "faults.py"


def _faults():
    spec = importlib.util.spec_from_file_location("mg_faults", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["mg_faults"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_killed_operations_lose_no_row_and_leave_the_other_database_alone(db_url):
    faults = _faults()
    dialect = sa.engine.make_url(db_url).get_backend_name().replace("mysql", "mariadb")
    # SQLite: one trial of each operation (on A; B is checked unchanged every time); the servers: one
    # migrate-safe killed. benchmarks/faults.py runs the long version.
    operations, trials = (list(faults.OPERATIONS), 1) if dialect == "sqlite" else (["migrate-safe"], 1)
    table = faults.run([dialect], operations, trials, seed=13)
    assert {row[0] for row in table} == set(operations)
    for operation, db, count, exact, lost, broken, details in table:
        assert (exact, lost, broken) == (count, 0, 0), (operation, db, details)
