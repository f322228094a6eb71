"""pytest plugin (entry point ``pytest11``): a project's migration history tested against its test database.

Inert unless asked: with ``--migrate-guard`` (or ini ``migrate_guard = true``) it adds five tests, each
marked ``migrations``: single head, upgrade base -> heads, up/down consistency, model drift and
``check`` findings. The fixtures ``migration_db_url``, ``alembic_project`` and ``migration_database``
work either way, for a project's own migration tests.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

MARKER = "migrations"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("migrate-guard", "migration tests (migrate-guard)")
    group.addoption(
        "--migrate-guard",
        action="store_true",
        default=None,
        dest="migrate_guard",
        help="Add the migration tests: single head, upgrade, up/down consistency, model drift, check findings.",
    )
    group.addoption(
        "--migrate-guard-config",
        metavar="PATH",
        dest="migrate_guard_config",
        help="The project's alembic.ini (default: ini migrate_guard_config, else alembic.ini in the rootdir).",
    )
    group.addoption(
        "--migrate-guard-url",
        metavar="URL",
        dest="migrate_guard_url",
        help="Test database the migration tests empty and migrate (default: a temporary SQLite file).",
    )
    parser.addini("migrate_guard", "Add the migration tests (as --migrate-guard does).", type="bool", default=False)
    parser.addini(
        "migrate_guard_config", "alembic.ini of the project, relative to the ini file.", default="alembic.ini"
    )
    parser.addini("migrate_guard_url", "Test database URL for the migration tests; $VARS are expanded.", default="")
    parser.addini(
        "migrate_guard_metadata",
        "module:attribute of the models' MetaData (default: env.py's target_metadata).",
        default="",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}: a migration test; it gets an emptied migration database (migrate-guard)"
    )
    config.stash[_STATE] = _State(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is not None:
        state.cleanup()


class _State:
    """Settings resolved once per run, and the temporary directory of the default SQLite database."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._tmp: str | None = None

    @property
    def enabled(self) -> bool:
        flag = self.config.getoption("migrate_guard")
        return bool(flag) if flag is not None else bool(self.config.getini("migrate_guard"))

    @property
    def config_path(self) -> Path:
        given: str | None = self.config.getoption("migrate_guard_config")
        if given:
            return (self.config.invocation_params.dir / given).resolve()
        base = self.config.inipath.parent if self.config.inipath else self.config.rootpath
        name: str = self.config.getini("migrate_guard_config")
        return (base / name).resolve()

    @property
    def url(self) -> str:
        url: str = self.config.getoption("migrate_guard_url") or os.path.expandvars(
            self.config.getini("migrate_guard_url")
        )
        if url:
            return url
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="migrate-guard-")
        return f"sqlite:///{Path(self._tmp) / 'migrations.db'}"

    def project(self) -> Any:
        from migrate_guard.config import load_project
        from migrate_guard.errors import GuardError

        try:
            return load_project(self.config_path, self.url)
        except GuardError as exc:
            raise pytest.UsageError(f"migrate-guard: {exc.message}") from None

    def metadata(self, project: Any) -> Any:
        from migrate_guard.integrations.migration_tests import load_metadata

        spec = self.config.getini("migrate_guard_metadata").strip()
        return load_metadata(project, spec) if spec else None

    def cleanup(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


_STATE = pytest.StashKey[_State]()


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def migration_db_url(pytestconfig: pytest.Config) -> str:
    """URL of the database the migration tests use (--migrate-guard-url, ini migrate_guard_url, else
    temporary SQLite)."""
    return pytestconfig.stash[_STATE].url


@pytest.fixture(scope="session")
def alembic_project(pytestconfig: pytest.Config, migration_db_url: str) -> Any:
    """The Alembic project (a ``migrate_guard.config.Project``) with its URL set to ``migration_db_url``."""
    return pytestconfig.stash[_STATE].project()


@pytest.fixture
def migration_database(alembic_project: Any) -> Any:
    """A ``MigrationDatabase`` on an emptied test database: ``upgrade(rev)``, ``downgrade(rev)``, ``heads()``,
    ``schema()``, ``compare_models()``."""
    from migrate_guard.integrations.migration_tests import MigrationDatabase

    db = MigrationDatabase(alembic_project)
    db.reset()
    return db


@pytest.fixture(autouse=True)
def _migrate_guard_marked(request: pytest.FixtureRequest) -> None:
    # a test marked ``migrations`` starts from an empty migration database even without asking for it
    if request.node.get_closest_marker(MARKER) is not None and "migration_database" not in request.fixturenames:
        request.getfixturevalue("migration_database")


# --- the generated tests -------------------------------------------------------------------------


class MigrationTest(pytest.Item):
    def __init__(self, *, check: Callable[[_State], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._check = check
        self.add_marker(MARKER)

    def runtest(self) -> None:
        self._check(self.config.stash[_STATE])

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        from migrate_guard.errors import GuardError
        from migrate_guard.integrations.migration_tests import MigrationTestFailure

        if isinstance(excinfo.value, MigrationTestFailure):
            return str(excinfo.value)  # the message is the report: no traceback into the plugin
        if isinstance(excinfo.value, GuardError):
            return f"migrate-guard: {excinfo.value.message}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"migrate-guard: {self.name}"


def _database(state: _State) -> Any:
    from migrate_guard.integrations.migration_tests import MigrationDatabase

    return MigrationDatabase(state.project())


def _single_head(state: _State) -> None:
    from migrate_guard.integrations.migration_tests import single_head

    single_head(state.project())


def _upgrade(state: _State) -> None:
    from migrate_guard.integrations.migration_tests import upgrade_base_to_heads

    upgrade_base_to_heads(_database(state))


def _up_down(state: _State) -> None:
    from migrate_guard.integrations.migration_tests import up_down_consistency

    up_down_consistency(_database(state))


def _drift(state: _State) -> None:
    from migrate_guard.integrations.migration_tests import model_drift

    db = _database(state)
    model_drift(db, state.metadata(db.project))


def _findings(state: _State) -> None:
    from migrate_guard.integrations.migration_tests import check_findings

    check_findings(state.project())


TESTS: dict[str, Callable[[_State], None]] = {
    "test_single_head": _single_head,
    "test_check_findings": _findings,
    "test_upgrade_base_to_heads": _upgrade,
    "test_up_down_consistency": _up_down,
    "test_model_drift": _drift,
}


class MigrationTests(pytest.Collector):
    """The generated tests of one Alembic project, named after its config file."""

    def collect(self) -> Iterator[pytest.Item]:
        for name, check in TESTS.items():
            yield MigrationTest.from_parent(self, name=name, check=check)


@pytest.hookimpl(tryfirst=True)  # before -k / -m deselection, so those select among these too
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    state = config.stash[_STATE]
    if not state.enabled:
        return
    path = state.config_path
    if not path.is_file():
        raise pytest.UsageError(
            f"migrate-guard: {path} not found (set --migrate-guard-config or ini migrate_guard_config)"
        )
    try:
        nodeid = path.relative_to(config.rootpath).as_posix()
    except ValueError:
        nodeid = path.name
    collector = MigrationTests.from_parent(session, name=path.name, path=path, nodeid=nodeid)
    items.extend(collector.collect())
