"""Integrations, each run the way a project adopts it: pre-commit running the shipped hook, the documented
CI commands run by a shell in a real git repository, Alembic's post_write_hooks on a real
``alembic revision --autogenerate``, and the pytest plugin in a pytest subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, copy_example

pytest_plugins = ["pytester"]

BIN = Path(sys.executable).parent
SCHEMA = Path(__file__).parent / "data" / "sarif-schema-2.1.0.json"
VERSIONS = Path("migrations/versions")
DROP_EMAIL = '''"""drop customers.email"""
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    {ack}op.drop_column("customers", "email")


def downgrade():
    pass
'''


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=ci", "-c", "user.email=ci@example.com", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def shell_env(**extra: str) -> dict[str, str]:
    """The environment a CI runner or a developer's shell would give: the guard's console scripts on PATH."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "NO_COLOR": "1", **extra}


@pytest.fixture
def repo(example: Path) -> Path:
    """The example as a git repository whose base branch is ``origin/main`` (as a CI checkout has it)."""
    git(example, "init", "-q", "-b", "main")
    git(example, "add", "-A")
    git(example, "commit", "-q", "-m", "base")
    git(example, "update-ref", "refs/remotes/origin/main", "HEAD")
    return example


# --- pre-commit ---------------------------------------------------------------------------------


def readme_blocks(language: str) -> list[str]:
    """The README's fenced code blocks in ``language``: the snippets users copy."""
    return re.findall(rf"```{language}\n(.*?)```", (REPO / "README.md").read_text(), re.S)


