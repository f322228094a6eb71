"""What an operation makes the server do: the DDL ``add_column``/``create_table`` emit implicitly,
type changes judged per dialect (rules/data/server-behaviour.toml), and columns that rewrite the table."""

from __future__ import annotations

import json
import tomllib

import pytest
import sqlalchemy as sa
from alembic.operations import ops
from sqlalchemy.dialects import mysql

from migrate_guard.analysis import alembic_ops
from migrate_guard.analysis.alembic_ops import column_rewrites_table, from_alembic, type_change
from migrate_guard.analysis.static import read_upgrade
from migrate_guard.config import parse_version


def _shape(op: ops.MigrateOperation, dialect: str | None) -> list[tuple[object, ...]]:
    return [(o.kind, o.table, o.column, o.details.get("name")) for o in from_alembic(op, dialect) or []]


# --- implicit DDL ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["postgresql", "mysql", "sqlite"])
def test_add_column_carries_its_index_foreign_key_and_unique_constraint(dialect: str) -> None:
    column = sa.Column("c", sa.Integer, sa.ForeignKey("customers.id", name="fk_o_c"), index=True)
    assert _shape(ops.AddColumnOp("orders", column), dialect) == [
        ("add_column", "orders", "c", None),
        ("create_index", "orders", "c", "ix_orders_c"),
        ("add_constraint", "orders", "c", "fk_o_c"),
    ]
    found = from_alembic(ops.AddColumnOp("orders", sa.Column("u", sa.Integer, unique=True)), dialect) or []
    assert [(o.kind, o.details.get("constraint_type"), o.details.get("using_index")) for o in found] == [
        ("add_column", None, None),
        ("add_constraint", "unique", False),
    ]
    # the name PostgreSQL gives an unnamed constraint; other servers name it their own way
    assert found[1].details["name"] == ("orders_u_key" if dialect == "postgresql" else None)
    unique_index = from_alembic(ops.AddColumnOp("t", sa.Column("x", sa.Integer, unique=True, index=True)), dialect)
    assert [(o.kind, o.details.get("unique")) for o in unique_index or []] == [
        ("add_column", None),
        ("create_index", True),
    ]


def test_implicit_foreign_key_is_validating_and_says_where_it_came_from() -> None:
    column = sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"))
    fk = (from_alembic(ops.AddColumnOp("orders", column, schema="Shop"), "postgresql") or [])[1]
    assert (fk.schema, fk.details["constraint_type"], fk.details["not_valid"]) == ("shop", "foreign_key", False)
    assert fk.details["note"] == "from ForeignKey on column orders.customer_id"


def test_plain_add_column_emits_nothing_else() -> None:
    assert _shape(ops.AddColumnOp("orders", sa.Column("note", sa.Text())), "postgresql") == [
        ("add_column", "orders", "note", None)
    ]


def test_create_table_foreign_key_locks_the_referenced_table_only() -> None:
    op = ops.CreateTableOp(
        "invoices",
        [
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("customer_id", sa.Integer, sa.ForeignKey("billing.customers.id", name="fk_inv_cust")),
            sa.Column("parent_id", sa.Integer, sa.ForeignKey("invoices.id")),  # a self-reference
            sa.Column("code", sa.String(10), index=True, unique=True),
        ],
    )
    found = from_alembic(op, "postgresql") or []
    assert [(o.kind, o.schema, o.table) for o in found] == [
        ("create_table", None, "invoices"),
        *[("column_type", None, "invoices")] * 4,  # not exempt: the hygiene rules judge declarations
        ("create_index", None, "invoices"),  # exempt later: the table is new
        ("reference_table", "billing", "customers"),
    ]
    ref = found[-1]
    assert ref.details == {
        "name": "fk_inv_cust",
        "referenced_by": "invoices",
        "note": "the referenced table of a foreign key of new table invoices",
    }


# --- type changes per dialect ------------------------------------------------------------------------

