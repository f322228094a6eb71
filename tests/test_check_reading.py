"""How `check` reads revisions it cannot simply run offline: a module that fails to import, a dialect
branch, a batch block; and the report fields and usage errors that go with it (issue 15)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import Project

from migrate_guard import alembic_bridge as bridge
from migrate_guard.config import load_project
from migrate_guard.errors import RevisionError

FIXTURE = Path(__file__).parent / "data" / "unimportable_revision"


@pytest.fixture
def unimportable(tmp_path: Path) -> Path:
    """A copy of the fixture project whose revision 0002 imports ``myapp``, which is not installed."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "unimportable"))


def check(run_cli, ini: Path, *args: str, code: tuple[int, ...] = (0, 3)) -> list[dict]:
    result = run_cli("-c", str(ini), "check", "--format", "json", *args)
    assert result.exit_code in code, result.output
    return json.loads(result.stdout)["findings"]


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def targets(found: list[dict]) -> list[tuple]:
    return [
        (f["revision"], f["rule"], f["schema"], f["table"], f["column"])
        for f in found
        if f["category"] != "hygiene" and f["rule"] != "lock-timeout-missing"  # nearly every revision takes a lock
    ]


# --- a revision module that cannot be imported -----------------------------------------------------


def test_unimportable_revision_is_read_from_source_and_the_others_run(run_cli, unimportable):
    found = check(run_cli, unimportable / "alembic.ini", "--dialect", "postgresql")
    info = [f for f in found if f["rule"] == "not-analyzable-offline"]
    assert len(info) == 1 and info[0]["revision"] == "0002" and info[0]["severity"] == "info"
    assert "could not import myapp.models" in info[0]["message"] and "No module named 'myapp'" in info[0]["message"]
    assert info[0]["line"] == 6  # the import statement
    assert targets(found) == [
        ("0002", "drop-column", None, "accounts", "legacy"),  # read statically
        ("0002", "drop-index", None, None, None),  # its PostgreSQL-only branch
        ("0003", "drop-table", "ops", "audit_log", None),  # rendered offline as usual
    ]
    drop_index = next(f for f in found if f["rule"] == "drop-index")
    assert drop_index["statement"] == "DROP INDEX ix_accounts_legacy_trgm"


def test_the_dialect_branch_of_an_unimportable_revision_is_read_for_its_dialect(run_cli, unimportable):
    for dialect in ("sqlite", "mysql"):
        found = check(run_cli, unimportable / "alembic.ini", "--dialect", dialect, "--revision", "0002")
        assert targets(found) == [("0002", "drop-column", None, "accounts", "legacy")], dialect


def test_revision_of_an_unrelated_revision_is_unaffected(run_cli, unimportable):
    found = check(run_cli, unimportable / "alembic.ini", "--revision", "0003")
    assert [(f["revision"], f["rule"]) for f in found] == [("0003", "drop-table")]
    found = check(run_cli, unimportable / "alembic.ini", "--range", "0002:heads")
    assert [(f["revision"], f["rule"]) for f in found] == [("0003", "drop-table")]


def test_a_run_that_migrates_still_refuses_an_unimportable_revision(unimportable):
    project = load_project(str(unimportable / "alembic.ini"), None)
    with pytest.raises(RevisionError, match=r"0002_uses_the_app.py:6: ModuleNotFoundError"):
        bridge.open_scripts(project)
    script = bridge.open_scripts(project, read_unimportable=True)
    assert [s.revision for s in bridge.all_in_order(script)] == ["0001", "0002", "0003"]


def test_the_pre_commit_hook_reads_an_unimportable_revision_statically_as_check_does(run_cli, unimportable):
    revision = unimportable / "migrations" / "versions" / "0002_uses_the_app.py"
    result = run_cli("check-files", "--format", "json", "--dialect", "sqlite", str(revision))
    assert result.exit_code in (0, 3), result.output
    found = json.loads(result.stdout)["findings"]
    assert targets(found) == [("0002", "drop-column", None, "accounts", "legacy")]
    info = [f for f in found if f["rule"] == "not-analyzable-offline"]
    assert len(info) == 1 and "could not import myapp.models" in info[0]["message"]


