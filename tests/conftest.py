"""Shared fixtures: throw-away Alembic projects, the bundled example, and real database servers.

PostgreSQL and MariaDB tests use a fresh database per test on the local servers. Where a server
does not answer they skip, saying how to enable them; with MIGRATE_GUARD_REQUIRE_DATABASES=1 (set
by .ci/run) they fail instead, so CI never skips them silently.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psycopg  # noqa: F401 - imported before any test: see below
import pymysql  # noqa: F401
import pytest
from click.testing import CliRunner

# The database drivers are imported once, here, before any test runs. A `pytester` test puts sys.modules
# back as it found it, dropping modules first imported during that test; psycopg imported again after
# that is a new module whose `psycopg.Error` is not the class its C extension (cached by the interpreter)
# raises, so `except psycopg.Error` missed a failed connection in whichever worker imported it there first.

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "alembic_example"

PG_URL = os.environ.get("MIGRATE_GUARD_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
MARIADB_URL = os.environ.get("MIGRATE_GUARD_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/mysql")
REQUIRE_DATABASES = bool(os.environ.get("MIGRATE_GUARD_REQUIRE_DATABASES"))

ENV_PY = """
from logging.config import fileConfig
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
target_metadata = None


def run_migrations_offline():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    connectable = engine_from_config(config.get_section(config.config_ini_section, {}),
                                     prefix="sqlalchemy.", poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
"""


class Project:
    """A throw-away Alembic project in a temporary directory."""

    def __init__(self, root: Path, url: str = "") -> None:
        self.root = root
        (root / "migrations" / "versions").mkdir(parents=True)
        (root / "migrations" / "env.py").write_text(ENV_PY)
        (root / "alembic.ini").write_text(
            f"[alembic]\nscript_location = %(here)s/migrations\npath_separator = os\nsqlalchemy.url = {url}\n"
        )
        self._last: str | None = None

    @property
    def ini(self) -> Path:
        return self.root / "alembic.ini"

    def revision(
        self, rev: str, upgrade: str, down: str | None | tuple[str, ...] = "__last__", header: str = ""
    ) -> Path:
        """Add a revision whose upgrade() body is ``upgrade``; chained after the previous one by default."""
        down_revision = self._last if down == "__last__" else down
        body = textwrap.indent(textwrap.dedent(upgrade).strip() or "pass", "    ")
        source = (
            f'"""revision {rev}"""\nfrom alembic import op\nimport sqlalchemy as sa\n{textwrap.dedent(header)}\n'
            f"revision = {rev!r}\ndown_revision = {down_revision!r}\nbranch_labels = None\ndepends_on = None\n\n\n"
            f"def upgrade():\n{body}\n\n\ndef downgrade():\n    pass\n"
        )
        path = self.root / "migrations" / "versions" / f"{rev}.py"
        path.write_text(source)
        self._last = rev
        return path

    def settings(self, toml: str) -> None:
        (self.root / "migrate-guard.toml").write_text(textwrap.dedent(toml))


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path / "proj")


def copy_example(dest: Path, *leave_out: str) -> Path:
    """Copy alembic_example/'s own files to ``dest``, never the state a Quickstart run leaves there (its
    database, the migration lock beside it, its backups) nor the names in ``leave_out``."""
    state = ("*.db", "*.db-*", "*.db.*", ".migrate-guard", "__pycache__")
    shutil.copytree(EXAMPLE, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*state, *leave_out))
    return dest


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A private copy of alembic_example/ (tests may add revisions or create its database)."""
    dest = copy_example(tmp_path / "alembic_example")
    yield dest
    sys.modules.pop("models", None)  # env.py imports the example's models by a bare name


@pytest.fixture
def run_cli():
    """Run the CLI in-process; returns the click Result (exit_code, stdout, stderr)."""
    from migrate_guard.cli import cli

    def run(*args: str, cwd: Path | None = None):
        runner = CliRunner()
        old = os.getcwd()
        if cwd:
            os.chdir(cwd)
        try:
            return runner.invoke(cli, list(args), prog_name="migrate-guard", catch_exceptions=False)
        finally:
            os.chdir(old)

    return run


# --- the example project, migrated and seeded -----------------------------------------------------

KEY = "q2bvXz1N4m0Jm9m5V7m4o0b6w1kS7x2cB8a3dE5fG0Q="  # 32 bytes, base64: MIGRATE_GUARD_KEY for test repositories


