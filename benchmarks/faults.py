"""Fault injection: kill -9 at random moments, the application writing in between, and a check that
nothing committed is lost (issue 13).

Two databases of one dialect (A and B) share one project and one backup repository. Each trial kills
one operation on one of them at a seeded random moment, lets the application commit rows into a table
no migration touches (in both databases), runs what an operator runs next, and compares every table of
both databases with what must be there:

- the killed database: its state before the operation or after it completed (a run killed after its
  commit is complete), plus every application row;
- the other database: exactly its previous state plus its application rows.

    python benchmarks/faults.py --trials 20 --seed 1 --dialects sqlite,postgresql,mariadb

prints, per operation and database: trials, exact, lost rows (application rows missing), left broken
(a database neither before nor after, the other database changed, or a next command failing; a seeded
row missing leaves a database neither). Not part of CI; the tests run a few trials (tests/test_faults.py).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "alembic_example"
BIN = Path(sys.executable).parent
KEY = "q2bvXz1N4m0Jm9m5V7m4o0b6w1kS7x2cB8a3dE5fG0Q="
SERVERS = {
    "postgresql": os.environ.get("MIGRATE_GUARD_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
    "mariadb": os.environ.get("MIGRATE_GUARD_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/mysql"),
}
OPERATIONS = ("migrate-safe", "recover", "restore", "backup", "prune")
SLOW_REVISION = '''"""fault trial: DDL and DML on customers, a new table, then a pause (online only)"""
import os
import time

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("customers", sa.Column("halfway", sa.Integer(), nullable=True))
    op.execute("UPDATE customers SET name = 'half' WHERE id <= 4")
    op.create_table("half_done", sa.Column("id", sa.Integer(), primary_key=True))
    if not op.get_context().as_sql:
        time.sleep(float(os.environ.get("MG_FAULT_PAUSE", "0")))


def downgrade():
    op.drop_table("half_done")
    op.drop_column("customers", "halfway")
'''


# --- databases ---------------------------------------------------------------------------------------


def content(url: str) -> dict[str, str]:
    """Every table's columns and rows as one digest each, application rows apart (see ``app_rows``)."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            quote = conn.dialect.identifier_preparer.quote
            out = {}
            for table in sorted(inspector.get_table_names()):
                if table == "app_events":
                    continue
                columns = [(c["name"], str(c["type"])) for c in inspector.get_columns(table)]
                where = " WHERE customer_code NOT LIKE 'KUN9%%'" if table == "customers" else ""
                query = f"SELECT * FROM {quote(table)}{where}"
                rows = sorted(repr(tuple(r)) for r in conn.exec_driver_sql(query))
                out[table] = hashlib.sha256(repr((columns, rows)).encode()).hexdigest()[:16]
            return out
    finally:
        engine.dispose()


_CODES = itertools.count(1)


def app_rows(url: str) -> set[str]:
    """The application's rows: in its own table, and (see ``app_write``) customers it added."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            notes = {r[0] for r in conn.exec_driver_sql("SELECT note FROM app_events")}
            codes = conn.exec_driver_sql("SELECT customer_code FROM customers WHERE customer_code LIKE 'KUN9%%'")
            return notes | {r[0] for r in codes}
    finally:
        engine.dispose()


def app_write(url: str, notes: list[str], customer: bool) -> list[str]:
    """Commit the application's rows: ``notes`` into its own table, and with ``customer`` a new customer
    too (into a table the migration changes: where the database rolls a killed run back, recover must
    keep it). Returns every row written, as ``app_rows`` names them."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    written = list(notes)
    try:
        with engine.begin() as conn:
            for note in notes:
                conn.execute(sa.text("INSERT INTO app_events (note) VALUES (:n)"), {"n": note})
            if customer:
                code = f"KUN9{next(_CODES):04d}"  # the example's CHECK: KUN and five characters
                conn.execute(
                    sa.text("INSERT INTO customers (customer_code, name) VALUES (:c, 'written after the kill')"),
                    {"c": code},
                )
                written.append(code)
    finally:
        engine.dispose()
    return written


