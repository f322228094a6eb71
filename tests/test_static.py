"""The static reader of ``upgrade()`` (analysis/static.py): recognised calls, resolved SQL, and parity
with the operations the offline capture produces for the same code."""

from __future__ import annotations

import ast
import textwrap
from typing import Any

import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.operations.base import AbstractOperations

from migrate_guard.analysis.alembic_ops import from_alembic
from migrate_guard.analysis.operations import KINDS, Operation
from migrate_guard.analysis.static import read_upgrade

HEADER = "from alembic import op\nimport sqlalchemy as sa\nfrom sqlalchemy import text\n"


def rev(body: str, before: str = "", after: str = "", header: str = HEADER) -> str:
    """A revision whose ``def upgrade():`` line is line 0 for the expected line numbers below."""
    upgrade = "def upgrade():\n" + textwrap.indent(textwrap.dedent(body), "    ")
    return header + textwrap.dedent(before) + upgrade + textwrap.dedent(after)


def E(kind: str, table: str | None = None, column: str | None = None, line: int = 0, **details: Any) -> dict[str, Any]:
    """An expected operation; ``schema`` and detail keys given are compared, others are not."""
    return {"kind": kind, "table": table, "column": column, "line": line, **details}


def project(op: Operation, expected: dict[str, Any], offset: int) -> dict[str, Any]:
    got = {"kind": op.kind, "table": op.table, "column": op.column, "line": op.line - offset}
    for key in expected.keys() - got.keys():
        got[key] = op.schema if key == "schema" else op.details.get(key, "<missing>")
    return got


