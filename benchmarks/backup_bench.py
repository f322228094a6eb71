#!/usr/bin/env python3
"""How does `migrate-guard backup` / `restore` compare with `pg_dump -Fc` / `pg_restore`?

In one run, on a PostgreSQL server (default: postgresql://postgres@127.0.0.1:5432/postgres):

1. builds a database ``mg_bench`` of realistic rows (~``--size-mb`` on disk: text, integers,
   numerics, floats, timestamps with time zone, jsonb; six tables of different sizes with foreign
   keys and secondary indexes), generated server-side with generate_series/md5/random();
2. times ``pg_dump -Fc`` to a file (the baseline) and records its size;
3. times a full encrypted backup (``migrate-guard --url ... -c alembic.ini backup``, as a
   subprocess, with MIGRATE_GUARD_KEY set and a temporary repository): repository bytes added and
   the peak RSS of the whole process tree (pg_dump child included);
4. times a second backup of the unchanged database (bytes added, time);
5. times ``pg_restore`` of the -Fc file into a fresh database and ``migrate-guard restore <id>
   --to-url <fresh db> --yes --no-pre-snapshot`` into another, and checks both hold the same rows;
6. prints the ratios with their goals.

    .venv/bin/python benchmarks/backup_bench.py [--size-mb 900] [--keep] [--reuse] [--repeat N]
                                                [--level L] [--json FILE]

``--keep`` keeps mg_bench (and ``--reuse`` then skips building it next time). ``--repeat N`` times
every step N times and keeps the fastest run (on a machine busy with other work, 3 gives steadier
ratios). ``--level L`` sets the repository's zstd level (default: the repository default, 3). The
restored databases and the temporary repository are always removed. Before each timed step the
server is checkpointed and the page cache synced, so no step pays for another's writes. Peak RSS is
measured by polling the process tree every 20 ms and summing PSS (a page shared by n processes
counts 1/n: a child forked or vforked from the 130 MB Python process, or shared libraries, are not
counted twice) and RSS, and as the largest single process (``/usr/bin/time -f %M``); the goal is
checked on the larger of the PSS sum and the largest process. ``BENCH_DEBUG=1`` prints which
processes made each peak.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from units import human  # benchmarks/units.py: the directory of a script run as a file is on sys.path

BIN = Path(sys.executable).parent
DB = "mg_bench"
PAGE = os.sysconf("SC_PAGE_SIZE")

# Row counts at --size-mb 900 (scaled linearly); measured: ~900 MB of tables + indexes + TOAST.
ROWS_AT_900 = {
    "countries": None,  # fixed, 40 rows
    "products": 35_000,
    "customers": 400_000,
    "orders": 1_400_000,
    "order_items": 3_000_000,
    "events": 760_000,
}

SCHEMA = """
CREATE TABLE countries (
    code char(2) PRIMARY KEY,
    name text NOT NULL,
    vat_rate numeric(5,2) NOT NULL
);
CREATE TABLE products (
    id integer PRIMARY KEY,
    sku text NOT NULL,
    title text NOT NULL,
    price numeric(10,2) NOT NULL,
    stock integer NOT NULL,
    weight_kg double precision,
    attributes jsonb NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE TABLE customers (
    id bigint PRIMARY KEY,
    email text NOT NULL,
    full_name text NOT NULL,
    country char(2) NOT NULL,
    balance numeric(12,2) NOT NULL,
    score double precision,
    active boolean NOT NULL,
    created_at timestamptz NOT NULL,
    profile jsonb NOT NULL
);
CREATE TABLE orders (
    id bigint PRIMARY KEY,
    customer_id bigint NOT NULL,
    status text NOT NULL,
    placed_at timestamptz NOT NULL,
    shipped_at timestamptz,
    total numeric(12,2) NOT NULL,
    currency char(3) NOT NULL,
    note text
);
CREATE TABLE order_items (
    order_id bigint NOT NULL,
    line smallint NOT NULL,
    product_id integer NOT NULL,
    quantity integer NOT NULL,
    unit_price numeric(10,2) NOT NULL,
    discount numeric(4,2) NOT NULL,
    PRIMARY KEY (order_id, line)
);
CREATE TABLE events (
    id bigserial PRIMARY KEY,
    customer_id bigint,
    occurred_at timestamptz NOT NULL,
    kind text NOT NULL,
    payload jsonb NOT NULL
);
"""

WORDS = (
    "'{alpha,amber,arctic,atlas,basic,bold,bright,classic,compact,cotton,crystal,deluxe,eco,"
    "electric,elegant,essential,fresh,golden,grand,heavy,indigo,lunar,matte,metro,modern,nordic,"
    "organic,pocket,premium,pro,rapid,royal,silver,smart,solar,sport,steel,studio,ultra,urban,"
    "velvet,vintage,wild,wooden,zen}'::text[]"
)
NOUNS = (
    "'{backpack,blender,bottle,cable,camera,chair,charger,clock,desk,drill,headphones,jacket,kettle,"
    "keyboard,lamp,monitor,mouse,mug,notebook,pan,pen,pillow,router,scarf,shoes,speaker,table,"
    "tent,towel,umbrella,wallet,watch}'::text[]"
)
FIRST = (
    "'{Ada,Alan,Alice,Amir,Ana,Ben,Carla,Chen,David,Elena,Emma,Farid,Grace,Hana,Ivan,Jonas,Julia,"
    "Kenji,Laura,Lena,Liam,Lucas,Maria,Marta,Mateo,Mia,Noah,Nora,Olga,Omar,Paul,Priya,Rosa,Sam,"
    "Sara,Sofia,Tom,Yara,Yusuf,Zoe}'::text[]"
)
LAST = (
    "'{Andersen,Becker,Costa,Dubois,Evans,Fischer,Garcia,Hansen,Ivanova,Jensen,Kowalski,Larsen,"
    "Meyer,Moreau,Nakamura,Novak,Olsen,Petrov,Quinn,Rossi,Schmidt,Silva,Smith,Tanaka,Horvat,"
    "Wagner,Weber,Wong,Yilmaz,Zimmermann}'::text[]"
)
DOMAINS = "'{example.com,mail.test,corp.example,shop.test,inbox.example}'::text[]"
STATUS = "'{pending,paid,packed,shipped,delivered,cancelled,refunded}'::text[]"
KINDS = "'{page_view,search,add_to_cart,checkout,login,logout,review,wishlist}'::text[]"
AGENTS = (
    "'{Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0,Mozilla/5.0 (Macintosh) Safari/605.1.15,"
    "Mozilla/5.0 (Windows NT 10.0) Chrome/126.0,Mozilla/5.0 (iPhone) Mobile/15E148,okhttp/4.12}'::text[]"
)


def pick(array: str, n: str = "random()") -> str:
    return f"({array})[1 + floor({n} * cardinality({array}))::int]"


def fill_statements(scale: float) -> dict[str, str]:
    n = {k: max(100, int(v * scale)) for k, v in ROWS_AT_900.items() if v}
    return {
        "countries": """
            INSERT INTO countries
            SELECT chr(65 + i / 26) || chr(65 + i % 26), 'Country ' || i, round((5 + random() * 22)::numeric, 2)
            FROM generate_series(0, 39) i""",
        "products": f"""
            INSERT INTO products
            SELECT i, 'SKU-' || upper(substr(md5(i::text), 1, 10)),
                   initcap({pick(WORDS)}) || ' ' || {pick(NOUNS)} || ' ' || (1 + i % 9),
                   round((1 + random() * 499)::numeric, 2), (random() * 1000)::int,
                   CASE WHEN random() < 0.9 THEN round((random() * 20)::numeric, 3)::float8 END,
                   jsonb_build_object('color', {pick(WORDS)}, 'size', (ARRAY['S','M','L','XL'])[1 + i % 4],
                                      'tags', jsonb_build_array({pick(WORDS)}, {pick(NOUNS)}),
                                      'rating', round((1 + random() * 4)::numeric, 1)),
                   timestamptz '2024-01-01 00:00+00' + random() * interval '600 days'
            FROM generate_series(1, {n["products"]}) i""",
        "customers": f"""
            INSERT INTO customers
            SELECT i, lower({pick(FIRST)}) || '.' || substr(md5(i::text), 1, 6) || i || '@' || {pick(DOMAINS)},
                   {pick(FIRST)} || ' ' || {pick(LAST)},
                   chr(65 + (i % 40) / 26) || chr(65 + (i % 40) % 26),
                   round((random() * 10000 - 500)::numeric, 2),
                   CASE WHEN random() < 0.8 THEN random() * 100 END,
                   random() < 0.85,
                   timestamptz '2019-01-01 00:00+00' + random() * interval '2000 days',
                   jsonb_build_object(
                       'newsletter', random() < 0.4, 'language', (ARRAY['en','de','fr','es','ja'])[1 + i % 5],
                       'phone', '+' || (1000000000 + (random() * 8999999999)::bigint)::text,
                       'address', jsonb_build_object('street', (1 + i % 300) || ' ' || {pick(LAST)} || ' Street',
                                                     'zip', lpad((i % 99999)::text, 5, '0')))
            FROM generate_series(1, {n["customers"]}) i""",
        "orders": f"""
            INSERT INTO orders
            SELECT i, 1 + floor(random() * {n["customers"]})::bigint, {pick(STATUS)}, p,
                   CASE WHEN random() < 0.7 THEN p + random() * interval '10 days' END,
                   round((5 + random() * 900)::numeric, 2), (ARRAY['EUR','USD','GBP'])[1 + i % 3],
                   CASE WHEN random() < 0.15 THEN 'Please deliver ' || {pick(WORDS)} || ' ' || md5(i::text) END
            FROM (SELECT i, timestamptz '2021-01-01 00:00+00' + random() * interval '1300 days' AS p
                  FROM generate_series(1, {n["orders"]}) i) s""",
        "order_items": f"""
            INSERT INTO order_items
            SELECT o, l, 1 + floor(random() * {n["products"]})::int, 1 + floor(random() * 5)::int,
                   round((1 + random() * 499)::numeric, 2), (ARRAY[0, 0, 0, 5, 10, 15])[1 + floor(random() * 6)::int]
            FROM generate_series(1, {n["orders"]}) o
            CROSS JOIN LATERAL generate_series(1, 1 + (o * 7 + 3) % 3 + (o % 2)) l
            LIMIT {n["order_items"]}""",
        "events": f"""
            INSERT INTO events (customer_id, occurred_at, kind, payload)
            SELECT 1 + floor(random() * {n["customers"]})::bigint,
                   timestamptz '2024-01-01 00:00+00' + i * interval '17 seconds',
                   {pick(KINDS)},
                   jsonb_build_object('session', md5(random()::text), 'agent', {pick(AGENTS)},
                                      'path', '/products/' || (1 + floor(random() * {n["products"]})::int),
                                      'ip', '10.' || (i % 256) || '.' || ((i / 256) % 256) || '.' || (i % 97),
                                      'ms', round((random() * 900)::numeric, 1),
                                      'query', CASE WHEN random() < 0.3 THEN {pick(WORDS)} || ' ' || {pick(NOUNS)} END)
            FROM generate_series(1, {n["events"]}) i""",
    }


POST = """
ALTER TABLE customers ADD FOREIGN KEY (country) REFERENCES countries;
ALTER TABLE orders ADD FOREIGN KEY (customer_id) REFERENCES customers;
ALTER TABLE order_items ADD FOREIGN KEY (order_id) REFERENCES orders;
ALTER TABLE order_items ADD FOREIGN KEY (product_id) REFERENCES products;
ALTER TABLE events ADD FOREIGN KEY (customer_id) REFERENCES customers;
CREATE UNIQUE INDEX products_sku ON products (sku);
CREATE UNIQUE INDEX customers_email ON customers (email);
CREATE INDEX customers_country ON customers (country);
CREATE INDEX orders_customer ON orders (customer_id, placed_at);
CREATE INDEX order_items_product ON order_items (product_id);
CREATE INDEX events_customer ON events (customer_id, occurred_at);
"""


# --- helpers ------------------------------------------------------------------------------------------


def connect(base: str, dbname: str, autocommit: bool = True):
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(base)
    params["dbname"] = dbname
    return psycopg.connect(make_conninfo(**params), autocommit=autocommit)


def url_for(base: str, dbname: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    p = conninfo_to_dict(base)
    auth = p.get("user", "postgres") + (f":{p['password']}" if p.get("password") else "")
    return f"postgresql+psycopg://{auth}@{p.get('host', '127.0.0.1')}:{p.get('port', 5432)}/{dbname}"


def recreate(base: str, dbname: str, drop_only: bool = False) -> None:
    with connect(base, "postgres") as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        if not drop_only:
            conn.execute(f'CREATE DATABASE "{dbname}"')


def db_size(base: str, dbname: str) -> int:
    with connect(base, dbname) as conn:
        return int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])


def row_counts(base: str, dbname: str) -> dict[str, int]:
    with connect(base, dbname) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace ORDER BY 1"
            )
        ]
        return {t: int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables}


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@dataclass
class Run:
    seconds: float
    cpu: float  # user + system seconds of the process tree (not the server's)
    tree_pss: int  # bytes: peak of the summed PSS of all processes in the tree (the goal's figure)
    tree_rss: int  # bytes: peak of the summed RSS (counts pages shared between them twice)
    max_rss: int  # bytes: the largest single process (/usr/bin/time %M)
    stdout: str


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def _memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in bytes; PSS counts a page shared by n processes as 1/n of it, so
    a child that shares its parent's pages (vfork before exec, shared libraries) is not counted
    twice in a sum. (RSS, RSS) where smaps_rollup is missing."""
    with open(f"/proc/{pid}/statm", "rb") as f:
        rss = int(f.read().split()[1]) * PAGE
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return rss, int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, rss


def _tree_memory(root: int) -> tuple[int, int, str]:
    """Summed RSS and PSS of the processes below ``root`` (/usr/bin/time itself excluded), and who they are."""
    kids = _children()
    rss_sum = pss_sum = 0
    todo, parts = list(kids.get(root, [])), []
    while todo:
        pid = todo.pop()
        todo.extend(kids.get(pid, []))
        try:
            rss, pss = _memory(pid)
            with open(f"/proc/{pid}/comm") as f:
                parts.append(f"{f.read().strip()}={pss >> 20}M")
        except OSError:
            continue
        rss_sum += rss
        pss_sum += pss
    return rss_sum, pss_sum, " ".join(parts)


def run(cmd: list[str], env: dict[str, str] | None = None, label: str = "") -> Run:
    """Run ``cmd`` under /usr/bin/time, polling the RSS of its process tree every 20 ms."""
    with (
        tempfile.NamedTemporaryFile("r", suffix=".time") as tf,
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
    ):
        started = time.perf_counter()
        proc = subprocess.Popen(
            ["/usr/bin/time", "-f", "%M %U %S", "-o", tf.name, *cmd], stdout=out, stderr=err, env=env
        )
        peak_rss = peak_pss = 0
        at_peak = ""
        done = threading.Event()

        def poll() -> None:
            nonlocal peak_rss, peak_pss, at_peak
            while not done.is_set():
                rss, pss, parts = _tree_memory(proc.pid)
                peak_rss = max(peak_rss, rss)
                if pss > peak_pss:
                    peak_pss, at_peak = pss, parts
                done.wait(0.02)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        rc = proc.wait()
        seconds = time.perf_counter() - started
        done.set()
        poller.join()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        if rc != 0:
            sys.exit(f"{label or cmd[0]} failed (exit {rc}):\n{stdout}\n{stderr}")
        try:
            fields = tf.read().strip().splitlines()[-1].split()
            max_rss, cpu = int(fields[0]) * 1024, float(fields[1]) + float(fields[2])
        except (ValueError, IndexError):
            max_rss, cpu = 0, 0.0
    if os.environ.get("BENCH_DEBUG"):
        print(f"    {label}: peak PSS {peak_pss >> 20} MiB: {at_peak}", file=sys.stderr)
    return Run(seconds, cpu, peak_pss, peak_rss, max_rss, stdout)


def best(runs: list[Run]) -> Run:
    """The fastest of repeated runs (the least disturbed by whatever else the machine does), with
    the highest memory seen in any of them."""
    fastest = min(runs, key=lambda r: r.seconds)
    return Run(
        fastest.seconds,
        fastest.cpu,
        max(r.tree_pss for r in runs),
        max(r.tree_rss for r in runs),
        max(r.max_rss for r in runs),
        fastest.stdout,
    )


# --- the benchmark ------------------------------------------------------------------------------------


def build(base: str, size_mb: int) -> float:
    started = time.perf_counter()
    recreate(base, DB)
    statements = fill_statements(size_mb / 900)
    with connect(base, DB) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute(SCHEMA)
        conn.execute("SELECT setseed(0.42)")
        for table, statement in statements.items():
            t = time.perf_counter()
            conn.execute(statement)
            print(f"  {table}: {time.perf_counter() - t:.1f}s", flush=True)
        t = time.perf_counter()
        conn.execute(POST)
        conn.execute("VACUUM (FREEZE, ANALYZE)")  # hint bits and visibility map set, as on a settled database
        print(f"  indexes, foreign keys, vacuum: {time.perf_counter() - t:.1f}s", flush=True)
    return time.perf_counter() - started


def settle(base: str) -> None:
    """Before each timed step: the previous step's dirty pages written out, on the server and here,
    so that no step pays for another's writes."""
    with connect(base, "postgres") as conn:
        conn.execute("CHECKPOINT")
    os.sync()


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=900, help="approximate database size on disk (default 900)")
    parser.add_argument("--keep", action="store_true", help=f"keep the {DB} database afterwards")
    parser.add_argument("--reuse", action="store_true", help=f"use an existing {DB} as it is (from --keep)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="time each step N times and keep the fastest (default 1; use 3 on a busy machine)",
    )
    parser.add_argument(
        "--level",
        type=int,
        metavar="L",
        help="set [backup] compression_level = L (default: not set, the repository default)",
    )
    parser.add_argument(
        "--migrate-guard",
        dest="mg",
        metavar="CMD",
        default=str(BIN / "migrate-guard"),
        help="the command to run (default: %(default)s); e.g. to time another checkout: "
        "PYTHONPATH=../other ... --migrate-guard '.venv/bin/python -m migrate_guard'",
    )
    parser.add_argument(
        "--server",
        default="host=127.0.0.1 port=5432 user=postgres",
        help="libpq connection string of the server (default: %(default)s)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE as JSON")
    args = parser.parse_args()
    base = args.server
    repeat = max(1, args.repeat)
    for tool in ("pg_dump", "pg_restore"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found")
    mg = shlex.split(args.mg)
    restored = (f"{DB}_restore_pg", f"{DB}_restore_mg")
    print(f"load average at start: {load()} ({os.cpu_count()} CPUs)")

    with tempfile.TemporaryDirectory(prefix="mg-bench-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            with connect(base, "postgres") as conn:
                exists = bool(conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB,)).fetchone())
            if args.reuse and exists:
                print(f"reusing database {DB}")
                build_s = None
            else:
                print(f"building database {DB} (~{args.size_mb} MB)...", flush=True)
                build_s = build(base, args.size_mb)
            size = db_size(base, DB)
            counts = row_counts(base, DB)
            print(
                f"database {DB}: {human(size)} on disk, {sum(counts.values()):,} rows in {len(counts)} tables"
                + (f", built in {build_s:.0f}s" if build_s else ""),
                flush=True,
            )

            # a project: alembic.ini + migrate-guard.toml naming a temporary repository
            project = tmp / "project"
            (project / "migrations").mkdir(parents=True)
            (project / "alembic.ini").write_text(
                f"[alembic]\nscript_location = %(here)s/migrations\nsqlalchemy.url = {url_for(base, DB)}\n"
            )
            repo = tmp / "repo"
            level = f"compression_level = {args.level}\n" if args.level else ""
            (project / "migrate-guard.toml").write_text(f'[backup]\nrepository = "{repo}"\n{level}')
            env = dict(os.environ)
            env["MIGRATE_GUARD_KEY"] = base64.b64encode(os.urandom(32)).decode()
            env.pop("MIGRATE_GUARD_PASSPHRASE", None)
            backup_cmd = [
                *mg,
                "-c",
                str(project / "alembic.ini"),
                "--url",
                url_for(base, DB),
                "backup",
                "--format",
                "json",
            ]

            # 2. pg_dump -Fc (the baseline)
            dump_file = tmp / "bench.dump"
            runs = []
            for i in range(repeat):
                print(f"pg_dump -Fc ({i + 1}/{repeat}) ...", end=" ", flush=True)
                dump_file.unlink(missing_ok=True)
                settle(base)
                runs.append(
                    run(["pg_dump", "-Fc", "-f", str(dump_file), "--dbname", f"{base} dbname={DB}"], label="pg_dump")
                )
                print(f"{runs[-1].seconds:.1f}s", flush=True)
            r_dump = best(runs)
            dump_bytes = dump_file.stat().st_size

            # 3. the first backup, into an empty repository (the last one is kept for the next steps)
            runs, added = [], []
            for i in range(repeat):
                print(f"migrate-guard backup, first ({i + 1}/{repeat}) ...", end=" ", flush=True)
                shutil.rmtree(repo, ignore_errors=True)
                settle(base)
                runs.append(run(backup_cmd, env, "backup (first)"))
                added.append(dir_bytes(repo))
                print(f"{runs[-1].seconds:.1f}s, {human(added[-1])} added", flush=True)
            r_b1 = best(runs)
            b1_bytes = added[-1]
            manifest = json.loads(runs[-1].stdout.strip().splitlines()[-1])

            # 4. a second backup of the unchanged database
            runs, added = [], []
            for i in range(repeat):
                print(f"migrate-guard backup, second ({i + 1}/{repeat}) ...", end=" ", flush=True)
                before = dir_bytes(repo)
                settle(base)
                runs.append(run(backup_cmd, env, "backup (second)"))
                added.append(dir_bytes(repo) - before)
                print(f"{runs[-1].seconds:.1f}s, {human(added[-1])} added", flush=True)
            r_b2 = best(runs)
            b2_bytes = max(added)

            # 5. restores into fresh databases
            runs_pg, runs_mg = [], []
            for i in range(repeat):
                print(f"pg_restore ({i + 1}/{repeat}) ...", end=" ", flush=True)
                recreate(base, restored[0])
                settle(base)
                runs_pg.append(
                    run(
                        ["pg_restore", "--dbname", f"{base} dbname={restored[0]}", "--exit-on-error", str(dump_file)],
                        label="pg_restore",
                    )
                )
                print(f"{runs_pg[-1].seconds:.1f}s", flush=True)
                print(f"migrate-guard restore ({i + 1}/{repeat}) ...", end=" ", flush=True)
                recreate(base, restored[1])
                settle(base)
                runs_mg.append(
                    run(
                        [
                            *mg,
                            "-c",
                            str(project / "alembic.ini"),
                            "restore",
                            manifest["id"],
                            "--to-url",
                            url_for(base, restored[1]),
                            "--into-other-database",  # a fresh database, not the one backed up
                            "--yes",
                            "--no-pre-snapshot",
                        ],
                        env,
                        "restore",
                    )
                )
                print(f"{runs_mg[-1].seconds:.1f}s", flush=True)
            r_pr, r_mr = best(runs_pg), best(runs_mg)
            got_pg, got_mg = row_counts(base, restored[0]), row_counts(base, restored[1])
            if got_pg != counts or got_mg != counts:
                sys.exit(f"restored row counts differ: source {counts}, pg_restore {got_pg}, migrate-guard {got_mg}")
        finally:
            for name in restored:
                recreate(base, name, drop_only=True)
            if not args.keep:
                recreate(base, DB, drop_only=True)

    peak = max(max(r.tree_pss, r.max_rss) for r in (r_b1, r_b2, r_mr))
    rows = [  # (what, value, goal)
        ("full backup time / pg_dump -Fc time", r_b1.seconds / r_dump.seconds, 0.4),
        ("full backup bytes / pg_dump -Fc bytes", b1_bytes / dump_bytes, 1.0),
        ("second backup bytes / first", b2_bytes / b1_bytes, 0.02),
        ("second backup time / first", r_b2.seconds / r_b1.seconds, 0.3),
        ("restore time / pg_restore time", r_mr.seconds / r_pr.seconds, 1.1),
        ("peak memory, MB (process tree)", peak / 1e6, 200),
    ]
    print()
    print(
        f"database: {human(size)} on disk, {sum(counts.values()):,} rows; snapshot: {human(manifest['bytes'])} "
        f"of schema and COPY text; {os.cpu_count()} CPUs, load average at the end {load()}"
        + (f"; fastest of {repeat}" if repeat > 1 else "")
    )
    print(f"{'':32} {'seconds':>8} {'CPU s':>7} {'bytes':>10}   {'peak memory: tree PSS / tree RSS / largest RSS'}")
    for name, r, b in (
        ("pg_dump -Fc", r_dump, dump_bytes),
        ("migrate-guard backup (first)", r_b1, b1_bytes),
        ("migrate-guard backup (second)", r_b2, b2_bytes),
        ("pg_restore", r_pr, None),
        ("migrate-guard restore", r_mr, None),
    ):
        print(
            f"{name:32} {r.seconds:8.1f} {r.cpu:7.1f} {human(b) if b is not None else '':>10}   "
            f"{human(r.tree_pss):>16} / {human(r.tree_rss):>8} / {human(r.max_rss):>8}"
        )
    print(
        "(CPU s: user + system time of the command's processes, not the server's. Memory: the process tree"
        " summed every 20 ms as PSS (shared pages split between sharers) and as RSS (counted in each), and"
        " the largest single process. The goal is checked on the larger of tree PSS and largest RSS.)"
    )
    print()
    for name, value, goal in rows:
        print(f"{name:40} {value:8.3f}   goal <= {goal:<6}  {'ok' if value <= goal else 'ABOVE GOAL'}")
    if args.json:

        def fig(r: Run, b: int | None = None) -> dict:
            return {
                "seconds": round(r.seconds, 3),
                "cpu_seconds": round(r.cpu, 2),
                "bytes": b,
                "peak_pss_tree": r.tree_pss,
                "peak_rss_tree": r.tree_rss,
                "peak_rss_largest": r.max_rss,
            }

        Path(args.json).write_text(
            json.dumps(
                {
                    "db_bytes": size,
                    "rows": sum(counts.values()),
                    "snapshot_plain_bytes": manifest["bytes"],
                    "cpus": os.cpu_count(),
                    "repeat": repeat,
                    "level": args.level,
                    "pg_dump": fig(r_dump, dump_bytes),
                    "backup_first": fig(r_b1, b1_bytes),
                    "backup_second": fig(r_b2, b2_bytes),
                    "pg_restore": fig(r_pr),
                    "restore": fig(r_mr),
                    "ratios": {name: round(value, 4) for name, value, _goal in rows},
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