TYPE_CHANGES = [
    # old, new, postgresql, mysql, sqlite
    (sa.String(50), sa.String(100), "widening", "rewrite", "rewrite"),  # 200 -> 400 bytes on MySQL
    (sa.String(20), sa.String(60), "widening", "widening", "rewrite"),  # 80 -> 240 bytes
    (mysql.VARCHAR(100, charset="latin1"), mysql.VARCHAR(200, charset="latin1"), "widening", "widening", "rewrite"),
    (sa.String(50), sa.String(), "widening", "rewrite", "rewrite"),
    (sa.String(200), sa.Text(), "widening", "rewrite", "rewrite"),
    (sa.Text(), sa.String(), "widening", "rewrite", "rewrite"),
    (sa.Text(), sa.String(100), "narrowing", "narrowing", "narrowing"),
    (sa.String(100), sa.String(50), "narrowing", "narrowing", "narrowing"),
    (sa.Integer(), sa.BigInteger(), "rewrite", "rewrite", "rewrite"),
    (sa.SmallInteger(), sa.Integer(), "rewrite", "rewrite", "rewrite"),
    (sa.BigInteger(), sa.Integer(), "narrowing", "narrowing", "narrowing"),
    (sa.Numeric(10, 2), sa.Numeric(12, 2), "widening", "rewrite", "rewrite"),
    (sa.Numeric(10, 2), sa.Numeric(14, 4), "rewrite", "rewrite", "rewrite"),  # a scale change
    (sa.Numeric(10, 2), sa.Numeric(8, 2), "narrowing", "narrowing", "narrowing"),
    (sa.DateTime(), sa.DateTime(timezone=True), "changed", "unchanged", "unchanged"),
    (sa.String(20), sa.Integer(), "changed", "changed", "changed"),
    (sa.Enum("a", "b"), sa.Enum("a", "b", "c"), "widening", "widening", "rewrite"),
    (sa.Enum("a", "c"), sa.Enum("a", "b", "c"), "rewrite", "rewrite", "rewrite"),  # inserted, not appended
    (mysql.SET("a", "b"), mysql.SET("a", "b", "c"), "rewrite", "widening", "rewrite"),
    (None, sa.BigInteger(), "changed", "changed", "changed"),  # no existing_type
]


@pytest.mark.parametrize(("old", "new", "pg", "my", "lite"), TYPE_CHANGES, ids=lambda v: str(v))
def test_type_change_by_what_the_server_does(old: object, new: object, pg: str, my: str, lite: str) -> None:
    got = {d: type_change(old, new, d) for d in ("postgresql", "mysql", "mariadb", "sqlite")}
    assert got == {"postgresql": pg, "mysql": my, "mariadb": my, "sqlite": lite}


def test_type_change_without_a_dialect_judges_values_only() -> None:
    assert type_change(sa.Integer(), sa.BigInteger()) == "widening"
    assert type_change(sa.String(50), sa.String(10)) == "narrowing"


def test_alter_column_explains_the_change() -> None:
    def note(**kw: object) -> object:
        op = ops.AlterColumnOp("events", "seq", **kw)  # type: ignore[arg-type]
        return (from_alembic(op, "postgresql") or [])[0].details.get("note")

    assert note(existing_type=sa.Integer(), modify_type=sa.BigInteger()) == (
        "postgresql rewrites the table to change the type"
    )
    assert (
        note(modify_type=sa.BigInteger()) == "the old type is unknown: pass existing_type= so the change can be judged"
    )
    assert note(existing_type=sa.String(50), modify_type=sa.String(80)) is None  # in place: not reported anyway


