"""Server versions (settings and ``check --server-version``) and a lock_timeout set outside the
revisions (env.py, the settings), end to end through ``check``: one test per version boundary."""

from __future__ import annotations

import json

import pytest
from conftest import ENV_PY

from migrate_guard.config import GuardSettings, with_server_version
from migrate_guard.errors import UsageError


def _findings(run_cli, project, dialect: str, body: str, *extra: str) -> list[dict]:
    project.revision("r1", body, down=None)
    result = run_cli(
        "-c", str(project.ini), "check", "--dialect", dialect, "--range", "base:heads", "--format", "json", *extra
    )
    assert result.exit_code in (0, 3), result.output
    return json.loads(result.stdout)["findings"]


def _rules(found: list[dict], rule: str) -> list[tuple]:
    return [(f["table"], f["column"]) for f in found if f["rule"] == rule]


CONSTANT_DEFAULT = 'op.add_column("orders", sa.Column("n", sa.Integer(), nullable=False, server_default="0"))'


@pytest.mark.parametrize(("version", "rewrites"), [("10", True), ("10.23", True), ("11", False), (None, False)])
def test_constant_default_rewrites_before_postgresql_11(run_cli, project, version, rewrites) -> None:
    extra = ("--server-version", version) if version else ()
    found = _findings(run_cli, project, "postgresql", CONSTANT_DEFAULT, *extra)
    assert _rules(found, "add-column-rewrites-table") == ([("orders", "n")] if rewrites else [])
    if rewrites:
        assert "older than 11" in next(f["message"] for f in found if f["rule"] == "add-column-rewrites-table")


def test_version_from_the_settings_and_the_option_for_one_dialect(run_cli, project) -> None:
    project.settings('postgresql_version = "10"\n')
    assert _rules(_findings(run_cli, project, "postgresql", CONSTANT_DEFAULT), "add-column-rewrites-table")
    # the option wins over the settings; a version for another dialect changes nothing here
    found = _findings(run_cli, project, "postgresql", CONSTANT_DEFAULT, "--server-version", "postgresql=16")
    assert not _rules(found, "add-column-rewrites-table")
    found = _findings(run_cli, project, "postgresql", CONSTANT_DEFAULT, "--server-version", "mariadb=10.2")
    assert _rules(found, "add-column-rewrites-table")


@pytest.mark.parametrize(
    ("rule", "sql", "boundary"),
    [
        ("reindex-non-concurrently", "REINDEX INDEX ix_orders_code", ("11", "12")),
        ("detach-partition-non-concurrently", "ALTER TABLE events DETACH PARTITION events_2019", ("13", "14")),
    ],
)
def test_advice_without_concurrently_before_it_exists(run_cli, project, rule, sql, boundary) -> None:
    before, since = boundary
    old = [f for f in _findings(run_cli, project, "postgresql", f'op.execute("{sql}")', "--server-version", before)]
    new = [f for f in _findings(run_cli, project, "postgresql", f'op.execute("{sql}")', "--server-version", since)]
    (old_finding,) = [f for f in old if f["rule"] == rule]
    (new_finding,) = [f for f in new if f["rule"] == rule]
    assert f"older than {since}" in old_finding["suggestion"] and "has no" in old_finding["suggestion"]
    assert "older than" not in new_finding["suggestion"]


def test_enum_add_value_before_postgresql_12_cannot_run_in_a_transaction(run_cli, project) -> None:
    body = "op.execute(\"ALTER TYPE status ADD VALUE 'refunded'\")"
    (old,) = [f for f in _findings(run_cli, project, "postgresql", body, "--server-version", "11")]
    (new,) = [f for f in _findings(run_cli, project, "postgresql", body, "--server-version", "12")]
    assert "cannot run ADD VALUE in a transaction block at all" in old["message"]
    assert "at all" not in new["message"] and "acknowledge" in new["suggestion"]
    assert "acknowledge" not in old["suggestion"]


ADD_LAST = 'op.add_column("orders", sa.Column("note", sa.Text(), nullable=True))'
ADD_AFTER = 'op.execute("ALTER TABLE orders ADD COLUMN note TEXT AFTER id")'


@pytest.mark.parametrize(
    ("dialect", "version", "body", "rebuilds"),
    [
        ("mariadb", "10.2", ADD_LAST, True),
        ("mariadb", "10.3", ADD_LAST, False),
        ("mariadb", "10.3", ADD_AFTER, True),
        ("mariadb", "10.4", ADD_AFTER, False),
        ("mysql", "8.0.11", ADD_LAST, True),
        ("mysql", "8.0.12", ADD_LAST, False),
        ("mysql", "8.0.28", ADD_AFTER, True),
        ("mysql", "8.0.29", ADD_AFTER, False),
        ("mysql", None, ADD_AFTER, False),  # no version: a current server
    ],
)
def test_instant_add_column_by_version(run_cli, project, dialect, version, body, rebuilds) -> None:
    extra = ("--server-version", version) if version else ()
    found = _findings(run_cli, project, dialect, body, *extra)
    assert _rules(found, "alter-rebuilds-table") == ([("orders", "note")] if rebuilds else [])