CASES: list[tuple[str, str, list[dict[str, Any]]]] = [
    (
        "plain ops",
        rev(
            """\
            op.create_table("Orders", sa.Column("id", sa.Integer), schema="shop")
            op.drop_table("legacy", if_exists=True)
            op.rename_table("a", "B")
            op.drop_column("t", "c")
            op.drop_index(op.f("ix_t_c"), table_name="t", postgresql_concurrently=True)
            op.create_index("ix_t_d", "t", ["d"], unique=True)
            op.drop_constraint("fk_t_u", "t", type_="foreignkey")
            """
        ),
        [
            E("create_table", "orders", line=1, schema="shop"),
            E("column_type", "orders", "id", line=1, schema="shop", type_family="integer", primary_key=False),
            E("drop_table", "legacy", line=2, if_exists=True),
            E("rename_table", "a", line=3, new_name="b"),
            E("drop_column", "t", "c", line=4),
            E("drop_index", "t", line=5, name="ix_t_c", concurrently=True),
            E("create_index", "t", line=6, name="ix_t_d", unique=True, concurrently=False),
            E("drop_constraint", "t", line=7, name="fk_t_u", constraint_type="foreignkey"),
        ],
    ),
    (
        "add_column details",
        rev(
            """\
            op.add_column("t", sa.Column("a", sa.String(50), nullable=False))
            op.add_column("t", sa.Column("b", sa.Integer(), nullable=False, server_default="0"))
            op.add_column("t", sa.Column("c", sa.Integer, primary_key=True))
            op.add_column("t", sa.Column("d", sa.Integer, sa.Identity()))
            op.add_column("t", sa.Column("e", MyType(3), sa.Computed("a + 1")))
            op.add_column("t", sa.Column("f", sa.Integer, server_default=None))
            """
        ),
        [
            E("add_column", "t", "a", line=1, nullable=False, server_default=False, type="varchar(50)"),
            E("add_column", "t", "b", line=2, nullable=False, server_default=True, type="integer"),
            E("add_column", "t", "c", line=3, nullable=False, server_default=False),
            E("add_column", "t", "d", line=4, nullable=False, server_default=True),
            E("add_column", "t", "e", line=5, nullable=True, server_default=True, type="mytype(3)"),
            E("add_column", "t", "f", line=6, nullable=True, server_default=False),
        ],
    ),
    (
        "alter_column split",
        rev(
            """\
            op.alter_column("t", "a", existing_type=sa.String(length=50), type_=sa.VARCHAR(20))
            op.alter_column("t", "b", existing_type=sa.Integer(), type_=sa.BigInteger, nullable=False)
            op.alter_column("t", "c", type_=MyType())
            op.alter_column("t", "d", existing_type=MyType(2), type_=MyType(2), server_default="x")
            op.alter_column("t", "e", new_column_name="E2", existing_nullable=True, nullable=True)
            op.alter_column("t", "f", nullable=True)
            """
        ),
        [
            E(
                "alter_column_type",
                "t",
                "a",
                line=1,
                type_change="narrowing",
                old_type="varchar(50)",
                new_type="varchar(20)",
            ),
            E("alter_column_type", "t", "b", line=2, type_change="rewrite"),  # PostgreSQL rewrites int -> bigint
            E("set_not_null", "t", "b", line=2),
            E("alter_column_type", "t", "c", line=3, type_change="changed", old_type=None, new_type="mytype()"),
            E("alter_column", "t", "d", line=4),
            E("rename_column", "t", "e", line=5, new_name="e2"),
            E("drop_not_null", "t", "f", line=6),
        ],
    ),
    (
        "constraints",
        rev(
            """\
            op.create_unique_constraint("uq", "t", ["a"])
            op.create_foreign_key("fk", "t", "u", ["u_id"], ["id"], source_schema="s", postgresql_not_valid=True)
            op.create_check_constraint("ck", "t", "a > 0")
            op.create_primary_key("pk", "t", ["id"])
            """
        ),
        [
            E("add_constraint", "t", line=1, constraint_type="unique", name="uq", not_valid=False),
            E("add_constraint", "t", line=2, constraint_type="foreign_key", name="fk", not_valid=True, schema="s"),
            E("add_constraint", "t", line=3, constraint_type="check", name="ck"),
            E("add_constraint", "t", line=4, constraint_type="primary_key", name="pk"),
        ],
    ),
    (
        "batch blocks with schema, nested and multiple",
        rev(
            """\
            with op.batch_alter_table("accounts", schema="Billing") as batch_op:
                batch_op.add_column(sa.Column("note", sa.Text()))
                batch_op.drop_column("legacy")
                with op.batch_alter_table("users") as u, op.batch_alter_table("x", schema="y") as x:
                    u.alter_column("name", existing_type=sa.String(10), type_=sa.String(200))
                    x.create_foreign_key("fk_x", "users", ["user_id"], ["id"])
                batch_op.create_index("ix_acc", ["note"], unique=True)
                batch_op.drop_constraint("uq_acc", type_="unique")
            """
        ),
        [
            E("add_column", "accounts", "note", line=2, schema="billing", nullable=True, type="text"),
            E("drop_column", "accounts", "legacy", line=3, schema="billing"),
            E("alter_column_type", "users", "name", line=5, schema=None, type_change="widening"),
            E("add_constraint", "x", line=6, schema="y", constraint_type="foreign_key", name="fk_x"),
            E("create_index", "accounts", line=7, schema="billing", name="ix_acc", unique=True),
            E("drop_constraint", "accounts", line=8, schema="billing", name="uq_acc", constraint_type="unique"),
        ],
    ),
    (
        "alias of alembic.op",
        rev(
            """\
            o.drop_table("t1")
            alembic.op.drop_table("t2")
            notop.drop_table("t3")
            """,
            header="from alembic import op as o\nimport alembic\n",
        ),
        [E("drop_table", "t1", line=1), E("drop_table", "t2", line=2)],
    ),
    (
        "module-level names, op.f and loop over tables",
        rev(
            """\
            op.drop_column(TABLE, COLUMN)
            op.create_index(op.f("ix_" + TABLE), TABLE, ["a"])
            """,
            before='TABLE = "Users"\nCOLUMN: str = "Legacy"\n',
        ),
        [E("drop_column", "users", "legacy", line=1), E("create_index", "users", line=2, name=None)],
    ),
    (
        "bulk_insert of a string that looks like SQL",
        rev(
            """\
            notes = sa.table("notes", sa.column("body"), schema="app")
            op.bulk_insert(notes, [{"body": "DROP TABLE users"}])
            op.bulk_insert(get_table(), [])
            """
        ),
        [E("insert", "notes", line=2, schema="app"), E("insert", None, line=3)],
    ),
    (
        "constructs executed",
        rev(
            """\
            conn = op.get_bind()
            t = sa.table("Sessions", sa.column("id"))
            conn.execute(t.delete())
            conn.execute(t.delete().where(t.c.id == 1))
            stmt = sa.update(t).values(id=2)
            conn.execute(stmt)
            op.execute(sa.table("x").update().where(sa.column("a") == 1).values(a=2))
            conn.execute(sa.select(t)).fetchall()
            conn.execute(t.insert().values(id="DROP TABLE users"))
            conn.execute(build_query())
            conn.execute(sa.text(sql_from_elsewhere))
            """
        ),
        [
            E("delete", "sessions", line=3, has_where=False),
            E("delete", "sessions", line=4, has_where=True),
            E("update", "sessions", line=6, has_where=False),
            E("update", "x", line=7, has_where=True),
            E("select", "sessions", line=8),
            E("insert", "sessions", line=9),
            E("unparsed", line=10),
            E("unparsed", line=11),
        ],
    ),
    (
        "helpers: nested, module-level with arguments, cycles not followed",
        rev(
            """\
            def drop(name):
                op.drop_table(name)
            def never_called_by_name():
                op.drop_table("cb")
            drop("a")
            _drop_legacy("b", column="c")
            run_later(never_called_by_name)
            """,
            after="""\
            def _drop_legacy(table, column="x", schema=None):
                op.drop_column(table, column, schema=schema)
                _recurse()
            def _recurse():
                _recurse()
                op.drop_index("ix_r")
            """,
        ),
        [
            E("drop_table", "cb", line=4),
            E("drop_table", "a", line=2),
            E("drop_column", "b", "c", line=9, schema=None),
            E("drop_index", None, line=13, name="ix_r"),
        ],
    ),
    (
        "calls in if / for / try / with blocks",
        rev(
            """\
            if context.is_offline_mode():
                op.drop_column("t", "a")
            else:
                for name in ("b", "c"):
                    op.drop_column("t", name)
            try:
                op.drop_index("ix")
            except Exception:
                pass
            finally:
                with op.get_context().autocommit_block():
                    op.create_index("ix2", "t", ["a"], postgresql_concurrently=True)
            """
        ),
        [
            E("drop_column", "t", "a", line=2),
            E("drop_column", "t", None, line=5),
            E("drop_index", None, line=7),
            E("transaction", None, line=11),  # the COMMIT and BEGIN around autocommit_block()
            E("create_index", "t", line=12, concurrently=True),
            E("transaction", None, line=12),
        ],
    ),
]