def create_database(dialect: str, workdir: Path) -> str:
    if dialect == "sqlite":
        return f"sqlite:///{workdir / f'db_{uuid.uuid4().hex[:8]}.db'}"
    base = sa.engine.make_url(SERVERS[dialect])
    name = f"mg_fault_{uuid.uuid4().hex[:12]}"
    quote = '"' if dialect == "postgresql" else "`"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {quote}{name}{quote}")
    admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return
    dialect = "postgresql" if parsed.get_backend_name() == "postgresql" else "mariadb"
    quote, force = ('"', " WITH (FORCE)") if dialect == "postgresql" else ("`", "")
    admin = sa.create_engine(
        sa.engine.make_url(SERVERS[dialect]), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quote}{parsed.database}{quote}{force}")
    admin.dispose()


# --- the project ---------------------------------------------------------------------------------------


@dataclass
class Site:
    """One project, one repository, two databases."""

    root: Path
    dialect: str
    urls: dict[str, str] = field(default_factory=dict)  # "A"/"B" -> URL
    env: dict[str, str] = field(default_factory=dict)

    def cli(self, db: str, *args: str) -> list[str]:
        return [str(BIN / "migrate-guard"), "-c", str(self.root / "alembic.ini"), "--url", self.urls[db], *args]

    def run(self, db: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self.cli(db, *args), env=self.env, capture_output=True, text=True, cwd=self.root)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} on {db} exited {done.returncode}: {done.stderr.strip()[-400:]}")
        return done

    def prepare(self, db: str) -> None:
        """A fresh database at 0004, seeded, with the application's table: a trial's starting point."""
        old = self.urls.get(db)
        if old:
            drop_database(old)
            if old.startswith("sqlite:///"):
                Path(old.removeprefix("sqlite:///")).unlink(missing_ok=True)
        url = create_database(self.dialect, self.root)
        self.urls[db] = url
        upgrade = (
            "import sys; from alembic import command; from alembic.config import Config; "
            "c = Config('alembic.ini'); c.set_main_option('sqlalchemy.url', sys.argv[1]); command.upgrade(c, '0004')"
        )
        for command in (
            [sys.executable, "-c", upgrade, url],
            [sys.executable, "seed.py", "--url", url, "--customers", "10"],
        ):
            subprocess.run(command, cwd=self.root, env=self.env, check=True, capture_output=True)
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.begin() as conn:
            auto = "SERIAL" if self.dialect == "postgresql" else "INTEGER"
            extra = " AUTO_INCREMENT" if self.dialect == "mariadb" else ""
            pk = "PRIMARY KEY" if self.dialect != "sqlite" else "PRIMARY KEY AUTOINCREMENT"
            conn.exec_driver_sql(f"CREATE TABLE app_events (id {auto}{extra} {pk}, note VARCHAR(64) NOT NULL)")
        engine.dispose()


def make_site(dialect: str, workdir: Path) -> Site:
    root = workdir / "project"
    ignore = shutil.ignore_patterns("*.db", "*.db-*", "*.db.*", ".migrate-guard", "__pycache__")
    shutil.copytree(EXAMPLE, root, ignore=ignore)
    (root / "migrations" / "versions" / "0007_fault.py").write_text(SLOW_REVISION)
    settings = root / "migrate-guard.toml"
    settings.write_text(settings.read_text() + f'\n[backup]\nrepository = "{workdir / "repo"}"\n')
    env = {**os.environ, "MIGRATE_GUARD_KEY": KEY}
    env.pop("MIGRATE_GUARD_PASSPHRASE", None)
    site = Site(root, dialect, env=env)
    return site


# --- one trial -----------------------------------------------------------------------------------------


@dataclass
class Outcome:
    exact: bool
    lost: int
    broken: bool
    detail: str = ""


