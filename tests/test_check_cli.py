"""`migrate-guard check` end to end: real Alembic projects on disk, the real CLI, real exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Project, copy_example

SCHEMA = Path(__file__).parent / "data" / "sarif-schema-2.1.0.json"
CONTRACT_KEYS = {
    "rule",
    "category",
    "severity",
    "revision",
    "file",
    "line",
    "schema",
    "table",
    "column",
    "statement",
    "message",
    "suggestion",
    "allowed",
}


def test_every_json_producer_gets_the_contract_from_the_finding_itself():
    from migrate_guard.analysis.engine import Finding

    finding = Finding("drop-table", "destructive", "warning", "drops table t", "...", table="t", schema="billing")
    assert set(finding.to_dict()) == CONTRACT_KEYS  # migrate-safe's and the monitor page's JSON too
    assert finding.to_dict()["schema"] == "billing"
    assert Finding("drop-table", "destructive", "warning", "m", "s").to_dict()["schema"] is None


def findings(result) -> list[dict]:
    return json.loads(result.stdout)["findings"]


def one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


# --- the bundled example ------------------------------------------------------------------------


def test_example_reports_reviewed_and_unreviewed_destructive_revisions(run_cli, example):
    result = run_cli("check", "--format", "json", cwd=example)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    by_rule = {f["rule"]: f for f in data["findings"]}
    drop_col = by_rule["drop-column"]
    assert drop_col["allowed"] is True and drop_col["severity"] == "error"  # protected table, reviewed
    assert (drop_col["revision"], drop_col["table"], drop_col["column"]) == ("0005", "customers", "legacy_code")
    assert drop_col["file"].endswith("0005_drop_legacy_code.py")
    source_line = (
        (example / "migrations/versions/0005_drop_legacy_code.py").read_text().splitlines()[drop_col["line"] - 1]
    )
    assert "drop_column" in source_line
    drop_table = by_rule["drop-table"]
    assert (drop_table["allowed"], drop_table["severity"], drop_table["table"]) == (False, "warning", "import_staging")
    assert all(set(f) == CONTRACT_KEYS for f in data["findings"])
    assert data["summary"] == {"revisions": 6, "errors": 0, "warnings": 1, "infos": 0, "allowed": 1}


def test_example_fails_ci_on_warnings_when_asked(run_cli, example):
    assert run_cli("check", "--fail-on", "warning", cwd=example).exit_code == 3
    assert run_cli("check", "--fail-on", "never", "--format", "json", cwd=example).exit_code == 0


def test_unacknowledged_drop_on_protected_table_blocks(run_cli, example):
    path = example / "migrations/versions/0005_drop_legacy_code.py"
    path.write_text(path.read_text().replace("# migrate-guard: allow", "# reviewed? allow"))
    result = run_cli("check", "--format", "json", cwd=example)
    assert result.exit_code == 3
    error = [f for f in findings(result) if f["severity"] == "error"]
    assert [(f["rule"], f["table"], f["column"], f["allowed"]) for f in error] == [
        ("drop-column", "customers", "legacy_code", False)
    ]


def test_text_output_names_file_line_rule_table_and_alternative(run_cli, example):
    result = run_cli("-c", str(example / "alembic.ini"), "check")
    assert result.exit_code == 0
    out = result.stdout
    assert "0006_drop_import_staging.py:" in out and "drop-table" in out and "import_staging" in out
    assert "instead:" in out and "docs/rules/drop-table.md" in out
    assert "reviewed: superseded by customer_code" in out
    assert "checked 6 revisions" in out


# --- capture: op calls, batch blocks, raw SQL, binds ------------------------------------------


def check_json(run_cli, project: Project, *args: str):
    result = run_cli("-c", str(project.ini), "check", "--range", "base:heads", "--format", "json", *args)
    assert result.exit_code in (0, 3), result.output
    return findings(result)


def rules_of(found: list[dict]) -> list[tuple]:
    return [(f["rule"], f["table"], f["column"]) for f in found if f["category"] != "hygiene"]


def test_raw_sql_in_execute_and_bind_is_classified_with_its_line(run_cli, project):
    path = project.revision(
        "a1",
        """
        op.execute("UPDATE accounts SET balance = 0; truncate table audit_log CASCADE")
        op.execute(sa.text('DELETE FROM "Public"."Sessions"'))
        op.get_bind().execute(sa.text("drop table if exists old_stuff"))
        op.execute("INSERT INTO notes (body) VALUES ('DROP TABLE customers; --')")
        """,
    )
    found = [f for f in check_json(run_cli, project, "--dialect", "postgresql") if f["category"] != "locking"]
    assert rules_of(found) == [
        ("update-without-where", "accounts", None),
        ("truncate-table", "audit_log", None),
        ("delete-without-where", "sessions", None),
        ("drop-table", "old_stuff", None),
    ]
    lines = path.read_text().splitlines()
    for f in found:
        assert f["file"].endswith("a1.py")
        assert "execute" in lines[f["line"] - 1], f


def test_objects_created_in_the_same_revision_are_exempt(run_cli, project):
    project.revision(
        "a1",
        """
        op.create_table("scratch", sa.Column("id", sa.Integer, primary_key=True), sa.Column("x", sa.Integer))
        op.create_index("ix_scratch_x", "scratch", ["x"])
        op.add_column("scratch", sa.Column("y", sa.Integer, nullable=False))
        op.drop_column("scratch", "x")
        op.drop_table("scratch")
        """,
    )
    assert rules_of(check_json(run_cli, project, "--dialect", "postgresql")) == []


def test_backfill_of_a_new_column_is_not_an_overwrite(run_cli, project):
    project.revision(
        "a1",
        """
        op.add_column("accounts", sa.Column("balance_cents", sa.BigInteger(), nullable=True))
        op.execute("UPDATE accounts SET balance_cents = balance * 100")
        accounts = sa.table("accounts", sa.column("balance_cents", sa.BigInteger))
        op.execute(accounts.update().values(balance_cents=0))
        op.execute("UPDATE accounts SET balance = 0")
        """,
    )
    found = check_json(run_cli, project, "--dialect", "postgresql")
    assert rules_of([f for f in found if f["category"] == "destructive"]) == [
        ("update-without-where", "accounts", None)
    ]
    # not an overwrite, but the backfills rewrite rows while the ADD COLUMN's lock is held
    assert [f["line"] for f in found if f["rule"] == "backfill-under-schema-lock"] == [13, 15, 16]


def test_not_analyzable_revision_falls_back_to_source_reading(run_cli, project):
    project.revision(
        "a1",
        """
        rows = op.get_bind().execute(sa.text("SELECT id FROM customers")).fetchall()
        op.drop_column("customers", "legacy")
        """,
    )
    found = check_json(run_cli, project)
    info = [f for f in found if f["rule"] == "not-analyzable-offline"]
    assert len(info) == 1 and info[0]["severity"] == "info" and info[0]["line"]
    assert ("drop-column", "customers", "legacy") in rules_of(found)


def test_batch_block_on_sqlite_without_copy_from_is_read_statically(run_cli, project):
    project.revision(
        "a1",
        """
        with op.batch_alter_table("customers") as batch_op:
            batch_op.drop_column("legacy")
            batch_op.alter_column("name", new_column_name="full_name")
        """,
    )
    found = check_json(run_cli, project, "--dialect", "sqlite")
    assert ("drop-column", "customers", "legacy") in rules_of(found)
    assert ("rename-column", "customers", "name") in rules_of(found)
    assert any(f["rule"] == "not-analyzable-offline" for f in found)
    # on PostgreSQL the same block renders as plain ALTERs, no fallback needed
    found = check_json(run_cli, project, "--dialect", "postgresql")
    assert not any(f["rule"] == "not-analyzable-offline" for f in found)
    assert ("drop-column", "customers", "legacy") in rules_of(found)


def test_protected_tables_globs_and_schemas(run_cli, project):
    project.settings('protected_tables = ["billing.*", "cust*"]\n')
    project.revision(
        "a1",
        """
        op.drop_column("invoices", "total", schema="billing")
        op.drop_column("customers", "legacy")
        op.drop_column("scratch", "x")
        op.execute("DROP SCHEMA billing CASCADE")
        """,
    )
    sev = {(f["rule"], f["table"]): f["severity"] for f in check_json(run_cli, project)}
    assert sev[("drop-column", "invoices")] == "error"
    assert sev[("drop-column", "customers")] == "error"
    assert sev[("drop-column", "scratch")] == "warning"
    assert sev[("drop-schema", None)] == "error"


def test_severity_overrides_and_user_rules(run_cli, project):
    rules_dir = project.root / "guard_rules"
    rules_dir.mkdir()
    (rules_dir / "no-drop-trigger.toml").write_text(
        'id = "no-drop-trigger"\ncategory = "destructive"\nseverity = "error"\n'
        'summary = "Dropping a trigger"\nmessage = "drops trigger {name}"\n'
        '[match]\nkind = "drop_other"\nobject_type = "trigger"\n'
    )
    project.settings('rule_dirs = ["guard_rules"]\n[severity]\ndrop-index = "off"\nrename-table = "error"\n')
    project.revision(
        "a1",
        """
        op.drop_index("ix_a", table_name="a")
        op.rename_table("a", "b")
        op.execute("DROP TRIGGER audit_trg ON b")
        """,
    )
    found = check_json(run_cli, project, "--dialect", "postgresql")
    assert {(f["rule"], f["severity"]) for f in found if f["category"] not in ("hygiene", "locking")} == {
        ("rename-table", "error"),
        ("no-drop-trigger", "error"),
        ("drop-object", "warning"),  # the built-in rule for dropped triggers, functions, views...
    }


# --- acknowledgements ---------------------------------------------------------------------------


def test_acknowledgements_in_file_and_on_command_line(run_cli, project):
    project.revision(
        "a1",
        """
        # migrate-guard: allow drop-column customers.legacy -- unused since v3; reviewed by @ana
        op.drop_column("customers", "legacy")
        op.drop_column("orders", "old_total")
        # migrate-guard: allow drop-colum orders -- typo in the rule id
        # migrate-guard: allow drop-table nothing_here -- stale
        # migrate-guard: allow rename-table
        """,
    )
    found = check_json(run_cli, project, "--allow", "drop-column:orders.old_total")
    allowed = {(f["table"], f["column"]) for f in found if f["allowed"]}
    assert allowed == {("customers", "legacy"), ("orders", "old_total")}
    invalid = sorted(f["message"] for f in found if f["rule"] == "invalid-acknowledgement")
    assert len(invalid) == 3
    assert any("unknown rule 'drop-colum'" in m for m in invalid)
    assert any("matches no finding" in m for m in invalid)
    assert any("needs a reason" in m for m in invalid)


def test_unknown_rule_in_allow_flag_is_a_usage_error(run_cli, project):
    project.revision("a1", "op.drop_column('t', 'c')")
    message = one_line_error(run_cli("-c", str(project.ini), "check", "--allow", "drop-everything:t"))
    assert "unknown rule 'drop-everything'" in message


# --- selection ----------------------------------------------------------------------------------


def test_range_revision_and_branches(run_cli, project):
    project.revision("a1", "op.drop_table('one')", down=None)
    project.revision("b1", "op.drop_table('two')", down="a1")
    project.revision("c1", "op.drop_table('three')", down="a1")  # a second branch
    found = check_json(run_cli, project)
    assert sorted(f["table"] for f in found if f["rule"] == "drop-table") == ["one", "three", "two"]
    heads = [f for f in found if f["rule"] == "multiple-heads"]
    assert len(heads) == 1 and "b1" in heads[0]["message"] and "c1" in heads[0]["message"]

    result = run_cli("-c", str(project.ini), "check", "--range", "a1:b1", "--format", "json")
    assert [f["table"] for f in findings(result) if f["rule"] == "drop-table"] == ["two"]
    result = run_cli("-c", str(project.ini), "check", "--revision", "c1", "--format", "json")
    assert [f["table"] for f in findings(result) if f["rule"] == "drop-table"] == ["three"]
    by_path = str(project.root / "migrations/versions/b1.py")
    result = run_cli("-c", str(project.ini), "check", "--revision", by_path, "--format", "json")
    assert [f["table"] for f in findings(result) if f["rule"] == "drop-table"] == ["two"]

    project.revision("m1", "op.drop_table('four')", down=("b1", "c1"))  # merge point
    found = check_json(run_cli, project)
    assert not any(f["rule"] == "multiple-heads" for f in found)
    assert sorted(f["table"] for f in found if f["rule"] == "drop-table") == ["four", "one", "three", "two"]


def test_since_git_ref_checks_only_changed_revisions(run_cli, project):
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=project.root, check=True, capture_output=True)

    project.revision("a1", "op.drop_table('old_one')", down=None)
    git("init", "-q", "-b", "main")
    git("-c", "user.email=t@t", "-c", "user.name=t", "add", ".")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "base")
    project.revision("b1", "op.drop_table('new_one')")
    result = run_cli("-c", str(project.ini), "check", "--since", "main", "--format", "json")
    assert [f["table"] for f in findings(result)] == ["new_one"]
    assert json.loads(result.stdout)["summary"]["revisions"] == 1
    assert "--since no-such-ref" in one_line_error(run_cli("-c", str(project.ini), "check", "--since", "no-such-ref"))


def test_pending_revisions_against_a_real_database(run_cli, example, db_url):
    from alembic import command
    from alembic.config import Config

    cfg = Config(str(example / "alembic.ini"))
    cfg.set_main_option("sqlalchemy.url", db_url)
    command.upgrade(cfg, "0004")
    result = run_cli("--url", db_url, "-c", str(example / "alembic.ini"), "check", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["summary"]["revisions"] == 2  # 0005 and 0006
    assert {f["revision"] for f in data["findings"]} == {"0005", "0006"}


def test_unreachable_database_checks_everything_with_a_note(run_cli, example):
    result = run_cli(
        "--url", "postgresql+psycopg://nobody@127.0.0.1:1/none", "-c", str(example / "alembic.ini"), "check"
    )
    assert result.exit_code == 0
    assert "database not reachable" in result.stderr and "checked 6 revisions" in result.stdout


# --- formats --------------------------------------------------------------------------------------


def test_sarif_validates_against_the_2_1_0_schema(run_cli, example):
    jsonschema = pytest.importorskip("jsonschema")
    path = example / "out.sarif"
    result = run_cli("check", "--format", "sarif", "-o", str(path), cwd=example)
    assert result.exit_code == 0
    sarif = json.loads(path.read_text())
    jsonschema.validate(sarif, json.loads(SCHEMA.read_text()))
    results = sarif["runs"][0]["results"]
    by_rule = {r["ruleId"]: r for r in results}
    assert by_rule["drop-column"]["suppressions"][0]["kind"] == "inSource"
    location = by_rule["drop-table"]["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "migrations/versions/0006_drop_import_staging.py"
    assert location["region"]["startLine"] > 0
    rules = sarif["runs"][0]["tool"]["driver"]["rules"]
    assert rules[by_rule["drop-table"]["ruleIndex"]]["id"] == "drop-table"


def test_github_annotations(run_cli, example):
    result = run_cli("check", "--format", "github", cwd=example)
    lines = result.stdout.splitlines()
    warning = [line for line in lines if line.startswith("::warning ")]
    assert len(warning) == 1
    assert "file=migrations/versions/0006_drop_import_staging.py,line=" in warning[0]
    assert "title=migrate-guard drop-table::" in warning[0]
    assert any(line.startswith("::notice ") and "allowed" in line for line in lines)


# --- bad input: one line, exit 2, never a traceback ----------------------------------------------


def test_missing_alembic_ini(run_cli, tmp_path):
    assert "no alembic.ini" in one_line_error(run_cli("check", cwd=tmp_path))
    assert "not found" in one_line_error(run_cli("-c", str(tmp_path / "nope.ini"), "check"))


def test_syntax_error_in_a_revision(run_cli, project):
    path = project.revision("a1", "op.drop_table('x'")
    message = one_line_error(run_cli("-c", str(project.ini), "check"))
    assert "a1.py" in message and "syntax error" in message
    assert path.exists()


@pytest.mark.parametrize(
    "toml, expected",
    [
        ("protected_tables = [", "invalid TOML"),
        ("protectd_tables = []", "protectd_tables"),
        ("protected_tables = 'customers'", "protected_tables"),
        ("[severity]\ndrop-column = 'fatal'", "severity.drop-column"),
        ("[severity]\nno-such-rule = 'off'", "no-such-rule"),
        ("fail_on = 'sometimes'", "fail_on"),
        ("rule_dirs = ['missing']", "rule_dirs"),
    ],
)
def test_bad_settings(run_cli, project, toml, expected):
    project.revision("a1", "pass")
    project.settings(toml)
    message = one_line_error(run_cli("-c", str(project.ini), "check"))
    assert "migrate-guard.toml" in message and expected in message


def test_bad_broken_rule_file_and_bad_options(run_cli, project):
    project.revision("a1", "pass")
    (project.root / "r").mkdir()
    (project.root / "r" / "x.toml").write_text("id = ")
    project.settings('rule_dirs = ["r"]')
    assert "x.toml" in one_line_error(run_cli("-c", str(project.ini), "check"))
    project.settings("")
    assert "FROM:TO" in one_line_error(run_cli("-c", str(project.ini), "check", "--range", "heads"))
    assert "zzz" in one_line_error(run_cli("-c", str(project.ini), "check", "--revision", "zzz"))
    assert "--format" in one_line_error(run_cli("-c", str(project.ini), "check", "--format", "xml"))
    assert "cannot be combined" in one_line_error(
        run_cli("-c", str(project.ini), "check", "--range", "base:heads", "--revision", "a1")
    )


def test_pyproject_toml_configuration(run_cli, tmp_path):
    root = tmp_path / "pp"
    copy_example(root, "alembic.ini", "migrate-guard.toml")
    (root / "pyproject.toml").write_text(
        '[tool.alembic]\nscript_location = "%(here)s/migrations"\n\n'
        '[tool.migrate-guard]\nprotected_tables = ["import_staging"]\n'
    )
    result = run_cli("-c", str(root / "pyproject.toml"), "check", "--dialect", "sqlite", "--format", "json")
    assert result.exit_code == 3, result.output
    errors = [f for f in findings(result) if f["severity"] == "error" and not f["allowed"]]
    assert [(f["rule"], f["table"]) for f in errors] == [("drop-table", "import_staging")]
    sys.modules.pop("models", None)


def test_console_scripts(tmp_path):
    bin_dir = Path(sys.executable).parent
    out = subprocess.run([bin_dir / "migrate-guard", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "migrate-guard" in out.stdout
    out = subprocess.run([bin_dir / "migrate-safe", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "TARGET" in out.stdout
    for command in ("check", "rules", "migrate-safe"):
        out = subprocess.run([bin_dir / "migrate-guard", command, "--help"], capture_output=True, text=True)
        assert out.returncode == 0 and "Usage" in out.stdout


def test_alembic_config_environment_and_options_after_the_command(run_cli, example, tmp_path, monkeypatch):
    monkeypatch.setenv("ALEMBIC_CONFIG", str(example / "alembic.ini"))
    result = run_cli("check", "--format", "json", cwd=tmp_path)
    assert result.exit_code == 0 and json.loads(result.stdout)["summary"]["revisions"] == 6
    monkeypatch.delenv("ALEMBIC_CONFIG")
    result = run_cli(
        "check", "-c", str(example / "alembic.ini"), "--range", "0005:heads", "--format", "json", cwd=tmp_path
    )
    assert result.exit_code == 0 and json.loads(result.stdout)["summary"]["revisions"] == 1
