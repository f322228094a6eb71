"""The rule catalogue: rules/*.toml, their loader, and the generated docs/rules pages."""

from __future__ import annotations

import ast
import io
import itertools
import os
import re
import time
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext

from migrate_guard.analysis import ruledocs
from migrate_guard.analysis.operations import KINDS, Operation
from migrate_guard.analysis.rules import BUILTIN_RULES_DIR, CATEGORIES, SEVERITIES, Rule, load_rules
from migrate_guard.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "rules"

EXPECTED = {
    "drop-table": "destructive",
    "drop-column": "destructive",
    "drop-schema": "destructive",
    "truncate-table": "destructive",
    "delete-without-where": "destructive",
    "update-without-where": "destructive",
    "alter-column-type": "destructive",
    "rename-table": "breaking",
    "rename-column": "breaking",
    "add-not-null-column-without-default": "breaking",
    "set-not-null": "breaking",
    "drop-not-null": "breaking",
    "drop-constraint": "breaking",
    "drop-index": "breaking",
    "add-unique-constraint": "locking",
    "add-primary-key": "locking",
    "add-column-rewrites-table": "locking",
    "create-index-non-concurrently": "locking",
    "add-foreign-key-validating": "locking",
    "add-check-validating": "locking",
    "lock-timeout-missing": "locking",
    "raw-sql-unparsed": "hygiene",
    "not-analyzable-offline": "hygiene",
    "multiple-heads": "hygiene",
    "invalid-acknowledgement": "hygiene",
    # the SQL-text rules (analysis/sqltext.py)
    "drop-object": "destructive",
    "concurrent-index-in-transaction": "breaking",
    "enum-add-value-in-transaction": "breaking",
    "create-domain-with-check": "locking",
    "detach-partition-non-concurrently": "locking",
    "lock-table": "locking",
    "reindex-non-concurrently": "locking",
    "vacuum-full-or-cluster": "locking",
    # issue 15: version-dependent and hygiene rules
    "backfill-under-schema-lock": "locking",
    "alter-rebuilds-table": "locking",
    "char-column": "hygiene",
    "timestamp-without-time-zone": "hygiene",
    "integer-primary-key": "hygiene",
    # issue 16: measured by `trace` on a scratch copy of the server (their cases: tests/test_trace.py)
    "trace-table-rewrite": "locking",
    "trace-access-exclusive-scan": "locking",
    "trace-copy-algorithm": "locking",
    "trace-fails-in-transaction": "breaking",
    "trace-revision-fails": "breaking",
}
# a statement the server refused: the migration fails as it is, whatever the data
FAILS_ON_THE_SERVER = {"trace-fails-in-transaction", "trace-revision-fails"}
POSTGRES_ONLY = {
    "create-index-non-concurrently",
    "add-foreign-key-validating",
    "add-check-validating",
    "lock-timeout-missing",
    "concurrent-index-in-transaction",
    "enum-add-value-in-transaction",
    "create-domain-with-check",
    "detach-partition-non-concurrently",
    "reindex-non-concurrently",
    "vacuum-full-or-cluster",
    "backfill-under-schema-lock",
    "timestamp-without-time-zone",
    "trace-access-exclusive-scan",
    "trace-fails-in-transaction",
}
# Rules for the servers whose behaviour they describe; every other rule applies everywhere.
DIALECTS = {rule: ("postgresql",) for rule in POSTGRES_ONLY} | {
    "add-column-rewrites-table": ("postgresql", "mysql"),
    "lock-table": ("postgresql", "mysql", "mariadb"),
    "alter-rebuilds-table": ("mysql", "mariadb"),
    "char-column": ("postgresql", "mysql", "mssql", "oracle"),  # SQLite neither pads nor limits
    "integer-primary-key": ("postgresql", "mysql", "mssql"),  # SQLite's INTEGER PRIMARY KEY is 64-bit
    "trace-table-rewrite": ("postgresql", "mysql", "mariadb"),
    "trace-copy-algorithm": ("mysql", "mariadb"),
}

VALID = """\
id = "{id}"
category = "breaking"
severity = "warning"
summary = "Something"
message = "does {{table}}"

[match]
kind = "drop_table"
"""