def _kill_at(command: list[str], env: dict[str, str], cwd: Path, delay: float) -> None:
    proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def trial(site: Site, operation: str, db: str, rng: random.Random, refs: dict[str, dict[str, str]]) -> Outcome:
    other = "B" if db == "A" else "A"
    site.prepare(db)
    site.run(db, "backup", "--label", "start")
    other_before, other_app = content(site.urls[other]), app_rows(site.urls[other])
    pause = rng.uniform(0, 1.5)
    env = {**site.env, "MG_FAULT_PAUSE": f"{pause:.3f}"}
    expected: list[dict[str, str]] = [refs["before"]]
    if operation == "migrate-safe":
        _kill_at(
            site.cli(db, "migrate-safe", "--yes"), env, site.root, rng.uniform(0, refs["seconds"]["migrate"] + pause)
        )
        expected.append(refs["after"])
    elif operation == "recover":
        _kill_at(
            site.cli(db, "migrate-safe", "--yes"), env, site.root, rng.uniform(0, refs["seconds"]["migrate"] + pause)
        )
        _kill_at(site.cli(db, "recover", "--yes"), env, site.root, rng.uniform(0, refs["seconds"]["recover"]))
        expected.append(refs["after"])
    elif operation == "restore":
        site.run(db, "migrate-safe", "--yes")  # then take customers back to the start snapshot, killed midway
        expected = [refs["after"], refs["after_customers_back"]]
        start = _snapshot(site, db, "start")
        _kill_at(
            site.cli(db, "restore", start, "--tables", "customers", "--yes"),
            env,
            site.root,
            rng.uniform(0, refs["seconds"]["restore"]),
        )
    elif operation == "backup":
        _kill_at(site.cli(db, "backup"), env, site.root, rng.uniform(0, refs["seconds"]["backup"]))
    elif operation == "prune":
        site.run(db, "backup")
        _kill_at(site.cli(db, "prune", "--keep-last", "1"), env, site.root, rng.uniform(0, refs["seconds"]["prune"]))
    notes = [f"{operation}-{db}-{uuid.uuid4().hex[:8]}-{n}" for n in range(3)]
    # the application goes on between the kill and the next command; into customers as well where the
    # database rolls a killed run back (on MariaDB a restored customers table keeps them in the
    # pre-recover snapshot instead: recover's message names it)
    transactional = site.dialect in ("sqlite", "postgresql")
    notes = app_write(site.urls[db], notes, customer=transactional and operation in ("migrate-safe", "recover"))
    other_notes = app_write(site.urls[other], [f"{operation}-{other}-{uuid.uuid4().hex[:8]}"], customer=transactional)

    problems = []
    recovered = site.run(db, "recover", "--yes", check=False)
    if recovered.returncode != 0:
        problems.append(f"recover exited {recovered.returncode}: {recovered.stderr.strip()[-200:]}")
    if operation == "restore":
        again = site.run(db, "restore", _snapshot(site, db, "start"), "--tables", "customers", "--yes", check=False)
        if again.returncode != 0:
            problems.append(f"restore again exited {again.returncode}: {again.stderr.strip()[-200:]}")
        expected = [refs["after_customers_back"]]
    if operation in ("backup", "prune"):
        verified = site.run(db, "verify", "--all", check=False)
        if verified.returncode != 0:
            problems.append(f"verify --all exited {verified.returncode}: {verified.stdout.strip()[-200:]}")

    now = content(site.urls[db])
    lost = len(set(notes) - app_rows(site.urls[db])) + len((other_app | set(other_notes)) - app_rows(site.urls[other]))
    if content(site.urls[other]) != other_before:
        problems.append(f"database {other} changed")
    match = next((e for e in expected if e == now), None)
    if match is None:
        near = min(expected, key=lambda e: sum(e.get(t) != now.get(t) for t in set(e) | set(now)))
        differ = sorted(t for t in set(near) | set(now) if near.get(t) != now.get(t))
        problems.append(f"{db} is neither before nor after: {', '.join(differ)} differ")
    broken = bool(problems)
    return Outcome(not broken and lost == 0, lost, broken, "; ".join(problems))


