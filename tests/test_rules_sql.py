"""The rules that read raw SQL (issue 15), end to end through ``check``, as tests/test_rules_e2e.py does.

Each case is a revision body checked with the real CLI (``check --dialect X --range base:heads
--format json``); a positive case lists the (table, column) of every finding of its rule, and the
line each must point at carries a trailing ``# <-``; a negative case (no expectation) is the safe
variant. Every case also runs on the dialects where its rule does not apply, where it must not fire.

Whether a statement runs inside a transaction block is decided across statements, by
``sqltext.mark_transaction_blocks``, which the bridge calls over each revision's operations in the
order they ran (Alembic's offline COMMIT/BEGIN around ``autocommit_block()`` switch the state).
"""

from __future__ import annotations

import json

import pytest
import test_rules_e2e as e2e

DIALECTS = ("postgresql", "mysql", "sqlite")
RULE_DIALECTS = {  # where each rule applies (its rules/*.toml `dialects`), among DIALECTS
    "concurrent-index-in-transaction": ("postgresql",),
    "reindex-non-concurrently": ("postgresql",),
    "vacuum-full-or-cluster": ("postgresql",),
    "lock-table": ("postgresql", "mysql"),
    "detach-partition-non-concurrently": ("postgresql",),
    "create-domain-with-check": ("postgresql",),
    "enum-add-value-in-transaction": ("postgresql",),
    "drop-object": DIALECTS,
    "delete-without-where": DIALECTS,
    "update-without-where": DIALECTS,
}


# the cases are those of tests/test_rules_e2e.py; which dialects a rule fires on comes from RULE_DIALECTS
Case, P, N = e2e.Case, e2e.P, e2e.N


PG = ("postgresql",)
CONCURRENT = "concurrent-index-in-transaction"
ENUM = "enum-add-value-in-transaction"

