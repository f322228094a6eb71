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

    .venv/bin/python benchmarks/backup_bench.py [--size-mb 900] [--keep] [--reuse] [--json FILE]

``--keep`` keeps mg_bench (and ``--reuse`` then skips building it next time). The restored
databases and the temporary repository are always removed. Peak RSS is measured two ways: the sum
of the RSS of every process in the tree, polled every 20 ms (the goal's figure), and the largest
single process as ``/usr/bin/time -f %M`` reports it.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

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

WORDS = ("'{alpha,amber,arctic,atlas,basic,bold,bright,classic,compact,cotton,crystal,deluxe,eco,"
         "electric,elegant,essential,fresh,golden,grand,heavy,indigo,lunar,matte,metro,modern,nordic,"
         "organic,pocket,premium,pro,rapid,royal,silver,smart,solar,sport,steel,studio,ultra,urban,"
         "velvet,vintage,wild,wooden,zen}'::text[]")
NOUNS = ("'{backpack,blender,bottle,cable,camera,chair,charger,clock,desk,drill,headphones,jacket,kettle,"
         "keyboard,lamp,monitor,mouse,mug,notebook,pan,pen,pillow,router,scarf,shoes,speaker,table,"
         "tent,towel,umbrella,wallet,watch}'::text[]")
FIRST = ("'{Ada,Alan,Alice,Amir,Ana,Ben,Carla,Chen,David,Elena,Emma,Farid,Grace,Hana,Ivan,Jonas,Julia,"
         "Kenji,Laura,Lena,Liam,Lucas,Maria,Marta,Mateo,Mia,Noah,Nora,Olga,Omar,Paul,Priya,Rosa,Sam,"
         "Sara,Sofia,Tom,Yara,Yusuf,Zoe}'::text[]")
LAST = ("'{Andersen,Becker,Costa,Dubois,Evans,Fischer,Garcia,Hansen,Ivanova,Jensen,Kowalski,Larsen,"
        "Meyer,Moreau,Nakamura,Novak,Olsen,Petrov,Quinn,Rossi,Schmidt,Silva,Smith,Tanaka,Horvat,"
        "Wagner,Weber,Wong,Yilmaz,Zimmermann}'::text[]")
DOMAINS = "'{example.com,mail.test,corp.example,shop.test,inbox.example}'::text[]"
STATUS = "'{pending,paid,packed,shipped,delivered,cancelled,refunded}'::text[]"
KINDS = "'{page_view,search,add_to_cart,checkout,login,logout,review,wishlist}'::text[]"
AGENTS = ("'{Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0,Mozilla/5.0 (Macintosh) Safari/605.1.15,"
          "Mozilla/5.0 (Windows NT 10.0) Chrome/126.0,Mozilla/5.0 (iPhone) Mobile/15E148,okhttp/4.12}'::text[]")


def pick(array: str, n: str = "random()") -> str:
    return f"({array})[1 + floor({n} * cardinality({array}))::int]"


def fill_statements(scale: float) -> dict[str, str]:
    n = {k: max(100, int(v * scale)) for k, v in ROWS_AT_900.items() if v}
    return {
        "countries": f"""
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
            FROM generate_series(1, {n['products']}) i""",
        "customers": f"""
            INSERT INTO customers
            SELECT i, lower({pick(FIRST)}) || '.' || substr(md5(i::text), 1, 6) || i || '@' || {pick(DOMAINS)},
                   {pick(FIRST)} || ' ' || {pick(LAST)},
                   chr(65 + (i % 40) / 26) || chr(65 + (i % 40) % 26),
                   round((random() * 10000 - 500)::numeric, 2),
                   CASE WHEN random() < 0.8 THEN random() * 100 END,
                   random() < 0.85,
                   timestamptz '2019-01-01 00:00+00' + random() * interval '2000 days',
                   jsonb_build_object('newsletter', random() < 0.4, 'language', (ARRAY['en','de','fr','es','ja'])[1 + i % 5],
                                      'phone', '+' || (1000000000 + (random() * 8999999999)::bigint)::text,
                                      'address', jsonb_build_object('street', (1 + i % 300) || ' ' || {pick(LAST)} || ' Street',
                                                                    'zip', lpad((i % 99999)::text, 5, '0')))
            FROM generate_series(1, {n['customers']}) i""",
        "orders": f"""
            INSERT INTO orders
            SELECT i, 1 + floor(random() * {n['customers']})::bigint, {pick(STATUS)}, p,
                   CASE WHEN random() < 0.7 THEN p + random() * interval '10 days' END,
                   round((5 + random() * 900)::numeric, 2), (ARRAY['EUR','USD','GBP'])[1 + i % 3],
                   CASE WHEN random() < 0.15 THEN 'Please deliver ' || {pick(WORDS)} || ' ' || md5(i::text) END
            FROM (SELECT i, timestamptz '2021-01-01 00:00+00' + random() * interval '1300 days' AS p
                  FROM generate_series(1, {n['orders']}) i) s""",
        "order_items": f"""
            INSERT INTO order_items
            SELECT o, l, 1 + floor(random() * {n['products']})::int, 1 + floor(random() * 5)::int,
                   round((1 + random() * 499)::numeric, 2), (ARRAY[0, 0, 0, 5, 10, 15])[1 + floor(random() * 6)::int]
            FROM generate_series(1, {n['orders']}) o
            CROSS JOIN LATERAL generate_series(1, 1 + (o * 7 + 3) % 3 + (o % 2)) l
            LIMIT {n['order_items']}""",
        "events": f"""
            INSERT INTO events (customer_id, occurred_at, kind, payload)
            SELECT 1 + floor(random() * {n['customers']})::bigint,
                   timestamptz '2024-01-01 00:00+00' + i * interval '17 seconds',
                   {pick(KINDS)},
                   jsonb_build_object('session', md5(random()::text), 'agent', {pick(AGENTS)},
                                      'path', '/products/' || (1 + floor(random() * {n['products']})::int),
                                      'ip', '10.' || (i % 256) || '.' || ((i / 256) % 256) || '.' || (i % 97),
                                      'ms', round((random() * 900)::numeric, 1),
                                      'query', CASE WHEN random() < 0.3 THEN {pick(WORDS)} || ' ' || {pick(NOUNS)} END)
            FROM generate_series(1, {n['events']}) i""",
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
        tables = [r[0] for r in conn.execute(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace ORDER BY 1")]
        return {t: int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables}


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


@dataclass
class Run:
    seconds: float
    tree_rss: int  # bytes: peak of the summed RSS of all processes in the tree
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
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def _tree_rss(root: int) -> tuple[int, str]:
    kids = _children()
    total, todo, parts = 0, list(kids.get(root, [])), []  # the tree below /usr/bin/time, not time itself
    while todo:
        pid = todo.pop()
        todo.extend(kids.get(pid, []))
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                rss = int(f.read().split()[1]) * PAGE
            with open(f"/proc/{pid}/comm") as f:
                parts.append(f"{f.read().strip()}={rss >> 20}M")
            total += rss
        except OSError:
            pass
    return total, " ".join(parts)


def run(cmd: list[str], env: dict[str, str] | None = None, label: str = "") -> Run:
    """Run ``cmd`` under /usr/bin/time, polling the RSS of its process tree."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf, tempfile.TemporaryFile() as out, \
            tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", tf.name, *cmd], stdout=out, stderr=err, env=env)
        peak = 0
        done = threading.Event()

        def poll() -> None:
            nonlocal peak
            while not done.is_set():
                rss, parts = _tree_rss(proc.pid)
                if rss > peak:
                    peak = rss
                    if os.environ.get("BENCH_DEBUG"):
                        print(f"    peak {rss >> 20}M: {parts}", file=sys.stderr)
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
            max_rss = int(tf.read().strip().splitlines()[-1]) * 1024
        except (ValueError, IndexError):
            max_rss = 0
    return Run(seconds, peak, max_rss, stdout)


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
        conn.execute("CHECKPOINT")
        print(f"  indexes, vacuum: {time.perf_counter() - t:.1f}s", flush=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=900, help="approximate database size on disk (default 900)")
    parser.add_argument("--keep", action="store_true", help=f"keep the {DB} database afterwards")
    parser.add_argument("--reuse", action="store_true", help=f"use an existing {DB} as it is (from --keep)")
    parser.add_argument("--server", default="host=127.0.0.1 port=5432 user=postgres",
                        help="libpq connection string of the server (default: %(default)s)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE as JSON")
    args = parser.parse_args()
    base = args.server
    for tool in ("pg_dump", "pg_restore"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found")
    mg = str(BIN / "migrate-guard")
    restored = (f"{DB}_restore_pg", f"{DB}_restore_mg")

    with tempfile.TemporaryDirectory(prefix="mg-bench-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            exists = False
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
            print(f"database {DB}: {human(size)} on disk, {sum(counts.values()):,} rows in {len(counts)} tables"
                  + (f", built in {build_s:.0f}s" if build_s else ""), flush=True)

            # project: alembic.ini + migrate-guard.toml with a temporary repository
            project = tmp / "project"
            project.mkdir()
            (project / "alembic.ini").write_text(f"[alembic]\nscript_location = %(here)s/migrations\n"
                                                 f"sqlalchemy.url = {url_for(base, DB)}\n")
            (project / "migrations").mkdir()
            repo = tmp / "repo"
            (project / "migrate-guard.toml").write_text(f'[backup]\nrepository = "{repo}"\n')
            env = dict(os.environ)
            env["MIGRATE_GUARD_KEY"] = base64.b64encode(os.urandom(32)).decode()
            env.pop("MIGRATE_GUARD_PASSPHRASE", None)
            common = [mg, "-c", str(project / "alembic.ini")]

            # 2. pg_dump -Fc (baseline)
            dump_file = tmp / "bench.dump"
            pg_conn = base + f" dbname={DB}"
            print("pg_dump -Fc ...", flush=True)
            r_dump = run(["pg_dump", "-Fc", "-f", str(dump_file), "--dbname", pg_conn], label="pg_dump")
            dump_bytes = dump_file.stat().st_size
            print(f"  {r_dump.seconds:.1f}s, {human(dump_bytes)}", flush=True)

            # 3. first backup
            print("migrate-guard backup (first) ...", flush=True)
            before = dir_bytes(repo) if repo.exists() else 0
            r_b1 = run([*common, "--url", url_for(base, DB), "backup", "--format", "json"], env, "backup")
            manifest = json.loads(r_b1.stdout.strip().splitlines()[-1])
            b1_bytes = dir_bytes(repo) - before
            print(f"  {r_b1.seconds:.1f}s, {human(b1_bytes)} added, peak RSS {human(r_b1.tree_rss)}", flush=True)

            # 4. second backup, nothing changed
            print("migrate-guard backup (second, unchanged) ...", flush=True)
            before = dir_bytes(repo)
            r_b2 = run([*common, "--url", url_for(base, DB), "backup", "--format", "json"], env, "backup")
            b2_bytes = dir_bytes(repo) - before
            print(f"  {r_b2.seconds:.1f}s, {human(b2_bytes)} added, peak RSS {human(r_b2.tree_rss)}", flush=True)

            # 5. restores into fresh databases
            print("pg_restore ...", flush=True)
            recreate(base, restored[0])
            r_pr = run(["pg_restore", "--dbname", base + f" dbname={restored[0]}", "--exit-on-error", str(dump_file)],
                       label="pg_restore")
            print(f"  {r_pr.seconds:.1f}s", flush=True)
            print("migrate-guard restore ...", flush=True)
            recreate(base, restored[1])
            r_mr = run([*common, "restore", manifest["id"], "--to-url", url_for(base, restored[1]), "--yes",
                        "--no-pre-snapshot"], env, "restore")
            print(f"  {r_mr.seconds:.1f}s, peak RSS {human(r_mr.tree_rss)}", flush=True)
            got_pg, got_mg = row_counts(base, restored[0]), row_counts(base, restored[1])
            if got_pg != counts or got_mg != counts:
                sys.exit(f"restored row counts differ: source {counts}, pg_restore {got_pg}, migrate-guard {got_mg}")
        finally:
            for name in restored:
                recreate(base, name, drop_only=True)
            if not args.keep:
                recreate(base, DB, drop_only=True)

    peak = max(r_b1.tree_rss, r_b2.tree_rss, r_mr.tree_rss)
    rows = [
        ("full backup time / pg_dump -Fc time", r_b1.seconds / r_dump.seconds, "<= 0.4", r_b1.seconds / r_dump.seconds <= 0.4),
        ("full backup bytes / pg_dump -Fc bytes", b1_bytes / dump_bytes, "<= 1.0", b1_bytes <= dump_bytes),
        ("second backup bytes / first", b2_bytes / b1_bytes, "<= 0.02", b2_bytes / b1_bytes <= 0.02),
        ("second backup time / first", r_b2.seconds / r_b1.seconds, "<= 0.3", r_b2.seconds / r_b1.seconds <= 0.3),
        ("restore time / pg_restore time", r_mr.seconds / r_pr.seconds, "<= 1.1", r_mr.seconds / r_pr.seconds <= 1.1),
        ("peak RSS, MB (process tree)", peak / 1e6, "<= 200", peak <= 200e6),
    ]
    print()
    print(f"database: {human(size)} on disk, {sum(counts.values()):,} rows; "
          f"snapshot: {human(manifest['bytes'])} of COPY/schema data")
    print(f"{'':40} {'seconds':>8} {'bytes':>10} {'peak RSS tree / largest':>24}")
    for name, r, b in (("pg_dump -Fc", r_dump, dump_bytes), ("migrate-guard backup (first)", r_b1, b1_bytes),
                       ("migrate-guard backup (second)", r_b2, b2_bytes), ("pg_restore", r_pr, None),
                       ("migrate-guard restore", r_mr, None)):
        print(f"{name:40} {r.seconds:8.1f} {human(b) if b is not None else '':>10} "
              f"{human(r.tree_rss):>12} / {human(r.max_rss):>9}")
    print()
    for name, value, goal, ok in rows:
        print(f"{name:40} {value:8.3f}   goal {goal:8}  {'ok' if ok else 'ABOVE GOAL'}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "db_bytes": size, "rows": sum(counts.values()), "snapshot_plain_bytes": manifest["bytes"],
            "pg_dump": {"seconds": r_dump.seconds, "bytes": dump_bytes, "tree_rss": r_dump.tree_rss},
            "backup1": {"seconds": r_b1.seconds, "bytes": b1_bytes, "tree_rss": r_b1.tree_rss, "max_rss": r_b1.max_rss},
            "backup2": {"seconds": r_b2.seconds, "bytes": b2_bytes, "tree_rss": r_b2.tree_rss, "max_rss": r_b2.max_rss},
            "pg_restore": {"seconds": r_pr.seconds, "tree_rss": r_pr.tree_rss},
            "restore": {"seconds": r_mr.seconds, "tree_rss": r_mr.tree_rss, "max_rss": r_mr.max_rss},
            "ratios": {name: value for name, value, _goal, _ok in rows},
        }, indent=2))


if __name__ == "__main__":
    main()