SQL_CASES: list[tuple[str, str, list[dict[str, Any]]]] = [
    (
        "literal, implicit concatenation, text(), DROP TABLE inside an inserted string",
        rev(
            """\
            op.execute("DROP TABLE a")
            op.execute("DELETE FROM b "
                       "WHERE id > 5")
            op.execute(sa.text("TRUNCATE c"))
            op.execute("INSERT INTO notes (body) VALUES ('DROP TABLE users')")
            """
        ),
        [
            E("drop_table", "a", line=1),
            E("delete", "b", line=2, has_where=True),
            E("truncate", "c", line=4),
            E("insert", "notes", line=5),
        ],
    ),
    (
        "f-strings and templates",
        rev(
            """\
            op.execute(f"DELETE FROM {table_name()}")
            known = "Users"
            op.execute(f"ALTER TABLE {known} DROP COLUMN legacy")
            op.execute("UPDATE %s SET a = 1" % unknown)
            op.execute("UPDATE {} SET a = 1 WHERE b".format(unknown))
            op.execute("DROP TABLE " + known)
            """
        ),
        [
            E("delete", None, line=1, has_where=False),
            E("drop_column", "users", "legacy", line=3),
            E("update", None, line=4, has_where=False),
            E("update", None, line=5, has_where=True),
            E("drop_table", "users", line=6),
        ],
    ),
    (
        "variable-bound SQL, += and a loop over literal statements",
        rev(
            """\
            sql = "DROP TABLE a"
            sql += "; DROP TABLE b"
            op.execute(sql)
            for stmt in STATEMENTS:
                op.get_bind().exec_driver_sql(stmt)
            statements = ["DROP TABLE never"]
            statements.append(something)
            for stmt in statements:
                op.execute(stmt)
            """,
            before='STATEMENTS = ("TRUNCATE x", "DROP INDEX ix")\n',
        ),
        [
            E("drop_table", "a", line=3),
            E("drop_table", "b", line=3),
            E("truncate", "x", line=5),
            E("drop_index", None, line=5, name="ix"),
            E("unparsed", line=9),
        ],
    ),
    (
        "get_bind().execute(text(...)).fetchall() and connection.execute",
        rev(
            """\
            rows = op.get_bind().execute(text("UPDATE customers SET a = 1 RETURNING id")).fetchall()
            conn = op.get_bind()
            for row in conn.execute(
                sa.text("DELETE FROM orders WHERE a = :x RETURNING id").bindparams(x=1)
            ):
                connection.execute("DELETE FROM orders WHERE id = 1")
            """
        ),
        [
            E("update", "customers", line=1, has_where=False),
            E("delete", "orders", line=3, has_where=True),
            E("delete", "orders", line=6, has_where=True),
        ],
    ),
    (
        "SQL passed to helpers",
        rev(
            """\
            def run(sql):
                op.get_bind().execute(sa.text(sql))
            run("DROP TABLE a")
            _exec("TRUNCATE b")
            """,
            after="""\
            def _exec(statement):
                op.execute(statement)
            """,
        ),
        [E("drop_table", "a", line=2), E("truncate", "b", line=6)],
    ),
]