def test_server_behaviour_data_uses_known_conditions() -> None:
    data = tomllib.loads(alembic_ops.SERVER_BEHAVIOUR.read_text(encoding="utf-8"))
    assert set(data) == {"postgresql", "mysql", "mariadb", "sqlite"}
    for family, table in data.items():
        assert set(table) <= {"volatile_functions", "in_place_type_changes", "since", "utc_zones"}, family
        for feature, version in table.get("since", {}).items():
            assert isinstance(version, str) and parse_version(version), (family, feature)
        for entry in table.get("in_place_type_changes", ()):
            assert set(entry) <= {"from", "to", "when"} and entry.get("when", "always") in alembic_ops._CONDITIONS


def test_static_reader_judges_type_changes_the_same_way() -> None:
    source = (
        "from alembic import op\nimport sqlalchemy as sa\n\n\ndef upgrade():\n"
        '    op.alter_column("events", "seq", existing_type=sa.Integer(), type_=sa.BigInteger())\n'
    )
    for dialect, change in (("postgresql", "rewrite"), (None, "widening")):
        assert [o.details["type_change"] for o in read_upgrade(source, dialect)] == [change]


# --- columns that rewrite the table ------------------------------------------------------------------

REWRITES = [
    ("public_id uuid DEFAULT gen_random_uuid()", "postgresql", "gen_random_uuid"),
    ("ref uuid NOT NULL DEFAULT uuid_generate_v4 ()", "postgresql", "uuid_generate_v4"),
    ("seq bigint DEFAULT nextval('events_seq'::regclass)", "postgresql", "nextval"),
    ("x float DEFAULT random()", "postgresql", "random"),
    ("at timestamptz DEFAULT clock_timestamp()", "postgresql", "clock_timestamp"),
    ("at text DEFAULT timeofday()", "postgresql", "timeofday"),
    ("id bigint GENERATED BY DEFAULT AS IDENTITY", "postgresql", "identity"),
    ("id bigserial", "postgresql", "serial"),
    ("cents int GENERATED ALWAYS AS (total * 100) STORED", "postgresql", "STORED"),
    ("cents int GENERATED ALWAYS AS (total * 100) STORED", "mysql", "STORED"),
    ("n int NOT NULL AUTO_INCREMENT", "mysql", "AUTO_INCREMENT"),
]
NO_REWRITE = [
    ("at timestamptz DEFAULT now()", "postgresql"),
    ("at timestamp DEFAULT CURRENT_TIMESTAMP", "postgresql"),
    ("currency varchar(3) NOT NULL DEFAULT 'EUR'", "postgresql"),
    ("note text DEFAULT 'random()'", "postgresql"),  # the name inside a string is not a call
    ("serial_no text", "postgresql"),
    ("cents int GENERATED ALWAYS AS (total * 100) VIRTUAL", "mysql"),
    ("public_id char(36) DEFAULT (uuid())", "mysql"),  # not classified on MySQL
    ("cents int GENERATED ALWAYS AS (total * 100) STORED", "sqlite"),
]


@pytest.mark.parametrize(("sql", "dialect", "why"), REWRITES)
def test_column_rewrites_table(sql: str, dialect: str, why: str) -> None:
    reason = column_rewrites_table(sql, dialect)
    assert reason is not None and why in reason


@pytest.mark.parametrize(("sql", "dialect"), NO_REWRITE)
def test_column_does_not_rewrite_table(sql: str, dialect: str) -> None:
    assert column_rewrites_table(sql, dialect) is None


def test_add_column_rewrites_table_detail_needs_a_dialect() -> None:
    column = sa.Column("token", sa.Uuid(), server_default=sa.text("gen_random_uuid()"))
    details = [(from_alembic(ops.AddColumnOp("t", column), d) or [])[0].details for d in ("postgresql", None)]
    assert details[0]["rewrites_table"] is True and "gen_random_uuid" in details[0]["note"]
    assert details[1]["rewrites_table"] is None and "note" not in details[1]


# --- end to end: the messages ------------------------------------------------------------------------


