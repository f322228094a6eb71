"""Tests of a project's migration history against a real (test) database: one head, base -> heads,
every revision's downgrade undoing its upgrade, models matching what the migrations build, and
``check`` findings. The pytest plugin runs these; each failure is one readable message."""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import re
from collections.abc import Iterator
from typing import Any

import click

from .. import alembic_bridge as bridge
from ..config import Project
from ..errors import one_line

VERSION_TABLE = "alembic_version"


class MigrationTestFailure(AssertionError):
    """A migration test failed; the message says what and where, without a traceback."""


class MigrationDatabase:
    """The project's migrations run for real against the database at ``project.url``."""

    def __init__(self, project: Project) -> None:
        if not project.url:
            raise MigrationTestFailure("no database URL for the migration tests")
        self.project = project
        self.url = project.url

    def _engine(self) -> Any:
        import sqlalchemy as sa

        return sa.create_engine(self.url, poolclass=sa.pool.NullPool)

    def reset(self) -> None:
        """Empty the database: every table dropped (and, on PostgreSQL, every enum type)."""
        import sqlalchemy as sa

        engine = self._engine()
        try:
            with engine.begin() as conn:
                metadata = sa.MetaData()
                metadata.reflect(conn)
                metadata.drop_all(conn)
                if conn.dialect.name == "postgresql":
                    for enum in sa.inspect(conn).get_enums():
                        conn.exec_driver_sql(f'DROP TYPE IF EXISTS "{enum["name"]}" CASCADE')
        finally:
            engine.dispose()

    @contextlib.contextmanager
    def _alembic(self) -> Iterator[None]:
        # Alembic's own "Running upgrade" lines belong to Alembic's logging, not the test report
        with _logging_kept(), bridge.project_cwd(self.project), contextlib.redirect_stdout(io.StringIO()):
            yield

    def upgrade(self, revision: str = "heads") -> None:
        from alembic import command

        with self._alembic():
            command.upgrade(self.project.alembic, revision)

    def downgrade(self, revision: str) -> None:
        from alembic import command

        with self._alembic():
            command.downgrade(self.project.alembic, revision)

    def heads(self) -> tuple[str, ...]:
        from alembic.runtime.migration import MigrationContext

        engine = self._engine()
        try:
            with engine.connect() as conn:
                return tuple(sorted(MigrationContext.configure(conn).get_current_heads()))
        finally:
            engine.dispose()

    def schema(self) -> dict[str, dict[str, Any]]:
        """What reflection sees of every table but Alembic's version table, comparable with ``==``."""
        import sqlalchemy as sa

        engine = self._engine()
        try:
            with engine.connect() as conn:
                insp = sa.inspect(conn)
                return {
                    name: _table_shape(insp, name) for name in sorted(insp.get_table_names()) if name != VERSION_TABLE
                }
        finally:
            engine.dispose()

    def compare_models(self, metadata: Any = None) -> list[Any]:
        """Alembic's autogenerate comparison of ``metadata`` (default: env.py's ``target_metadata``)
        with the database, through the project's env.py so its include_object / compare_type apply."""
        from alembic.autogenerate import compare_metadata
        from alembic.runtime.environment import EnvironmentContext

        script = bridge.open_scripts(self.project)
        found: dict[str, Any] = {}

        def compare(_rev: Any, context: Any) -> list[Any]:
            target = metadata if metadata is not None else context.opts.get("target_metadata")
            found["diffs"] = None if target is None else compare_metadata(context, target)
            return []

        with self._alembic(), EnvironmentContext(self.project.alembic, script, fn=compare, as_sql=False):
            script.run_env()
        if found.get("diffs") is None:
            raise MigrationTestFailure(
                "env.py sets no target_metadata to compare the models with; "
                "set migrate_guard_metadata = module:attribute (e.g. myapp.models:Base.metadata)"
            )
        diffs: list[Any] = found["diffs"]
        return diffs