def migrate_example(example: Path, url: str, revision: str = "heads", customers: int | None = 20) -> None:
    """Upgrade the example project at ``url`` to ``revision`` and, unless ``customers`` is None, run its
    seed.py in this process (faster than a subprocess)."""
    import gc
    import importlib.util

    from alembic import command
    from alembic.config import Config

    cfg = Config(str(example / "alembic.ini"))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, revision)
    if customers is None:
        return
    sys.path.insert(0, str(example))
    try:
        spec = importlib.util.spec_from_file_location("mg_example_seed", example / "seed.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert module.main(["--url", url, "--customers", str(customers)]) == 0
    finally:
        sys.path.remove(str(example))
        sys.modules.pop("models", None)
        gc.collect()  # seed.py leaves its engine to be collected: close its pooled connection now


def add_backup_setting(settings: Path, line: str) -> None:
    """Add ``line`` (``key = value``) to the backup settings of a migrate-guard.toml, wherever the file keeps
    them: into its ``[backup]`` table, as a dotted ``backup.key`` before its first table (the example's
    paths are dotted keys, so that settings appended at the top level stay there), else a new table."""
    text = settings.read_text() if settings.exists() else ""
    lines = text.splitlines()
    if "[backup]" in lines:
        at = lines.index("[backup]") + 1
        lines[at:at] = [line]
    elif any(x.startswith("backup.") for x in lines):
        at = next((i for i, x in enumerate(lines) if x.startswith("[")), len(lines))
        lines[at:at] = [f"backup.{line}"]
    else:
        lines += ["", "[backup]", line]
    settings.write_text("\n".join(lines) + "\n")


def use_repository(example: Path, location: str | Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the example's backups at ``location``, encrypted with the test key."""
    add_backup_setting(example / "migrate-guard.toml", f'repository = "{location}"')
    monkeypatch.setenv("MIGRATE_GUARD_KEY", KEY)
    monkeypatch.delenv("MIGRATE_GUARD_PASSPHRASE", raising=False)


def error_line(result) -> str:
    """The one error line on stderr (progress lines, indented or not, may come before it), and no traceback."""
    assert "Traceback" not in result.output and "internal error" not in result.stderr, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("migrate-guard")]
    assert len(errors) == 1, result.stderr
    assert result.stderr.rstrip("\n").splitlines()[-1] == errors[0], result.stderr
    return errors[0]


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: two workers per core. Most of a test's time is spent waiting on a server, a
    subprocess or a lock, so one worker per core left half of each core idle (measured on 2 cores:
    497 s with 2 workers, 310 s with 4)."""
    return min(2 * (os.cpu_count() or 1), 16)


# --- real database servers ----------------------------------------------------------------------


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs a server, by its fixtures or parameters: ``-m "not postgresql and not
    mariadb"`` is then the fast suite."""
    for item in items:
        wanted = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        if callspec is not None:
            wanted |= {value for value in callspec.params.values() if isinstance(value, str)}
        for server in ("postgresql", "mariadb"):
            if server in wanted or f"{server}_url" in wanted:
                item.add_marker(server)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _require(host: str, port: int, name: str, how: str) -> None:
    if _answers(host, port):
        return
    message = f"{name} not answering on {host}:{port}; {how}, or run .ci/run"
    if REQUIRE_DATABASES:
        pytest.fail(message + " (MIGRATE_GUARD_REQUIRE_DATABASES is set, so this is a failure)")
    pytest.skip(message)


@pytest.fixture
def postgresql_url() -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database, dropped afterwards."""
    from migrate_guard.backup.service import scratch_database

    _require(
        "127.0.0.1",
        5432,
        "PostgreSQL",
        "start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
        "or set MIGRATE_GUARD_PG_URL",
    )
    with scratch_database("postgresql", PG_URL) as url:
        yield url


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    """URL of a fresh, empty MariaDB database, dropped afterwards."""
    from migrate_guard.backup.service import scratch_database

    _require(
        "127.0.0.1",
        3306,
        "MariaDB",
        "start it with `start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd` "
        "or set MIGRATE_GUARD_MARIADB_URL",
    )
    with scratch_database("mysql", MARIADB_URL) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'guarded.db'}"


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def db_url(request: pytest.FixtureRequest) -> str:
    """The same test against SQLite, PostgreSQL and MariaDB."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def other_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    """A second fresh, empty database of the same kind, on the same server."""
    from sqlalchemy.engine import make_url

    from migrate_guard.backup.service import scratch_database

    dialect = make_url(db_url).get_backend_name()
    if dialect == "sqlite":
        (tmp_path / "other.db").touch()  # an empty file is an empty SQLite database
        yield f"sqlite:///{tmp_path / 'other.db'}"
        return
    with scratch_database(dialect, db_url) as url:
        yield url


# --- looking at databases -------------------------------------------------------------------------


def execute(url: str, *statements: str) -> None:
    """Run SQL statements in one transaction."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def everything(url: str) -> dict[str, list[tuple]]:
    """Every row of every table: the whole observable content of a database."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            names = sa.inspect(conn).get_table_names()
            return {
                name: sorted(
                    (
                        tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                        for row in conn.execute(sa.text(f"SELECT * FROM {name}"))
                    ),
                    key=repr,
                )
                for name in sorted(names)
            }
    finally:
        engine.dispose()
