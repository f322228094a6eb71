"""Every rule end to end, positive and negative, on PostgreSQL, MySQL and SQLite.

Each case is a revision body (or a few revisions) checked with the real CLI
(``check --dialect X --range base:heads --format json``, in process). A positive case lists the
(table, column) of every finding the subject rule must report; the line each finding must point
at is marked in the body with a trailing ``# <-`` comment (one marker for all of them, or one per
finding, in order); for ``invalid-acknowledgement`` it is the acknowledgement comment's own line.
A negative case (``expect=[]``) is the safe variant: the subject rule must not fire.
Only the subject rule is compared, so hygiene findings (for example the
``not-analyzable-offline`` info of a SQLite batch block read from source) and other rules firing
alongside do not disturb a case.

PostgreSQL-only rules are checked on MySQL and SQLite too, where they must NOT fire.
Cases that fail because of a bug in the tool are marked ``xfail(strict=True, reason="BUG: ...")``.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import Project

DIALECTS = ("postgresql", "mysql", "sqlite")
PG_ONLY = frozenset(
    {
        "create-index-non-concurrently",
        "add-column-rewrites-table",  # on MySQL only for a STORED generated column: cases say fires_on
        "add-foreign-key-validating",
        "add-check-validating",
        "lock-timeout-missing",
    }
)
RULE_IDS = frozenset(p.stem for p in (Path(__file__).resolve().parents[1] / "rules").glob("*.toml"))
MARK = "# <-"

Expected = tuple  # (table, column)


@dataclass
class Case:
    rule: str
    name: str
    body: str = ""
    expect: list[Expected] = field(default_factory=list)  # empty: a negative case
    # (rev, down_revision, body) for cases that need more than one revision
    revisions: list[tuple[str, object, str]] | None = None
    run_on: tuple[str, ...] = DIALECTS
    fires_on: tuple[str, ...] | None = None  # default: run_on, PostgreSQL only for PG_ONLY rules
    xfail: str | None = None
    xfail_on: tuple[str, ...] | None = None  # default: every dialect the case runs on

    def fires(self, dialect: str) -> bool:
        if not self.expect:
            return False
        if self.fires_on is not None:
            return dialect in self.fires_on
        return dialect == "postgresql" if self.rule in PG_ONLY else True


def P(rule: str, name: str, body: str, *expect: Expected, **kw) -> Case:
    assert expect, name
    return Case(rule, name, body, list(expect), **kw)


def N(rule: str, name: str, body: str, **kw) -> Case:
    return Case(rule, name, body, [], **kw)


SCRATCH = 'op.create_table("scratch", sa.Column("id", sa.Integer, primary_key=True), sa.Column("x", sa.Integer))'

CASES: list[Case] = [
    # --- drop-table ------------------------------------------------------------------------------
    P("drop-table", "op", 'op.drop_table("invoices")  # <-', ("invoices", None)),
    P("drop-table", "op-schema-mixed-case", 'op.drop_table("Invoices", schema="Billing")  # <-', ("invoices", None)),
    P(
        "drop-table",
        "raw-lower-if-exists-cascade-qualified",
        'op.execute("drop table if exists public.old_stuff cascade")  # <-',
        ("old_stuff", None),
    ),
    P(
        "drop-table",
        "bind-text-quoted",
        "op.get_bind().execute(sa.text('DROP TABLE \"Legacy_Orders\"'))  # <-",
        ("legacy_orders", None),
    ),
    P(
        "drop-table",
        "raw-two-tables",
        'op.execute("DROP TABLE imports_a, imports_b")  # <-',
        ("imports_a", None),
        ("imports_b", None),
    ),
    P(
        "drop-table",
        "raw-multiline-string",
        '''
      op.execute(  # <-
          """
          DROP VIEW IF EXISTS v_stats;
          DROP TABLE stats;
          """
      )
      ''',
        ("stats", None),
    ),
    P(
        "drop-table",
        "same-name-in-other-schema-created-in-revision",
        """
      op.create_table("events", sa.Column("id", sa.Integer, primary_key=True), schema="archive")
      op.execute("INSERT INTO archive.events SELECT * FROM events")
      op.drop_table("events")  # <-
      """,
        ("events", None),
        run_on=("postgresql", "mysql"),
    ),
    N(
        "drop-table",
        "inside-string-literal",
        "op.execute(\"INSERT INTO notes (body) VALUES ('DROP TABLE customers; --')\")",
    ),
    N(
        "drop-table",
        "inside-bulk-insert-value",
        'op.bulk_insert(sa.table("notes", sa.column("body", sa.String)), [{"body": "DROP TABLE customers"}])',
    ),
    N("drop-table", "created-in-same-revision", f'{SCRATCH}\nop.drop_table("scratch")'),
    N("drop-table", "drop-view-is-not-a-table", 'op.execute("DROP VIEW IF EXISTS v_orders")'),
    # --- drop-column -----------------------------------------------------------------------------
    P("drop-column", "op", 'op.drop_column("customers", "legacy")  # <-', ("customers", "legacy")),
    P(
        "drop-column",
        "op-multiline",
        """
      op.drop_column(  # <-
          "customers",
          "legacy",
          schema="crm",
      )
      """,
        ("customers", "legacy"),
    ),
    P(
        "drop-column",
        "batch",
        """
      with op.batch_alter_table("customers", schema=None) as batch_op:
          batch_op.drop_column("legacy")  # <-
      """,
        ("customers", "legacy"),
    ),
    P(
        "drop-column",
        "raw-lower-if-exists-cascade",
        'op.execute("alter table customers drop column if exists legacy cascade")  # <-',
        ("customers", "legacy"),
    ),
    P(
        "drop-column",
        "bind-schema-qualified-quoted",
        'op.get_bind().execute(sa.text(\'ALTER TABLE "Billing"."Invoices" DROP COLUMN "Legacy_Code"\'))  # <-',
        ("invoices", "legacy_code"),
    ),
    P(
        "drop-column",
        "raw-mysql-backticks",
        'op.execute("ALTER TABLE `shop`.`orders` DROP `legacy`")  # <-',
        ("orders", "legacy"),
        run_on=("mysql",),
    ),
    P(
        "drop-column",
        "raw-second-action",
        'op.execute("ALTER TABLE users ADD COLUMN a text, DROP COLUMN b")  # <-',
        ("users", "b"),
    ),
    P(
        "drop-column",
        "table-created-if-not-exists",
        """
      op.execute("CREATE TABLE IF NOT EXISTS customers (id int PRIMARY KEY, legacy text)")
      op.drop_column("customers", "legacy")  # <-
      """,
        ("customers", "legacy"),
    ),
    N(
        "drop-column",
        "column-added-in-same-revision",
        'op.add_column("customers", sa.Column("tmp", sa.Integer()))\nop.drop_column("customers", "tmp")',
    ),
    N("drop-column", "table-created-in-same-revision", f'{SCRATCH}\nop.drop_column("scratch", "x")'),
    N(
        "drop-column",
        "batch-add-column-only",
        """
      with op.batch_alter_table("customers") as batch_op:
          batch_op.add_column(sa.Column("note", sa.Text(), nullable=True))
      """,
    ),
    # --- drop-schema -----------------------------------------------------------------------------
    P("drop-schema", "raw-cascade", 'op.execute("DROP SCHEMA billing CASCADE")  # <-', (None, None)),
    P(
        "drop-schema",
        "raw-lower-if-exists",
        'op.execute(sa.text("drop schema if exists reporting"))  # <-',
        (None, None),
    ),
    P("drop-schema", "bind", 'op.get_bind().execute(sa.text("DROP SCHEMA staging RESTRICT"))  # <-', (None, None)),
    P(
        "drop-schema",
        "mysql-drop-database",
        'op.execute("DROP DATABASE IF EXISTS `legacy_reports`")  # <-',
        (None, None),
        run_on=("mysql",),
    ),
    N(
        "drop-schema",
        "created-in-same-revision",
        'op.execute("CREATE SCHEMA scratch")\nop.execute("DROP SCHEMA scratch")',
    ),
    N(
        "drop-schema",
        "inside-comment-literal",
        "op.execute(\"COMMENT ON TABLE orders IS 'never DROP SCHEMA billing'\")",
        run_on=("postgresql",),
    ),
    N("drop-schema", "create-schema", 'op.execute("CREATE SCHEMA IF NOT EXISTS billing")'),
    # --- truncate-table --------------------------------------------------------------------------
    P("truncate-table", "raw", 'op.execute("TRUNCATE TABLE audit_log")  # <-', ("audit_log", None)),
    P(
        "truncate-table",
        "raw-lower-only-quoted-cascade",
        "op.execute('truncate only \"Audit_Log\" restart identity cascade')  # <-",
        ("audit_log", None),
    ),
    P(
        "truncate-table",
        "second-statement",
        'op.execute("UPDATE accounts SET x = 1 WHERE id = 1; TRUNCATE cache_entries")  # <-',
        ("cache_entries", None),
    ),
    P(
        "truncate-table",
        "bind-qualified",
        'op.get_bind().execute(sa.text("TRUNCATE TABLE public.sessions"))  # <-',
        ("sessions", None),
    ),
    P(
        "truncate-table",
        "static-fallback-f-string",
        """
      count = op.get_bind().execute(sa.text("SELECT count(*) FROM imports")).scalar()
      for name in ("imports_a", "imports_b"):
          op.execute(f"TRUNCATE TABLE {name}")  # <-
      """,
        (None, None),
    ),
    N(
        "truncate-table",
        "inside-string-literal",
        "op.execute(\"INSERT INTO notes (body) VALUES ('TRUNCATE audit_log')\")",
    ),
    N("truncate-table", "table-created-in-same-revision", f'{SCRATCH}\nop.execute("TRUNCATE scratch")'),
    N(
        "truncate-table",
        "delete-with-where-instead",
        "op.execute(\"DELETE FROM audit_log WHERE created_at < '2020-01-01'\")",
    ),
    # --- delete-without-where --------------------------------------------------------------------
    P("delete-without-where", "raw", 'op.execute("DELETE FROM sessions")  # <-', ("sessions", None)),
    P(
        "delete-without-where",
        "text-lower-qualified",
        'op.execute(sa.text("delete from public.sessions"))  # <-',
        ("sessions", None),
    ),
    P(
        "delete-without-where",
        "core-table-delete",
        """
      sessions = sa.table("sessions", sa.column("id", sa.Integer))
      op.execute(sessions.delete())  # <-
      """,
        ("sessions", None),
    ),
    P(
        "delete-without-where",
        "cte-where-is-not-the-delete-where",
        'op.execute("WITH old AS (SELECT id FROM carts WHERE stale) DELETE FROM carts")  # <-',
        ("carts", None),
    ),
    P(
        "delete-without-where",
        "bind-variable",
        """
      conn = op.get_bind()
      conn.execute(sa.text("DELETE FROM tokens"))  # <-
      """,
        ("tokens", None),
    ),
    P(
        "delete-without-where",
        "mysql-hash-comment-hides-where",
        'op.execute("DELETE FROM sessions # WHERE id = 1")  # <-',
        ("sessions", None),
        run_on=("mysql",),
    ),
    N("delete-without-where", "with-where", 'op.execute("DELETE FROM sessions WHERE expires_at < now()")'),
    N(
        "delete-without-where",
        "where-with-subquery",
        'op.execute("DELETE FROM carts WHERE id IN (SELECT id FROM carts)")',
    ),
    N(
        "delete-without-where",
        "core-table-delete-where",
        """
      sessions = sa.table("sessions", sa.column("id", sa.Integer))
      op.execute(sessions.delete().where(sessions.c.id < 100))
      """,
    ),
    N(
        "delete-without-where",
        "inside-string-literal",
        "op.execute(\"INSERT INTO notes (body) VALUES ('DELETE FROM users')\")",
    ),
    N("delete-without-where", "table-created-in-same-revision", f'{SCRATCH}\nop.execute("DELETE FROM scratch")'),
    # --- update-without-where --------------------------------------------------------------------
    P("update-without-where", "raw", "op.execute(\"UPDATE accounts SET plan = 'free'\")  # <-", ("accounts", None)),
    P(
        "update-without-where",
        "raw-lower-alias",
        "op.execute(\"update accounts as a set plan = 'free'\")  # <-",
        ("accounts", None),
    ),
    P(
        "update-without-where",
        "core-table-update",
        """
      accounts = sa.table("accounts", sa.column("plan", sa.String))
      op.execute(accounts.update().values(plan="free"))  # <-
      """,
        ("accounts", None),
    ),
    P(
        "update-without-where",
        "where-only-in-subquery",
        'op.execute("UPDATE orders SET total = '
        '(SELECT sum(amount) FROM lines WHERE lines.order_id = orders.id)")  # <-',
        ("orders", None),
    ),
    N("update-without-where", "with-where", "op.execute(\"UPDATE accounts SET plan = 'free' WHERE plan IS NULL\")"),
    N(
        "update-without-where",
        "core-table-update-where",
        """
      accounts = sa.table("accounts", sa.column("plan", sa.String))
      op.execute(accounts.update().where(accounts.c.plan.is_(None)).values(plan="free"))
      """,
    ),
    P(
        "update-without-where",
        "backfill-that-also-overwrites-an-old-column",
        """
      op.add_column("accounts", sa.Column("plan_v2", sa.String(20), nullable=True))
      op.execute("UPDATE accounts SET plan_v2 = plan, plan = NULL")  # <-
      """,
        ("accounts", None),
    ),
    N(
        "update-without-where",
        "backfill-of-a-column-added-in-same-revision",
        """
      op.add_column("accounts", sa.Column("plan_v2", sa.String(20), nullable=True))
      op.execute("UPDATE accounts SET plan_v2 = plan")
      """,
    ),
    N(
        "update-without-where",
        "inside-string-literal",
        "op.execute(\"INSERT INTO notes (body) VALUES ('UPDATE users SET admin = 1')\")",
    ),
    # --- alter-column-type -----------------------------------------------------------------------
    P(
        "alter-column-type",
        "op-narrow-varchar",
        'op.alter_column("users", "country", existing_type=sa.String(255), type_=sa.String(2))  # <-',
        ("users", "country"),
    ),
    P(
        "alter-column-type",
        "batch-narrow-varchar",
        """
      with op.batch_alter_table("users") as batch_op:
          batch_op.alter_column("country", existing_type=sa.String(255), type_=sa.String(2))  # <-
      """,
        ("users", "country"),
    ),
    P(
        "alter-column-type",
        "op-bigint-to-int",
        'op.alter_column("events", "seq", existing_type=sa.BigInteger(), type_=sa.Integer())  # <-',
        ("events", "seq"),
    ),
    P(
        "alter-column-type",
        "op-fewer-decimals",
        'op.alter_column("orders", "total", existing_type=sa.Numeric(10, 2), type_=sa.Numeric(8, 2))  # <-',
        ("orders", "total"),
    ),
    P(
        "alter-column-type",
        "op-string-to-int",
        'op.alter_column("orders", "ref", existing_type=sa.String(20), type_=sa.Integer())  # <-',
        ("orders", "ref"),
    ),
    P(
        "alter-column-type",
        "raw-type",
        'op.execute("ALTER TABLE orders ALTER COLUMN total TYPE numeric(8,2)")  # <-',
        ("orders", "total"),
        run_on=("postgresql",),
    ),
    P(
        "alter-column-type",
        "raw-mysql-modify",
        'op.execute("ALTER TABLE `orders` MODIFY COLUMN `note` VARCHAR(10)")  # <-',
        ("orders", "note"),
        run_on=("mysql",),
    ),
    P(
        "alter-column-type",
        "op-enum-loses-a-value",
        """
      op.alter_column(  # <-
          "orders", "status",
          existing_type=sa.Enum("new", "paid", "void", name="order_status"),
          type_=sa.Enum("new", "paid", name="order_status"),
      )
      """,
        ("orders", "status"),
    ),
    P(
        "alter-column-type",
        "op-timestamp-to-timestamptz",
        'op.alter_column("events", "at", existing_type=sa.DateTime(), type_=sa.DateTime(timezone=True))  # <-',
        ("events", "at"),
        run_on=("postgresql",),
    ),  # MySQL and SQLite have no time-zone-aware DATETIME
    # VARCHAR(50) -> VARCHAR(100): in place on PostgreSQL; on MySQL 200 -> 400 bytes (utf8mb4) needs a
    # second length byte, a rebuild; SQLite copies the table for any type change.
    P(
        "alter-column-type",
        "op-widen-varchar-rebuilds-on-mysql-and-sqlite",
        'op.alter_column("users", "name", existing_type=sa.String(50), type_=sa.String(100))  # <-',
        ("users", "name"),
        fires_on=("mysql", "sqlite"),
    ),
    P(
        "alter-column-type",
        "batch-widen-varchar-rebuilds-on-mysql-and-sqlite",
        """
      with op.batch_alter_table("users") as batch_op:
          batch_op.alter_column("name", existing_type=sa.VARCHAR(length=50), type_=sa.String(length=100))  # <-
      """,
        ("users", "name"),
        fires_on=("mysql", "sqlite"),
    ),
    N(
        "alter-column-type",
        "op-widen-varchar-within-length-byte",
        'op.alter_column("users", "name", existing_type=sa.String(20), type_=sa.String(60))',
        run_on=("postgresql", "mysql"),
    ),
    P(
        "alter-column-type",
        "op-int-to-bigint-rewrites",
        'op.alter_column("events", "seq", existing_type=sa.INTEGER(), type_=sa.BigInteger())  # <-',
        ("events", "seq"),
    ),
    P(
        "alter-column-type",
        "batch-smallint-to-int-rewrites",
        """
      with op.batch_alter_table("events") as batch_op:
          batch_op.alter_column("kind", existing_type=sa.SmallInteger(), type_=sa.Integer())  # <-
      """,
        ("events", "kind"),
    ),
    P(
        "alter-column-type",
        "op-text-to-varchar",
        'op.alter_column("users", "bio", existing_type=sa.Text(), type_=sa.String(200))  # <-',
        ("users", "bio"),
    ),
    P(
        "alter-column-type",
        "op-numeric-scale-change",
        'op.alter_column("orders", "total", existing_type=sa.Numeric(10, 2), type_=sa.Numeric(14, 4))  # <-',
        ("orders", "total"),
    ),
    P(
        "alter-column-type",
        "op-old-type-unknown",
        'op.alter_column("events", "seq", type_=sa.BigInteger())  # <-',
        ("events", "seq"),
    ),
    P(
        "alter-column-type",
        "op-varchar-to-text-rebuilds-on-mysql-and-sqlite",
        'op.alter_column("users", "bio", existing_type=sa.String(200), type_=sa.Text())  # <-',
        ("users", "bio"),
        fires_on=("mysql", "sqlite"),
    ),
    P(
        "alter-column-type",
        "op-more-digits-rebuilds-on-mysql-and-sqlite",
        'op.alter_column("orders", "total", existing_type=sa.Numeric(10, 2), type_=sa.Numeric(12, 2))  # <-',
        ("orders", "total"),
        fires_on=("mysql", "sqlite"),
    ),
    N(
        "alter-column-type",
        "op-enum-value-appended",
        """
      op.alter_column(
          "orders", "status",
          existing_type=sa.Enum("new", "paid", name="order_status"),
          type_=sa.Enum("new", "paid", "void", name="order_status"),
      )
      """,
        run_on=("mysql",),
    ),
    P(
        "alter-column-type",
        "op-enum-value-inserted-in-the-middle",
        """
      op.alter_column(  # <-
          "orders", "status",
          existing_type=sa.Enum("new", "void", name="order_status"),
          type_=sa.Enum("new", "paid", "void", name="order_status"),
      )
      """,
        ("orders", "status"),
        run_on=("mysql",),
    ),
    N(
        "alter-column-type",
        "op-comment-only",
        'op.alter_column("users", "name", existing_type=sa.String(50), comment="display name")',
    ),
    N(
        "alter-column-type",
        "table-created-in-same-revision",
        f'{SCRATCH}\nop.alter_column("scratch", "x", existing_type=sa.Integer(), type_=sa.SmallInteger())',
    ),
    # --- rename-table ----------------------------------------------------------------------------
    P("rename-table", "op", 'op.rename_table("customer", "customers")  # <-', ("customer", None)),
    P("rename-table", "raw", 'op.execute("ALTER TABLE customer RENAME TO customers")  # <-', ("customer", None)),
    P(
        "rename-table",
        "raw-mysql",
        'op.execute("RENAME TABLE `customer` TO `customers`")  # <-',
        ("customer", None),
        run_on=("mysql",),
    ),
    N("rename-table", "table-created-in-same-revision", f'{SCRATCH}\nop.rename_table("scratch", "scratch2")'),
    N("rename-table", "rename-index", 'op.execute("ALTER INDEX ix_a RENAME TO ix_b")', run_on=("postgresql",)),
    # --- rename-column ---------------------------------------------------------------------------
    P(
        "rename-column",
        "op",
        'op.alter_column("users", "name", new_column_name="full_name", existing_type=sa.String(50))  # <-',
        ("users", "name"),
    ),
    P(
        "rename-column",
        "batch",
        """
      with op.batch_alter_table("users") as batch_op:
          batch_op.alter_column("name", new_column_name="full_name", existing_type=sa.String(50))  # <-
      """,
        ("users", "name"),
    ),
    P(
        "rename-column",
        "raw",
        'op.execute("alter table if exists users rename column name to full_name")  # <-',
        ("users", "name"),
    ),
    P(
        "rename-column",
        "raw-mysql-change",
        'op.execute("ALTER TABLE users CHANGE COLUMN name full_name VARCHAR(50)")  # <-',
        ("users", "name"),
        run_on=("mysql",),
    ),
    N(
        "rename-column",
        "same-name",
        'op.alter_column("users", "name", new_column_name="name", existing_type=sa.String(50))',
    ),
    N(
        "rename-column",
        "table-created-in-same-revision",
        f'{SCRATCH}\nop.alter_column("scratch", "x", new_column_name="y", existing_type=sa.Integer())',
    ),
    # --- add-not-null-column-without-default -----------------------------------------------------
    P(
        "add-not-null-column-without-default",
        "op",
        'op.add_column("orders", sa.Column("currency", sa.String(3), nullable=False))  # <-',
        ("orders", "currency"),
    ),
    P(
        "add-not-null-column-without-default",
        "op-python-default-only",
        'op.add_column("orders", sa.Column("qty", sa.Integer(), nullable=False, default=1))  # <-',
        ("orders", "qty"),
    ),
    P(
        "add-not-null-column-without-default",
        "batch",
        """
      with op.batch_alter_table("orders") as batch_op:
          batch_op.add_column(sa.Column("currency", sa.String(3), nullable=False))  # <-
      """,
        ("orders", "currency"),
    ),
    P(
        "add-not-null-column-without-default",
        "raw-lower-no-column-keyword",
        'op.execute("alter table orders add currency varchar(3) not null")  # <-',
        ("orders", "currency"),
    ),
    N(
        "add-not-null-column-without-default",
        "op-server-default",
        'op.add_column("orders", sa.Column("currency", sa.String(3), nullable=False, server_default="EUR"))',
    ),
    N(
        "add-not-null-column-without-default",
        "op-server-default-text",
        'op.add_column("users", sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.text("true")))',
    ),
    N(
        "add-not-null-column-without-default",
        "batch-server-default",
        """
      with op.batch_alter_table("users") as batch_op:
          batch_op.add_column(sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.false()))
      """,
    ),
    N(
        "add-not-null-column-without-default",
        "op-nullable",
        'op.add_column("orders", sa.Column("note", sa.Text(), nullable=True))',
    ),
    N(
        "add-not-null-column-without-default",
        "raw-with-default",
        'op.execute("ALTER TABLE orders ADD COLUMN qty integer DEFAULT 1 NOT NULL")',
    ),
    N(
        "add-not-null-column-without-default",
        "table-created-in-same-revision",
        f'{SCRATCH}\nop.add_column("scratch", sa.Column("y", sa.Integer(), nullable=False))',
    ),
    # --- set-not-null ----------------------------------------------------------------------------
    P(
        "set-not-null",
        "op",
        'op.alter_column("orders", "currency", existing_type=sa.String(3), nullable=False)  # <-',
        ("orders", "currency"),
    ),
    P(
        "set-not-null",
        "batch",
        """
      with op.batch_alter_table("orders") as batch_op:
          batch_op.alter_column(  # <-
              "currency",
              existing_type=sa.String(3),
              nullable=False,
          )
      """,
        ("orders", "currency"),
    ),
    P(
        "set-not-null",
        "raw-lower",
        'op.execute("alter table orders alter column currency set not null")  # <-',
        ("orders", "currency"),
    ),
    P(
        "set-not-null",
        "raw-mysql-modify",
        'op.execute("ALTER TABLE orders MODIFY currency VARCHAR(3) NOT NULL")  # <-',
        ("orders", "currency"),
        run_on=("mysql",),
    ),
    N(
        "set-not-null",
        "already-not-null",
        'op.alter_column("orders", "currency", existing_type=sa.String(3), existing_nullable=False, nullable=False, '
        'server_default="EUR")',
    ),
    N(
        "set-not-null",
        "drop-not-null",
        'op.alter_column("orders", "currency", existing_type=sa.String(3), nullable=True)',
    ),
    N("set-not-null", "raw-drop-not-null", 'op.execute("ALTER TABLE orders ALTER COLUMN currency DROP NOT NULL")'),
    N(
        "set-not-null",
        "table-created-in-same-revision",
        f'{SCRATCH}\nop.alter_column("scratch", "x", existing_type=sa.Integer(), nullable=False)',
    ),
    # --- drop-constraint -------------------------------------------------------------------------
    P(
        "drop-constraint",
        "op-fk",
        'op.drop_constraint("fk_orders_customer", "orders", type_="foreignkey")  # <-',
        ("orders", None),
    ),
    P(
        "drop-constraint",
        "batch-unique",
        """
      with op.batch_alter_table("users") as batch_op:
          batch_op.drop_constraint("uq_users_email", type_="unique")  # <-
      """,
        ("users", None),
    ),
    P(
        "drop-constraint",
        "raw-if-exists",
        'op.execute("alter table orders drop constraint if exists ck_total")  # <-',
        ("orders", None),
    ),
    P(
        "drop-constraint",
        "raw-mysql-foreign-key",
        'op.execute("ALTER TABLE orders DROP FOREIGN KEY fk_orders_customer")  # <-',
        ("orders", None),
        run_on=("mysql",),
    ),
    N(
        "drop-constraint",
        "created-in-same-revision",
        'op.create_check_constraint("ck_tmp", "orders", "total >= 0")\n'
        'op.drop_constraint("ck_tmp", "orders", type_="check")',
        run_on=("postgresql", "mysql"),
    ),
    N(
        "drop-constraint",
        "inside-string-literal",
        "op.execute(\"INSERT INTO notes (body) VALUES ('ALTER TABLE t DROP CONSTRAINT c')\")",
    ),
    # --- drop-index ------------------------------------------------------------------------------
    P("drop-index", "op-f-name", 'op.drop_index(op.f("ix_orders_code"), table_name="orders")  # <-', ("orders", None)),
    P(
        "drop-index",
        "batch",
        """
      with op.batch_alter_table("orders") as batch_op:
          batch_op.drop_index("ix_orders_code")  # <-
      """,
        ("orders", None),
    ),
    P(
        "drop-index",
        "raw-if-exists",
        'op.execute("DROP INDEX IF EXISTS ix_orders_code")  # <-',
        (None, None),
        run_on=("postgresql", "sqlite"),
    ),
    P(
        "drop-index",
        "raw-mysql-on-table",
        'op.execute("DROP INDEX ix_orders_code ON orders")  # <-',
        ("orders", None),
        run_on=("mysql",),
    ),
    P(
        "drop-index",
        "concurrently-still-drops-the-index",
        """
      with op.get_context().autocommit_block():
          op.drop_index("ix_orders_code", table_name="orders", postgresql_concurrently=True)  # <-
      """,
        ("orders", None),
    ),
    N(
        "drop-index",
        "created-in-same-revision",
        'op.create_index("ix_tmp", "orders", ["code"])\nop.drop_index("ix_tmp", table_name="orders")',
    ),
    # --- add-unique-constraint -------------------------------------------------------------------
    P(
        "add-unique-constraint",
        "op",
        'op.create_unique_constraint("uq_users_email", "users", ["email"])  # <-',
        ("users", None),
    ),
    P(
        "add-unique-constraint",
        "batch",
        """
      with op.batch_alter_table("users") as batch_op:
          batch_op.create_unique_constraint("uq_users_email", ["email"])  # <-
      """,
        ("users", None),
    ),
    P(
        "add-unique-constraint",
        "raw",
        'op.execute("ALTER TABLE users ADD CONSTRAINT uq_users_email UNIQUE (email)")  # <-',
        ("users", None),
    ),
    P(
        "add-unique-constraint",
        "raw-mysql-unique-index",
        'op.execute("ALTER TABLE users ADD UNIQUE INDEX uq_email (email)")  # <-',
        ("users", None),
        run_on=("mysql",),
    ),
    P(
        "add-unique-constraint",
        "add-column-unique-true",
        'op.add_column("users", sa.Column("handle", sa.String(40), unique=True))  # <-',
        ("users", "handle"),
        run_on=("postgresql", "mysql"),  # SQLite cannot add a constraint with ALTER (Alembic refuses)
    ),
    N(
        "add-unique-constraint",
        "unique-true-in-a-new-table",
        'op.create_table("tags", sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String(40), '
        "unique=True))",
    ),
    N(
        "add-unique-constraint",
        "unique-index-concurrently",
        """
      with op.get_context().autocommit_block():
          op.create_index("uq_users_email", "users", ["email"], unique=True, postgresql_concurrently=True)
      """,
    ),
    N(
        "add-unique-constraint",
        "using-finished-index",
        'op.execute("ALTER TABLE users ADD CONSTRAINT uq_users_email UNIQUE USING INDEX uq_users_email_idx")',
        run_on=("postgresql",),
    ),
    N(
        "add-unique-constraint",
        "table-created-in-same-revision",
        f'{SCRATCH}\nop.create_unique_constraint("uq_scratch_x", "scratch", ["x"])',
        run_on=("postgresql", "mysql"),
    ),
    # --- create-index-non-concurrently (PostgreSQL only) -----------------------------------------
    P(
        "create-index-non-concurrently",
        "op",
        'op.create_index("ix_orders_customer_id", "orders", ["customer_id"])  # <-',
        ("orders", None),
    ),
    P(
        "create-index-non-concurrently",
        "op-unique-f-name",
        'op.create_index(op.f("ix_users_email"), "users", ["email"], unique=True)  # <-',
        ("users", None),
    ),
    P(
        "create-index-non-concurrently",
        "batch",
        """
      with op.batch_alter_table("orders") as batch_op:
          batch_op.create_index("ix_orders_status", ["status"])  # <-
      """,
        ("orders", None),
    ),
    P(
        "create-index-non-concurrently",
        "raw-lower",
        'op.execute("create index ix_orders_status on public.orders (status)")  # <-',
        ("orders", None),
    ),
    P(
        "create-index-non-concurrently",
        "add-column-index-true",
        'op.add_column("orders", sa.Column("status", sa.String(20), index=True))  # <-',
        ("orders", "status"),
    ),
    P(
        "create-index-non-concurrently",
        "add-column-unique-index",
        'op.add_column("users", sa.Column("handle", sa.String(40), unique=True, index=True))  # <-',
        ("users", "handle"),
    ),
    P(
        "create-index-non-concurrently",
        "batch-add-column-index-true",
        """
      with op.batch_alter_table("orders") as batch_op:
          batch_op.add_column(sa.Column("status", sa.String(20), index=True))  # <-
      """,
        ("orders", "status"),
        run_on=("postgresql", "mysql"),
    ),
    N(
        "create-index-non-concurrently",
        "index-true-in-a-new-table",
        'op.create_table("tags", sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String(40), '
        "index=True))",
    ),
    N(
        "create-index-non-concurrently",
        "op-concurrently-in-autocommit-block",
        """
      with op.get_context().autocommit_block():
          op.create_index("ix_orders_status", "orders", ["status"], postgresql_concurrently=True)
      """,
    ),
    N(
        "create-index-non-concurrently",
        "raw-concurrently",
        """
      with op.get_context().autocommit_block():
          op.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_orders_status ON orders (status)")
      """,
        run_on=("postgresql",),
    ),
    N(
        "create-index-non-concurrently",
        "table-created-in-same-revision",
        f'{SCRATCH}\nop.create_index("ix_scratch_x", "scratch", ["x"])',
    ),
    # --- add-foreign-key-validating (PostgreSQL only) --------------------------------------------
    P(
        "add-foreign-key-validating",
        "op",
        'op.create_foreign_key("fk_orders_customer_id", "orders", "customers", ["customer_id"], ["id"])  # <-',
        ("orders", None),
        run_on=("postgresql", "mysql"),
    ),
    P(
        "add-foreign-key-validating",
        "batch",
        """
      with op.batch_alter_table("orders") as batch_op:
          batch_op.create_foreign_key("fk_orders_customer_id", "customers", ["customer_id"], ["id"])  # <-
      """,
        ("orders", None),
    ),
    P(
        "add-foreign-key-validating",
        "raw",
        'op.execute("ALTER TABLE orders ADD CONSTRAINT fk_o '
        'FOREIGN KEY (customer_id) REFERENCES customers (id)")  # <-',
        ("orders", None),
    ),
    P(
        "add-foreign-key-validating",
        "add-column-foreign-key",
        'op.add_column("orders", sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id")))  # <-',
        ("orders", "customer_id"),
        run_on=("postgresql", "mysql"),  # SQLite cannot add a constraint with ALTER (Alembic refuses)
    ),
    N(
        "add-foreign-key-validating",
        "foreign-key-in-a-new-table-validates-nothing",
        'op.create_table("invoices", sa.Column("id", sa.Integer, primary_key=True), '
        'sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id")))',
    ),
    N(
        "add-foreign-key-validating",
        "op-not-valid",
        'op.create_foreign_key("fk_orders_customer_id", "orders", "customers", ["customer_id"], ["id"], '
        "postgresql_not_valid=True)",
        run_on=("postgresql", "mysql"),
    ),
    N(
        "add-foreign-key-validating",
        "raw-not-valid-then-validate",
        """
      op.execute("ALTER TABLE orders ADD CONSTRAINT fk_o FOREIGN KEY (customer_id) REFERENCES customers (id) NOT VALID")
      op.execute("ALTER TABLE orders VALIDATE CONSTRAINT fk_o")
      """,
        run_on=("postgresql",),
    ),
    N(
        "add-foreign-key-validating",
        "table-created-in-same-revision",
        f'{SCRATCH}\nop.create_foreign_key("fk_scratch_x", "scratch", "customers", ["x"], ["id"])',
        run_on=("postgresql",),
    ),
    # --- add-check-validating (PostgreSQL only) --------------------------------------------------
    P(
        "add-check-validating",
        "op",
        'op.create_check_constraint("ck_orders_total", "orders", "total >= 0")  # <-',
        ("orders", None),
        run_on=("postgresql", "mysql"),
    ),
    P(
        "add-check-validating",
        "batch",
        """
      with op.batch_alter_table("orders") as batch_op:
          batch_op.create_check_constraint("ck_orders_total", "total >= 0")  # <-
      """,
        ("orders", None),
    ),
    P(
        "add-check-validating",
        "raw",
        'op.execute("alter table orders add constraint ck_total check (total >= 0)")  # <-',
        ("orders", None),
    ),
    N(
        "add-check-validating",
        "op-not-valid",
        'op.create_check_constraint("ck_orders_total", "orders", "total >= 0", postgresql_not_valid=True)',
        run_on=("postgresql", "mysql"),
    ),
    N(
        "add-check-validating",
        "raw-not-valid",
        'op.execute("ALTER TABLE orders ADD CONSTRAINT ck_total CHECK (total >= 0) NOT VALID")',
        run_on=("postgresql",),
    ),
    # --- lock-timeout-missing (PostgreSQL only) --------------------------------------------------
    P(
        "lock-timeout-missing",
        "op-type-change",
        'op.alter_column("orders", "note", existing_type=sa.String(100), type_=sa.String(50))  # <-',
        ("orders", "note"),
    ),
    P(
        "lock-timeout-missing",
        "raw-set-not-null",
        'op.execute("ALTER TABLE orders ALTER COLUMN note SET NOT NULL")  # <-',
        ("orders", "note"),
    ),
    P(
        "lock-timeout-missing",
        "reported-once-at-first-strong-lock",
        """
      op.add_column("orders", sa.Column("note", sa.Text(), nullable=True))  # <-
      op.create_index("ix_orders_note", "orders", ["note"])
      op.alter_column("orders", "code", existing_type=sa.String(20), nullable=False)
      """,
        ("orders", "note"),
    ),
    P(
        "lock-timeout-missing",
        "set-after-the-ddl-is-too-late",
        """
      op.alter_column("orders", "code", existing_type=sa.String(20), nullable=False)  # <-
      op.execute("SET lock_timeout = '5s'")
      """,
        ("orders", "code"),
    ),
    P(
        "lock-timeout-missing",
        "statement-timeout-is-not-lock-timeout",
        """
      op.execute("SET statement_timeout = '5s'")
      op.create_check_constraint("ck_orders_total", "orders", "total >= 0")  # <-
      """,
        ("orders", None),
        run_on=("postgresql", "mysql"),
    ),
    N(
        "lock-timeout-missing",
        "set-lock-timeout-first",
        """
      op.execute("SET lock_timeout = '5s'")
      op.alter_column("orders", "note", existing_type=sa.String(100), type_=sa.String(50))
      op.create_index("ix_orders_note", "orders", ["note"])
      """,
    ),
    N(
        "lock-timeout-missing",
        "set-local-lower-via-text",
        """
      op.execute(sa.text("set local lock_timeout to '3s'"))
      op.execute("ALTER TABLE orders ALTER COLUMN note SET NOT NULL")
      """,
    ),
    P(
        "lock-timeout-missing",
        "new-table-foreign-key-locks-the-referenced-table",
        """
      op.create_table(  # <-
          "invoices",
          sa.Column("id", sa.Integer, primary_key=True),
          sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id")),
      )
      """,
        ("customers", None),
    ),
    P(
        "lock-timeout-missing",
        "add-column-volatile-default-rewrites",
        'op.add_column("orders", sa.Column("token", sa.Uuid(), server_default=sa.text("gen_random_uuid()")))  # <-',
        ("orders", "token"),
    ),
    P(
        "lock-timeout-missing",
        "explicit-lock-table",
        """
      op.execute("LOCK TABLE orders IN SHARE ROW EXCLUSIVE MODE")  # <-
      op.execute("UPDATE orders SET status = 'open' WHERE status IS NULL")
      """,
        ("orders", None),
    ),
    P(
        "lock-timeout-missing",
        "vacuum-full",
        'op.execute("VACUUM FULL orders")  # <-',
        ("orders", None),
    ),
    P(
        "lock-timeout-missing",
        "cluster",
        'op.execute("CLUSTER orders USING ix_orders_created_at")  # <-',
        ("orders", None),
    ),
    P(
        "lock-timeout-missing",
        "reindex-without-concurrently",
        'op.execute("REINDEX TABLE orders")  # <-',
        ("orders", None),
    ),
    P(
        "lock-timeout-missing",
        "detach-partition-without-concurrently",
        'op.execute("ALTER TABLE measurements DETACH PARTITION measurements_2019")  # <-',
        ("measurements", None),
    ),
    N(
        "lock-timeout-missing",
        "maintenance-that-does-not-block",
        """
      op.execute("LOCK TABLE orders IN ACCESS SHARE MODE")
      op.execute("VACUUM (ANALYZE) orders")
      with op.get_context().autocommit_block():
          op.execute("REINDEX TABLE CONCURRENTLY orders")
          op.execute("ALTER TABLE measurements DETACH PARTITION measurements_2019 CONCURRENTLY")
      """,
    ),
    N(
        "lock-timeout-missing",
        "new-table-foreign-key-to-a-table-created-first",
        """
      op.create_table("customers", sa.Column("id", sa.Integer, primary_key=True))
      op.create_table(
          "invoices",
          sa.Column("id", sa.Integer, primary_key=True),
          sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id")),
      )
      """,
    ),
    N(
        "lock-timeout-missing",
        "new-table-foreign-key-after-set-lock-timeout",
        """
      op.execute("SET lock_timeout = '5s'")
      op.create_table(
          "invoices",
          sa.Column("id", sa.Integer, primary_key=True),
          sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id")),
      )
      """,
    ),
    # a brief ACCESS EXCLUSIVE still queues every query behind it while it waits for the lock
    P(
        "lock-timeout-missing",
        "brief-access-exclusive-locks",
        """
      op.add_column("orders", sa.Column("note", sa.Text(), nullable=True))  # <-
      op.alter_column("orders", "name", existing_type=sa.String(50), type_=sa.String(100))
      """,
        ("orders", "note"),
    ),
    P(
        "lock-timeout-missing",
        "rename-and-drop-constraint",
        """
      op.rename_table("orders", "purchases")  # <-
      op.drop_constraint("uq_purchases_code", "purchases", type_="unique")
      """,
        ("orders", None),
    ),
    N(
        "lock-timeout-missing",
        "no-lock-on-an-existing-table",
        """
      op.create_table("notes", sa.Column("id", sa.BigInteger, primary_key=True), sa.Column("body", sa.Text()))
      op.add_column("notes", sa.Column("title", sa.Text(), nullable=True))
      op.execute("ALTER TABLE orders VALIDATE CONSTRAINT fk_orders_customer")
      op.execute("INSERT INTO notes (body) VALUES ('hello')")
      with op.get_context().autocommit_block():
          op.create_index("ix_orders_note", "orders", ["note"], postgresql_concurrently=True)
      """,
    ),
    # --- backfill-under-schema-lock (PostgreSQL) -------------------------------------------------
    P(
        "backfill-under-schema-lock",
        "backfill-after-add-column",
        """
      op.add_column("orders", sa.Column("currency", sa.String(3), nullable=True))
      op.execute("UPDATE orders SET currency = 'EUR'")  # <-
      """,
        ("orders", None),
        fires_on=("postgresql",),
    ),
    P(
        "backfill-under-schema-lock",
        "delete-after-set-not-null-in-bind-text",
        """
      op.alter_column("sessions", "user_id", existing_type=sa.Integer(), nullable=False)
      op.get_bind().execute(sa.text("DELETE FROM sessions WHERE user_id IS NULL"))  # <-
      """,
        ("sessions", None),
        fires_on=("postgresql",),
    ),
    P(
        "backfill-under-schema-lock",
        "update-of-a-renamed-table",
        """
      op.rename_table("orders", "purchases")
      op.execute("UPDATE purchases SET status = 'open' WHERE status IS NULL")  # <-
      """,
        ("purchases", None),
        fires_on=("postgresql",),
        run_on=("postgresql", "mysql"),
    ),
    N(
        "backfill-under-schema-lock",
        "backfill-after-commit-in-autocommit-block",
        """
      op.add_column("orders", sa.Column("currency", sa.String(3), nullable=True))
      with op.get_context().autocommit_block():
          op.execute("UPDATE orders SET currency = 'EUR' WHERE id < 10000")
      """,
        run_on=("postgresql", "mysql"),
    ),
    N(
        "backfill-under-schema-lock",
        "update-of-another-table-and-of-a-new-one",
        """
      op.add_column("orders", sa.Column("currency", sa.String(3), nullable=True))
      op.execute("UPDATE customers SET tier = 'gold' WHERE spend > 1000")
      op.create_table("rates", sa.Column("id", sa.BigInteger, primary_key=True), sa.Column("r", sa.Numeric(8, 4)))
      op.add_column("rates", sa.Column("note", sa.Text()))
      op.execute("UPDATE rates SET note = 'x'")
      """,
    ),
    N(
        "backfill-under-schema-lock",
        "concurrent-index-takes-no-access-exclusive",
        """
      op.create_index("ix_orders_status", "orders", ["status"], postgresql_concurrently=True)
      op.execute("UPDATE orders SET status = 'open' WHERE status IS NULL")
      """,
        run_on=("postgresql",),
    ),
    # --- alter-rebuilds-table (MySQL / MariaDB; versions: tests/test_rules_versions.py) ----------
    P(
        "alter-rebuilds-table",
        "integer-to-bigint",
        'op.alter_column("orders", "quantity", existing_type=sa.Integer(), type_=sa.BigInteger())  # <-',
        ("orders", "quantity"),
        fires_on=("mysql", "mariadb"),
        run_on=("postgresql", "mysql", "mariadb", "sqlite"),
    ),
    P(
        "alter-rebuilds-table",
        "drop-primary-key",
        'op.drop_constraint("PRIMARY", "orders", type_="primary")  # <-',
        ("orders", None),
        fires_on=("mysql", "mariadb"),
        run_on=("postgresql", "mysql", "mariadb"),
    ),
    P(
        "alter-rebuilds-table",
        "column-charset-from-op",
        """
      from sqlalchemy.dialects import mysql
      op.alter_column(  # <-
          "customers",
          "name",
          existing_type=mysql.VARCHAR(50, charset="latin1"),
          type_=mysql.VARCHAR(50, charset="utf8mb4"),
      )
      """,
        ("customers", "name"),
        fires_on=("mysql", "mariadb"),
        run_on=("mysql", "mariadb"),
    ),
    P(
        "alter-rebuilds-table",
        "raw-convert-and-algorithm-copy",
        """
      op.execute("ALTER TABLE customers CONVERT TO CHARACTER SET utf8mb4")  # <-
      op.execute("ALTER TABLE orders ADD COLUMN note TEXT, ALGORITHM=COPY")  # <-
      op.execute("ALTER TABLE orders MODIFY code VARCHAR(20) CHARACTER SET latin1")  # <-
      """,
        ("customers", None),
        ("orders", None),
        ("orders", "code"),
        fires_on=("mysql", "mariadb"),
        run_on=("mysql", "mariadb"),
    ),
    N(
        "alter-rebuilds-table",
        "in-place-changes",
        """
      op.add_column("orders", sa.Column("note", sa.Text(), nullable=True))
      op.alter_column("orders", "code", existing_type=sa.String(20), type_=sa.String(40))
      op.execute("ALTER TABLE orders ADD COLUMN extra INT, ALGORITHM=INSTANT")
      op.drop_constraint("uq_orders_code", "orders", type_="unique")
      """,
        run_on=("postgresql", "mysql", "mariadb", "sqlite"),
    ),
    # --- char-column, timestamp-without-time-zone, integer-primary-key (hygiene) ------------------
    P(
        "char-column",
        "add-column-and-new-table",
        """
      op.add_column("customers", sa.Column("country", sa.CHAR(2), nullable=True))  # <-
      op.create_table("codes", sa.Column("id", sa.BigInteger, primary_key=True), sa.Column("c", sa.CHAR(3)))  # <-
      op.execute("ALTER TABLE customers ADD COLUMN region character(4)")  # <-
      """,
        ("customers", "country"),
        ("codes", "c"),
        ("customers", "region"),
        fires_on=("postgresql", "mysql"),
    ),
    N(
        "char-column",
        "varchar-and-text",
        """
      op.add_column("customers", sa.Column("country", sa.String(2), nullable=True))
      op.execute("ALTER TABLE customers ADD COLUMN region character varying(4)")
      op.create_table("codes", sa.Column("id", sa.BigInteger, primary_key=True), sa.Column("c", sa.Text()))
      """,
    ),
    P(
        "timestamp-without-time-zone",
        "datetime-and-raw-timestamp",
        """
      op.add_column("orders", sa.Column("shipped_at", sa.DateTime(), nullable=True))  # <-
      op.create_table("events", sa.Column("id", sa.BigInteger, primary_key=True), sa.Column("at", sa.TIMESTAMP()))  # <-
      op.execute("CREATE TABLE logs (id bigserial PRIMARY KEY, at timestamp without time zone)")  # <-
      """,
        ("orders", "shipped_at"),
        ("events", "at"),
        ("logs", "at"),
        fires_on=("postgresql",),
    ),
    N(
        "timestamp-without-time-zone",
        "timestamptz",
        """
      op.add_column("orders", sa.Column("shipped_at", sa.DateTime(timezone=True), nullable=True))
      op.execute("CREATE TABLE logs (id bigserial PRIMARY KEY, at timestamptz, d date)")
      """,
    ),
    P(
        "integer-primary-key",
        "integer-and-serial",
        """
      op.create_table("events", sa.Column("id", sa.Integer, primary_key=True), sa.Column("n", sa.Integer))  # <-
      op.execute("CREATE TABLE logs (id serial PRIMARY KEY, body text)")  # <-
      """,
        ("events", "id"),
        ("logs", "id"),
        fires_on=("postgresql",),  # MySQL's SERIAL is a BIGINT
        run_on=("postgresql", "sqlite"),
    ),
    P(
        "integer-primary-key",
        "integer-on-mysql",
        'op.create_table("events", sa.Column("id", sa.Integer, primary_key=True))  # <-',
        ("events", "id"),
        fires_on=("postgresql", "mysql"),
    ),
    N(
        "integer-primary-key",
        "bigint-composite-and-foreign-key",
        """
      op.create_table("events", sa.Column("id", sa.BigInteger, primary_key=True))
      op.create_table(
          "tags_posts",
          sa.Column("tag_id", sa.Integer, primary_key=True),
          sa.Column("post_id", sa.Integer, primary_key=True),
      )
      op.create_table("profiles", sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), primary_key=True))
      op.add_column("orders", sa.Column("n", sa.Integer, nullable=True))
      """,
    ),
    # --- add-column-rewrites-table (PostgreSQL; MySQL for STORED generated columns) ---------------
    P(
        "add-column-rewrites-table",
        "gen-random-uuid-default",
        'op.add_column("orders", sa.Column("public_id", sa.Uuid(), server_default=sa.text("gen_random_uuid()")))  # <-',
        ("orders", "public_id"),
        fires_on=("postgresql",),
    ),
    P(
        "add-column-rewrites-table",
        "uuid-generate-v4-default-not-null",
        """
      op.add_column(  # <-
          "orders",
          sa.Column("ref", sa.Uuid(), nullable=False, server_default=sa.text("uuid_generate_v4()")),
      )
      """,
        ("orders", "ref"),
        fires_on=("postgresql",),
    ),
    P(
        "add-column-rewrites-table",
        "clock-timestamp-default",
        'op.add_column("events", sa.Column("seen", sa.DateTime, server_default=sa.text("clock_timestamp()")))  # <-',
        ("events", "seen"),
        fires_on=("postgresql",),
    ),
    P(
        "add-column-rewrites-table",
        "nextval-default",
        """
      op.add_column("events", sa.Column("seq", sa.BigInteger(), server_default=sa.text("nextval('events_seq')")))  # <-
      """,
        ("events", "seq"),
        fires_on=("postgresql",),
    ),
    P(
        "add-column-rewrites-table",
        "identity-column",
        'op.add_column("events", sa.Column("seq", sa.BigInteger(), sa.Identity()))  # <-',
        ("events", "seq"),
        fires_on=("postgresql",),  # MySQL renders no AUTO_INCREMENT for it
    ),
    P(
        "add-column-rewrites-table",
        "stored-generated-column",
        'op.add_column("orders", sa.Column("cents", sa.Integer, sa.Computed("total * 100", persisted=True)))  # <-',
        ("orders", "cents"),
        fires_on=("postgresql", "mysql"),
    ),
    P(
        "add-column-rewrites-table",
        "batch-random-default",
        """
      with op.batch_alter_table("orders") as batch_op:
          batch_op.add_column(sa.Column("shard", sa.Float(), server_default=sa.text("random()")))  # <-
      """,
        ("orders", "shard"),
        fires_on=("postgresql",),
        run_on=("postgresql", "mysql"),
    ),
    P(
        "add-column-rewrites-table",
        "raw-sql-volatile-default",
        'op.execute("ALTER TABLE orders ADD COLUMN public_id uuid DEFAULT gen_random_uuid()")  # <-',
        ("orders", "public_id"),
        run_on=("postgresql",),
    ),
    N(
        "add-column-rewrites-table",
        "now-default",
        'op.add_column("orders", sa.Column("created_at", sa.DateTime(), nullable=False, server_default=sa.func.now()))',
    ),
    N(
        "add-column-rewrites-table",
        "current-timestamp-and-constant-defaults",
        """
      op.add_column("orders", sa.Column("at", sa.DateTime(), server_default=sa.text("CURRENT_TIMESTAMP")))
      op.add_column("orders", sa.Column("currency", sa.String(3), nullable=False, server_default="EUR"))
      """,
    ),
    N(
        "add-column-rewrites-table",
        "volatile-name-inside-a-string-default",
        'op.add_column("orders", sa.Column("note", sa.String(40), server_default="random()"))',
    ),
    N(
        "add-column-rewrites-table",
        "table-created-in-same-revision",
        """
      op.create_table("tokens", sa.Column("id", sa.Integer, primary_key=True))
      op.add_column("tokens", sa.Column("value", sa.Uuid(), server_default=sa.text("gen_random_uuid()")))
      """,
    ),
    # --- add-primary-key -------------------------------------------------------------------------
    P("add-primary-key", "op", 'op.create_primary_key("pk_events", "events", ["id"])  # <-', ("events", None)),
    P(
        "add-primary-key",
        "batch",
        """
      with op.batch_alter_table("events") as batch_op:
          batch_op.create_primary_key("pk_events", ["id"])  # <-
      """,
        ("events", None),
    ),
    P(
        "add-primary-key",
        "raw",
        'op.execute("ALTER TABLE events ADD PRIMARY KEY (id)")  # <-',
        ("events", None),
        run_on=("postgresql", "mysql"),
    ),
    N(
        "add-primary-key",
        "using-finished-index",
        """
      with op.get_context().autocommit_block():
          op.create_index("pk_events_idx", "events", ["id"], unique=True, postgresql_concurrently=True)
      op.execute("ALTER TABLE events ADD CONSTRAINT pk_events PRIMARY KEY USING INDEX pk_events_idx")
      """,
        run_on=("postgresql",),
    ),
    N(
        "add-primary-key",
        "table-created-in-same-revision",
        f'{SCRATCH}\nop.create_primary_key("pk_scratch", "scratch", ["id"])',
        run_on=("postgresql", "mysql"),
    ),
    N(
        "add-primary-key",
        "primary-key-in-a-new-table",
        'op.create_table("tags", sa.Column("id", sa.Integer, primary_key=True))',
    ),
    # --- drop-not-null ---------------------------------------------------------------------------
    P(
        "drop-not-null",
        "op",
        'op.alter_column("orders", "currency", existing_type=sa.String(3), nullable=True)  # <-',
        ("orders", "currency"),
    ),
    P(
        "drop-not-null",
        "batch",
        """
      with op.batch_alter_table("orders") as batch_op:
          batch_op.alter_column("currency", existing_type=sa.String(3), existing_nullable=False, nullable=True)  # <-
      """,
        ("orders", "currency"),
    ),
    P(
        "drop-not-null",
        "raw",
        'op.execute("ALTER TABLE orders ALTER COLUMN currency DROP NOT NULL")  # <-',
        ("orders", "currency"),
        run_on=("postgresql",),
    ),
    N(
        "drop-not-null",
        "already-nullable",
        'op.alter_column("orders", "note", existing_type=sa.Text(), existing_nullable=True, nullable=True)',
    ),
    N(
        "drop-not-null",
        "server-default-keeps-it-not-null",
        'op.alter_column("orders", "currency", existing_type=sa.String(3), existing_nullable=False, '
        'server_default="EUR")',
    ),
    N(
        "drop-not-null",
        "table-created-in-same-revision",
        f'{SCRATCH}\nop.alter_column("scratch", "x", existing_type=sa.Integer(), nullable=True)',
    ),
    # --- raw-sql-unparsed ------------------------------------------------------------------------
    P("raw-sql-unparsed", "unknown-command", 'op.execute("frobnicate the widgets")  # <-', (None, None)),
    P(
        "raw-sql-unparsed",
        "unterminated-quote",
        'op.execute("UPDATE orders SET note = \'oops WHERE id = 1")  # <-',
        (None, None),
    ),
    P(
        "raw-sql-unparsed",
        "do-block-hiding-a-drop",
        '''
      op.execute(  # <-
          """
          DO $$ BEGIN
              EXECUTE 'DROP TABLE customers';
          END $$
          """
      )
      ''',
        (None, None),
        run_on=("postgresql",),
    ),
    N(
        "raw-sql-unparsed",
        "known-harmless",
        """
      op.execute("COMMENT ON TABLE orders IS 'customer orders'")
      op.execute("GRANT SELECT ON orders TO reporting")
      op.execute("ANALYZE orders")
      """,
        run_on=("postgresql",),
    ),
    N(
        "raw-sql-unparsed",
        "ddl-construct-already-captured-before-a-fallback",
        """
      op.execute(sa.schema.DropTable(sa.Table("legacy_two", sa.MetaData(), sa.Column("id", sa.Integer))))
      rows = op.get_bind().execute(sa.text("SELECT id FROM plans")).fetchall()
      """,
    ),
    N(
        "raw-sql-unparsed",
        "create-extension-and-type",
        'op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")\n'
        "op.execute(\"CREATE TYPE mood AS ENUM ('happy', 'sad')\")",
        run_on=("postgresql",),
    ),
    # --- not-analyzable-offline ------------------------------------------------------------------
    P(
        "not-analyzable-offline",
        "reads-bind-results",
        """
      conn = op.get_bind()
      rows = conn.execute(sa.text("SELECT id FROM plans WHERE legacy")).fetchall()  # <-
      for (plan_id,) in rows:
          conn.execute(sa.text("UPDATE accounts SET plan_id = 1 WHERE plan_id = :p"), {"p": plan_id})
      """,
        (None, None),
    ),
    P(
        "not-analyzable-offline",
        "sqlite-batch-without-copy-from",
        """
      with op.batch_alter_table("customers") as batch_op:  # <-
          batch_op.alter_column("name", existing_type=sa.String(50), type_=sa.String(100))
      """,
        (None, None),
        fires_on=("sqlite",),
    ),
    P(
        "not-analyzable-offline",
        "batch-recreate-always-without-copy-from",
        """
      with op.batch_alter_table("customers", recreate="always") as batch_op:  # <-
          batch_op.add_column(sa.Column("note", sa.Text(), nullable=True))
      """,
        (None, None),
    ),
    N(
        "not-analyzable-offline",
        "sqlite-batch-with-copy-from",
        """
      customers = sa.Table(
          "customers", sa.MetaData(),
          sa.Column("id", sa.Integer, primary_key=True),
          sa.Column("name", sa.String(50)),
      )
      with op.batch_alter_table("customers", copy_from=customers) as batch_op:
          batch_op.alter_column("name", existing_type=sa.String(50), type_=sa.String(100))
      """,
    ),
    N(
        "not-analyzable-offline",
        "bind-used-for-dialect-only",
        """
      if op.get_bind().dialect.name == "postgresql":
          op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
      """,
    ),
    N(
        "not-analyzable-offline",
        "plain-data-migration",
        'op.execute("UPDATE accounts SET plan_id = 1 WHERE plan_id IN (SELECT id FROM plans WHERE legacy)")',
    ),
    # --- multiple-heads --------------------------------------------------------------------------
    Case(
        "multiple-heads",
        "two-branches",
        expect=[(None, None)],
        revisions=[
            ("a1", None, "pass"),
            ("b1", "a1", "op.add_column('orders', sa.Column('note', sa.Text()))"),
            ("c1", "a1", "op.add_column('users', sa.Column('phone', sa.Text()))"),
        ],
    ),
    Case(
        "multiple-heads",
        "merged",
        revisions=[
            ("a1", None, "pass"),
            ("b1", "a1", "op.add_column('orders', sa.Column('note', sa.Text()))"),
            ("c1", "a1", "op.add_column('users', sa.Column('phone', sa.Text()))"),
            ("m1", ("b1", "c1"), "pass"),
        ],
    ),
    # --- invalid-acknowledgement -----------------------------------------------------------------
    P(
        "invalid-acknowledgement",
        "no-reason",
        """
      # migrate-guard: allow drop-table archive
      op.drop_table("archive")
      """,
        (None, None),
    ),
    P(
        "invalid-acknowledgement",
        "unknown-rule",
        """
      # migrate-guard: allow drop-tabel archive -- typo
      op.drop_table("archive")
      """,
        (None, None),
    ),
    P(
        "invalid-acknowledgement",
        "matches-nothing",
        """
      # migrate-guard: allow drop-table archive -- stale, the drop moved to another revision
      op.add_column("orders", sa.Column("note", sa.Text()))
      """,
        (None, None),
    ),
    N(
        "invalid-acknowledgement",
        "valid",
        """
      # migrate-guard: allow drop-table archive -- dumped to s3://backups/archive; reviewed by @ana
      op.drop_table("archive")
      """,
    ),
]


def _params():
    for case in CASES:
        for dialect in case.run_on:
            kind = "pos" if case.expect else "neg"
            marks = []
            if case.xfail and dialect in (case.xfail_on or case.run_on):
                marks.append(pytest.mark.xfail(strict=True, reason=case.xfail))
            yield pytest.param(case, dialect, id=f"{case.rule}-{kind}-{case.name}-{dialect}", marks=marks)


def _write(project: Project, case: Case) -> list[Path]:
    if case.revisions:
        return [project.revision(rev, body, down=down) for rev, down, body in case.revisions]
    return [project.revision("r1", textwrap.dedent(case.body), down=None)]


def _marked_lines(path: Path, rule: str) -> list[int]:
    # an acknowledgement comment cannot carry a marker (it would change what it says): its own line counts
    marker = "# migrate-guard:" if rule == "invalid-acknowledgement" else MARK
    return [
        i
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if (marker in line if rule == "invalid-acknowledgement" else line.rstrip().endswith(MARK))
    ]


@pytest.mark.parametrize("case, dialect", list(_params()))
def test_rule(run_cli, project, case: Case, dialect: str):
    paths = _write(project, case)
    result = run_cli("-c", str(project.ini), "check", "--dialect", dialect, "--range", "base:heads", "--format", "json")
    assert result.exit_code in (0, 3), result.output
    found = [f for f in json.loads(result.stdout)["findings"] if f["rule"] == case.rule]
    got = sorted(((f["table"], f["column"], f["line"]) for f in found), key=repr)

    if not case.fires(dialect):
        assert got == [], f"{case.rule} must not fire here: {found}"
        return
    if case.rule == "multiple-heads":  # a history-wide finding: no table, it names the heads
        assert len(found) == 1 and "b1" in found[0]["message"] and "c1" in found[0]["message"], found
        return
    lines = _marked_lines(paths[-1], case.rule)
    assert lines, "a positive case marks its lines with '# <-'"
    if len(lines) == 1:
        lines = lines * len(case.expect)
    assert len(lines) == len(case.expect), "one '# <-' marker, or one per expected finding"
    want = sorted(((t, c, line) for (t, c), line in zip(case.expect, lines, strict=True)), key=repr)
    assert got == want, f"{case.rule} on {dialect}: {found}"
    for f in found:
        assert f["file"].endswith(paths[-1].name), f


def test_every_rule_has_a_positive_and_a_negative_case():
    import test_rules_sql  # the rules that read raw SQL have their cases there (it imports this module)

    cases = [(c.rule, bool(c.expect), bool(c.xfail)) for c in CASES]
    cases += [(c.rule, bool(c.expect), False) for c in test_rules_sql.CASES]
    traced = {rule for rule in RULE_IDS if rule.startswith("trace-")}  # measured on servers: tests/test_trace.py
    source = (Path(__file__).parent / "test_trace.py").read_text()
    assert all(f'"{rule}"' in source for rule in traced)
    assert {rule for rule, _, _ in cases} == RULE_IDS - traced
    for rule in RULE_IDS - traced:
        assert (rule, True, False) in cases, rule
        assert (rule, False, False) in cases, rule


def test_cases_cover_op_calls_batch_blocks_and_raw_sql():
    bodies = [c.body for c in CASES]
    assert sum("batch_op." in b for b in bodies) >= 10
    assert sum("op.execute(" in b for b in bodies) >= 30
    assert sum("get_bind()" in b for b in bodies) >= 5
    assert sum("autocommit_block()" in b for b in bodies) >= 3