@contextlib.contextmanager
def _logging_kept() -> Iterator[None]:
    """Undo what env.py's ``fileConfig`` does to logging, which would otherwise disable the test
    suite's own loggers and handlers for every test after this one."""
    manager = logging.root.manager
    loggers = [logging.root, *(lg for lg in manager.loggerDict.values() if isinstance(lg, logging.Logger))]
    saved = [(lg, lg.level, list(lg.handlers), lg.disabled, lg.propagate) for lg in loggers]
    disable = manager.disable
    try:
        yield
    finally:
        for lg, level, handlers, disabled, propagate in saved:
            lg.setLevel(level)
            lg.handlers[:] = handlers
            lg.disabled, lg.propagate = disabled, propagate
        known = {id(lg) for lg in loggers}
        for other in manager.loggerDict.values():
            if isinstance(other, logging.Logger) and id(other) not in known:
                other.handlers.clear()  # created by the ini: leave it inert
        logging.disable(disable)


def _table_shape(insp: Any, name: str) -> dict[str, Any]:
    columns = {
        c["name"]: (str(c["type"]).lower(), bool(c["nullable"]), _normal_default(c.get("default")))
        for c in insp.get_columns(name)
    }
    return {
        "columns": columns,
        "primary key": tuple(insp.get_pk_constraint(name).get("constrained_columns") or ()),
        "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in insp.get_indexes(name)),
        "unique constraints": sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(name)),
        "foreign keys": sorted(
            (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
            for f in insp.get_foreign_keys(name)
        ),
    }


def _normal_default(default: Any) -> str | None:
    if default is None:
        return None
    return " ".join(str(default).split()).strip("()").lower()  # SQLite keeps the DDL's spelling and parentheses


def load_metadata(project: Project, spec: str) -> Any:
    """``module:attr.attr`` imported with the project directory on sys.path."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise MigrationTestFailure(
            f"migrate_guard_metadata = {spec!r}: expected module:attribute, e.g. models:Base.metadata"
        )
    with bridge.project_cwd(project):
        try:
            value: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                value = getattr(value, part)
        except Exception as exc:  # noqa: BLE001 - importing the user's module may raise anything
            raise MigrationTestFailure(f"migrate_guard_metadata = {spec!r}: {one_line(exc)}") from None
    return value


# --- the tests ----------------------------------------------------------------------------------


def single_head(project: Project) -> None:
    script = bridge.open_scripts(project)
    heads = script.get_heads()
    if len(heads) > 1:
        raise MigrationTestFailure(
            f"{len(heads)} heads: {', '.join(sorted(heads))}; join them with `alembic merge heads` before release"
        )


def _revisions(project: Project) -> list[str]:
    return [s.revision for s in bridge.all_in_order(bridge.open_scripts(project))]


def upgrade_base_to_heads(db: MigrationDatabase) -> None:
    """From an empty database up to heads, one revision at a time so a failure names its revision."""
    db.reset()
    for revision in _revisions(db.project):
        try:
            db.upgrade(revision)
        except Exception as exc:  # noqa: BLE001 - a revision's code may raise anything: the test fails
            raise MigrationTestFailure(f"upgrade to {revision} failed: {one_line(exc)}") from None


IRREVERSIBLE = re.compile(r"^\s*#\s*migrate-guard:\s*irreversible\b", re.MULTILINE)


def irreversible(script: Any) -> bool:
    """A revision whose file says ``# migrate-guard: irreversible -- why``: its downgrade is not tested."""
    try:
        with open(script.path, encoding="utf-8") as fh:
            return bool(IRREVERSIBLE.search(fh.read()))
    except OSError:
        return False


def up_down_consistency(db: MigrationDatabase) -> None:
    """For each revision: upgrade to it, downgrade one step, upgrade again; the schema must match each time.
    A revision marked irreversible is only upgraded."""
    db.reset()
    for script in bridge.all_in_order(bridge.open_scripts(db.project)):
        revision, parents = script.revision, script.down_revision
        if irreversible(script):
            try:
                db.upgrade(revision)
            except Exception as exc:  # noqa: BLE001 - a revision's code may raise anything: the test fails
                raise MigrationTestFailure(f"{revision}: upgrade failed: {one_line(exc)}") from None
            continue
        # "rev@-1" undoes this revision only, whatever other branches hold; Alembic calls that ambiguous
        # at a merge point, where downgrading to one parent undoes the merge (and nothing of the other parent)
        below = parents[0] if isinstance(parents, (tuple, list)) and len(parents) > 1 else f"{revision}@-1"
        before = db.schema()
        step = "upgrade"
        try:
            db.upgrade(revision)
            after = db.schema()
            step = "downgrade"
            db.downgrade(below)
            _same(before, db.schema(), f"downgrade of {revision} does not undo its upgrade")
            step = "upgrade again"
            db.upgrade(revision)
            _same(after, db.schema(), f"upgrade to {revision} after its downgrade builds a different schema")
        except MigrationTestFailure:
            raise
        except Exception as exc:  # noqa: BLE001 - a revision's code may raise anything: the test fails
            raise MigrationTestFailure(f"{revision}: {step} failed: {one_line(exc)}") from None


