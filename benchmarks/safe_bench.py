#!/usr/bin/env python3
"""How much does `migrate-safe` cost over a plain `alembic upgrade head`, and how big is its snapshot?

In one run:

1. creates a fresh database ``mg_safe_bench`` (PostgreSQL or MariaDB; a file in the temporary
   directory for SQLite) and a temporary Alembic project (alembic.ini, a cookbook-form env.py that
   uses ``config.attributes["connection"]`` when migrate-safe hands one in, a migrate-guard.toml
   whose ``[backup] repository`` is in the temporary directory) with two revisions:

   - A (``0001``) creates ``events`` (the big table: id, created_at, kind, payload jsonb/text, amount)
     and ``accounts`` (the small one: id, name, balance, created_at); the script then fills ``events``
     with ``--rows`` rows and ``accounts`` with ``--small-rows`` rows, server-side;
   - B (``0002``, the one measured) touches ``accounts`` only: adds a nullable column, backfills it
     with ``UPDATE ... WHERE``, indexes it (and its downgrade undoes exactly that);

2. times, alternating and ``--repeat`` times each, always from revision A (B is downgraded with
   plain Alembic, untimed, between runs):

       alembic -c alembic.ini upgrade head          (the baseline)
       migrate-safe -c alembic.ini                  (encrypted repository: MIGRATE_GUARD_KEY set)

3. prints the medians, the ratio, the goal ``safe <= 1.5 * alembic + 1.0 s``, and the safety
   snapshot's size (``bytes``/``stored_bytes`` from ``migrate-guard list --format json`` and the
   manifest) next to the on-disk sizes of ``events`` and ``accounts``: the snapshot follows the
   affected table, and ``events`` is not in it. (SQLite snapshots are whole-file images by design,
   so there the snapshot follows the file, not the affected tables.)

    .venv/bin/python benchmarks/safe_bench.py [--rows 2000000] [--small-rows 10000]
                                              [--dialect postgresql|sqlite|mariadb] [--repeat 3]

The database and the temporary directory are always removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from units import human  # benchmarks/units.py: the directory of a script run as a file is on sys.path

BIN = Path(sys.executable).parent
DB = "mg_safe_bench"

ALEMBIC_INI = """\
[alembic]
script_location = %(here)s/migrations
path_separator = os
sqlalchemy.url = {url}