def _check(source: str, expected: list[dict[str, Any]]) -> None:
    offset = source.splitlines().index("def upgrade():") + 1
    got = read_upgrade(source, "postgresql")
    assert [project(o, e, offset) for o, e in zip(got, expected, strict=False)] == expected
    assert len(got) == len(expected), [(o.kind, o.table, o.line) for o in got]
    assert all(o.source == "ast" and o.kind in KINDS and o.statement for o in got)


@pytest.mark.parametrize(("source", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_read_upgrade(source: str, expected: list[dict[str, Any]]) -> None:
    _check(source, expected)


@pytest.mark.parametrize(("source", "expected"), [c[1:] for c in SQL_CASES], ids=[c[0] for c in SQL_CASES])
def test_read_upgrade_sql(source: str, expected: list[dict[str, Any]]) -> None:
    _check(source, expected)


def test_statement_is_the_collapsed_call_source() -> None:
    long_call = "op.execute(build(" + "arg, " * 100 + "))\n"
    source = rev('op.add_column(\n    "t",\n    sa.Column("c", sa.Integer()),\n)\n' + long_call)
    first, second = read_upgrade(source)
    assert first.statement == 'op.add_column( "t", sa.Column("c", sa.Integer()), )'
    assert first.line == 5
    assert second.kind == "unparsed" and len(second.statement) == 200


def test_line_of_a_call_chained_over_lines_is_the_called_name() -> None:
    source = rev('op.get_bind(\n).execute(\n    "DROP TABLE a"\n)\n')
    assert [(o.kind, o.line) for o in read_upgrade(source)] == [("drop_table", 6)]


def test_other_function_and_missing_function() -> None:
    source = rev('op.drop_table("up")\n', after='def downgrade():\n    op.create_table("up")\n')
    assert [o.kind for o in read_upgrade(source, function="downgrade")] == ["create_table"]
    assert read_upgrade("x = 1\n") == []


def test_syntax_error_is_raised_unchanged() -> None:
    with pytest.raises(SyntaxError) as info:
        read_upgrade("def upgrade(:\n    pass\n")
    assert info.value.lineno == 1


def test_strange_code_is_skipped_not_raised() -> None:
    source = rev(
        """\
        op.drop_column()
        op.add_column("t", *cols)
        op.alter_column(**kw)
        x, *y = op.execute
        op.create_index(name, table, cols, unique=flag)
        op.alter_column("t", "c", type_=sa.Enum(Color), existing_type=sa.ARRAY(sa.Integer()))
        lambda: op.drop_table("in_lambda")
        """
    )
    kinds = [(o.kind, o.details.get("unique"), o.details.get("type_change")) for o in read_upgrade(source)]
    assert kinds == [
        ("drop_column", None, None),
        ("add_column", None, None),
        ("alter_column", None, None),
        ("create_index", None, None),
        ("alter_column_type", None, "changed"),
        ("drop_table", None, None),
    ]


# --- parity with the offline capture ---------------------------------------------------------------

PARITY = [
    """\
    op.create_table("t", sa.Column("id", sa.Integer, primary_key=True), schema="s")
    op.drop_table("old", if_exists=True)
    op.rename_table("a", "b", schema="s")
    op.add_column("t", sa.Column("a", sa.String(50), nullable=False, server_default="x"), schema="s")
    op.add_column("t", sa.Column("b", sa.Numeric(10, 2)))
    op.add_column("t", sa.Column("c", sa.BigInteger, sa.Identity()))
    op.drop_column("t", "c")
    """,
    """\
    op.alter_column("t", "a", existing_type=sa.String(50), type_=sa.Text(), nullable=False)
    op.alter_column("t", "b", existing_type=sa.Integer, type_=sa.SmallInteger(), existing_nullable=True, nullable=True)
    op.alter_column("t", "c", new_column_name="d", schema="s")
    op.alter_column("t", "e", server_default=None)
    op.alter_column("t", "f", existing_type=postgresql.JSON(), type_=postgresql.JSONB())
    op.alter_column("t", "g", existing_type=sa.Numeric(10, 2), type_=sa.Numeric(precision=12, scale=2))
    """,
    """\
    op.create_index(op.f("ix_t_a"), "t", ["a"], unique=True, postgresql_concurrently=True, schema="s")
    op.drop_index("ix_t_b", table_name="t", postgresql_concurrently=True)
    op.drop_index("ix_t_c")
    op.create_unique_constraint("uq", "t", ["a"], schema="s")
    op.create_foreign_key("fk", "t", "u", ["u_id"], ["id"], source_schema="s", postgresql_not_valid=True)
    op.create_check_constraint("ck", "t", "a > 0")
    op.create_primary_key("pk", "t", ["id"])
    op.drop_constraint("fk", "t", type_="foreignkey", schema="s")
    op.bulk_insert(sa.table("t", sa.column("a"), schema="s"), [{"a": 1}])
    op.create_table_comment("t", "comment")
    """,
    """\
    with op.batch_alter_table("t", schema="s") as batch_op:
        batch_op.add_column(sa.Column("a", sa.Integer(), nullable=False))
        batch_op.drop_column("b")
        batch_op.alter_column("c", existing_type=sa.VARCHAR(10), type_=sa.String(5))
        batch_op.create_index("ix", ["a"], unique=True)
        batch_op.drop_index("ix_old")
        batch_op.create_foreign_key("fk", "u", ["u_id"], ["id"])
        batch_op.create_check_constraint("ck", "a > 0")
        batch_op.create_unique_constraint("uq", ["a"])
        batch_op.drop_constraint("uq_old", type_="unique")
    """,
    # what Alembic emits besides the op itself: indexes, constraints, the tables foreign keys lock
    """\
    op.create_table(
        "invoices",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), index=True),
        sa.Column("number", sa.String(20), unique=True),
        sa.ForeignKeyConstraint(["id"], ["ledger.entries.id"], name="fk_invoices_entry"),
        schema="billing",
    )
    op.add_column("orders", sa.Column("code", sa.String(20), unique=True, index=True))
    op.add_column("orders", sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id", name="fk_o_c")))
    op.add_column("orders", sa.Column("token", sa.Uuid(), server_default=sa.text("gen_random_uuid()")))
    op.add_column("orders", sa.Column("created", sa.DateTime(), server_default=sa.func.now(), nullable=False))
    op.add_column("orders", sa.Column("n", sa.Integer, sa.CheckConstraint("n > 0", name="ck_n")))
    op.alter_column("orders", "qty", existing_type=sa.Integer(), type_=sa.BigInteger())
    op.alter_column("orders", "note", existing_type=sa.String(100), type_=sa.Text())
    """,
]


def _captured(source: str, dialect: str | None = None) -> list[Operation]:
    """Run ``upgrade()`` against Alembic's real op API and convert the op objects it builds."""
    captured: list[Any] = []
    context = MigrationContext.configure(dialect_name=dialect or "postgresql", opts={"as_sql": True})
    namespace: dict[str, Any] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(AbstractOperations, "invoke", lambda self, operation: captured.append(operation))
        with Operations.context(context):
            exec(compile(source, "<revision>", "exec"), namespace)
            namespace["upgrade"]()
    return [o for operation in captured for o in from_alembic(operation, dialect) or []]


def _shape(ops: list[Operation]) -> list[tuple[Any, ...]]:
    return [(o.kind, o.table, o.column, o.schema, o.details) for o in ops]


@pytest.mark.parametrize("dialect", [None, "postgresql", "mysql", "sqlite"])
@pytest.mark.parametrize("body", PARITY)
def test_parity_with_offline_capture(body: str, dialect: str | None) -> None:
    source = rev(body, header=HEADER + "from sqlalchemy.dialects import postgresql\n")
    expected = _captured(source, dialect)
    calls = sum(isinstance(n, ast.Expr) for n in ast.walk(ast.parse(textwrap.dedent(body))))
    assert len(expected) >= calls
    assert _shape(read_upgrade(source, dialect)) == _shape(expected)


def test_parity_covers_the_records_beside_the_op() -> None:
    source = rev(PARITY[-1], header=HEADER + "from sqlalchemy.dialects import postgresql\n")
    got = read_upgrade(source, "postgresql")
    kinds = [(o.kind, o.table, o.details.get("constraint_type")) for o in got if o.kind != "add_column"]
    assert ("reference_table", "customers", None) in kinds and ("reference_table", "entries", None) in kinds
    assert ("create_index", "invoices", None) in kinds
    assert [o.details["unique"] for o in got if o.kind == "create_index" and o.table == "orders"] == [True]
    assert ("add_constraint", "orders", "foreign_key") in kinds  # a column's CHECK is inline: no record of its own
    assert ("add_constraint", "orders", "check") not in kinds
    rewrites = {o.column: o.details["rewrites_table"] for o in got if o.kind == "add_column"}
    assert rewrites == {"code": False, "customer_id": False, "token": True, "created": False, "n": False}
    types = {o.column: (o.details["type_change"], o.details.get("note")) for o in got if o.kind == "alter_column_type"}
    assert types == {"qty": ("rewrite", "postgresql rewrites the table to change the type"), "note": ("widening", None)}


# --- dialect conditions: only the branch that runs on the checked dialect is read ---------------------

DIALECT_BRANCHES = rev(
    """\
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.drop_table("t_pg")
    elif bind.dialect.name in ("mysql", "mariadb"):
        op.drop_table("t_mysql")
    else:
        op.drop_table("t_sqlite")
    if op.get_bind().dialect.name != "sqlite":
        op.drop_table("t_not_sqlite")
    if context.get_context().dialect.name not in ("postgresql",):
        op.drop_table("t_not_pg")
    if op.get_context().dialect.name.startswith("my"):
        op.drop_table("t_my_prefix")
    if bind.engine.name == "sqlite":
        op.drop_table("t_engine_sqlite")
    if is_pg():
        op.drop_table("t_helper_pg")
    if _dialect() == "mysql" and not is_pg():
        op.drop_table("t_helper_mysql")
    op.execute("DROP TABLE t_ifexp_sqlite" if _dialect() == "sqlite" else "DROP TABLE t_ifexp_other")
    """,
    before='''\
    def _dialect():
        return op.get_bind().dialect.name


    def is_pg():
        """A boolean of the dialect name, through a local variable."""
        bind = op.get_bind()
        return bind.dialect.name == "postgresql"


    ''',
    header=HEADER + "from alembic import context\n",
)
ON = {
    "postgresql": ["t_pg", "t_not_sqlite", "t_helper_pg", "t_ifexp_other"],
    "mysql": ["t_mysql", "t_not_sqlite", "t_not_pg", "t_my_prefix", "t_helper_mysql", "t_ifexp_other"],
    "sqlite": ["t_sqlite", "t_not_pg", "t_engine_sqlite", "t_ifexp_sqlite"],
}


@pytest.mark.parametrize("dialect", sorted(ON))
def test_dialect_conditions_read_only_the_branch_that_runs(dialect: str) -> None:
    tables = [o.table for o in read_upgrade(DIALECT_BRANCHES, dialect)]
    assert tables == ON[dialect]
    everything = {t for names in ON.values() for t in names}
    assert not (everything - set(ON[dialect])) & set(tables)  # nothing of another dialect's branches


def test_without_a_dialect_every_branch_is_read() -> None:
    tables = [o.table for o in read_upgrade(DIALECT_BRANCHES, None)]
    assert set(tables) == {t for names in ON.values() for t in names}


def test_mariadb_decides_only_what_holds_whether_it_calls_itself_mariadb_or_mysql() -> None:
    source = rev(
        """\
        name = op.get_bind().dialect.name
        if name in ("mysql", "mariadb"):
            op.drop_table("either")
        if name == "mysql":
            op.drop_table("mysql_url")
        if name == "postgresql":
            op.drop_table("never")
        """
    )
    assert [o.table for o in read_upgrade(source, "mariadb")] == ["either", "mysql_url"]


def test_conditions_it_cannot_decide_read_both_branches() -> None:
    source = rev(
        """\
        bind = op.get_bind()
        if bind.dialect.name == "postgresql" and has_column("t", "c"):
            op.drop_table("a")
        else:
            op.drop_table("b")
        if bind.dialect.server_version_info >= (14,):
            op.drop_table("c")
        if bind.dialect.name == "sqlite" or feature_flag():
            op.drop_table("d")
        """
    )
    assert [o.table for o in read_upgrade(source, "postgresql")] == ["a", "b", "c", "d"]
    # the same conditions, decided by one operand: `and` with a False one, `or` with a True one
    assert [o.table for o in read_upgrade(source, "sqlite")] == ["b", "c", "d"]


def test_a_decided_early_return_or_raise_ends_the_reading() -> None:
    source = rev(
        """\
        if op.get_bind().dialect.name != "postgresql":
            return
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.drop_table("pg_cleanup")
        """
    )
    assert [o.kind for o in read_upgrade(source, "postgresql")] == ["create_other", "drop_table"]
    assert read_upgrade(source, "sqlite") == []
    raising = source.replace("return", 'raise NotImplementedError("PostgreSQL only")')
    assert read_upgrade(raising, "mysql") == []
    undecided = source.replace('op.get_bind().dialect.name != "postgresql"', "not has_extension()")
    assert [o.kind for o in read_upgrade(undecided, "sqlite")] == ["create_other", "drop_table"]


def test_offline_mode_is_decided_only_when_told() -> None:
    source = rev(
        """\
        if context.is_offline_mode():
            raise RuntimeError("run this revision online")
        else:
            op.drop_table("online_only")
        if not op.get_context().as_sql:
            op.drop_column("t", "online_too")
        """,
        header=HEADER + "from alembic import context\n",
    )
    # failed offline: only an online run completes it
    assert [o.kind for o in read_upgrade(source, "sqlite", offline=False)] == ["drop_table", "drop_column"]
    assert [o.kind for o in read_upgrade(source, "sqlite", offline=True)] == []
    assert [o.kind for o in read_upgrade(source, "sqlite")] == ["drop_table", "drop_column"]  # either: both read


def test_helpers_with_parameters_and_through_arguments() -> None:
    source = rev(
        """\
        conn = op.get_bind()
        if on(conn, "sqlite"):
            op.drop_table("lite")
        if on(conn, "postgresql"):
            op.drop_table("pg")
        """,
        before="""\
        def on(bind, name):
            return bind.dialect.name == name


        """,
    )
    assert [o.table for o in read_upgrade(source, "sqlite")] == ["lite"]
    assert [o.table for o in read_upgrade(source, "postgresql")] == ["pg"]