def _findings(run_cli, project, dialect: str, body: str) -> list[dict[str, object]]:
    project.revision("r1", body, down=None)
    result = run_cli("-c", str(project.ini), "check", "--dialect", dialect, "--range", "base:heads", "--format", "json")
    assert result.exit_code in (0, 3), result.output
    findings: list[dict[str, object]] = json.loads(result.stdout)["findings"]
    return findings


def test_new_table_foreign_key_finding_names_the_referenced_table(run_cli, project) -> None:
    body = (
        'op.create_table("invoices", sa.Column("id", sa.Integer, primary_key=True),\n'
        '                sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id")))'
    )
    found = [f for f in _findings(run_cli, project, "postgresql", body) if f["category"] != "hygiene"]
    assert [(f["rule"], f["table"]) for f in found] == [("lock-timeout-missing", "customers")]
    assert found[0]["message"] == (
        "takes a strong lock on customers without SET lock_timeout first "
        "(the referenced table of a foreign key of new table invoices)"
    )


def test_messages_say_why(run_cli, project) -> None:
    body = (
        "op.execute(\"SET lock_timeout = '5s'\")\n"
        'op.alter_column("events", "seq", existing_type=sa.Integer(), type_=sa.BigInteger())\n'
        'op.add_column("orders", sa.Column("status", sa.String(20), index=True))\n'
        'op.add_column("orders", sa.Column("token", sa.Uuid(), server_default=sa.text("gen_random_uuid()")))'
    )
    messages = {f["rule"]: f["message"] for f in _findings(run_cli, project, "postgresql", body)}
    assert messages == {
        "alter-column-type": "changes the type of events.seq to bigint "
        "(postgresql rewrites the table to change the type)",
        "create-index-non-concurrently": "creates index ix_orders_status on orders without CONCURRENTLY "
        "(built for index=True on column orders.status)",
        "add-column-rewrites-table": "adds column orders.token, which rewrites the whole table "
        "(the volatile default gen_random_uuid() is evaluated for every existing row)",
    }


def test_each_finding_shows_its_own_statement_of_an_op_that_emits_several(run_cli, project) -> None:
    body = (
        'op.create_table("orders", sa.Column("id", sa.Integer, primary_key=True),\n'
        '                sa.Column("state", sa.Enum("new", "paid", name="order_state")))\n'
        "op.execute(\"ALTER TYPE order_state ADD VALUE 'refunded'\")\n"
        'op.add_column("items",\n'
        '              sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id", name="fk_io"), index=True))'
    )
    found = {f["rule"]: f["statement"] for f in _findings(run_cli, project, "postgresql", body)}
    assert found["integer-primary-key"].startswith("CREATE TABLE orders")  # not the CREATE TYPE before it
    assert found["create-index-non-concurrently"].startswith("CREATE INDEX ix_items_order_id")
    assert "ADD CONSTRAINT fk_io FOREIGN KEY" in found["add-foreign-key-validating"]
    # a value added to an enum created in the same transaction is still unusable until commit
    # (PostgreSQL 15: "unsafe use of new value"), so the new enum does not excuse it
    assert found["enum-add-value-in-transaction"] == "ALTER TYPE order_state ADD VALUE 'refunded'"


def test_an_enum_a_new_table_created_is_new_for_drop_object(run_cli, project) -> None:
    body = (
        'op.create_table("orders", sa.Column("id", sa.BigInteger, primary_key=True),\n'
        '                sa.Column("state", sa.Enum("new", "paid", name="order_state")))\n'
        'op.drop_table("orders")\n'
        'op.execute("DROP TYPE order_state")'
    )
    assert [f["rule"] for f in _findings(run_cli, project, "postgresql", body)] == []
    project.revision("r2", 'op.execute("DROP TYPE order_state")', down="r1")
    result = run_cli("-c", str(project.ini), "check", "--dialect", "postgresql", "--revision", "r2", "--format", "json")
    assert [f["rule"] for f in json.loads(result.stdout)["findings"]] == ["drop-object"]