CASES: list[Case] = [
    # --- concurrent-index-in-transaction ---------------------------------------------------------
    P(
        CONCURRENT,
        "two-statements-in-one-execute-are-one-implicit-transaction",
        """
      with op.get_context().autocommit_block():
          op.execute(  # <-
              "CREATE INDEX CONCURRENTLY ix_orders_a ON orders (a); CREATE INDEX CONCURRENTLY ix_orders_b ON orders (b)"
          )
      """,
        ("orders", None),
        ("orders", None),
    ),
    P(
        CONCURRENT,
        "explicit-begin-in-the-same-text",
        'op.execute("BEGIN; DROP INDEX CONCURRENTLY ix_orders_a; COMMIT")  # <-',
        (None, None),
    ),
    P(
        CONCURRENT,
        "reindex-concurrently-with-another-statement",
        'op.execute("reindex table concurrently orders; analyze orders")  # <-',
        ("orders", None),
    ),
    P(
        CONCURRENT,
        "raw-create-index-concurrently-outside-autocommit-block",
        'op.execute("CREATE INDEX CONCURRENTLY ix_orders_a ON orders (a)")  # <-',
        ("orders", None),
    ),
    P(
        CONCURRENT,
        "op-create-index-concurrently-outside-autocommit-block",
        'op.create_index("ix_orders_a", "orders", ["a"], postgresql_concurrently=True)  # <-',
        ("orders", None),
    ),
    P(
        CONCURRENT,
        "op-drop-index-concurrently-after-the-autocommit-block",
        """
      with op.get_context().autocommit_block():
          op.create_index("ix_orders_a", "orders", ["a"], postgresql_concurrently=True)
      op.drop_index("ix_orders_old", table_name="orders", postgresql_concurrently=True)  # <-
      """,
        ("orders", None),
    ),
    N(
        CONCURRENT,
        "each-statement-alone-inside-autocommit-block",
        """
      op.execute("SET lock_timeout = '5s'")
      with op.get_context().autocommit_block():
          op.create_index("ix_orders_a", "orders", ["a"], postgresql_concurrently=True)
          op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_orders_old")
          op.get_bind().execute(sa.text("REINDEX INDEX CONCURRENTLY ix_orders_b"))
      """,
    ),
    N(
        CONCURRENT,
        "after-an-explicit-commit",
        """
      op.execute("COMMIT")
      op.execute("CREATE INDEX CONCURRENTLY ix_orders_a ON orders (a)")
      """,
    ),
    N(CONCURRENT, "not-concurrently", 'op.execute("CREATE INDEX ix_a ON orders (a); CREATE INDEX ix_b ON orders (b)")'),
    # --- reindex-non-concurrently ----------------------------------------------------------------
    P("reindex-non-concurrently", "table", 'op.execute("REINDEX TABLE orders")  # <-', ("orders", None)),
    P(
        "reindex-non-concurrently",
        "index-lower-with-options",
        'op.execute(sa.text("reindex (verbose) index public.ix_orders_a"))  # <-',
        (None, None),
    ),
    P("reindex-non-concurrently", "schema", 'op.execute("REINDEX SCHEMA billing")  # <-', (None, None)),
    N(
        "reindex-non-concurrently",
        "concurrently-in-autocommit-block",
        """
      with op.get_context().autocommit_block():
          op.execute("REINDEX INDEX CONCURRENTLY ix_orders_a")
          op.execute("REINDEX (CONCURRENTLY) TABLE orders")
      """,
    ),
    N(
        "reindex-non-concurrently",
        "table-created-in-same-revision",
        f'{e2e.SCRATCH}\nop.execute("REINDEX TABLE scratch")',
    ),
    # --- vacuum-full-or-cluster ------------------------------------------------------------------
    P(
        "vacuum-full-or-cluster",
        "vacuum-full",
        """
      with op.get_context().autocommit_block():
          op.execute("VACUUM FULL ANALYZE audit_log")  # <-
      """,
        ("audit_log", None),
    ),
    P(
        "vacuum-full-or-cluster",
        "vacuum-option-full",
        'op.execute("vacuum (full, verbose) audit_log")  # <-',
        ("audit_log", None),
    ),
    P("vacuum-full-or-cluster", "vacuum-full-everything", 'op.execute("VACUUM FULL")  # <-', (None, None)),
    P(
        "vacuum-full-or-cluster",
        "cluster-using",
        'op.execute("CLUSTER orders USING ix_orders_a")  # <-',
        ("orders", None),
    ),
    P(
        "vacuum-full-or-cluster",
        "cluster-old-syntax",
        'op.execute("CLUSTER ix_orders_a ON public.orders")  # <-',
        ("orders", None),
    ),
    N(
        "vacuum-full-or-cluster",
        "plain-vacuum",
        """
      with op.get_context().autocommit_block():
          op.execute("VACUUM ANALYZE audit_log")
          op.execute("VACUUM (FULL false, ANALYZE) orders")
      """,
    ),
    # --- lock-table ------------------------------------------------------------------------------
    P("lock-table", "pg-default-mode", 'op.execute("LOCK TABLE orders")  # <-', ("orders", None), run_on=PG),
    P(
        "lock-table",
        "pg-share-mode-two-tables",
        'op.execute("lock only public.orders, order_lines in share mode nowait")  # <-',
        ("orders", None),
        ("order_lines", None),
        run_on=PG,
    ),
    P(
        "lock-table",
        "pg-access-exclusive-via-bind",
        'op.get_bind().execute(sa.text("LOCK orders IN ACCESS EXCLUSIVE MODE"))  # <-',
        ("orders", None),
        run_on=PG,
    ),
    P(
        "lock-table",
        "mysql-write-and-read",
        'op.execute("LOCK TABLES orders WRITE, customers AS c READ")  # <-',
        ("orders", None),
        ("customers", None),
        run_on=("mysql", "sqlite"),
    ),
    N("lock-table", "pg-row-exclusive", 'op.execute("LOCK TABLE orders IN ROW EXCLUSIVE MODE")', run_on=PG),
    N("lock-table", "pg-share-update-exclusive", 'op.execute("LOCK orders IN SHARE UPDATE EXCLUSIVE MODE")', run_on=PG),
    N("lock-table", "unlock-only", 'op.execute("UNLOCK TABLES")', run_on=("mysql",)),
    N("lock-table", "table-created-in-same-revision", f'{e2e.SCRATCH}\nop.execute("LOCK TABLE scratch")', run_on=PG),
    # --- detach-partition-non-concurrently -------------------------------------------------------
    P(
        "detach-partition-non-concurrently",
        "plain",
        'op.execute("ALTER TABLE events DETACH PARTITION events_2019")  # <-',
        ("events", None),
    ),
    N(
        "detach-partition-non-concurrently",
        "concurrently-in-autocommit-block",
        """
      with op.get_context().autocommit_block():
          op.execute("ALTER TABLE events DETACH PARTITION events_2019 CONCURRENTLY")
      """,
    ),
    N(
        "detach-partition-non-concurrently",
        "finalize",
        'op.execute("ALTER TABLE events DETACH PARTITION events_2019 FINALIZE")',
    ),
    # --- create-domain-with-check ----------------------------------------------------------------
    P(
        "create-domain-with-check",
        "create-domain-check",
        'op.execute("CREATE DOMAIN positive_amount AS numeric(12, 2) CHECK (VALUE > 0)")  # <-',
        (None, None),
    ),
    P(
        "create-domain-with-check",
        "alter-domain-add-check",
        'op.execute("alter domain positive_amount add constraint amount_limit check (value < 1000000)")  # <-',
        (None, None),
    ),
    N(
        "create-domain-with-check",
        "alter-domain-add-check-not-valid",
        'op.execute("ALTER DOMAIN positive_amount ADD CONSTRAINT amount_limit CHECK (VALUE < 1000000) NOT VALID")',
    ),
    N("create-domain-with-check", "domain-without-check", 'op.execute("CREATE DOMAIN email AS text NOT NULL")'),
    N(
        "create-domain-with-check",
        "validate-later",
        'op.execute("ALTER DOMAIN positive_amount VALIDATE CONSTRAINT amount_limit")',
    ),
    # --- enum-add-value-in-transaction -----------------------------------------------------------
    P(
        ENUM,
        "add-value-then-use-it",
        """
      op.execute("ALTER TYPE order_status ADD VALUE 'refunded'")  # <-
      op.execute("UPDATE orders SET status = 'refunded' WHERE refunded_at IS NOT NULL")
      """,
        (None, None),
    ),
    P(
        ENUM,
        "bind-if-not-exists-after",
        "op.get_bind().execute(sa.text(\"alter type public.order_status add value if not exists 'void'\"))  # <-",
        (None, None),
    ),
    N(
        ENUM,
        "in-autocommit-block",
        """
      with op.get_context().autocommit_block():
          op.execute("ALTER TYPE order_status ADD VALUE IF NOT EXISTS 'refunded'")
      op.execute("UPDATE orders SET status = 'refunded' WHERE refunded_at IS NOT NULL")
      """,
    ),
    # a value added to a type created in the same transaction is as unusable until commit (only the
    # values of the CREATE TYPE itself are; PostgreSQL 15: "unsafe use of new value")
    P(
        ENUM,
        "type-created-in-the-same-revision",
        """
      op.execute("CREATE TYPE order_status AS ENUM ('open', 'paid')")
      op.execute("ALTER TYPE order_status ADD VALUE 'refunded'")  # <-
      """,
        (None, None),
    ),
    N(ENUM, "rename-value", "op.execute(\"ALTER TYPE order_status RENAME VALUE 'void' TO 'voided'\")"),
    # --- drop-object -----------------------------------------------------------------------------
    P("drop-object", "view", 'op.execute("DROP VIEW IF EXISTS order_totals")  # <-', (None, None)),
    P(
        "drop-object",
        "trigger-on-table",
        'op.execute("DROP TRIGGER trg_audit ON orders")  # <-',
        ("orders", None),
        run_on=PG,
    ),
    P(
        "drop-object",
        "trigger-sqlite-mysql",
        'op.execute("DROP TRIGGER IF EXISTS trg_audit")  # <-',
        (None, None),
        run_on=("mysql", "sqlite"),
    ),
    P(
        "drop-object",
        "functions-with-signatures",
        'op.execute("drop function if exists audit_change(integer), touch() cascade")  # <-',
        (None, None),
        (None, None),
        run_on=PG,
    ),
    P(
        "drop-object",
        "procedure",
        'op.execute("DROP PROCEDURE IF EXISTS archive_orders")  # <-',
        (None, None),
        run_on=("postgresql", "mysql"),
    ),
    P(
        "drop-object",
        "materialized-view-and-sequence",
        '''
      op.execute(  # <-
          """
          DROP MATERIALIZED VIEW IF EXISTS sales_by_month;
          DROP SEQUENCE invoice_numbers;
          """
      )
      ''',
        (None, None),
        (None, None),
        run_on=PG,
    ),
    P(
        "drop-object",
        "sequence-construct",
        'op.execute(sa.schema.DropSequence(sa.Sequence("invoice_numbers")))  # <-',
        (None, None),
        run_on=PG,
    ),
    P(
        "drop-object",
        "type-and-domain",
        'op.execute("DROP TYPE order_status; DROP DOMAIN positive_amount")  # <-',
        (None, None),
        (None, None),
        run_on=PG,
    ),
    N(
        "drop-object",
        "create-or-replace-view",
        'op.execute("CREATE OR REPLACE VIEW order_totals AS SELECT 1 AS total")',
    ),
    N(
        "drop-object",
        "created-earlier-in-the-same-revision",
        """
      op.execute("CREATE VIEW order_totals_tmp AS SELECT 1 AS total")
      op.execute("CREATE SEQUENCE invoice_numbers_tmp")
      op.execute("DROP VIEW order_totals_tmp")
      op.execute("DROP SEQUENCE invoice_numbers_tmp")
      """,
        run_on=PG,
    ),
    N(
        "drop-object",
        "function-and-type-created-earlier-in-the-same-revision",
        """
      op.execute("CREATE TYPE mood AS ENUM ('sad', 'ok')")
      op.execute("CREATE FUNCTION touch() RETURNS trigger AS $$ BEGIN RETURN NEW; END $$ LANGUAGE plpgsql")
      op.execute("DROP FUNCTION touch()")
      op.execute("DROP TYPE mood")
      """,
        run_on=PG,
    ),
    P(
        "drop-object",
        "created-if-not-exists-may-have-been-there",
        """
      op.execute("CREATE OR REPLACE VIEW order_totals AS SELECT 1 AS total")
      op.execute("DROP VIEW order_totals")  # <-
      """,
        (None, None),
        run_on=PG,
    ),
    N(
        "drop-object",
        "drop-index-is-another-rule",
        'op.execute("DROP INDEX ix_orders_a")',
        run_on=("postgresql", "sqlite"),
    ),
    N(
        "drop-object",
        "inside-string-literal",
        "op.execute(\"INSERT INTO notes (body) VALUES ('DROP VIEW order_totals')\")",
    ),
    # --- delete-without-where: tautologies -------------------------------------------------------
    P("delete-without-where", "where-1-eq-1", 'op.execute("DELETE FROM sessions WHERE 1=1")  # <-', ("sessions", None)),
    P("delete-without-where", "where-true", 'op.execute("delete from sessions where TRUE")  # <-', ("sessions", None)),
    P(
        "delete-without-where",
        "where-1",
        'op.execute("DELETE FROM sessions WHERE 1")  # <-',
        ("sessions", None),
        run_on=("mysql", "sqlite"),
    ),
    P(
        "delete-without-where",
        "where-strings-equal-in-parentheses",
        "op.execute(\"DELETE FROM sessions WHERE ('a' = 'a')\")  # <-",
        ("sessions", None),
    ),
    P(
        "delete-without-where",
        "or-always-true",
        'op.execute("DELETE FROM sessions WHERE expires_at < now() OR 1 = 1")  # <-',
        ("sessions", None),
    ),
    N("delete-without-where", "where-id", 'op.execute("DELETE FROM sessions WHERE id = 1")'),
    N(
        "delete-without-where",
        "and-with-a-real-condition",
        'op.execute("DELETE FROM sessions WHERE 1=1 AND user_id = 7")',
    ),
    N("delete-without-where", "always-false-deletes-nothing", 'op.execute("DELETE FROM sessions WHERE 1 = 0")'),
    # --- update-without-where: tautologies -------------------------------------------------------
    P(
        "update-without-where",
        "where-1-eq-1",
        "op.execute(\"UPDATE accounts SET plan = 'free' WHERE 1 = 1\")  # <-",
        ("accounts", None),
    ),
    P(
        "update-without-where",
        "where-not-false-bind",
        "op.get_bind().execute(sa.text(\"update accounts set plan = 'free' where not false\"))  # <-",
        ("accounts", None),
    ),
    N("update-without-where", "where-id", "op.execute(\"UPDATE accounts SET plan = 'free' WHERE id = 1\")"),
    # x = x is false for NULL rows, and not a literal: not treated as always true
    N(
        "update-without-where",
        "column-compared-to-itself",
        "op.execute(\"UPDATE accounts SET plan = 'free' WHERE plan = plan\")",
    ),
]