@pytest.fixture(scope="module")
def rules() -> dict[str, Rule]:
    return load_rules()


# --- the built-in catalogue ----------------------------------------------------------------------


def test_builtin_dir_is_the_repo_rules_dir() -> None:
    assert BUILTIN_RULES_DIR == REPO / "rules"


def test_all_rules_exist_with_expected_category(rules: dict[str, Rule]) -> None:
    assert {r: rules[r].category for r in rules} == EXPECTED


def test_every_rule_is_fully_documented(rules: dict[str, Rule]) -> None:
    for rule in rules.values():
        for key in ("summary", "message", "why", "instead", "example_bad", "example_good"):
            assert getattr(rule, key).strip(), f"{rule.id}: empty {key}"
        assert rule.example_bad != rule.example_good, rule.id
        for key in ("example_bad", "example_good"):
            ast.parse(getattr(rule, key))  # valid Python


def test_severity_policy(rules: dict[str, Rule]) -> None:
    for rule in rules.values():
        if rule.category == "destructive":
            assert (rule.severity, rule.protected_severity) == ("warning", "error"), rule.id
        elif rule.id in FAILS_ON_THE_SERVER:
            assert (rule.severity, rule.protected_severity) == ("error", None), rule.id
        else:
            expected = "info" if rule.category == "hygiene" else "warning"
            assert (rule.severity, rule.protected_severity) == (expected, None), rule.id
        assert rule.dialects == DIALECTS.get(rule.id, ("*",)), rule.id


def test_builtin_matches(rules: dict[str, Rule]) -> None:
    def hits(op: Operation) -> set[str]:
        return {r.id for r in rules.values() if r.matches(op)}

    assert hits(Operation("drop_column", "users", "email")) == {"drop-column"}
    assert hits(Operation("delete", "t", details={"has_where": False})) == {"delete-without-where"}
    assert hits(Operation("delete", "t", details={"has_where": True})) == set()
    assert hits(Operation("alter_column_type", "t", "c", details={"type_change": "narrowing"})) == {"alter-column-type"}
    assert hits(Operation("alter_column_type", "t", "c", details={"type_change": "widening"})) == set()
    assert hits(Operation("add_column", "t", "c", details={"nullable": False, "server_default": False})) == {
        "add-not-null-column-without-default"
    }
    assert hits(Operation("add_column", "t", "c", details={"nullable": False, "server_default": True})) == set()
    assert hits(Operation("add_constraint", "t", details={"constraint_type": "unique", "using_index": False})) == {
        "add-unique-constraint"
    }
    fk = {"constraint_type": "foreign_key", "not_valid": False}
    assert hits(Operation("add_constraint", "t", details=fk)) == {"add-foreign-key-validating"}
    assert hits(Operation("add_constraint", "t", details={**fk, "not_valid": True})) == set()
    assert hits(Operation("create_index", "t", details={"concurrently": False})) == {"create-index-non-concurrently"}
    # a rewrite that loses no value is reported, a change made in place is not
    assert hits(Operation("alter_column_type", "t", "c", details={"type_change": "rewrite"})) == {"alter-column-type"}
    assert hits(Operation("alter_column_type", "t", "c", details={"type_change": "changed"})) == {"alter-column-type"}
    column = {"nullable": True, "server_default": True}
    assert hits(Operation("add_column", "t", "c", details={**column, "rewrites_table": True})) == {
        "add-column-rewrites-table"
    }
    assert hits(Operation("add_column", "t", "c", details={**column, "rewrites_table": False})) == set()
    assert hits(Operation("add_column", "t", "c", details={**column, "rewrites_table": None})) == set()
    pk = {"constraint_type": "primary_key", "not_valid": False, "using_index": False}
    assert hits(Operation("add_constraint", "t", details=pk)) == {"add-primary-key"}
    assert hits(Operation("add_constraint", "t", details={**pk, "using_index": True})) == set()
    assert hits(Operation("drop_not_null", "t", "c")) == {"drop-not-null"}
    assert hits(Operation("set_not_null", "t", "c")) == {"set-not-null"}
    assert hits(Operation("reference_table", "t", details={"referenced_by": "n"})) == set()  # lock-timeout only
    assert hits(Operation("add_column", "t", "c", details={**column, "rebuilds_table": True})) == {
        "alter-rebuilds-table"
    }
    assert hits(Operation("drop_constraint", "t", details={"constraint_type": "primary"})) == {"drop-constraint"}
    key = {"type_family": "integer", "primary_key": True, "new_table": True}
    assert hits(Operation("column_type", "t", "id", details=key)) == {"integer-primary-key"}
    assert hits(Operation("column_type", "t", "id", details={**key, "type_family": "bigint"})) == set()
    assert hits(Operation("column_type", "t", "id", details={**key, "primary_key": False})) == set()
    assert hits(Operation("add_column", "t", "c", details={"type_family": "char"})) == {"char-column"}
    assert hits(Operation("column_type", "t", "c", details={"type_family": "timestamp"})) == {
        "timestamp-without-time-zone"
    }
    assert hits(Operation("column_type", "t", "c", details={"type_family": "timestamptz"})) == set()


