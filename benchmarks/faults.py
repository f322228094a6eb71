#!/usr/bin/env python3
"""Fault injection (issue 13): kill -9 at seeded random moments, the application writing before the
next command, and a check that nothing committed is lost and no database is left broken.

For each dialect: ONE copy of ``alembic_example/`` (plus ``0007``, a revision that changes customers,
creates a table, then sleeps ``$MG_FAULT_PAUSE`` seconds) with ONE encrypted backup repository, shared
by TWO databases, A and B, both at 0004 and seeded, each with an application table ``app_events`` no
migration touches. Each trial, on A or B in turn (the other one stands by):

1. resets the database (a fresh clone of a seeded golden database: a file copy on SQLite, ``CREATE
   DATABASE ... TEMPLATE`` on PostgreSQL, a saved ``mariadb-dump`` on MariaDB) and prepares the operation;
2. starts the operation as a subprocess and kills it (SIGKILL, the process or its whole process group)
   at a random moment spread over the operation's duration, measured once beforehand:

   - ``migrate-safe`` 0004 -> 0007, the revision pausing a random short time, so the kill lands before,
     during or after it;
   - ``recover`` of a migrate-safe run killed in the middle of 0007;
   - ``restore <start snapshot> --tables customers --yes`` after customers was damaged by hand;
   - ``backup``; ``prune --keep-last 1`` (with two snapshots of the database);

3. lets the application commit rows into ``app_events`` of the killed database and of the other one;
4. runs what an operator runs next: ``migrate-guard recover --yes``; for restore, the same restore again
   to completion; for backup and prune, ``verify --all``, which must pass;
5. compares every table of both databases (columns, indexes, foreign keys, rows; ``alembic_version``
   included) with what must be there: the killed database in its state before the operation or after
   it completed (a migrate-safe killed after its commit is complete; a re-run restore is complete),
   the other database exactly as it was; each with every application row it was given.

    .venv/bin/python benchmarks/faults.py [--trials 20] [--seed 1] [--dialects sqlite,postgresql,mariadb]
        [--operations migrate-safe,recover,restore,backup,prune] [--quick]

prints, per operation and database (dialect + A/B): trials, exact, lost rows (application or seeded
rows missing), left broken (a database neither before nor after, the other database changed, or a
command failing: exit 4, an internal error, or the next command not succeeding), and where the kills
landed. Exit 0 when every trial is exact. Not part of CI: tests/test_faults.py runs a few trials.
Every database it creates has a unique name and is dropped at the end; its files live in a
temporary directory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "alembic_example"
BIN = Path(sys.executable).parent if (Path(sys.executable).parent / "migrate-guard").exists() else ROOT / ".venv/bin"
KEY = "q2bvXz1N4m0Jm9m5V7m4o0b6w1kS7x2cB8a3dE5fG0Q="  # 32 bytes, base64 (tests/conftest.py's KEY)
SERVERS = {
    "postgresql": os.environ.get("MIGRATE_GUARD_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
    "mariadb": os.environ.get("MIGRATE_GUARD_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/mysql"),
}
DIALECTS = ("sqlite", "postgresql", "mariadb")
OPERATIONS = ("migrate-safe", "recover", "restore", "backup", "prune")
APP_TABLE = "app_events"  # the application's table: in no model, touched by no migration
CUSTOMERS = 10
PAUSE_MAX = 1.0  # seconds the slow revision sleeps at most (--quick: QUICK_PAUSE_MAX)
QUICK_PAUSE_MAX = 0.3
SPREAD = 1.15  # kill moments spread over [0, SPREAD * duration]: some land after the operation ended
COMMAND_TIMEOUT = 600

SLOW_REVISION = '''"""fault trial: DDL and DML on customers, a new table, then a pause (online only)"""
import os
import time
from pathlib import Path

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
        if os.environ.get("MG_FAULT_MARKER"):
            Path(os.environ["MG_FAULT_MARKER"]).write_text(str(os.getpid()))
        time.sleep(float(os.environ.get("MG_FAULT_PAUSE") or 0))


def downgrade():
    op.drop_table("half_done")
    op.drop_column("customers", "halfway")
'''


# --- what a database holds -------------------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    """A database's content: per table a digest of its columns, indexes, foreign keys and rows, and the
    primary keys of its rows (to count lost rows); the application's rows apart."""

    digests: dict[str, str]
    keys: dict[str, frozenset[str]]
    revision: tuple[str, ...]
    app: frozenset[str]

    def same(self, other: State) -> bool:
        return self.digests == other.digests

    def differing(self, other: State) -> list[str]:
        return sorted(t for t in set(self.digests) | set(other.digests) if self.digests.get(t) != other.digests.get(t))

    def missing_rows(self, now: State) -> int:
        """Rows of this state (by primary key) that ``now`` lacks; alembic_version is the revision, not data."""
        return sum(len(keys - now.keys.get(t, frozenset())) for t, keys in self.keys.items() if t != "alembic_version")


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def _value(v: object) -> object:
    return bytes(v) if isinstance(v, memoryview) else v