def test_mysql_url_with_only_a_mariadb_version_is_mariadb(run_cli, project) -> None:
    project.settings('mariadb_version = "10.2"\n')
    assert _rules(_findings(run_cli, project, "mysql", ADD_LAST), "alter-rebuilds-table") == [("orders", "note")]
    project.settings('mariadb_version = "10.2"\nmysql_version = "8.0.36"\n')
    assert _rules(_findings(run_cli, project, "mysql", ADD_LAST), "alter-rebuilds-table") == []


def test_server_version_option_and_settings_are_checked(run_cli, project) -> None:
    assert with_server_version(GuardSettings(), "mariadb=10.2").version_of("mariadb") == (10, 2)
    assert with_server_version(GuardSettings(), "11").version_of("postgresql") == (11,)
    for bad in ("eleven", "postgres=11", "11.x", "=", "oracle=19"):
        with pytest.raises(UsageError):
            with_server_version(GuardSettings(), bad)
    project.revision("r1", "pass", down=None)
    result = run_cli("-c", str(project.ini), "check", "--server-version", "pg=11")
    assert result.exit_code == 2 and "--server-version" in result.output
    project.settings('postgresql_version = "latest"\n')
    result = run_cli("-c", str(project.ini), "check")
    assert result.exit_code == 2 and "postgresql_version" in result.output


# --- lock_timeout set outside the revisions ---------------------------------------------------------

STRONG_LOCK = 'op.alter_column("orders", "code", existing_type=sa.String(20), nullable=False)'
ONLINE = "        context.configure(connection=connection, target_metadata=target_metadata)\n"


@pytest.mark.parametrize(
    ("env_line", "satisfied"),
    [
        ("        connection.execute(sa.text(\"SET lock_timeout = '5s'\"))\n", True),
        ("        context.execute(\"SET LOCAL lock_timeout TO '3s'\")\n", True),
        ("        connect_args = {'options': '-c lock_timeout=5s'}\n", True),
        ("        connection.execute(sa.text(\"SELECT set_config('lock_timeout', '5s', false)\"))\n", True),
        ('        connection.execute(sa.text("SET lock_timeout = 0"))\n', False),  # no limit
        ("        # connection.execute(sa.text(\"SET lock_timeout = '5s'\"))\n", False),  # a comment
        ("        connection.execute(sa.text(\"SET statement_timeout = '5s'\"))\n", False),
    ],
)
def test_lock_timeout_set_in_env_py_online(run_cli, project, env_line, satisfied) -> None:
    env = "import sqlalchemy as sa\n" + ENV_PY.replace(ONLINE, ONLINE + env_line)
    assert env_line in env
    (project.root / "migrations" / "env.py").write_text(env)
    found = _findings(run_cli, project, "postgresql", STRONG_LOCK)
    assert _rules(found, "lock-timeout-missing") == ([] if satisfied else [("orders", "code")])


def test_lock_timeout_declared_in_the_settings(run_cli, project) -> None:
    assert _rules(_findings(run_cli, project, "postgresql", STRONG_LOCK), "lock-timeout-missing")
    project.settings('lock_timeout = "5s"\n')
    assert not _rules(_findings(run_cli, project, "postgresql", STRONG_LOCK), "lock-timeout-missing")
    project.settings('lock_timeout = "0"\n')  # no limit: as good as none
    assert _rules(_findings(run_cli, project, "postgresql", STRONG_LOCK), "lock-timeout-missing")


TO_TIMESTAMPTZ = 'op.alter_column("events", "at", existing_type=sa.DateTime(), type_=sa.DateTime(timezone=True))'


@pytest.mark.parametrize(
    ("before", "version", "rewrites"),
    [
        ("op.execute(\"SET LOCAL TIME ZONE 'UTC'\")", None, False),
        ("op.execute(\"SET timezone TO 'Etc/UTC'\")", "12", False),
        ("op.execute(\"SET LOCAL TIME ZONE 'UTC'\")", "11", True),  # older servers rewrite whatever the zone
        ("op.execute(\"SET LOCAL TIME ZONE 'Europe/Berlin'\")", None, True),
        ("op.execute(\"SET LOCAL TIME ZONE 'UTC'\")\nop.execute('COMMIT')\nop.execute('BEGIN')", None, True),
        ("", None, True),  # the session's zone is not known
    ],
)
def test_timestamp_to_timestamptz_is_in_place_only_under_utc(run_cli, project, before, version, rewrites) -> None:
    extra = ("--server-version", version) if version else ()
    found = _findings(run_cli, project, "postgresql", f"{before}\n{TO_TIMESTAMPTZ}", *extra)
    assert _rules(found, "alter-column-type") == ([("events", "at")] if rewrites else [])