def test_an_unimportable_head_still_counts_for_multiple_heads(run_cli, project: Project):
    project.revision("a1", "op.drop_table('one')", down=None)
    project.revision("b1", "op.drop_table('two')", down="a1")
    project.revision("c1", "op.drop_table('three')", down="a1", header="import myapp.models\n")
    found = check(run_cli, project.ini, "--range", "base:heads")
    heads = [f for f in found if f["rule"] == "multiple-heads"]
    assert len(heads) == 1 and "b1" in heads[0]["message"] and "c1" in heads[0]["message"]
    assert sorted(f["table"] for f in found if f["rule"] == "drop-table") == ["one", "three", "two"]
    assert any(f["rule"] == "not-analyzable-offline" and "could not import myapp.models" in f["message"] for f in found)


def test_any_exception_at_import_is_read_statically_too(run_cli, project: Project):
    project.revision("a1", "op.drop_table('kept')", header="import os\nDSN = os.environ['MIGRATE_GUARD_NO_SUCH_VAR']\n")
    found = check(run_cli, project.ini, "--range", "base:heads")
    info = next(f for f in found if f["rule"] == "not-analyzable-offline")
    assert "failed to import: KeyError" in info["message"]
    assert [f["table"] for f in found if f["rule"] == "drop-table"] == ["kept"]


def test_an_unimportable_revision_without_a_literal_id_is_still_an_error(run_cli, project: Project):
    path = project.revision("a1", "op.drop_table('x')", header="import myapp\n")
    path.write_text(path.read_text().replace("revision = 'a1'", "revision = myapp.next_id()"))
    message = one_line_error(run_cli("-c", str(project.ini), "check"))
    assert "a1.py" in message and "No module named 'myapp'" in message


AUTOCOMMIT = """
with op.get_context().autocommit_block():
    op.create_index("ix_a", "orders", ["a"], postgresql_concurrently=True)
    op.execute("ALTER TYPE state ADD VALUE IF NOT EXISTS 'x'")
op.create_index("ix_b", "orders", ["b"], postgresql_concurrently=True)
"""


@pytest.mark.parametrize(
    "header, tail",
    [
        ("import myapp.models\n", ""),  # never imported: read from its source alone
        ("", 'op.get_bind().execute(sa.text("SELECT 1")).fetchall()'),  # fails offline after its first ops
    ],
)
def test_a_revision_read_statically_leaves_the_transaction_in_autocommit_block(run_cli, project, header, tail):
    path = project.revision("a1", AUTOCOMMIT + tail, header=header)
    ix_b = next(n for n, line in enumerate(path.read_text().splitlines(), 1) if '"ix_b"' in line)
    found = check(run_cli, project.ini, "--dialect", "postgresql", "--range", "base:heads")
    assert any(f["rule"] == "not-analyzable-offline" for f in found)
    in_transaction = [(f["rule"], f["line"]) for f in found if f["rule"].endswith("-in-transaction")]
    assert in_transaction == [("concurrent-index-in-transaction", ix_b)]  # after the block, not in it


# --- dialect branches, end to end -----------------------------------------------------------------

BRANCHES = """
bind = op.get_bind()
if bind.dialect.name == "postgresql":
    op.drop_table("postgresql_only")
elif bind.dialect.name == "mysql":
    op.drop_table("mysql_only")
else:
    op.drop_table("sqlite_only")
rows = bind.execute(sa.text("SELECT 1")).fetchall()  # cannot run offline: read statically
"""


@pytest.mark.parametrize("dialect", ["postgresql", "mysql", "sqlite"])
def test_only_the_branch_of_the_checked_dialect_is_reported(run_cli, project: Project, dialect):
    project.revision("a1", BRANCHES)
    found = check(run_cli, project.ini, "--range", "base:heads", "--dialect", dialect)
    assert any(f["rule"] == "not-analyzable-offline" for f in found)
    assert [f["table"] for f in found if f["rule"] == "drop-table"] == [f"{dialect}_only"]