def _params():
    for case in CASES:
        for dialect in case.run_on:
            kind = "pos" if case.expect else "neg"
            yield pytest.param(case, dialect, id=f"{case.rule}-{kind}-{case.name}-{dialect}")


def _check(project, run_cli, case: Case, dialect: str) -> None:
    path = project.revision("r1", case.body, down=None)
    result = run_cli("-c", str(project.ini), "check", "--dialect", dialect, "--range", "base:heads", "--format", "json")
    assert result.exit_code in (0, 3), result.output
    found = [f for f in json.loads(result.stdout)["findings"] if f["rule"] == case.rule]
    got = sorted(((f["table"], f["column"], f["line"]) for f in found), key=repr)
    if not case.expect or dialect not in RULE_DIALECTS[case.rule]:
        assert got == [], f"{case.rule} must not fire here: {found}"
        return
    lines = e2e._marked_lines(path, case.rule)
    assert lines, "a positive case marks its line with '# <-'"
    lines = lines * len(case.expect) if len(lines) == 1 else lines
    want = sorted(((t, c, line) for (t, c), line in zip(case.expect, lines, strict=True)), key=repr)
    assert got == want, f"{case.rule} on {dialect}: {found}"


@pytest.mark.parametrize("case, dialect", list(_params()))
def test_rule(run_cli, project, case: Case, dialect: str) -> None:
    _check(project, run_cli, case, dialect)


def test_every_new_rule_has_a_positive_and_a_negative_case_where_it_applies() -> None:
    for rule, dialects in RULE_DIALECTS.items():
        for dialect in dialects:
            cases = [c for c in CASES if c.rule == rule and dialect in c.run_on]
            assert any(c.expect for c in cases), (rule, dialect)
            assert any(not c.expect for c in cases), (rule, dialect)
    assert set(RULE_DIALECTS) <= e2e.RULE_IDS  # every rule named here exists in rules/