def _run_offline(code: str) -> str:
    """Run every top-level function of an example against Alembic offline mode; return the SQL."""
    buf = io.StringIO()
    ctx = MigrationContext.configure(dialect_name="postgresql", opts={"as_sql": True, "output_buffer": buf})
    tree = ast.parse(code)
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    for i, func in enumerate(funcs):  # examples may define upgrade() once per revision
        func.name = f"_step{i}"
    namespace = {"op": Operations(ctx), "sa": sa}
    exec(compile(tree, "<example>", "exec"), namespace)
    for i in range(len(funcs)):
        namespace[f"_step{i}"]()
    return buf.getvalue()


@pytest.mark.parametrize("which", ["example_bad", "example_good"])
@pytest.mark.parametrize("rule_id", sorted(EXPECTED))
def test_examples_run_in_alembic_offline_mode(rules: dict[str, Rule], rule_id: str, which: str) -> None:
    code = getattr(rules[rule_id], which)
    if (rule_id, which) == ("not-analyzable-offline", "example_bad"):
        # the point of the example: it needs a live connection (offline, execute() returns None)
        with pytest.raises(TypeError):
            _run_offline(code)
        return
    _run_offline(code)


# --- generated docs ------------------------------------------------------------------------------


def test_docs_are_up_to_date(rules: dict[str, Rule]) -> None:
    hint = "docs/rules is stale: run `python -m migrate_guard.analysis.ruledocs docs/rules`"
    assert {p.name for p in DOCS.glob("*.md")} == {f"{r}.md" for r in rules} | {"README.md"}, hint
    for rule in rules.values():
        assert (DOCS / f"{rule.id}.md").read_text(encoding="utf-8") == ruledocs.render_rule_page(rule), hint
    assert (DOCS / "README.md").read_text(encoding="utf-8") == ruledocs.render_index(rules.values()), hint


def test_rule_page_sections(rules: dict[str, Rule]) -> None:
    page = ruledocs.render_rule_page(rules["drop-column"])
    assert "\n# drop-column\n" in page
    for heading in (
        "What it flags",
        "Why it is dangerous",
        "What to do instead",
        "Example",
        "Allowing it after review",
    ):
        assert f"\n## {heading}\n" in page
    assert "# migrate-guard: allow drop-column <table>.<column> -- <reason>" in page
    assert "--allow drop-column:<table>.<column>" in page
    assert '[severity]\ndrop-column = "error"' in page


def test_write_docs_removes_stale_generated_pages(tmp_path: Path, rules: dict[str, Rule]) -> None:
    (tmp_path / "gone.md").write_text(ruledocs.render_rule_page(rules["drop-table"]).replace("drop-table", "gone"))
    (tmp_path / "notes.md").write_text("hand-written\n")
    written = ruledocs.write_docs(tmp_path, [rules["drop-table"]])
    assert sorted(p.name for p in written) == ["README.md", "drop-table.md"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "drop-table.md", "notes.md"]
    assert "[drop-table](drop-table.md)" in (tmp_path / "README.md").read_text()