def test_the_dialect_setting_picks_the_branch_too(run_cli, project: Project):
    project.revision("a1", BRANCHES)
    project.settings('dialect = "mysql"\n')
    found = check(run_cli, project.ini, "--range", "base:heads")
    assert [f["table"] for f in found if f["rule"] == "drop-table"] == ["mysql_only"]


# --- report fields ----------------------------------------------------------------------------------


def test_schema_is_reported_where_the_operation_has_one(run_cli, project: Project):
    project.revision(
        "a1",
        """
        op.drop_column("invoices", "total", schema="billing")
        op.drop_table("scratch")
        op.execute("DROP TABLE archive.old_orders")
        with op.batch_alter_table("customers", schema="crm") as batch_op:
            batch_op.drop_column("legacy")
        """,
    )
    found = check(run_cli, project.ini, "--range", "base:heads", "--dialect", "postgresql")
    assert targets(found) == [
        ("a1", "drop-column", "billing", "invoices", "total"),
        ("a1", "drop-table", None, "scratch", None),
        ("a1", "drop-table", "archive", "old_orders", None),
        ("a1", "drop-column", "crm", "customers", "legacy"),
    ]
    assert all(list(f)[list(f).index("table") - 1] == "schema" for f in found)


def test_batch_statement_is_the_sql_rendered_for_that_op(run_cli, project: Project):
    project.revision(
        "a1",
        """
        with op.batch_alter_table("customers", schema="crm") as batch_op:
            batch_op.drop_column("legacy")
            batch_op.alter_column(
                "name",
                new_column_name="full_name",
            )
        """,
    )
    found = check(run_cli, project.ini, "--range", "base:heads", "--dialect", "postgresql")
    statements = {f["rule"]: f["statement"] for f in found}
    assert statements["drop-column"] == "ALTER TABLE crm.customers DROP COLUMN legacy"
    assert statements["rename-column"] == "ALTER TABLE crm.customers RENAME name TO full_name"


def test_batch_statement_of_a_recreated_table_is_the_whole_python_statement(run_cli, project: Project):
    project.revision(
        "a1",
        """
        customers = sa.Table("customers", sa.MetaData(), sa.Column("id", sa.Integer), sa.Column("legacy", sa.Text))
        with op.batch_alter_table("customers", copy_from=customers) as batch_op:
            batch_op.drop_column(
                "legacy",
            )
        """,
    )
    found = check(run_cli, project.ini, "--range", "base:heads", "--dialect", "sqlite")
    assert not any(f["rule"] == "not-analyzable-offline" for f in found)  # rendered, not read
    drop = next(f for f in found if f["rule"] == "drop-column")
    assert drop["statement"] == 'batch_op.drop_column( "legacy", )'


# --- usage -----------------------------------------------------------------------------------------


def test_a_reversed_range_is_a_usage_error(run_cli, unimportable):
    ini = str(unimportable / "alembic.ini")
    message = one_line_error(run_cli("-c", ini, "check", "--range", "0003:0001"))
    assert "--range 0003:0001" in message and "0001:0003" in message
    assert "comes after" in one_line_error(run_cli("-c", ini, "check", "--range", "heads:base"))
    assert "comes after" in one_line_error(run_cli("-c", ini, "check", "--range", "0002:base"))
    found = check(run_cli, unimportable / "alembic.ini", "--range", "0001:0003")
    assert {f["revision"] for f in found} == {"0002", "0003"}
    assert check(run_cli, unimportable / "alembic.ini", "--range", "0002:0002") == []  # empty, not reversed


def test_rules_id_prints_plain_text(run_cli, tmp_path):
    result = run_cli("rules", "drop-column", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("drop-column: ")
    assert "**" not in out and "```" not in out and "`" not in out
    assert not any(line.startswith("#") for line in out.splitlines())
    assert "Why it is dangerous" in out and "What to do instead" in out
    assert "mark it deferred" in out  # the rule's text, its inline code marks dropped
    assert "--allow drop-column:<table>.<column>" in out
    assert "unknown rule 'nope'" in one_line_error(run_cli("rules", "nope", cwd=tmp_path))