[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console
qualname =

[logger_sqlalchemy]
level = WARNING
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
datefmt = %H:%M:%S
"""

# Alembic's cookbook form ("Sharing a Connection across one or more programmatic migration commands"),
# as alembic_example/migrations/env.py: migrate-safe hands its connection in through config.attributes.
ENV_PY = """\
from logging.config import fileConfig

from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
shared_connection = config.attributes.get("connection")

if config.config_file_name is not None and shared_connection is None:
    fileConfig(config.config_file_name)

target_metadata = None


def run_migrations_offline():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection):
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    if shared_connection is not None:
        do_run_migrations(shared_connection)
        return
    engine = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
                                poolclass=pool.NullPool)
    with engine.connect() as connection:
        do_run_migrations(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
"""

REVISION_A = '''\
"""A: the big events table and the small accounts table"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    payload = postgresql.JSONB() if op.get_context().dialect.name == "postgresql" else sa.Text()
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("payload", payload, nullable=False),
        sa.Column("amount", sa.Numeric(12, 2), nullable=False),
    )
    op.create_index("ix_events_created_at", "events", ["created_at"])
    op.create_table(
        "accounts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("balance", sa.Numeric(12, 2), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade():
    op.drop_table("accounts")
    op.drop_index("ix_events_created_at", table_name="events")
    op.drop_table("events")
'''

REVISION_B = '''\
"""B: a tier column on accounts, backfilled and indexed"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("accounts", sa.Column("tier", sa.String(16), nullable=True))
    op.execute("UPDATE accounts SET tier = CASE WHEN balance >= 5000 THEN 'gold' ELSE 'standard' END "
               "WHERE tier IS NULL")
    op.create_index("ix_accounts_tier", "accounts", ["tier"])


def downgrade():
    op.drop_index("ix_accounts_tier", table_name="accounts")
    op.drop_column("accounts", "tier")
'''

KINDS = ("page_view", "search", "add_to_cart", "checkout", "login")


# --- the database, per dialect ----------------------------------------------------------------------


class Target:
    """Creating, filling, measuring and dropping the benchmark database."""

    dialect = ""
    url = ""

    def create(self) -> None: ...

    def drop(self) -> None: ...

    def fill(self, rows: int, small_rows: int) -> None: ...

    def after_downgrade(self) -> None:
        """Untimed housekeeping between runs."""

    def sizes(self) -> dict[str, int]:
        """On-disk bytes of events and accounts (table + indexes + TOAST)."""
        return {}

    def size_note(self) -> str:
        return ""

    def engine(self):
        import sqlalchemy as sa

        return sa.create_engine(self.url, poolclass=sa.pool.NullPool)

    def revision(self) -> str:
        import sqlalchemy as sa

        engine = self.engine()
        try:
            with engine.connect() as conn:
                return ",".join(sorted(r[0] for r in conn.execute(sa.text("SELECT version_num FROM alembic_version"))))
        finally:
            engine.dispose()


class PostgreSQL(Target):
    dialect = "postgresql"

    def __init__(self, server: str) -> None:
        from psycopg.conninfo import conninfo_to_dict

        self.server = server
        p = conninfo_to_dict(server)
        auth = p.get("user", "postgres") + (f":{p['password']}" if p.get("password") else "")
        self.url = f"postgresql+psycopg://{auth}@{p.get('host', '127.0.0.1')}:{p.get('port', 5432)}/{DB}"

    def connect(self, dbname: str):
        import psycopg
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params = conninfo_to_dict(self.server)
        params["dbname"] = dbname
        return psycopg.connect(make_conninfo(**params), autocommit=True)

    def create(self) -> None:
        with self.connect("postgres") as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{DB}"')

    def drop(self) -> None:
        with self.connect("postgres") as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')

    def fill(self, rows: int, small_rows: int) -> None:
        kinds = "ARRAY[" + ",".join(f"'{k}'" for k in KINDS) + "]"
        with self.connect(DB) as conn:
            conn.execute("SET synchronous_commit = off")
            conn.execute("SET maintenance_work_mem = '256MB'")
            conn.execute("SELECT setseed(0.42)")
            conn.execute(f"""
                INSERT INTO events (created_at, kind, payload, amount)
                SELECT timestamptz '2024-01-01 00:00+00' + i * interval '7 seconds',
                       ({kinds})[1 + i % {len(KINDS)}],
                       jsonb_build_object('session', md5(i::text), 'path', '/products/' || (i % 5000),
                                          'ip', '10.' || (i % 256) || '.' || ((i / 256) % 256) || '.' || (i % 97),
                                          'ms', round((random() * 900)::numeric, 1)),
                       round((random() * 1000)::numeric, 2)
                FROM generate_series(1, {rows}) i""")
            conn.execute(f"""
                INSERT INTO accounts (name, balance, created_at)
                SELECT 'account ' || md5(i::text), round((random() * 10000)::numeric, 2),
                       timestamptz '2020-01-01 00:00+00' + i * interval '1 hour'
                FROM generate_series(1, {small_rows}) i""")
            conn.execute("VACUUM (FREEZE, ANALYZE)")  # a settled database: hint bits and visibility map set
            conn.execute("CHECKPOINT")

    def after_downgrade(self) -> None:
        with self.connect(DB) as conn:  # the UPDATE's dead tuples, so every run starts alike
            conn.execute("VACUUM (ANALYZE) accounts")

    def sizes(self) -> dict[str, int]:
        with self.connect(DB) as conn:
            return {
                t: int(conn.execute("SELECT pg_total_relation_size(%s::regclass)", (t,)).fetchone()[0])
                for t in ("events", "accounts")
            }

    def size_note(self) -> str:
        return "pg_total_relation_size: heap + indexes + TOAST"


class MariaDB(Target):
    dialect = "mariadb"

    def __init__(self, server: str) -> None:
        from sqlalchemy.engine import make_url

        base = make_url(server)
        self.params = {
            "host": base.host or "127.0.0.1",
            "port": base.port or 3306,
            "user": base.username or "root",
            "password": base.password or "",
        }
        self.url = base.set(database=DB).render_as_string(hide_password=False)

    def connect(self, database: str | None = None):
        import pymysql

        return pymysql.connect(**self.params, database=database, autocommit=True)

    def create(self) -> None:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{DB}`")
                cur.execute(f"CREATE DATABASE `{DB}` CHARACTER SET utf8mb4")
        finally:
            conn.close()

    def drop(self) -> None:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{DB}`")
        finally:
            conn.close()

    def fill(self, rows: int, small_rows: int) -> None:
        kinds = ",".join(f"'{k}'" for k in KINDS)
        conn = self.connect(DB)
        try:
            with conn.cursor() as cur:
                # the Sequence engine's seq_1_to_N tables: MariaDB's generate_series
                cur.execute(f"""
                    INSERT INTO events (created_at, kind, payload, amount)
                    SELECT TIMESTAMP '2024-01-01 00:00:00' + INTERVAL seq * 7 SECOND,
                           ELT(1 + seq % {len(KINDS)}, {kinds}),
                           CONCAT('{{"session": "', MD5(seq), '", "path": "/products/', seq % 5000,
                                  '", "ip": "10.', seq % 256, '.', (seq DIV 256) % 256, '.', seq % 97,
                                  '", "ms": ', ROUND(RAND(seq) * 900, 1), '}}'),
                           ROUND(RAND(seq + 1) * 1000, 2)
                    FROM seq_1_to_{rows}""")
                cur.execute(f"""
                    INSERT INTO accounts (name, balance, created_at)
                    SELECT CONCAT('account ', MD5(seq)), ROUND(RAND(seq) * 10000, 2),
                           TIMESTAMP '2020-01-01 00:00:00' + INTERVAL seq HOUR
                    FROM seq_1_to_{small_rows}""")
                cur.execute("ANALYZE TABLE events, accounts")
        finally:
            conn.close()

    def sizes(self) -> dict[str, int]:
        conn = self.connect(DB)
        try:
            with conn.cursor() as cur:
                cur.execute("ANALYZE TABLE events, accounts")
                cur.execute(
                    "SELECT table_name, data_length + index_length FROM information_schema.tables "
                    "WHERE table_schema = %s AND table_name IN ('events', 'accounts')",
                    (DB,),
                )
                return {str(name): int(size) for name, size in cur.fetchall()}
        finally:
            conn.close()

    def size_note(self) -> str:
        return "information_schema data_length + index_length (InnoDB estimates)"


class SQLite(Target):
    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self.file_bytes = 0

    def create(self) -> None:
        self.path.unlink(missing_ok=True)

    def drop(self) -> None:
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def fill(self, rows: int, small_rows: int) -> None:
        import sqlite3

        kinds = ",".join(f"'{k}'" for k in KINDS)
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("BEGIN")
            conn.execute(f"""
                WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {rows})
                INSERT INTO events (created_at, kind, payload, amount)
                SELECT strftime('%Y-%m-%d %H:%M:%f', '2024-01-01', '+' || (i * 7) || ' seconds'),
                       json_extract(json_array({kinds}), '$[' || (i % {len(KINDS)}) || ']'),
                       json_object('session', hex(randomblob(16)), 'path', '/products/' || (i % 5000),
                                   'ip', '10.' || (i % 256) || '.' || ((i / 256) % 256) || '.' || (i % 97),
                                   'ms', round(abs(random() % 9000) / 10.0, 1)),
                       round(abs(random() % 100000) / 100.0, 2)
                FROM s""")
            conn.execute(f"""
                WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {small_rows})
                INSERT INTO accounts (name, balance, created_at)
                SELECT 'account ' || hex(randomblob(16)), round(abs(random() % 1000000) / 100.0, 2),
                       strftime('%Y-%m-%d %H:%M:%f', '2020-01-01', '+' || i || ' hours')
                FROM s""")
            conn.execute("COMMIT")
            conn.execute("ANALYZE")
        finally:
            conn.close()

    def sizes(self) -> dict[str, int]:
        import sqlite3

        self.file_bytes = self.path.stat().st_size
        conn = sqlite3.connect(self.path)
        try:
            rows = conn.execute(
                "SELECT tbl_name, name FROM sqlite_master WHERE tbl_name IN ('events', 'accounts')"
            ).fetchall()
            try:
                per_object = dict(conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())
            except sqlite3.Error:  # no dbstat compiled in
                return {}
            sizes: dict[str, int] = {}
            for table, name in rows:
                sizes[table] = sizes.get(table, 0) + int(per_object.get(name, 0) or 0)
            return sizes
        finally:
            conn.close()

    def size_note(self) -> str:
        return f"dbstat pages (table + its indexes); the whole file is {human(self.file_bytes)}"


# --- helpers -------------------------------------------------------------------------------------------


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(
            f"{' '.join(cmd)} failed (exit {done.returncode}):\n{done.stdout.strip()}\n{done.stderr.strip()[-2000:]}"
        )
    return elapsed, done


def make_project(root: Path, url: str, repo: Path) -> Path:
    versions = root / "migrations" / "versions"
    versions.mkdir(parents=True)
    (root / "migrations" / "env.py").write_text(ENV_PY)
    (versions / "0001_events_accounts.py").write_text(REVISION_A)
    (versions / "0002_accounts_tier.py").write_text(REVISION_B)
    ini = root / "alembic.ini"
    ini.write_text(ALEMBIC_INI.format(url=url.replace("%", "%%")))
    (root / "migrate-guard.toml").write_text(f"[backup]\nrepository = {json.dumps(str(repo))}\n")
    return ini


def manifests(ini: Path) -> dict[str, dict]:
    """Every snapshot's manifest by id (stored_bytes is in the manifest, not in `list`)."""
    from migrate_guard.backup import service
    from migrate_guard.config import load_project

    return {m["id"]: m for m in service.open_repository(load_project(ini)).manifests()}


