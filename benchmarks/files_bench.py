#!/usr/bin/env python3
"""How fast, and how small, is the second `migrate-guard backup` of a file tree with 1% of its files edited?

In a throw-away Alembic project (SQLite) whose migrate-guard.toml says ``[backup] paths = ["media"]``
and names a repository in the work directory:

1. generates ``media/``: ``--size`` bytes (default 1 GiB) of incompressible data (seeded, so runs
   are comparable) in about ``--files`` files (default 1000) whose sizes are log-uniform over a
   range of x2048 (4 KiB to 8 MiB at the defaults), in nested directories;
2. times a first ``migrate-guard backup --only-files --format json`` (the real CLI, a subprocess)
   into the empty repository: its stored_bytes and the repository's growth on disk;
3. edits 1% of the files (by count): half appended to (4-64 KiB), a quarter overwritten in the
   middle (4 KiB), a quarter with 4 KiB inserted in the middle;
4. times a second backup: goals (the issue's) second time <= 0.10x the first, and new bytes
   <= 2% of the tree (checked on the repository's growth, manifest included; stored_bytes, the
   blobs alone, is printed beside it);
5. the baseline (skip it with ``--no-baseline``): another 1% edit with every file then touched, so
   the stat cache (size, mtime, inode, ctime) matches none and every file is read, chunked and
   deduplicated again: the time without the cache, and the new bytes of deduplication alone.

    .venv/bin/python benchmarks/files_bench.py [--size 1G] [--files 1000] [--encrypted] [--repeat N]
                                               [--keep] [--dir DIR] [--seed N] [--no-baseline]

``--encrypted`` sets MIGRATE_GUARD_KEY to a key from ``migrate-guard key generate`` (the repository,
created by the first backup, is then encrypted). ``--repeat N`` runs N rounds (a new repository each,
the tree as the previous round's edits left it) and keeps each step's fastest time and largest bytes
(on a machine busy with other work, 3 gives steadier ratios). Before each timed step the page cache
is synced (``os.sync``), so no step pays for the previous one's writes; the tree stays in the page
cache (the first backup reads it from memory, which favours the first time, not the ratio). Two
backups of a tiny tree in a project of their own warm up first; when PYTHONDONTWRITEBYTECODE is set
the subprocesses cache their bytecode in the work directory instead (as an installed package runs;
``--bytecode-as-is``: not). The start-up floor printed is the interpreter and the modules a backup
imports: no backup is faster. The work directory (a temporary one, or a new one in ``--dir``) is
removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from units import ENV_PY, human  # benchmarks/units.py: the directory of a script run as a file is on sys.path

BIN = Path(sys.executable).parent
MG = str(BIN / "migrate-guard")
KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
SPREAD = 2048  # largest file / smallest file (8 MiB / 4 KiB)
EDITED = 0.01  # the share of files edited (by count)
IMPORTS = "import migrate_guard.cli, migrate_guard.monitor.schedule, migrate_guard.backup.service"

REVISION = '''"""media table"""
from alembic import op
import sqlalchemy as sa

revision = "000000000001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("media", sa.Column("id", sa.Integer, primary_key=True), sa.Column("path", sa.Text()))


def downgrade():
    op.drop_table("media")
'''


def parse_size(text: str) -> int:
    """1G, 512M, 300k, 1.5GiB, 1000000 -> bytes (binary units)."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = {"K": KIB, "M": MIB, "G": GIB, "T": 1 << 40}.get(t[-1:], 1)
    try:
        return int(float(t[:-1] if scale > 1 else t) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1G, 512M)") from None


# --- the project and the tree ---------------------------------------------------------------------------