def test_pre_commit_hook_blocks_a_staged_destructive_revision_until_it_is_reviewed(repo, tmp_path):
    from pre_commit.clientlib import load_manifest

    hooks = {h["id"]: h for h in load_manifest(str(REPO / ".pre-commit-hooks.yaml"))}
    hook = hooks["migrate-guard-check"]
    assert hook["pass_filenames"] and hook["language"] == "python"
    # the README's `repo: local` form: the manifest's hook, run from the project's own environment
    [local] = [block for block in readme_blocks("yaml") if "repo: local" in block]
    [readme_hook] = yaml.safe_load(local)["repos"][0]["hooks"]
    assert {k: readme_hook[k] for k in ("id", "entry", "files")} == {k: hook[k] for k in ("id", "entry", "files")}
    (repo / ".pre-commit-config.yaml").write_text(local)
    git(repo, "add", ".pre-commit-config.yaml")
    git(repo, "commit", "-q", "-m", "pre-commit")

    revision = repo / VERSIONS / "0007_drop_email.py"
    revision.write_text(DROP_EMAIL.format(ack=""))
    (repo / "models.py").write_text((repo / "models.py").read_text() + "\n# touched, not a revision\n")
    git(repo, "add", "-A")
    env = shell_env(PRE_COMMIT_HOME=str(tmp_path / "pre-commit-home"))
    run = subprocess.run([BIN / "pre-commit", "run"], cwd=repo, env=env, capture_output=True, text=True)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "migrate-guard check" in run.stdout and "Failed" in run.stdout
    assert "0007_drop_email.py:11" in run.stdout and "drop-column" in run.stdout and "customers.email" in run.stdout
    assert "checked 1 revision (0007" in run.stdout  # only the staged revision; 0006's warning is not re-reported

    revision.write_text(
        DROP_EMAIL.format(ack="# migrate-guard: allow drop-column customers.email -- unused since v3\n    ")
    )
    git(repo, "add", "-A")
    run = subprocess.run([BIN / "pre-commit", "run"], cwd=repo, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Passed" in run.stdout


# --- CI examples ----------------------------------------------------------------------------------


def guard_commands(lines: list[str]) -> list[str]:
    return [line for line in lines if line.lstrip().startswith("migrate-guard ")]


def test_ci_examples_run_as_documented(repo):
    jsonschema = pytest.importorskip("jsonschema")
    github = yaml.safe_load((REPO / "examples" / "github-actions.yml").read_text())
    job = github["jobs"]["migrations"]
    steps = job["steps"]
    assert steps[0]["uses"].startswith("actions/checkout@") and steps[0]["with"]["fetch-depth"] == 0
    upload = next(s for s in steps if s.get("uses", "").startswith("github/codeql-action/upload-sarif@"))
    assert upload["if"] == "always()"
    gitlab = yaml.safe_load((REPO / "examples" / "gitlab-ci.yml").read_text())["migrate-guard"]
    readme = (REPO / "README.md").read_text()
    for example in ("github-actions.yml", "gitlab-ci.yml"):
        assert (REPO / "examples" / example).read_text().strip() in readme  # the README shows them verbatim
    report_file = gitlab["artifacts"]["reports"]["codequality"]

    (repo / VERSIONS / "0007_drop_email.py").write_text(DROP_EMAIL.format(ack=""))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "the pull request")
    env = shell_env(
        BASE_REF=job["env"]["BASE_REF"].replace("${{ github.base_ref }}", "main"),
        CI_MERGE_REQUEST_DIFF_BASE_SHA=git(repo, "rev-parse", "origin/main").strip(),
    )

    def sh(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-c", command], cwd=repo, env=env, capture_output=True, text=True)

    sarif_step, annotations_step = (s for s in steps if s.get("run", "").startswith("migrate-guard "))
    assert sarif_step["continue-on-error"] is True
    assert sh(sarif_step["run"]).returncode == 3  # the finding fails the step; the job goes on to upload
    sarif = json.loads((repo / upload["with"]["sarif_file"]).read_text())
    jsonschema.validate(sarif, json.loads(SCHEMA.read_text()))
    results = sarif["runs"][0]["results"]
    assert [(r["ruleId"], r["level"]) for r in results] == [("drop-column", "error")]  # 0007 only, not 0006
    assert (
        results[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        == "migrations/versions/0007_drop_email.py"
    )

    annotations = sh(annotations_step["run"])
    assert annotations.returncode == 3
    assert annotations.stdout.startswith(
        "::error file=migrations/versions/0007_drop_email.py,line=11,title=migrate-guard drop-column::"
    )

    first, second = guard_commands(gitlab["script"])
    assert report_file in first
    assert sh(first).returncode == 0  # `|| true`: the report is written and kept
    issues = json.loads((repo / report_file).read_text())
    assert [(i["check_name"], i["severity"], i["location"]) for i in issues] == [
        ("drop-column", "critical", {"path": "migrations/versions/0007_drop_email.py", "lines": {"begin": 11}})
    ]
    job_log = sh(second)
    assert job_log.returncode == 3 and "customers.email" in job_log.stdout  # the job fails, readably


def test_gitlab_fingerprints_survive_code_moving(run_cli, example):
    def report() -> dict[str, dict]:
        result = run_cli("check", "--format", "gitlab", cwd=example)
        assert result.exit_code == 0, result.output
        return {i["check_name"]: i for i in json.loads(result.stdout)}

    before = report()
    assert {k: v["severity"] for k, v in before.items()} == {"drop-column": "info", "drop-table": "major"}
    assert set(before["drop-table"]) == {"description", "check_name", "fingerprint", "severity", "location"}
    path = example / VERSIONS / "0006_drop_import_staging.py"
    path.write_text(path.read_text().replace("def upgrade()", "# three lines\n# pushed in\n# above\ndef upgrade()"))
    after = report()
    assert after["drop-table"]["location"]["lines"]["begin"] == before["drop-table"]["location"]["lines"]["begin"] + 3
    assert {k: v["fingerprint"] for k, v in after.items()} == {k: v["fingerprint"] for k, v in before.items()}


# --- lint on generate ---------------------------------------------------------------------------


def test_post_write_hook_reports_what_autogenerate_just_wrote(example):
    [hook] = [block for block in readme_blocks("ini") if "[post_write_hooks]" in block]
    ini = example / "alembic.ini"
    ini.write_text(ini.read_text() + "\n" + hook)
    env = shell_env()
    up = subprocess.run([BIN / "alembic", "upgrade", "heads"], cwd=example, env=env, capture_output=True, text=True)
    assert up.returncode == 0, up.stderr
    models = example / "models.py"
    models.write_text(models.read_text().replace("    notes: Mapped[str | None] = mapped_column(Text)\n", ""))
    elsewhere = example.parent  # alembic -c from another directory: the hook finds the project from the file
    run = subprocess.run(
        [BIN / "alembic", "-c", str(ini), "revision", "--autogenerate", "-m", "drop notes"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr  # Alembic keeps the file whatever the hook says
    [written] = [p for p in (example / VERSIONS).glob("*drop_notes.py")]
    assert "drop_column('notes')" in written.read_text()
    assert "Running post write hook 'migrate_guard'" in run.stdout + run.stderr
    assert (
        f"{written.name}:" in run.stdout
        and "drop-column" in run.stdout
        and "customers.notes (protected table)" in run.stdout
    )
    assert "checked 1 revision" in run.stdout and "1 error" in run.stdout


# --- the pytest plugin ------------------------------------------------------------------------------

USER_TESTS = """
import pytest


def test_plain():
    pass


@pytest.mark.migrations
def test_own_migration_test(migration_database, migration_db_url):
    assert migration_database.url == migration_db_url
    assert migration_database.schema() == {}  # the marker's promise: an emptied database
    migration_database.upgrade("heads")
    assert migration_database.heads() == ("0006",)
    assert "customers" in migration_database.schema()
"""
GENERATED = [
    "test_single_head",
    "test_check_findings",
    "test_upgrade_base_to_heads",
    "test_up_down_consistency",
    "test_model_drift",
]


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """A project with the example's migrations and models, and tests of its own."""
    copy_example(pytester.path)
    pytester.makefile(".ini", pytest="[pytest]\nmigrate_guard_config = alembic.ini\n")
    pytester.makepyfile(test_app=USER_TESTS)
    return pytester


def test_plugin_adds_nothing_unless_asked_and_its_fixtures_work(suite):
    result = suite.runpytest_subprocess("-v")
    result.assert_outcomes(passed=2)
    assert "alembic.ini::" not in result.stdout.str()
    # env.py's fileConfig must not disable the suite's own loggers for the rest of the run
    suite.makeconftest(
        "import logging\nfrom pathlib import Path\nlogging.getLogger('myapp')\n\n\n"
        "def pytest_sessionfinish(session):\n"
        "    Path('logger-disabled').write_text(str(logging.getLogger('myapp').disabled))\n"
    )
    result = suite.runpytest_subprocess("-v", "--migrate-guard")
    result.assert_outcomes(passed=2 + len(GENERATED))
    for name in GENERATED:
        result.stdout.fnmatch_lines([f"alembic.ini::{name} PASSED*"])
    assert (suite.path / "logger-disabled").read_text() == "False"
    result = suite.runpytest_subprocess("--migrate-guard", "-m", "not migrations")
    result.assert_outcomes(passed=1, deselected=1 + len(GENERATED))


def test_plugin_fails_broken_migrations_with_clear_messages(suite):
    path = suite.path / VERSIONS / "0004_customer_notes.py"
    path.write_text(path.read_text().replace('    op.drop_column("customers", "notes")', "    pass  # forgot notes"))
    path = suite.path / VERSIONS / "0005_drop_legacy_code.py"
    path.write_text(path.read_text().replace("# migrate-guard: allow", "# not reviewed:"))
    models = suite.path / "models.py"
    models.write_text(
        models.read_text().replace(
            "    notes: Mapped[str | None] = mapped_column(Text)\n",
            "    notes: Mapped[str | None] = mapped_column(Text)\n"
            "    nickname: Mapped[str | None] = mapped_column(String(40))\n",
        )
    )
    result = suite.runpytest_subprocess("--migrate-guard", "-k", "not test_own")
    result.assert_outcomes(passed=3, failed=3, deselected=1)
    out = result.stdout.str()
    assert "FAILED alembic.ini::test_up_down_consistency" in out
    assert "downgrade of 0004 does not undo its upgrade:\n  column customers.notes is left over" in out
    assert "FAILED alembic.ini::test_model_drift" in out
    assert "column customers.nickname is in the models but no migration creates it" in out
    assert "FAILED alembic.ini::test_check_findings" in out
    assert re.search(r"error +drop-column +drops column customers\.legacy_code", out)
    assert "Traceback" not in out


BRANCH = """from alembic import op
import sqlalchemy as sa

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("extra", sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    op.drop_table("extra")
"""
MERGE = """revision = "0008"
down_revision = ("0006", "0007")
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
"""


def test_plugin_on_a_branched_history(suite):
    (suite.path / VERSIONS / "0007_branch.py").write_text(BRANCH)
    selected = ("--migrate-guard", "-k", "single_head or up_down")
    result = suite.runpytest_subprocess(*selected)
    result.assert_outcomes(passed=1, failed=1, deselected=5)
    result.stdout.fnmatch_lines(["2 heads: 0006, 0007; join them with `alembic merge heads` before release"])
    (suite.path / VERSIONS / "0008_merge.py").write_text(MERGE)
    suite.runpytest_subprocess(*selected).assert_outcomes(passed=2, deselected=5)  # each branch undone on its own


IRREVERSIBLE = """from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("UPDATE customers SET notes = NULL")


def downgrade():
    raise NotImplementedError("the old notes are gone")
"""


def test_plugin_skips_the_downgrade_of_a_revision_marked_irreversible(suite):
    path = suite.path / VERSIONS / "0007_clear_notes.py"
    path.write_text(IRREVERSIBLE)
    selected = ("--migrate-guard", "-k", "up_down")
    result = suite.runpytest_subprocess(*selected)
    result.assert_outcomes(failed=1, deselected=2 + len(GENERATED) - 1)
    result.stdout.fnmatch_lines(["*0007: downgrade failed: NotImplementedError: the old notes are gone*"])
    path.write_text(
        IRREVERSIBLE.replace(
            "def upgrade():", "# migrate-guard: irreversible -- the old notes cannot come back\ndef upgrade():"
        )
    )
    suite.runpytest_subprocess(*selected).assert_outcomes(passed=1, deselected=2 + len(GENERATED) - 1)


@pytest.mark.postgresql
def test_plugin_on_postgresql_configured_in_pyproject(suite, postgresql_url, monkeypatch):
    monkeypatch.setenv("MG_TEST_DATABASE_URL", postgresql_url)
    (suite.path / "pytest.ini").unlink()
    suite.makepyprojecttoml(
        '[tool.pytest.ini_options]\nmigrate_guard = true\nmigrate_guard_config = "alembic.ini"\n'
        'migrate_guard_url = "${MG_TEST_DATABASE_URL}"\nmigrate_guard_metadata = "models:Base.metadata"\n'
    )
    suite.makepyfile(test_url="def test_url(migration_db_url):\n    assert migration_db_url.startswith('postgresql')\n")
    result = suite.runpytest_subprocess("-v")
    result.assert_outcomes(passed=3 + len(GENERATED))
    result.stdout.fnmatch_lines(["alembic.ini::test_up_down_consistency PASSED*"])