# --- the benchmark ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows in events, the big table (default 2000000)")
    parser.add_argument(
        "--small-rows", type=int, default=10_000, help="rows in accounts, the migrated table (default 10000)"
    )
    parser.add_argument("--dialect", choices=("postgresql", "sqlite", "mariadb"), default="postgresql")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each command (default 3)")
    parser.add_argument(
        "--pg-server",
        default="host=127.0.0.1 port=5432 user=postgres",
        help="libpq connection string of the PostgreSQL server (default: %(default)s)",
    )
    parser.add_argument(
        "--mariadb-server",
        default="mysql+pymysql://root@127.0.0.1:3306",
        help="SQLAlchemy URL of the MariaDB server (default: %(default)s)",
    )
    args = parser.parse_args()

    alembic, safe, guard = str(BIN / "alembic"), str(BIN / "migrate-safe"), str(BIN / "migrate-guard")
    key = subprocess.run([guard, "key", "generate"], capture_output=True, text=True, check=True).stdout.strip()
    os.environ["MIGRATE_GUARD_KEY"] = key  # for this process's manifest reading, and the children
    env = dict(os.environ)

    tmp = Path(tempfile.mkdtemp(prefix="mg-safe-bench-"))
    if args.dialect == "postgresql":
        target: Target = PostgreSQL(args.pg_server)
    elif args.dialect == "mariadb":
        target = MariaDB(args.mariadb_server)
    else:
        target = SQLite(tmp / "bench.db")
    try:
        project = tmp / "project"
        ini = make_project(project, target.url, tmp / "repo")
        base_cmd = [alembic, "-c", str(ini)]
        upgrade_cmd = [*base_cmd, "upgrade", "head"]
        downgrade_cmd = [*base_cmd, "downgrade", "0001"]
        safe_cmd = [safe, "-c", str(ini)]

        print(
            f"dialect: {args.dialect}  events: {args.rows:,} rows  accounts: {args.small_rows:,} rows  "
            f"runs: {args.repeat} each  load average: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)",
            flush=True,
        )
        t = time.perf_counter()
        target.create()
        run([*base_cmd, "upgrade", "0001"], project, env)
        target.fill(args.rows, args.small_rows)
        sizes = target.sizes()
        print(
            f"built {DB if args.dialect != 'sqlite' else target.url} at revision A in {time.perf_counter() - t:.1f}s",
            flush=True,
        )

        def from_a() -> None:
            run(downgrade_cmd, project, env)
            if target.revision() != "0001":
                sys.exit(f"downgrade left the database at {target.revision()}, not 0001")
            target.after_downgrade()

        # one untimed run of each: warms the page cache and bytecode, and B's downgrade gets exercised
        run(upgrade_cmd, project, env)
        from_a()
        run(safe_cmd, project, env)
        from_a()

        base_times: list[float] = []
        safe_times: list[float] = []
        last_safe = None
        for i in range(args.repeat):
            order = ("alembic", "safe") if i % 2 == 0 else ("safe", "alembic")  # alternate who goes first
            for which in order:
                if which == "alembic":
                    seconds, _ = run(upgrade_cmd, project, env)
                    base_times.append(seconds)
                else:
                    seconds, last_safe = run(safe_cmd, project, env)
                    safe_times.append(seconds)
                if target.revision() != "0002":
                    sys.exit(f"{which} left the database at {target.revision()}, not 0002")
                print(f"  run {i + 1} {which:8}: {seconds:7.3f} s", flush=True)
                from_a()

        b, s = statistics.median(base_times), statistics.median(safe_times)
        limit = 1.5 * b + 1.0
        print()
        print(
            f"alembic upgrade head  : {b:7.3f} s "
            f"(median of {len(base_times)}: {', '.join(f'{x:.3f}' for x in base_times)})"
        )
        print(
            f"migrate-safe          : {s:7.3f} s "
            f"(median of {len(safe_times)}: {', '.join(f'{x:.3f}' for x in safe_times)})"
        )
        print(f"ratio safe / alembic  : {s / b:7.2f}")
        print(f"goal safe <= 1.5 * alembic + 1.0 s: {s:.3f} <= {limit:.3f}: {'met' if s <= limit else 'NOT met'}")
        print(f"load average now: {os.getloadavg()[0]:.2f} (other work on this machine skews the times)")

        # the safety snapshots
        listed = json.loads(run([guard, "-c", str(ini), "list", "--format", "json"], project, env)[1].stdout)
        by_id = manifests(ini)
        safety = [x for x in listed if by_id.get(x["id"], {}).get("kind") == "safety"]
        if not safety:
            sys.exit("no safety snapshot in the repository")
        first, newest = safety[0], safety[-1]
        print()
        if last_safe is not None:
            plan = [
                line for line in last_safe.stderr.splitlines() if line.startswith(("protection:", "safety snapshot:"))
            ]
            print("migrate-safe said: " + "\n                   ".join(plan))
        print(
            f"safety snapshots: {len(safety)} (one per migrate-safe run), encrypted: "
            f"{'yes' if all(x['encrypted'] for x in safety) else 'NO'}"
        )
        for name, snap in (("first (empty repository)", first), ("newest", newest)):
            m = by_id[snap["id"]]
            tables = ", ".join(f"{t['name']} {human(t['bytes'])}" for t in m["tables"])
            print(
                f"  {name:24}: {snap['id']}  bytes {human(snap['bytes'])} ({snap['bytes']:,})  stored_bytes "
                f"{human(m.get('stored_bytes', 0))} ({m.get('stored_bytes', 0):,})  tables: {tables}; "
                f"schema {human(m['schema']['bytes'])}"
            )
        if sizes:
            print(f"on disk at revision A ({target.size_note()}):")
            for t in ("events", "accounts"):
                if t in sizes:
                    print(f"  {t:9}: {human(sizes[t]):>9} ({sizes[t]:,})")
        if args.dialect == "sqlite":
            print(
                "SQLite: a snapshot is a whole-file image by design (the online backup API), so it holds events too "
                "and grows with the file, not with the affected tables; the 'affected tables only' point does not "
                "apply here."
            )
        else:
            names = {t.split(".")[-1] for t in newest["tables"]}
            has_events = "events" in names
            print(
                f"events in the safety snapshot: {'YES (unexpected)' if has_events else 'no'}; "
                f"tables: {', '.join(newest['tables'])}"
            )
            if "events" in sizes and "accounts" in sizes:
                print(
                    f"snapshot bytes / accounts on disk: {newest['bytes'] / sizes['accounts']:.2f}   "
                    f"snapshot bytes / events on disk: {newest['bytes'] / sizes['events']:.4f}   "
                    "first snapshot stored_bytes / events on disk: "
                    f"{by_id[first['id']].get('stored_bytes', 0) / sizes['events']:.4f}"
                )
    finally:
        try:
            target.drop()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