# --- user rule directories -----------------------------------------------------------------------


def test_user_dir_adds_and_overrides(tmp_path: Path) -> None:
    (tmp_path / "no-billing-drops.toml").write_text(VALID.format(id="no-billing-drops") + 'table = "billing_*"\n')
    (tmp_path / "drop-table.toml").write_text(VALID.format(id="drop-table").replace('"warning"', '"error"'))
    rules = load_rules([tmp_path])
    assert len(rules) == len(EXPECTED) + 1
    assert rules["drop-table"].severity == "error" and rules["drop-table"].path == tmp_path / "drop-table.toml"
    assert rules["no-billing-drops"].matches(Operation("drop_table", "Billing_Invoices"))
    assert not rules["no-billing-drops"].matches(Operation("drop_table", "users"))
    assert load_rules()["drop-table"].severity == "warning"  # the built-in set is untouched


def test_cache_notices_edited_files(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(VALID.format(id="mine"))
    assert load_rules([tmp_path])["mine"].summary == "Something"
    path.write_text(VALID.format(id="mine").replace("Something", "Other thing"))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert load_rules([tmp_path])["mine"].summary == "Other thing"


def test_loading_is_fast() -> None:
    load_rules()
    start = time.perf_counter()
    for _ in range(20):
        load_rules()
    assert (time.perf_counter() - start) / 20 < 0.01


BAD_CASES = [
    ("broken-toml", lambda s: s.replace('severity = "warning"', "severity = "), "invalid TOML", "line 3"),
    ("missing-key", lambda s: s.replace('summary = "Something"\n', ""), "missing required key 'summary'", None),
    ("unknown-key", lambda s: 'colour = "red"\n' + s, "unknown key 'colour'", None),
    ("bad-category", lambda s: s.replace('"breaking"', '"scary"'), "'category'", "scary"),
    ("bad-severity", lambda s: s.replace('"warning"', '"fatal"'), "'severity'", "fatal"),
    ("bad-kind", lambda s: s.replace('"drop_table"', '"drop_tables"'), "'match.kind'", "drop_tables"),
    ("summary-type", lambda s: s.replace('"Something"', "42"), "'summary'", "string"),
    ("bad-regex", lambda s: s + 'sql = "DROP (TABLE"\n', "'match.sql'", "regular expression"),
    ("bad-dialect", lambda s: s.replace("[match]", 'dialects = ["postgres"]\n\n[match]'), "'dialects'", "postgres"),
    ("id-mismatch", lambda s: s.replace('id = "id-mismatch"', 'id = "other"'), "'id'", "file name"),
    ("no-kind", lambda s: s.replace('kind = "drop_table"', 'table = "x"'), "'match.kind'", None),
    ("protected-nondestructive", lambda s: 'protected_severity = "error"\n' + s, "'protected_severity'", None),
    ("bad-placeholder", lambda s: s.replace("{table}", "{0}"), "'message'", None),
]


@pytest.mark.parametrize(("name", "edit", "key", "extra"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_rule_file(tmp_path: Path, name: str, edit, key: str, extra: str | None) -> None:
    (tmp_path / f"{name}.toml").write_text(edit(VALID.format(id=name)))
    with pytest.raises(ConfigError) as info:
        load_rules([tmp_path])
    message = str(info.value)
    assert "\n" not in message
    assert f"{name}.toml" in message and key in message
    if extra:
        assert extra in message


def test_missing_extra_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nowhere.*does not exist"):
        load_rules([tmp_path / "nowhere"])


# --- Rule.matches / applies_to / render_message --------------------------------------------------


def _rule(**match: object) -> Rule:
    return Rule(
        id="r", category="breaking", severity="warning", protected_severity=None, dialects=("*",),
        summary="s", message="m", why="", instead="", example_bad="", example_good="",
        match=match, path=Path("r.toml"),
    )  # fmt: skip


def test_matches_kind_list_and_details() -> None:
    rule = _rule(kind=["drop_table", "truncate"], cascade=True)
    assert rule.matches(Operation("truncate", "t", details={"cascade": True}))
    assert not rule.matches(Operation("truncate", "t", details={"cascade": False}))
    assert not rule.matches(Operation("truncate", "t"))  # missing detail never matches
    assert not rule.matches(Operation("delete", "t", details={"cascade": True}))
    assert _rule(kind="update", rows=[1, 2]).matches(Operation("update", details={"rows": 2}))
    # a boolean in the rule is not equal to 0/1 in the details
    assert not _rule(kind="update", has_where=False).matches(Operation("update", details={"has_where": 0}))


def test_matches_globs() -> None:
    assert _rule(kind="drop_table", table="AUDIT_*").matches(Operation("drop_table", "audit_log"))
    assert not _rule(kind="drop_table", table="audit_*").matches(Operation("drop_table", "users"))
    assert _rule(kind="drop_table", table=["x", "users"]).matches(Operation("drop_table", "users"))
    dotted = _rule(kind="drop_table", table="billing.*")
    assert dotted.matches(Operation("drop_table", "invoices", schema="billing"))
    assert not dotted.matches(Operation("drop_table", "invoices"))
    assert _rule(kind="drop_column", column="*_id").matches(Operation("drop_column", "t", "user_id"))
    assert not _rule(kind="drop_table", schema="public").matches(Operation("drop_table", "t"))


def test_matches_sql_regex() -> None:
    rule = _rule(kind="unparsed", sql=r"\bdrop\s+owned\b")
    assert rule.matches(Operation("unparsed", statement="DROP OWNED BY app"))
    assert not rule.matches(Operation("unparsed", statement="SELECT 1"))
    assert not rule.matches(Operation("unparsed"))


def test_applies_to() -> None:
    pg = replace(_rule(kind="drop_table"), dialects=("postgresql",))
    assert pg.applies_to("postgresql") and pg.applies_to(None) and not pg.applies_to("sqlite")
    assert pg.applies_to("postgresql+psycopg")
    my = replace(_rule(kind="drop_table"), dialects=("mysql",))
    assert my.applies_to("mariadb") and my.applies_to("mysql")
    assert replace(my, dialects=("mariadb",)).applies_to("mysql")
    assert _rule(kind="drop_table").applies_to("sqlite")


def test_render_message(rules: dict[str, Rule]) -> None:
    op = Operation("rename_column", "users", "name", details={"new_name": "full_name"})
    assert rules["rename-column"].render_message(op) == "renames column users.name to full_name"
    assert rules["drop-column"].render_message(Operation("drop_column")) == "drops column ?.?"
    heads = Operation("multiple_heads", details={"detail": ["b2", "c3"]})
    assert rules["multiple-heads"].render_message(heads).endswith(": b2, c3")


@pytest.mark.parametrize(
    "template", ["{table} {nope}", "{0}", "{}", "{table:d}", "{table.x}", "{table[0]}", "{", "}", "{detail!z}"]
)
def test_render_message_never_raises(template: str) -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

    rule = replace(_rule(kind="drop_table"), message=template)
    assert isinstance(rule.render_message(Operation("drop_table", details={"x": object()})), str)
    assert isinstance(rule.render_message(Operation("drop_table", details={"table": Unprintable()})), str)


def test_render_every_builtin_message_with_nothing(rules: dict[str, Rule]) -> None:
    for rule in rules.values():
        kind = rule.match["kind"]
        text = rule.render_message(Operation(kind if isinstance(kind, str) else kind[0]))
        assert text and "{" not in text and "None" not in text


def test_kinds_in_builtin_rules_are_known(rules: dict[str, Rule]) -> None:
    for rule in rules.values():
        kinds = rule.match["kind"]
        assert set(kinds if isinstance(kinds, list) else [kinds]) <= KINDS
        assert rule.category in CATEGORIES and rule.severity in SEVERITIES


def test_readme_rules_table_names_every_rule(rules: dict[str, Rule]) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Rules") :].splitlines()
    start = next(i for i, line in enumerate(section) if line.startswith("| "))
    table = [line for line in itertools.takewhile(lambda line: line.startswith("|"), section[start:])][2:]
    listed = {rid for line in table for rid in re.findall(r"[a-z]+(?:-[a-z]+)+", line.split("|")[2])}
    assert listed == set(rules)