def capture(url: str) -> State:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            quote = conn.dialect.identifier_preparer.quote
            digests, keys, app, revision = {}, {}, frozenset(), ()
            for table in sorted(inspector.get_table_names()):
                rows = [tuple(_value(v) for v in r) for r in conn.exec_driver_sql(f"SELECT * FROM {quote(table)}")]
                if table == APP_TABLE:
                    app = frozenset(str(r[1]) for r in rows)
                    continue
                columns = [(c["name"], str(c["type"]), bool(c["nullable"])) for c in inspector.get_columns(table)]
                indexes = sorted(
                    (i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(table)
                )
                fks = sorted(
                    (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                    for f in inspector.get_foreign_keys(table)
                )
                names = [c[0] for c in columns]
                pk = [names.index(c) for c in inspector.get_pk_constraint(table)["constrained_columns"] or ()]
                listed = sorted(repr(r) for r in rows)
                digests[table] = hashlib.sha256(repr((columns, indexes, fks, listed)).encode()).hexdigest()[:16]
                keys[table] = frozenset(repr(tuple(r[i] for i in pk)) if pk else repr(r) for r in rows)
                if table == "alembic_version":
                    revision = tuple(sorted(str(r[0]) for r in rows))
            return State(digests, keys, revision, app)
    finally:
        engine.dispose()


def app_write(url: str, notes: Iterable[str]) -> list[str]:
    """The application: one committed transaction of rows into its own table. Returns what it wrote."""
    notes = list(notes)
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            for note in notes:
                conn.execute(sa.text(f"INSERT INTO {APP_TABLE} (note) VALUES (:n)"), {"n": note})
    finally:
        engine.dispose()
    return notes


def damage_customers(url: str) -> None:
    """A hand-made mistake in customers, for restore to undo: rows overwritten and a stray column."""
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE customers SET name = 'overwritten by mistake' WHERE id <= 3")
            conn.exec_driver_sql("ALTER TABLE customers ADD COLUMN junk INTEGER")
    finally:
        engine.dispose()


# --- creating and dropping this run's databases ----------------------------------------------------------


def family(dialect: str) -> str:
    return "mariadb" if dialect in ("mysql", "mariadb") else dialect


class Databases:
    """This run's databases of one dialect, each a clone of one golden database (0004, seeded, with the
    application's table); every name unique to the run, every one dropped by ``drop_all``."""

    def __init__(self, dialect: str, workdir: Path, server_url: str | None = None) -> None:
        self.dialect = family(dialect)
        self.workdir = workdir
        self.server = sa.engine.make_url(server_url or SERVERS.get(self.dialect, "sqlite://"))
        self.prefix = f"mg_fault_{uuid.uuid4().hex[:8]}"
        self.live: list[str] = []
        self.golden: str | None = None
        self._dump: bytes | None = None

    def _admin(self) -> sa.Engine:
        return sa.create_engine(self.server, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)

    def _quote(self, name: str) -> str:
        return f'"{name}"' if self.dialect == "postgresql" else f"`{name}`"

    def _new_name(self, role: str) -> str:
        return f"{self.prefix}_{role.lower()}_{uuid.uuid4().hex[:6]}"

    def _url(self, name: str) -> str:
        if self.dialect == "sqlite":
            return f"sqlite:///{self.workdir / f'{name}.db'}"
        return self.server.set(database=name).render_as_string(hide_password=False)

    def create_empty(self, role: str, template: str | None = None) -> str:
        name = self._new_name(role)
        url = self._url(name)
        if self.dialect == "sqlite":
            if template:
                shutil.copyfile(sa.engine.make_url(template).database, sa.engine.make_url(url).database)
        else:
            admin = self._admin()
            try:
                with admin.connect() as conn:
                    like = f" TEMPLATE {self._quote(sa.engine.make_url(template).database)}" if template else ""
                    conn.exec_driver_sql(f"CREATE DATABASE {self._quote(name)}{like}")
            finally:
                admin.dispose()
        self.live.append(url)
        return url

    def make_golden(self, project: Path, env: dict[str, str]) -> None:
        url = self.create_empty("golden")
        # one interpreter: alembic upgrade 0004, then seed.py (as tests/conftest.py's migrate_example)
        script = (
            "import runpy, sys; from alembic import command; from alembic.config import Config\n"
            "c = Config('alembic.ini'); c.set_main_option('sqlalchemy.url', sys.argv[1]); command.upgrade(c, '0004')\n"
            "sys.argv = ['seed.py', '--url', sys.argv[1], '--customers', sys.argv[2]]\n"
            "runpy.run_path('seed.py', run_name='__main__')\n"
        )
        command = [sys.executable, "-c", script, url, str(CUSTOMERS)]
        done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        if done.returncode != 0:
            raise RuntimeError(f"preparing the golden database (upgrade to 0004, seed.py): {done.stderr[-600:]}")
        engine = _engine(url)
        try:
            with engine.begin() as conn:
                seeded = conn.exec_driver_sql("SELECT COUNT(*) FROM customers").scalar()
                if seeded != CUSTOMERS:
                    raise RuntimeError(f"seed.py left {seeded} customers, not {CUSTOMERS}")
                # as tests/test_migrate_safe.py's _prepare: values 0005 drops, rows 0006 drops
                for (i,) in conn.exec_driver_sql("SELECT id FROM customers").all():
                    conn.execute(
                        sa.text("UPDATE customers SET legacy_code = :c WHERE id = :i"), {"c": f"LEG-{i:04d}", "i": i}
                    )
                for n in range(3):
                    conn.execute(sa.text("INSERT INTO import_staging (payload) VALUES (:p)"), {"p": f"row {n} ünïcødé"})
                key = {
                    "sqlite": "id INTEGER PRIMARY KEY",
                    "postgresql": "id SERIAL PRIMARY KEY",
                    "mariadb": "id INTEGER AUTO_INCREMENT PRIMARY KEY",
                }[self.dialect]
                conn.exec_driver_sql(f"CREATE TABLE {APP_TABLE} ({key}, note VARCHAR(80) NOT NULL)")
        finally:
            engine.dispose()
        self.golden = url
        if self.dialect == "mariadb":
            self._dump = self._client("mariadb-dump", "--single-transaction", "--skip-comments", self.database(url))

    def clone(self, role: str) -> str:
        """A fresh copy of the golden database, under a new name."""
        assert self.golden
        if self.dialect in ("sqlite", "postgresql"):
            return self.create_empty(role, template=self.golden)
        url = self.create_empty(role)
        self._client("mariadb", self.database(url), stdin=self._dump)
        return url

    def _client(self, program: str, *args: str, stdin: bytes | None = None) -> bytes:
        s = self.server
        command = [program, "-h", s.host or "127.0.0.1", "-P", str(s.port or 3306), "-u", s.username or "root", *args]
        env = {**os.environ, **({"MYSQL_PWD": s.password} if s.password else {})}
        done = subprocess.run(command, input=stdin, capture_output=True, env=env, timeout=COMMAND_TIMEOUT)
        if done.returncode != 0:
            raise RuntimeError(f"{program}: {done.stderr.decode(errors='replace')[-400:]}")
        return done.stdout

    @staticmethod
    def database(url: str) -> str:
        return str(sa.engine.make_url(url).database)

    def drop(self, url: str) -> None:
        if url in self.live:
            self.live.remove(url)
        if self.dialect == "sqlite":
            path = Path(sa.engine.make_url(url).database)
            for leftover in path.parent.glob(path.name + "*"):  # the file, its journal, the lock beside it
                leftover.unlink(missing_ok=True)
            return
        admin = self._admin()
        try:
            with admin.connect() as conn:
                force = " WITH (FORCE)" if self.dialect == "postgresql" else ""
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {self._quote(self.database(url))}{force}")
        finally:
            admin.dispose()

    def drop_all(self) -> None:
        for url in reversed(list(self.live)):
            try:
                self.drop(url)
            except Exception as exc:  # noqa: BLE001 - drop the others; say which one stayed
                print(f"could not drop {url}: {exc}", file=sys.stderr)


# --- the project: one example copy, one repository, two databases ----------------------------------------


@dataclass
class Done:
    code: int
    out: str
    err: str

    def failure(self) -> str | None:
        """Why this command counts as a failure: a non-zero exit, an internal error, a traceback."""
        text = self.out + self.err
        if self.code == 0 and "Traceback" not in text and "internal error" not in self.err:
            return None
        last = (self.err.strip() or self.out.strip()).splitlines()[-1:] or [""]
        return f"exit {self.code}: {last[0][:300]}"


@dataclass
class Site:
    root: Path
    databases: Databases
    env: dict[str, str]
    urls: dict[str, str] = field(default_factory=dict)  # "A"/"B" -> URL

    def cli(self, db: str, *args: str) -> list[str]:
        return [str(BIN / "migrate-guard"), "-c", str(self.root / "alembic.ini"), "--url", self.urls[db], *args]

    def safe_cli(self, db: str, *args: str) -> list[str]:
        return [str(BIN / "migrate-safe"), "-c", str(self.root / "alembic.ini"), "--url", self.urls[db], *args]

    def run(self, command: list[str], env: dict[str, str] | None = None, check: bool = True) -> Done:
        done = subprocess.run(
            command, cwd=self.root, env=env or self.env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT
        )
        result = Done(done.returncode, done.stdout, done.stderr)
        if check and result.failure():
            raise RuntimeError(f"{' '.join(command[5:])}: {result.failure()}")
        return result

    def reset(self, db: str) -> str:
        """The database back to the start: the old one dropped, a fresh clone in its place."""
        if db in self.urls:
            self.databases.drop(self.urls[db])
        self.urls[db] = self.databases.clone(db)
        return self.urls[db]

    def backup(self, db: str, label: str) -> str:
        done = self.run(self.cli(db, "backup", "--label", label, "--format", "json"))
        return str(json.loads(done.out)["id"])


def make_site(dialect: str, workdir: Path, server_url: str | None = None) -> Site:
    """The example copied like tests/conftest.py's copy_example, its repository encrypted, its golden database."""
    root = workdir / "project"
    state = shutil.ignore_patterns("*.db", "*.db-*", "*.db.*", ".migrate-guard", "__pycache__")
    shutil.copytree(EXAMPLE, root, ignore=state)
    (root / "migrations" / "versions" / "0007_fault_pause.py").write_text(SLOW_REVISION)
    settings = root / "migrate-guard.toml"
    settings.write_text(settings.read_text() + f'backup.repository = "{workdir / "repo"}"\n')
    env = {k: v for k, v in os.environ.items() if k != "MIGRATE_GUARD_PASSPHRASE"}
    env["MIGRATE_GUARD_KEY"] = KEY
    (workdir / "dbs").mkdir()
    databases = Databases(dialect, workdir / "dbs", server_url)
    databases.make_golden(root, env)
    return Site(root, databases, env)


# --- killing ---------------------------------------------------------------------------------------------


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` is still running (zombies nobody reaps do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@dataclass
class Kill:
    landed: str  # "before" / "during" the slow revision's pause (migrate-safe), "killed", or "finished"
    how: str  # "pid" (kill -9 PID) or "group" (kill -9 -PGID: the command and its pg_dump/mysql helpers)
    at: float
    finished: Done | None = None  # the command's result when it ended before the kill


def kill_at(site: Site, command: list[str], env: dict[str, str], at: float, how: str, marker: Path | None) -> Kill:
    """Start ``command``; SIGKILL it after ``at`` seconds unless it ended; then wait for its helpers."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(command, cwd=site.root, env=env, stdout=out, stderr=err, start_new_session=True)
        try:
            code = proc.wait(timeout=at)
        except subprocess.TimeoutExpired:
            landed = "killed" if marker is None else ("during" if marker.exists() else "before")
            if how == "pid":
                os.kill(proc.pid, signal.SIGKILL)
            else:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            deadline = time.monotonic() + 30  # a helper whose parent died ends when its pipe closes
            while _group_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _group_alive(proc.pid):
                os.killpg(proc.pid, signal.SIGKILL)
            return Kill(landed, how, at)
        out.seek(0)
        err.seek(0)
        return Kill("finished", how, at, Done(code, out.read(), err.read()))


def kill_when(site: Site, command: list[str], env: dict[str, str], marker: Path) -> None:
    """Start ``command`` and kill -9 it once the slow revision says it is sleeping."""
    proc = subprocess.Popen(
        command, cwd=site.root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + COMMAND_TIMEOUT
    while not marker.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"migrate-safe ended ({proc.returncode}) before 0007: {proc.stderr.read()[-400:]!r}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("migrate-safe did not reach 0007")
        time.sleep(0.05)
    time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()


# --- references: the states a trial may end in, how long each operation takes ----------------------------


@dataclass
class References:
    before: State  # a fresh clone: 0004, seeded
    after: State | None  # after a complete migrate-safe 0004 -> 0007
    seconds: dict[str, float]
    startup: float = 0.0  # how long `migrate-guard --version` takes: Python and the imports

    def moment(self, rng: random.Random, operation: str, extra: float = 0.0) -> float:
        """A kill moment spread over the operation's duration, from halfway through the interpreter's start
        (a kill before the command does anything is a case, but a dull one) to a little after its end."""
        return rng.uniform(self.startup / 2, SPREAD * (self.seconds[operation] + extra))


def _timed(site: Site, command: list[str], env: dict[str, str] | None = None) -> float:
    started = time.monotonic()
    site.run(command, env)
    return time.monotonic() - started


def measure(site: Site, operations: Iterable[str]) -> References:
    """Run each operation once, uninterrupted, on A: its duration and the state it leaves."""
    operations = set(operations)
    seconds: dict[str, float] = {}
    startup = _timed(site, [str(BIN / "migrate-guard"), "--version"])
    site.reset("A")
    before = capture(site.urls["A"])
    after = None
    if operations & {"backup", "restore", "prune"}:
        started = time.monotonic()
        start = site.backup("A", "start")
        seconds["backup"] = time.monotonic() - started
        if "restore" in operations:
            damage_customers(site.urls["A"])
            seconds["restore"] = _timed(site, site.cli("A", "restore", start, "--tables", "customers", "--yes"))
            _expect(capture(site.urls["A"]), before, "restore of customers, uninterrupted")
        else:
            site.backup("A", "second")
        if "prune" in operations:  # two snapshots or three (start, before the restore, ...): one kept
            seconds["prune"] = _timed(site, site.cli("A", "prune", "--keep-last", "1"))
    if "migrate-safe" in operations:
        site.reset("A")
        seconds["migrate-safe"] = _timed(site, site.safe_cli("A"), {**site.env, "MG_FAULT_PAUSE": "0"})
        after = capture(site.urls["A"])
    if "recover" in operations:
        site.reset("A")
        marker = site.root.parent / f"marker-{uuid.uuid4().hex[:8]}"
        kill_when(
            site, site.safe_cli("A"), {**site.env, "MG_FAULT_PAUSE": "120", "MG_FAULT_MARKER": str(marker)}, marker
        )
        seconds["recover"] = _timed(site, site.cli("A", "recover", "--yes"))
        _expect(capture(site.urls["A"]), before, "recover of a killed run, uninterrupted")
    return References(before, after, seconds, startup)


def _expect(now: State, wanted: State, what: str) -> None:
    if not now.same(wanted):
        raise RuntimeError(f"{what} does not give the start state back: {', '.join(wanted.differing(now))} differ")


# --- one trial -------------------------------------------------------------------------------------------


@dataclass
class Trial:
    operation: str
    db: str
    kill: Kill
    lost: int = 0
    problems: list[str] = field(default_factory=list)  # what leaves a database broken
    losses: list[str] = field(default_factory=list)  # which rows are missing
    seconds: float = 0.0

    @property
    def broken(self) -> bool:
        return bool(self.problems)

    @property
    def exact(self) -> bool:
        return not self.problems and not self.losses and self.lost == 0


def trial(site: Site, refs: References, operation: str, db: str, rng: random.Random, pause_max: float) -> Trial:
    started = time.monotonic()
    other = "B" if db == "A" else "A"
    url = site.reset(db)
    other_before = capture(site.urls[other])
    marker = site.root.parent / f"marker-{uuid.uuid4().hex[:8]}"
    env = {**site.env, "MG_FAULT_PAUSE": "0"}
    how = rng.choice(("pid", "group"))
    expected = [refs.before]
    rerun: list[str] | None = None
    if operation == "migrate-safe":
        pause = rng.uniform(0, pause_max)
        env = {**env, "MG_FAULT_PAUSE": f"{pause:.3f}", "MG_FAULT_MARKER": str(marker)}
        at = refs.moment(rng, "migrate-safe", pause)
        kill = kill_at(site, site.safe_cli(db), env, at, how, marker)
        expected = [refs.before, refs.after]
    elif operation == "recover":
        killed_env = {**env, "MG_FAULT_PAUSE": "120", "MG_FAULT_MARKER": str(marker)}
        kill_when(site, site.safe_cli(db), killed_env, marker)
        kill = kill_at(site, site.cli(db, "recover", "--yes"), env, refs.moment(rng, "recover"), how, None)
    elif operation == "restore":
        start = site.backup(db, "start")
        damage_customers(url)
        rerun = site.cli(db, "restore", start, "--tables", "customers", "--yes")
        kill = kill_at(site, rerun, env, refs.moment(rng, "restore"), how, None)
        # re-run to completion below: customers as in the start snapshot, so the whole database as at the start
    elif operation == "backup":
        kill = kill_at(site, site.cli(db, "backup"), env, refs.moment(rng, "backup"), how, None)
    elif operation == "prune":
        for label in ("first", "second"):
            site.backup(db, label)
        command = site.cli(db, "prune", "--keep-last", "1")
        kill = kill_at(site, command, env, refs.moment(rng, "prune"), how, None)
    else:
        raise ValueError(f"unknown operation {operation!r}")
    result = Trial(operation, db, kill)
    if kill.finished is not None and kill.finished.failure():
        result.problems.append(f"{operation} (finished before the kill) {kill.finished.failure()}")

    # the application goes on writing, in the killed database and in the other one
    tag = uuid.uuid4().hex[:8]
    written: dict[str, list[str]] = {db: [], other: []}
    for name, count in ((db, 3), (other, 2)):
        try:
            written[name] = app_write(site.urls[name], (f"{operation} {name} {tag} {n}" for n in range(count)))
        except Exception as exc:  # noqa: BLE001 - an application that cannot write is a broken database
            result.problems.append(f"the application could not write to {name}: {str(exc).splitlines()[0][:200]}")

    # what the operator runs next
    nexts = [site.cli(db, "recover", "--yes")]
    if rerun:
        nexts.append(rerun)
    if operation in ("backup", "prune"):
        nexts.append(site.cli(db, "verify", "--all"))
    for command in nexts:
        done = site.run(command, check=False)
        if done.failure():
            result.problems.append(f"`{' '.join(command[5:])}` {done.failure()}")

    # both databases against what must be there
    now = capture(url)
    other_now = capture(site.urls[other])
    match = next((e for e in expected if e is not None and now.same(e)), None)
    wanted_app = frozenset(written[db])
    if match is None:
        near = min((e for e in expected if e is not None), key=lambda e: (e.missing_rows(now), len(e.differing(now))))
        result.lost += near.missing_rows(now)
        result.problems.append(
            f"{db} is neither before nor after (at {','.join(now.revision) or 'base'}): "
            f"{', '.join(near.differing(now))} differ"
        )
    if now.app != wanted_app:
        missing = wanted_app - now.app
        result.lost += len(missing)
        if missing:
            result.losses.append(f"{db} lost {len(missing)} of its {len(wanted_app)} new application rows")
        if now.app - wanted_app:
            result.problems.append(f"{db} has application rows nobody wrote: {sorted(now.app - wanted_app)[:3]}")
    other_wanted = other_before.app | frozenset(written[other])
    if not other_now.same(other_before):
        result.lost += other_before.missing_rows(other_now)
        result.problems.append(f"the other database {other} changed: {', '.join(other_before.differing(other_now))}")
    if other_wanted - other_now.app:
        result.lost += len(other_wanted - other_now.app)
        result.losses.append(f"the other database {other} lost {len(other_wanted - other_now.app)} application rows")
    if other_now.app - other_wanted:
        result.problems.append(f"the other database {other} has application rows nobody wrote")
    result.seconds = time.monotonic() - started
    return result


# --- a whole run -----------------------------------------------------------------------------------------


@dataclass
class Row:
    operation: str
    database: str  # "sqlite A"
    trials: int = 0
    exact: int = 0
    lost: int = 0
    broken: int = 0
    landed: dict[str, int] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)


def run_dialect(
    dialect: str,
    plan: dict[str, int],
    seed: int,
    *,
    server_url: str | None = None,
    pause_max: float = PAUSE_MAX,
    say: Callable[[str], None] = lambda line: None,
) -> list[Row]:
    """``plan[operation]`` trials of each operation on this dialect (alternating A and B); one row per
    operation and database. ``server_url``: any database on the server (default: SERVERS)."""
    dialect = family(dialect)
    rng = random.Random(f"{seed}:{dialect}")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix=f"mg-faults-{dialect}-") as tmp:
        site = make_site(dialect, Path(tmp), server_url)
        try:
            started = time.monotonic()
            refs = measure(site, [op for op, n in plan.items() if n])
            site.reset("B")
            durations = ", ".join(f"{op} {s:.1f} s" for op, s in refs.seconds.items())
            say(f"{dialect}: set up and measured in {time.monotonic() - started:.0f} s ({durations})")
            for operation, count in plan.items():
                by_db = {db: Row(operation, f"{dialect} {db}") for db in "AB"}
                for n in range(count):
                    db = "AB"[n % 2]
                    try:
                        t = trial(site, refs, operation, db, rng, pause_max)
                    except Exception as exc:  # noqa: BLE001 - a step before the kill failing leaves the trial broken
                        t = Trial(operation, db, Kill("not reached", "-", 0.0), problems=[f"trial failed: {exc}"])
                    row = by_db[db]
                    row.trials += 1
                    row.exact += t.exact
                    row.lost += t.lost
                    row.broken += t.broken
                    row.landed[t.kill.landed] = row.landed.get(t.kill.landed, 0) + 1
                    verdict = "exact" if t.exact else f"NOT EXACT: {'; '.join(t.problems + t.losses)} (lost {t.lost})"
                    line = f"{operation} on {dialect} {db} #{n + 1}: kill -9 ({t.kill.how}) at {t.kill.at:.2f} s"
                    line += f", {t.kill.landed}; {verdict} [{t.seconds:.1f} s]"
                    say(line)
                    if not t.exact:
                        row.details.append(line)
                rows += [r for r in by_db.values() if r.trials]
        finally:
            site.databases.drop_all()
    return rows


def print_table(rows: list[Row], out: Callable[[str], None] = print) -> None:
    out(f"{'operation':14}{'database':13}{'trials':>7}{'exact':>7}{'lost rows':>11}{'left broken':>13}  kills landed")
    for r in rows:
        landed = ", ".join(f"{n} {k}" for k, n in sorted(r.landed.items()))
        out(f"{r.operation:14}{r.database:13}{r.trials:>7}{r.exact:>7}{r.lost:>11}{r.broken:>13}  {landed}")
    for r in rows:
        for line in r.details:
            out(f"  {line}")


def _answers(dialect: str) -> bool:
    if dialect == "sqlite":
        return True
    try:
        engine = _engine(SERVERS[dialect])
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:  # noqa: BLE001 - any reason it does not answer
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=None, help="trials per operation and dialect (default 20)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dialects", default=",".join(DIALECTS))
    parser.add_argument("--operations", default=",".join(OPERATIONS))
    parser.add_argument(
        "--quick", action="store_true", help=f"2 trials unless --trials, pauses of at most {QUICK_PAUSE_MAX} s"
    )
    args = parser.parse_args(argv)
    trials = args.trials if args.trials is not None else (2 if args.quick else 20)
    dialects = [family(d.strip()) for d in args.dialects.split(",") if d.strip()]
    operations = [o.strip() for o in args.operations.split(",") if o.strip()]
    unknown = [d for d in dialects if d not in DIALECTS] + [o for o in operations if o not in OPERATIONS]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}")
    started = time.monotonic()
    rows: list[Row] = []
    skipped = []
    for dialect in dialects:
        if not _answers(dialect):
            skipped.append(dialect)
            print(f"{dialect}: the server does not answer at {SERVERS[dialect]}: skipped", file=sys.stderr)
            continue
        rows += run_dialect(
            dialect,
            dict.fromkeys(operations, trials),
            args.seed,
            pause_max=QUICK_PAUSE_MAX if args.quick else PAUSE_MAX,
            say=lambda line: print(line, file=sys.stderr, flush=True),
        )
    print_table(rows)
    total = sum(r.trials for r in rows)
    print(
        f"{total} trials, {sum(r.exact for r in rows)} exact, {sum(r.lost for r in rows)} rows lost, "
        f"{sum(r.broken for r in rows)} left broken; seed {args.seed}; total {time.monotonic() - started:.0f} s"
        + (f"; skipped: {', '.join(skipped)}" if skipped else "")
    )
    return 0 if all(r.exact == r.trials for r in rows) and not skipped else 1


if __name__ == "__main__":
    sys.exit(main())