def _snapshot(site: Site, db: str, label: str) -> str:
    import json

    listed = json.loads(site.run(db, "list", "--format", "json").stdout)
    return str([s for s in listed if s["label"] == label][-1]["id"])


def references(site: Site, operations: list[str]) -> dict[str, dict[str, str]]:
    """The state before, after a complete run, and after customers is restored to the start; how long each
    operation takes uninterrupted (the range of kill moments)."""
    seconds: dict[str, float] = {}
    site.prepare("A")
    before = content(site.urls["A"])
    site.run("A", "backup", "--label", "start")
    for name, args in (("migrate", ("migrate-safe", "--yes")),):
        started = time.monotonic()
        site.run("A", *args)
        seconds[name] = time.monotonic() - started
    after = content(site.urls["A"])
    back = after
    if "restore" in operations or "recover" in operations:
        started = time.monotonic()
        site.run("A", "restore", _snapshot(site, "A", "start"), "--tables", "customers", "--yes")
        seconds["restore"] = time.monotonic() - started
        back = content(site.urls["A"])
    for name, args in (("backup", ("backup",)), ("prune", ("prune", "--keep-last", "1"))):
        if name in operations:
            started = time.monotonic()
            site.run("A", *args)
            seconds[name] = time.monotonic() - started
    seconds["recover"] = max(1.0, seconds.get("restore", 1.0))
    return {"before": before, "after": after, "after_customers_back": back, "seconds": seconds}  # type: ignore[dict-item]


# --- the whole run ---------------------------------------------------------------------------------------


def run(
    dialects: list[str], operations: list[str], trials: int, seed: int
) -> list[tuple[str, str, int, int, int, int, list[str]]]:
    rng = random.Random(seed)
    table = []
    for dialect in dialects:
        with tempfile.TemporaryDirectory(prefix=f"mg-faults-{dialect}-") as tmp:
            site = make_site(dialect, Path(tmp))
            try:
                refs = references(site, operations)
                site.prepare("B")  # A is prepared by each trial
                for operation in operations:
                    counts = {"A": [0, 0, 0, 0], "B": [0, 0, 0, 0]}
                    details: list[str] = []
                    for n in range(trials):
                        db = "AB"[n % 2]
                        outcome = trial(site, operation, db, rng, refs)
                        c = counts[db]
                        c[0] += 1
                        c[1] += outcome.exact
                        c[2] += outcome.lost
                        c[3] += outcome.broken
                        if outcome.detail:
                            details.append(f"trial {n} on {db}: {outcome.detail}")
                    for db, c in counts.items():
                        if c[0]:
                            table.append((operation, f"{dialect} {db}", *c, details if db == "A" else []))
            finally:
                for url in site.urls.values():
                    drop_database(url)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dialects", default="sqlite,postgresql,mariadb")
    parser.add_argument("--operations", default=",".join(OPERATIONS))
    args = parser.parse_args(argv)
    started = time.monotonic()
    table = run(args.dialects.split(","), args.operations.split(","), args.trials, args.seed)
    print(f"{'operation':14}{'database':14}{'trials':>7}{'exact':>7}{'lost rows':>11}{'left broken':>13}")
    for operation, db, trials, exact, lost, broken, details in table:
        print(f"{operation:14}{db:14}{trials:>7}{exact:>7}{lost:>11}{broken:>13}")
        for line in details[:5]:
            print(f"    {line}")
    print(f"{time.monotonic() - started:.0f} s, seed {args.seed}")
    return 0 if all(t[3] == t[2] and t[4] == 0 for t in table) else 1


if __name__ == "__main__":
    sys.exit(main())
