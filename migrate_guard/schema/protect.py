"""Protection of protected tables inside the database, for hands that do not go through migrate-safe.

* **PostgreSQL**: event triggers refuse ``DROP TABLE`` (and ``DROP SCHEMA ... CASCADE``, ``DROP OWNED``)
  of a protected table, dropping one of its columns, and any ``ALTER TABLE`` that changes or renames
  an existing column (type, NOT NULL) or renames the table; a ``BEFORE TRUNCATE`` trigger on each
  protected table (added to protected tables created later, too) refuses ``TRUNCATE``. A session that
  set ``migrate_guard.reviewed = on`` passes: migrate-safe sets it after its review passed.
* **MariaDB/MySQL** and **SQLite** cannot trap DDL. A ``BEFORE DELETE`` trigger per protected table
  refuses a DELETE that would remove its last row (so ``DELETE FROM t`` without WHERE fails as a
  whole); migrate-safe's connections pass (MariaDB ``@migrate_guard_reviewed = 1``; SQLite: a
  connection that attached a database named ``migrate_guard_reviewed``). DROP, TRUNCATE (MariaDB) and
  ALTER stay unprotected there: take those privileges from the application's user.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ..config import GuardSettings, dialect_family
from ..errors import GuardError, one_line
from . import sqlutil as q

GUC = "migrate_guard.reviewed"
_PG_HINT = f"run it through a reviewed migration with migrate-safe (or SET {GUC} = on after review)"
PG_SCHEMA = "migrate_guard"  # the protection's functions on PostgreSQL
MYSQL_VARIABLE = "@migrate_guard_reviewed"
SQLITE_MARKER = "migrate_guard_reviewed"  # the name of an attached in-memory database
TRUNCATE_TRIGGER = "migrate_guard_no_truncate"
KEEP_PREFIX = "migrate_guard_keep_"
EVENT_TRIGGERS = (
    "migrate_guard_drop",
    "migrate_guard_before_alter",
    "migrate_guard_after_alter",
    "migrate_guard_on_create",
)


class ProtectError(GuardError):
    """Protection could not be installed (permissions, an unsupported database)."""


@dataclass
class Status:
    dialect: str
    installed: bool
    protected: list[str] = field(default_factory=list)  # protected tables that exist
    covered: list[str] = field(default_factory=list)  # of those, the ones with their table trigger
    patterns: list[str] | None = None  # the patterns the database was installed with (PostgreSQL)
    problems: list[str] = field(default_factory=list)
    guards: list[str] = field(default_factory=list)  # what is in place

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def text_lines(self) -> list[str]:
        lines = [f"protection ({self.dialect}): {'installed' if self.installed else 'not installed'}"]
        lines += [f"  {g}" for g in self.guards]
        lines.append(f"  protected tables: {', '.join(self.protected) or 'none exist'}")
        lines += [f"  problem: {p}" for p in self.problems]
        lines.append(f"  unprotected here: {UNPROTECTED[self.dialect]}")
        return lines


UNPROTECTED = {
    "postgresql": (
        "DELETE without WHERE, and any session that sets migrate_guard.reviewed = on itself "
        "(superusers can also drop the event triggers)"
    ),
    "mysql": (
        "DROP TABLE, TRUNCATE, ALTER TABLE (DDL cannot be trapped): revoke DROP and ALTER from the application's user"
    ),
    "sqlite": "DROP TABLE, ALTER TABLE (DDL cannot be trapped), and anyone who can write the file",
}


# --- the bypass migrate-safe uses ---------------------------------------------------------------------


def session_statements(dialect: str) -> list[str]:
    """Statements that mark a connection as reviewed (run on every connection migrate-safe's run opens)."""
    family = dialect_family(dialect)
    if family == "mysql":
        return [f"SET {MYSQL_VARIABLE} = 1"]
    if family == "sqlite":
        return [f"ATTACH DATABASE ':memory:' AS {SQLITE_MARKER}"]
    if family == "postgresql":  # PGOPTIONS covers libpq drivers and tools; this covers the others
        return [f"SET {GUC} = 'on'"]
    return []


@contextlib.contextmanager
def reviewed_environment(dialect: str) -> Iterator[None]:
    """PostgreSQL: every libpq connection this process opens meanwhile (its own, env.py's, pg_restore's)
    starts with ``migrate_guard.reviewed = on``, through ``PGOPTIONS``."""
    if dialect_family(dialect) != "postgresql":
        yield
        return
    before = os.environ.get("PGOPTIONS")
    os.environ["PGOPTIONS"] = f"{before or ''} -c {GUC}=on".strip()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PGOPTIONS", None)
        else:
            os.environ["PGOPTIONS"] = before


# --- PostgreSQL ------------------------------------------------------------------------------------------


def _glob_regex(pattern: str) -> str:
    """A glob (``*``, ``?``, ``[...]``) as an anchored POSIX regular expression."""
    out, i = ["^"], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end
        else:
            out.append(re.sub(r"([.^$|()\[\]{}*+?\\])", r"\\\1", ch))
        i += 1
    return "".join(out) + "$"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _pg_is_protected_sql(patterns: tuple[str, ...]) -> str:
    tests = [
        f"lower(nsp || '.' || rel) ~ {_literal(_glob_regex(p))}"
        if "." in p
        else f"lower(rel) ~ {_literal(_glob_regex(p))}"
        for p in patterns
    ]
    return " OR ".join(tests) or "false"


def _pg_install_sql(settings: GuardSettings) -> list[str]:
    patterns = settings.protected_tables
    return [
        "CREATE SCHEMA IF NOT EXISTS migrate_guard",
        f"COMMENT ON SCHEMA migrate_guard IS {_literal(json.dumps({'protected_tables': list(patterns)}))}",
        f"""CREATE OR REPLACE FUNCTION migrate_guard.is_protected(nsp text, rel text) RETURNS boolean
            LANGUAGE sql IMMUTABLE AS $mg$ SELECT nsp NOT LIKE 'pg\\_%' AND nsp <> 'information_schema'
            AND ({_pg_is_protected_sql(patterns)}) $mg$""",
        f"""CREATE OR REPLACE FUNCTION migrate_guard.reviewed() RETURNS boolean LANGUAGE sql STABLE AS
            $mg$ SELECT coalesce(current_setting('{GUC}', true), '') = 'on' $mg$""",
        """CREATE OR REPLACE FUNCTION migrate_guard.columns() RETURNS SETOF text LANGUAGE sql STABLE AS $mg$
            SELECT format('%I.%I.%I %s%s', n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
                          CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid
            WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped"""
        """ AND migrate_guard.is_protected(n.nspname, c.relname)
            $mg$""",
        f"""CREATE OR REPLACE FUNCTION migrate_guard.on_sql_drop() RETURNS event_trigger LANGUAGE plpgsql AS $mg$
            DECLARE obj record;
            BEGIN
              IF migrate_guard.reviewed() THEN RETURN; END IF;
              FOR obj IN SELECT * FROM pg_event_trigger_dropped_objects() WHERE NOT is_temporary LOOP
                IF obj.object_type = 'table' AND migrate_guard.is_protected(obj.schema_name, obj.object_name) THEN
                  RAISE EXCEPTION 'migrate-guard: % refused: table %.% is protected',"""
        f""" tg_tag, obj.schema_name, obj.object_name
                    USING ERRCODE = 'insufficient_privilege',
                          HINT = '{_PG_HINT}';
                ELSIF obj.object_type = 'table column'"""
        f""" AND migrate_guard.is_protected(obj.address_names[1], obj.address_names[2]) THEN
                  RAISE EXCEPTION 'migrate-guard: % refused: it drops column % of protected table %.%', tg_tag,
                    obj.address_names[3], obj.address_names[1], obj.address_names[2]
                    USING ERRCODE = 'insufficient_privilege',
                          HINT = '{_PG_HINT}';
                END IF;
              END LOOP;
            END $mg$""",
        """CREATE OR REPLACE FUNCTION migrate_guard.before_alter() RETURNS event_trigger LANGUAGE plpgsql AS $mg$
            BEGIN
              PERFORM set_config('migrate_guard.columns_before',
                                 coalesce((SELECT string_agg(s, E'\\n') FROM migrate_guard.columns() s), ''), true);
            END $mg$""",
        f"""CREATE OR REPLACE FUNCTION migrate_guard.after_alter() RETURNS event_trigger LANGUAGE plpgsql AS $mg$
            DECLARE gone text;
            BEGIN
              IF migrate_guard.reviewed() THEN RETURN; END IF;
              SELECT b INTO gone"""
        f""" FROM unnest(string_to_array(current_setting('migrate_guard.columns_before', true), E'\\n')) b
                WHERE b <> '' AND b NOT IN (SELECT s FROM migrate_guard.columns() s) LIMIT 1;
              IF gone IS NOT NULL THEN
                RAISE EXCEPTION 'migrate-guard: % refused: it changes or renames % of a protected table', tg_tag, gone
                  USING ERRCODE = 'insufficient_privilege',
                        HINT = '{_PG_HINT}';
              END IF;
            END $mg$""",
        f"""CREATE OR REPLACE FUNCTION migrate_guard.refuse_truncate() RETURNS trigger LANGUAGE plpgsql AS $mg$
            BEGIN
              IF NOT migrate_guard.reviewed() THEN
                RAISE EXCEPTION 'migrate-guard: TRUNCATE refused: table %.% is protected',"""
        f""" TG_TABLE_SCHEMA, TG_TABLE_NAME
                  USING ERRCODE = 'insufficient_privilege',
                        HINT = '{_PG_HINT}';
              END IF;
              RETURN NULL;
            END $mg$""",
        f"""CREATE OR REPLACE FUNCTION migrate_guard.on_create() RETURNS event_trigger LANGUAGE plpgsql AS $mg$
            DECLARE cmd record;
            BEGIN
              FOR cmd IN SELECT * FROM pg_event_trigger_ddl_commands() WHERE object_type = 'table' LOOP
                IF migrate_guard.is_protected(cmd.schema_name, (SELECT relname FROM pg_class WHERE oid = cmd.objid))
                   AND NOT EXISTS (SELECT 1 FROM pg_trigger"""
        f""" WHERE tgrelid = cmd.objid AND tgname = '{TRUNCATE_TRIGGER}') THEN
                  EXECUTE format('CREATE TRIGGER {TRUNCATE_TRIGGER} BEFORE TRUNCATE ON %s FOR EACH STATEMENT '
                                 'EXECUTE FUNCTION migrate_guard.refuse_truncate()', cmd.object_identity);
                END IF;
              END LOOP;
            END $mg$""",
        *[f"DROP EVENT TRIGGER IF EXISTS {name}" for name in EVENT_TRIGGERS],
        "CREATE EVENT TRIGGER migrate_guard_drop ON sql_drop EXECUTE FUNCTION migrate_guard.on_sql_drop()",
        "CREATE EVENT TRIGGER migrate_guard_before_alter ON ddl_command_start WHEN TAG IN ('ALTER TABLE') "
        "EXECUTE FUNCTION migrate_guard.before_alter()",
        "CREATE EVENT TRIGGER migrate_guard_after_alter ON ddl_command_end WHEN TAG IN ('ALTER TABLE') "
        "EXECUTE FUNCTION migrate_guard.after_alter()",
        "CREATE EVENT TRIGGER migrate_guard_on_create ON ddl_command_end "
        "WHEN TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO') "
        "EXECUTE FUNCTION migrate_guard.on_create()",
    ]


_PG_TABLES = (
    "SELECT n.nspname, c.relname, EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = :trigger) "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') "
    "AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' ORDER BY 1, 2"
)


def _pg_tables(conn: sa.Connection, settings: GuardSettings) -> list[tuple[str, str, bool, bool]]:
    """(schema, table, protected, has the truncate trigger) for every table."""
    return [
        (s, t, settings.is_protected(t, s), bool(has))
        for s, t, has in conn.execute(sa.text(_PG_TABLES), {"trigger": TRUNCATE_TRIGGER})
    ]


def _pg_install(conn: sa.Connection, settings: GuardSettings) -> list[str]:
    for statement in _pg_install_sql(settings):
        q.run(conn, statement)
    done = []
    for schema, table, protected, has in _pg_tables(conn, settings):
        target = f"{q.quote(conn, schema)}.{q.quote(conn, table)}"
        if protected and not has:
            q.run(
                conn,
                f"CREATE TRIGGER {TRUNCATE_TRIGGER} BEFORE TRUNCATE ON {target} FOR EACH STATEMENT "
                "EXECUTE FUNCTION migrate_guard.refuse_truncate()",
            )
        elif has and not protected:  # no longer protected by the settings
            q.run(conn, f"DROP TRIGGER {TRUNCATE_TRIGGER} ON {target}")
        if protected:
            done.append(table if schema == "public" else f"{schema}.{table}")
    return done


def _pg_uninstall(conn: sa.Connection) -> None:
    for name in EVENT_TRIGGERS:
        q.run(conn, f"DROP EVENT TRIGGER IF EXISTS {name}")
    q.run(conn, "DROP SCHEMA IF EXISTS migrate_guard CASCADE")  # the functions and the truncate triggers on them


def _pg_status(conn: sa.Connection, settings: GuardSettings) -> Status:
    status = Status("postgresql", False)
    events = {
        name: enabled
        for name, enabled in conn.execute(
            sa.text("SELECT evtname, evtenabled FROM pg_event_trigger WHERE evtname LIKE 'migrate\\_guard\\_%'")
        ).all()
    }
    comment = conn.execute(
        sa.text("SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = 'migrate_guard'")
    ).scalar()
    status.installed = bool(events)
    for name in EVENT_TRIGGERS:
        if name not in events:
            if events:
                status.problems.append(f"event trigger {name} is missing: run `protect install` again")
        elif events[name] == "D":
            status.problems.append(f"event trigger {name} is disabled")
    if events:
        status.guards.append(
            f"event triggers: {', '.join(sorted(events))} (DROP TABLE, DROP/ALTER COLUMN, table rename)"
        )
    if comment:
        status.patterns = json.loads(comment).get("protected_tables")
        if status.patterns != list(settings.protected_tables):
            status.problems.append(
                f"installed for {status.patterns}, the settings say {list(settings.protected_tables)}: "
                "run `protect install` again"
            )
    for schema, table, protected, has in _pg_tables(conn, settings):
        name = table if schema == "public" else f"{schema}.{table}"
        if protected:
            status.protected.append(name)
            if has:
                status.covered.append(name)
            elif status.installed:
                status.problems.append(f"{name} has no TRUNCATE guard: run `protect install` again")
    if status.covered:
        status.guards.append(f"BEFORE TRUNCATE triggers on {', '.join(status.covered)}")
    return status


# --- MariaDB/MySQL and SQLite: refuse deleting the last row ----------------------------------------------------


def _keep_name(table: str) -> str:
    return (KEEP_PREFIX + table)[:64]


def _local_tables(conn: sa.Connection, settings: GuardSettings) -> list[str]:
    return [t for t in sorted(sa.inspect(conn).get_table_names()) if settings.is_protected(t)]


def _keep_trigger(conn: sa.Connection, table: str) -> str:
    """CREATE TRIGGER refusing a DELETE that removes the table's last row, unless the session is reviewed."""
    family = q.family(conn)
    target = q.quote(conn, table)
    pk = q.primary_key(conn, table)
    if family == "sqlite":
        ddl = (
            conn.execute(
                sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :t"), {"t": table}
            ).scalar()
            or ""
        )
        key = None if "WITHOUT ROWID" in ddl.upper() else "rowid"
    else:
        key = q.quote(conn, pk[0]) if len(pk) == 1 else None
    if key:  # the other rows are found through the key index: cheap for every deleted row
        last = (
            f"NOT EXISTS (SELECT 1 FROM {target} WHERE {key} > OLD.{key}) AND "
            f"NOT EXISTS (SELECT 1 FROM {target} WHERE {key} < OLD.{key})"
        )
    else:
        last = f"(SELECT COUNT(*) FROM (SELECT 1 FROM {target} LIMIT 2) x) < 2"
    message = f"migrate-guard: refused: this DELETE would remove every row of protected table {table}".replace(
        "'", "''"
    )
    name = q.quote(conn, _keep_name(table))
    if family == "sqlite":
        return (
            f"CREATE TRIGGER {name} BEFORE DELETE ON {target} FOR EACH ROW WHEN {last} AND NOT EXISTS "
            f"(SELECT 1 FROM pragma_database_list WHERE name = '{SQLITE_MARKER}') "
            f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
        )
    return (
        f"CREATE TRIGGER {name} BEFORE DELETE ON {target} FOR EACH ROW BEGIN "
        f"IF COALESCE({MYSQL_VARIABLE}, 0) <> 1 AND {last} THEN "
        f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{message}'; END IF; END"
    )


def _row_triggers(conn: sa.Connection) -> dict[str, str]:
    """Our keep-triggers: trigger name -> table."""
    if q.family(conn) == "sqlite":
        rows = conn.execute(
            sa.text("SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger' AND name LIKE :p"),
            {"p": KEEP_PREFIX + "%"},
        ).all()
    else:
        rows = conn.execute(
            sa.text(
                "SELECT trigger_name, event_object_table FROM information_schema.triggers "
                "WHERE trigger_schema = DATABASE() AND trigger_name LIKE :p"
            ),
            {"p": KEEP_PREFIX + "%"},
        ).all()
    return {name: table for name, table in rows if name.startswith(KEEP_PREFIX)}


def _rows_install(conn: sa.Connection, settings: GuardSettings) -> list[str]:
    tables = _local_tables(conn, settings)
    existing = _row_triggers(conn)
    for name in existing:
        q.run(conn, f"DROP TRIGGER IF EXISTS {q.quote(conn, name)}")
    for table in tables:
        q.run(conn, _keep_trigger(conn, table))
    return tables


def refresh(conn: sa.Connection, settings: GuardSettings) -> list[str]:
    """Where the delete guards are installed, put them on protected tables that lack one: SQLite drops a
    table's triggers when a batch migration rebuilds it, and tables created since have none.
    (PostgreSQL's event trigger does this itself.)"""
    if q.family(conn) not in ("sqlite", "mysql"):
        return []
    triggers = _row_triggers(conn)
    if not triggers:
        return []
    covered = set(triggers.values())
    added = [t for t in _local_tables(conn, settings) if t not in covered]
    for table in added:
        q.run(conn, _keep_trigger(conn, table))
    return added


def _rows_uninstall(conn: sa.Connection) -> None:
    for name in _row_triggers(conn):
        q.run(conn, f"DROP TRIGGER IF EXISTS {q.quote(conn, name)}")


def _rows_status(conn: sa.Connection, settings: GuardSettings) -> Status:
    family = q.family(conn)
    triggers = _row_triggers(conn)
    covered = sorted(set(triggers.values()))
    status = Status(family, bool(triggers), _local_tables(conn, settings), covered)
    if triggers:
        status.guards.append(f"BEFORE DELETE triggers refusing to empty {', '.join(covered)}")
    for table in status.protected:
        if status.installed and table not in covered:
            status.problems.append(f"{table} has no DELETE guard: run `protect install` again")
    return status


# --- the use cases -----------------------------------------------------------------------------------------------


def _connect(url: str) -> sa.Engine:
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def install(url: str, settings: GuardSettings) -> list[str]:
    """Install (or refresh) the protection; returns the protected tables it covers."""
    if not settings.protected_tables:
        raise ProtectError("no protected_tables in the guard settings: nothing to protect")
    engine = _connect(url)
    try:
        with engine.begin() as conn:
            if q.family(conn) == "postgresql":
                try:
                    return _pg_install(conn, settings)
                except sa.exc.ProgrammingError as exc:
                    if "superuser" in str(exc.orig) or "permission denied" in str(exc.orig):
                        raise ProtectError(
                            "protect install needs a PostgreSQL superuser (event triggers can only be created by one): "
                            f"{one_line(exc.orig or exc)}"
                        ) from None
                    raise
            return _rows_install(conn, settings)
    except sa.exc.DBAPIError as exc:
        raise ProtectError(f"protect install failed: {one_line(exc.orig or exc)}") from None
    finally:
        engine.dispose()


def uninstall(url: str) -> None:
    engine = _connect(url)
    try:
        with engine.begin() as conn:
            if q.family(conn) == "postgresql":
                _pg_uninstall(conn)
            else:
                _rows_uninstall(conn)
    except sa.exc.DBAPIError as exc:
        raise ProtectError(f"protect uninstall failed: {one_line(exc.orig or exc)}") from None
    finally:
        engine.dispose()


def status(url: str, settings: GuardSettings) -> Status:
    engine = _connect(url)
    try:
        with engine.connect() as conn:
            return _pg_status(conn, settings) if q.family(conn) == "postgresql" else _rows_status(conn, settings)
    finally:
        engine.dispose()