def make_project(root: Path, repo: Path) -> None:
    (root / "migrations" / "versions").mkdir(parents=True)
    (root / "migrations" / "env.py").write_text(ENV_PY)
    (root / "migrations" / "versions" / "000000000001_media.py").write_text(REVISION)
    (root / "alembic.ini").write_text(
        "[alembic]\nscript_location = %(here)s/migrations\npath_separator = os\n"
        "sqlalchemy.url = sqlite:///%(here)s/app.db\n"
    )
    (root / "migrate-guard.toml").write_text(f'[backup]\nrepository = "{repo}"\npaths = ["media"]\n')
    done = subprocess.run(
        [str(BIN / "alembic"), "-c", str(root / "alembic.ini"), "upgrade", "head"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(f"alembic upgrade head failed: {done.stderr.strip()[-800:]}")


def file_sizes(total: int, count: int, rng: random.Random) -> list[int]:
    """``count`` log-uniform sizes over a range of x SPREAD, scaled so that they add up to ``total``."""
    raw = [math.exp(rng.uniform(0, math.log(SPREAD))) for _ in range(count)]
    scale = total / sum(raw)
    sizes = [max(1, int(r * scale)) for r in raw]
    sizes[-1] += total - sum(sizes)
    return sizes


def make_tree(media: Path, total: int, count: int, rng: random.Random) -> list[Path]:
    """Write the tree: media/<year>/<month>/u<user>/<kind>_<n>.bin, a few dozen files per leaf directory."""
    files = []
    leaves = max(1, count // 25)
    for n, size in enumerate(file_sizes(total, count, rng)):
        leaf = n % leaves
        folder = media / f"{2020 + leaf % 5}" / f"{1 + (leaf // 5) % 12:02d}" / f"u{leaf:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{('img', 'doc', 'vid', 'att')[n % 4]}_{n:05d}.bin"
        with open(path, "wb") as out:
            left = size
            while left:
                piece = min(left, 8 * MIB)
                out.write(rng.randbytes(piece))
                left -= piece
        files.append(path)
    return files


def edit(files: list[Path], rng: random.Random) -> tuple[list[str], int]:
    """Edit EDITED of the files (at least 1): half appended to, a quarter overwritten in the middle, a
    quarter with bytes inserted in the middle. Returns what was done and the bytes written."""
    chosen = rng.sample(files, max(1, round(len(files) * EDITED)))
    kinds: dict[str, int] = {"append": 0, "overwrite": 0, "insert": 0}
    written = 0
    for i, path in enumerate(chosen):
        size = path.stat().st_size
        if i % 2 == 0:
            data = rng.randbytes(rng.randint(4 * KIB, 64 * KIB))
            with open(path, "ab") as out:
                out.write(data)
            kinds["append"] += 1
        elif i % 4 == 1:
            data = rng.randbytes(min(4 * KIB, size))
            with open(path, "r+b") as out:
                out.seek((size - len(data)) // 2)
                out.write(data)
            kinds["overwrite"] += 1
        else:
            data = rng.randbytes(4 * KIB)
            with open(path, "r+b") as out:
                out.seek(size // 2)
                rest = out.read()
                out.seek(size // 2)
                out.write(data + rest)
            kinds["insert"] += 1
        written += len(data)
    return [f"{n} {k}" for k, n in kinds.items()], written


def touch_all(files: list[Path]) -> None:
    now = time.time_ns()
    for path in files:
        os.utime(path, ns=(now, now))


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# --- running the CLI ------------------------------------------------------------------------------------


@dataclass
class Backup:
    seconds: float
    cpu: float  # user + system seconds of the subprocess
    stored: int  # stored_bytes, as the CLI reports it (blobs added)
    grown: int  # the repository's growth on disk (blobs, manifest, state)
    files: int
    tree: int  # the files' bytes, as the snapshot counts them
    warnings: str


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


COLD = False  # --cold: the page cache dropped before each timed backup (as root)


def backup(project: Path, repo: Path, env: dict[str, str], label: str) -> Backup:
    before = dir_bytes(repo) if repo.exists() else 0
    os.sync()
    if COLD:  # the tree, the repository and the interpreter's own files read from disk, as a nightly run would
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    cmd = [MG, "-c", str(project / "alembic.ini"), "backup", "--only-files", "--format", "json"]
    print(f"{label} ...", end=" ", flush=True)
    cpu = children_cpu()
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    cpu = children_cpu() - cpu
    if done.returncode != 0:
        sys.exit(f"\n{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-800:]}\n{done.stderr[-1500:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    grown = dir_bytes(repo) - before
    warned = "\n".join(line for line in done.stderr.splitlines() if "warning" in line)
    print(f"{seconds:.2f}s, {human(out['stored_bytes'])} stored, repository +{human(grown)}", flush=True)
    if warned:
        print(warned)
    return Backup(seconds, cpu, out["stored_bytes"], grown, out["files"]["count"], out["files"]["bytes"], warned)


def startup(project: Path, env: dict[str, str]) -> float:
    """The floor of any backup: the interpreter and the modules `migrate-guard backup` imports (fastest of 3)."""
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", IMPORTS], cwd=project, env=env, capture_output=True, check=True)
        best = min(best, time.perf_counter() - start)
    return best


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def child_env(work: Path, encrypted: bool, as_is: bool) -> tuple[dict[str, str], str]:
    """The subprocesses' environment: no key of the caller's (a generated one with ``encrypted``), and, when
    PYTHONDONTWRITEBYTECODE is set (unless ``as_is``), bytecode cached in the work directory, as an installed
    package runs (an editable checkout without .pyc files compiles every module on every run)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MIGRATE_GUARD_KEY", "MIGRATE_GUARD_PASSPHRASE")}
    note = "bytecode: as the environment says"
    if not as_is and env.get("PYTHONDONTWRITEBYTECODE") and not env.get("PYTHONPYCACHEPREFIX"):
        env.pop("PYTHONDONTWRITEBYTECODE")
        env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        note = "bytecode: cached in the work directory (PYTHONDONTWRITEBYTECODE was set; --bytecode-as-is: not)"
    if encrypted:
        key = subprocess.run([MG, "key", "generate"], capture_output=True, text=True, check=True).stdout.strip()
        env["MIGRATE_GUARD_KEY"] = key
    return env, note


def warm_up(work: Path, env: dict[str, str], rng: random.Random) -> None:
    """Two backups of a tiny tree in a project of its own: every module the timed runs import is compiled
    (with the bytecode cache) and in the page cache."""
    project = work / "warm-up"
    make_project(project, work / "warm-up-repo")
    make_tree(project / "media", 64 * KIB, 4, rng)
    cmd = [MG, "-c", str(project / "alembic.ini"), "backup", "--only-files", "--format", "json"]
    for _ in range(2):
        subprocess.run(cmd, cwd=project, env=env, capture_output=True, check=True)
    subprocess.run([sys.executable, "-c", IMPORTS], cwd=project, env=env, capture_output=True, check=True)


@dataclass
class Round:
    first: Backup
    second: Backup
    baseline: Backup | None


def one_round(project: Path, repo: Path, files: list[Path], env: dict[str, str], rng: random.Random, args) -> Round:
    shutil.rmtree(repo, ignore_errors=True)
    first = backup(project, repo, env, "  first backup (empty repository)")
    if first.files != len(files) or first.tree != sum(p.stat().st_size for p in files):
        sys.exit(f"the snapshot holds {first.files} files, {first.tree} bytes: expected {len(files)}")
    what, edited = edit(files, rng)
    print(f"  edited {max(1, round(len(files) * EDITED))} file(s) ({', '.join(what)}): {human(edited)} written")
    second = backup(project, repo, env, "  second backup (1% edited)")
    baseline = None
    if not args.no_baseline:
        what, edited = edit(files, rng)
        touch_all(files)
        print(f"  edited another 1% ({', '.join(what)}), then touched every file (the stat cache defeated)")
        baseline = backup(project, repo, env, "  baseline backup (1% edited, all touched)")
    return Round(first, second, baseline)


def fastest(runs: list[Backup]) -> Backup:
    """The fastest run's time (the least disturbed by whatever else the machine does), the most bytes of any."""
    return replace(
        min(runs, key=lambda b: b.seconds), stored=max(b.stored for b in runs), grown=max(b.grown for b in runs)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=GIB, help="bytes in the tree (default 1G; 512M, 2G...)")
    parser.add_argument("--files", type=int, default=1000, help="files in the tree, about (default 1000)")
    parser.add_argument("--encrypted", action="store_true", help="an encrypted repository (MIGRATE_GUARD_KEY)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N", help="rounds; the fastest run of each counts")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (its path is printed)")
    parser.add_argument("--dir", type=Path, help="make the work directory in DIR (default: the temp dir)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the generated data and edits (default 42)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the third backup (stat cache defeated)")
    parser.add_argument(
        "--cold", action="store_true", help="drop the page cache before each timed backup (root; Linux)"
    )
    parser.add_argument(
        "--bytecode-as-is", action="store_true", help="leave PYTHONDONTWRITEBYTECODE as it is (see child_env)"
    )
    args = parser.parse_args()
    global COLD
    COLD = args.cold
    if args.files < 1 or args.size < args.files or args.repeat < 1:
        parser.error("--size must be at least one byte per file, --files and --repeat at least 1")

    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mg-files-bench-", dir=args.dir))
    free = shutil.disk_usage(work).free
    if free < 2.5 * args.size:
        shutil.rmtree(work, ignore_errors=True)
        sys.exit(f"{work}: {human(free)} free, the tree and the repository need about {human(2.2 * args.size)}")
    rng = random.Random(args.seed)
    project, repo = work / "project", work / "repo"
    print(f"work directory: {work}   load average at start: {load()} ({os.cpu_count()} CPUs)")
    try:
        env, bytecode = child_env(work, args.encrypted, args.bytecode_as_is)
        warm_up(work, env, random.Random(0))
        make_project(project, repo)
        start = time.perf_counter()
        files = make_tree(project / "media", args.size, args.files, rng)
        sizes = sorted(p.stat().st_size for p in files)
        print(
            f"tree: {len(files)} files, {human(args.size)} ({args.size / GIB:.2f} GiB), sizes {human(sizes[0])} to "
            f"{human(sizes[-1])} (median {human(sizes[len(sizes) // 2])}), written in "
            f"{time.perf_counter() - start:.1f}s",
            flush=True,
        )
        floor = startup(project, env)
        rounds = []
        for n in range(args.repeat):
            print(f"round {n + 1}/{args.repeat}:")
            rounds.append(one_round(project, repo, files, env, rng, args))
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    tree = max(r.first.tree for r in rounds)  # the snapshot's bytes (edits of earlier rounds included)
    first, second = fastest([r.first for r in rounds]), fastest([r.second for r in rounds])
    baselines = [r.baseline for r in rounds if r.baseline is not None]
    third = fastest(baselines) if baselines else None
    print()
    print(
        f"tree: {len(files)} files, {human(tree)}; repository {'encrypted' if args.encrypted else 'not encrypted'}; "
        f"{os.cpu_count()} CPUs, load average at the end {load()}"
        + (f"; fastest of {args.repeat} rounds (bytes: the largest)" if args.repeat > 1 else "")
    )
    print(bytecode)
    print(f"{'':42} {'seconds':>8} {'CPU s':>7} {'MB/s':>7} {'stored':>10} {'repo +':>10} {'/ tree':>8}")
    rows = [("first backup (empty repository)", first), ("second backup (1% edited)", second)]
    if third is not None:
        rows.append(("baseline: 1% edited, stat cache defeated", third))
    for name, b in rows:
        print(
            f"{name:42} {b.seconds:8.2f} {b.cpu:7.2f} {tree / 1e6 / b.seconds:7.0f} {human(b.stored):>10} "
            f"{human(b.grown):>10} {b.grown / tree:8.4f}"
        )
    print(f"{'start-up floor (python + the imports)':42} {floor:8.2f}")
    print("(MB/s: the tree's bytes over the wall time; stored: stored_bytes, the blobs added; repo +: the")
    print(" repository's growth on disk, manifest and state included, the figure the goal is checked on)")
    print()
    goals = [
        ("second backup time / first", second.seconds / first.seconds, 0.10),
        ("second backup new bytes / tree bytes", second.grown / tree, 0.02),
    ]
    for name, value, goal in goals:
        print(f"{name:42} {value:8.4f}   goal <= {goal:<5} {'PASS' if value <= goal else 'FAIL'}")
    print(f"{'second time beyond the floor / first':42} {(second.seconds - floor) / first.seconds:8.4f}")
    if third is not None:
        print(f"{'baseline time / first (no stat cache)':42} {third.seconds / first.seconds:8.4f}")
        print(f"{'baseline new bytes / tree (dedup alone)':42} {third.grown / tree:8.4f}")
        print(f"{'second / baseline time (the cache gain)':42} {second.seconds / third.seconds:8.4f}")


if __name__ == "__main__":
    main()