def _same(expected: dict[str, Any], actual: dict[str, Any], title: str) -> None:
    if expected == actual:
        return
    lines = [title + ":"]
    for table in sorted(set(expected) | set(actual)):
        if table not in actual:
            lines.append(f"  table {table} is missing")
        elif table not in expected:
            lines.append(f"  table {table} is left over")
        else:
            for part in expected[table]:
                want, got = expected[table][part], actual[table][part]
                if part == "columns":
                    for column in sorted(set(want) | set(got)):
                        if column not in got:
                            lines.append(f"  column {table}.{column} is missing")
                        elif column not in want:
                            lines.append(f"  column {table}.{column} is left over")
                        elif want[column] != got[column]:
                            lines.append(f"  column {table}.{column}: expected {want[column]}, found {got[column]}")
                elif want != got:
                    lines.append(f"  {table} {part}: expected {want}, found {got}")
    raise MigrationTestFailure("\n".join(lines))


def model_drift(db: MigrationDatabase, metadata: Any = None) -> None:
    """Upgrade an empty database to heads; the models must then match it (Alembic's compare)."""
    db.reset()
    try:
        db.upgrade("heads")
    except Exception as exc:  # noqa: BLE001 - a revision's code may raise anything: the test fails
        raise MigrationTestFailure(f"upgrade to heads failed: {one_line(exc)}") from None
    diffs = db.compare_models(metadata)
    if diffs:
        described = "\n".join(f"  {describe_diff(d)}" for d in diffs)
        raise MigrationTestFailure(
            f"the models and the migrations disagree ({len(diffs)} difference{'s' if len(diffs) != 1 else ''}); "
            f"write a migration (alembic revision --autogenerate) or fix the models:\n{described}"
        )


def describe_diff(diff: Any) -> str:
    """One line for one entry of ``compare_metadata``'s result."""
    if isinstance(diff, list):  # modify_* entries of one column come grouped
        return "; ".join(describe_diff(d) for d in diff)
    kind = diff[0]
    in_models, in_migrations = (
        "is in the models but no migration creates it",
        "is created by the migrations but not in the models",
    )
    if kind in ("add_table", "remove_table"):
        return f"table {diff[1].name} {in_models if kind == 'add_table' else in_migrations}"
    if kind in ("add_column", "remove_column"):
        return f"column {diff[2]}.{diff[3].name} {in_models if kind == 'add_column' else in_migrations}"
    if kind in ("add_index", "remove_index", "add_constraint", "remove_constraint", "add_fk", "remove_fk"):
        obj = diff[1]
        what = {"index": "index", "constraint": "constraint", "fk": "foreign key"}[kind.split("_", 1)[1]]
        table = getattr(getattr(obj, "table", None), "name", None) or getattr(obj, "parent", None)
        where = f" on {table}" if table is not None else ""
        return f"{what} {obj.name or '(unnamed)'}{where} {in_models if kind.startswith('add') else in_migrations}"
    if kind.startswith("modify_") and len(diff) >= 7:
        _, _schema, table, column, _existing, migrated, modelled = diff[:7]
        return f"column {table}.{column} {kind[7:]}: the migrations give {migrated!r}, the models say {modelled!r}"
    return repr(diff)


def check_findings(project: Project) -> None:
    """``check --range base:heads``: findings at or above fail_on fail the test, reported as ``check`` prints them."""
    from ..analysis.check import CheckOptions, run_check
    from ..analysis.report import render

    with _logging_kept():  # check renders the revisions through env.py too
        report = run_check(project, CheckOptions(range="base:heads"))
    if report.exit_code:
        raise MigrationTestFailure(click.unstyle(render(report, "text", config_path=project.config_path)))
