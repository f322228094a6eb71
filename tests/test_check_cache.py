"""`check`'s cache (.migrate-guard/cache/check/): a second run gives the same bytes without rendering,
a changed input renders again what it affects, and a broken cache is never a reason to fail."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Project

from migrate_guard import alembic_bridge
from migrate_guard.analysis import cache as check_cache
from migrate_guard.analysis import check as check_module


@pytest.fixture
def rendered(monkeypatch):
    """The revisions each run rendered offline, one list per call of the capture."""
    calls: list[list[str]] = []
    original = alembic_bridge.capture

    def capture(project, script, scripts, *args, **kw):
        calls.append([s.revision for s in scripts])
        return original(project, script, scripts, *args, **kw)

    monkeypatch.setattr(alembic_bridge, "capture", capture)
    return calls


@pytest.fixture
def three(project: Project) -> Project:
    project.revision("a1", 'op.create_table("t", sa.Column("id", sa.Integer))')
    project.revision("a2", 'op.drop_column("t", "legacy")')
    project.revision("a3", 'op.execute("DELETE FROM t")')
    return project


def check(run_cli, project: Project, *args: str) -> tuple[int, str, str]:
    result = run_cli("-c", str(project.ini), "check", "--range", "base:heads", "--format", "json", *args)
    assert result.exit_code in (0, 3), result.output
    return result.exit_code, result.stdout, result.stderr


def cache_dir(project: Project) -> Path:
    return project.root / ".migrate-guard" / "cache" / "check"


def test_second_run_replays_the_same_bytes_without_running_check(run_cli, three, rendered, monkeypatch):
    first = check(run_cli, three)
    assert rendered == [["a1", "a2", "a3"]]
    assert {f["rule"] for f in json.loads(first[1])["findings"]} >= {"drop-column", "delete-without-where"}

    def no_run(*args, **kw):
        raise AssertionError("run_check called: the cache was not used")

    monkeypatch.setattr(check_module, "run_check", no_run)
    assert check(run_cli, three) == first
    monkeypatch.undo()
    assert check(run_cli, three, "--no-cache") == first  # uncached: the same bytes


def test_a_changed_revision_is_the_only_one_rendered_again(run_cli, three, rendered):
    check(run_cli, three)
    path = three.root / "migrations" / "versions" / "a2.py"
    path.write_text(path.read_text().replace('"legacy"', '"old_name"'))
    rendered.clear()
    code, out, err = check(run_cli, three, "--fail-on", "never")  # another command: per-revision records only
    assert rendered == [["a2"]]
    assert [f["column"] for f in json.loads(out)["findings"] if f["rule"] == "drop-column"] == ["old_name"]
    assert (code, out, err) == check(run_cli, three, "--fail-on", "never", "--no-cache")


def test_all_revisions_remembered_renders_nothing_and_reports_the_same(run_cli, three, rendered):
    first = check(run_cli, three, "--fail-on", "warning")
    rendered.clear()
    second = check(run_cli, three, "--fail-on", "never")  # not replayable from the first: a new command
    assert rendered == [[]]  # env.py did not run either: nothing to render
    assert second[1] == first[1] and second[0] == 0 and first[0] == 3


def test_a_changed_rule_file_or_setting_or_allow_renders_everything(run_cli, three, rendered, tmp_path):
    rules = tmp_path / "guard_rules"
    rules.mkdir()
    rule = rules / "no-delete.toml"
    rule.write_text(
        'id = "no-delete"\ncategory = "destructive"\nseverity = "warning"\nsummary = "s"\nmessage = "deletes"\n'
        'why = "w"\ninstead = "i"\n[match]\nkind = "delete"\n'
    )
    three.settings(f'rule_dirs = ["{rules}"]\n')
    check(run_cli, three)
    for change in (
        lambda: rule.write_text(rule.read_text().replace('message = "deletes"', 'message = "removes rows"')),
        lambda: three.settings(f'rule_dirs = ["{rules}"]\nprotected_tables = ["t"]\n'),
    ):
        change()
        rendered.clear()
        out = check(run_cli, three)
        assert rendered == [["a1", "a2", "a3"]]
        assert out == check(run_cli, three, "--no-cache")
    rendered.clear()
    check(run_cli, three, "--allow", "drop-column:t")
    assert rendered == [["a1", "a2", "a3"]]


def test_no_cache_neither_reads_nor_writes(run_cli, three, rendered):
    check(run_cli, three, "--no-cache")
    assert not (three.root / ".migrate-guard").exists()
    check(run_cli, three)
    rendered.clear()
    check(run_cli, three, "--no-cache")
    assert rendered == [["a1", "a2", "a3"]]


def test_an_unwritable_or_damaged_cache_is_ignored(run_cli, three):
    expected = check(run_cli, three, "--no-cache")
    (three.root / ".migrate-guard" / "cache").mkdir(parents=True)
    cache_dir(three).write_text("not a directory")
    code, out, err = check(run_cli, three)
    assert (code, out) == expected[:2]
    assert err.count("note: check cache") == 1 and "note: check cache not written" in err
    cache_dir(three).unlink()
    check(run_cli, three)
    for record in cache_dir(three).iterdir():
        record.write_bytes(b'{"key": "torn')
    assert check(run_cli, three)[:2] == expected[:2]
    planted = three.root / "planted"
    for record in cache_dir(three).iterdir():  # a well-formed pickle that would run a command on loading
        record.write_bytes(pickle.dumps({"key": record.stem, "value": _Planted(str(planted))}))
    assert check(run_cli, three)[:2] == expected[:2]
    assert not planted.exists()


class _Planted:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (f"touch {self.path}",))


def test_a_revision_that_failed_to_import_is_cached_until_its_module_appears(run_cli, project, rendered):
    project.revision("b1", 'op.create_table("t", sa.Column("id", sa.Integer))')
    name = f"mg_missing_{os.getpid()}"
    project.revision("b2", 'op.drop_table("t")', header=f"import {name}\n")
    first = check(run_cli, project, "--fail-on", "never")
    assert any(f["rule"] == "not-analyzable-offline" and name in f["message"] for f in json.loads(first[1])["findings"])
    rendered.clear()
    assert check(run_cli, project, "--fail-on", "info")[1] == first[1]
    assert rendered == [[]]
    (project.root / f"{name}.py").write_text("")
    try:
        rendered.clear()
        found = json.loads(check(run_cli, project, "--fail-on", "never")[1])["findings"]
        assert rendered == [["b2"]]
        assert not any(f["rule"] == "not-analyzable-offline" for f in found)
    finally:
        sys.modules.pop(name, None)


def test_a_changed_project_module_a_revision_imports_renders_again(run_cli, project, rendered):
    helper = f"mg_names_{os.getpid()}"
    (project.root / f"{helper}.py").write_text('TABLE = "first"\n')
    project.revision("c1", f"op.drop_table({helper}.TABLE)", header=f"import {helper}\n")
    try:
        tables = [f["table"] for f in json.loads(check(run_cli, project)[1])["findings"]]
        assert tables == ["first"]
        (project.root / f"{helper}.py").write_text('TABLE = "second"\n')
        sys.modules.pop(helper, None)  # this process imported it: a new run's process would not have
        rendered.clear()
        tables = [f["table"] for f in json.loads(check(run_cli, project)[1])["findings"]]
        assert tables == ["second"] and rendered == [["c1"]]
    finally:
        sys.modules.pop(helper, None)


def test_records_round_trip_equal():
    from migrate_guard.analysis.acks import Acknowledgement
    from migrate_guard.analysis.engine import RevisionOps
    from migrate_guard.analysis.operations import Operation

    ops = RevisionOps(
        "r",
        "/x/r.py",
        [Operation("add_column", "t", "c", details={"cols": ("a", "b"), "n": 1.5, "nested": {"k": [None, True]}})],
        acks=[Acknowledgement("drop-table", "t", "reviewed", "/x/r.py", 3)],
    )
    assert check_cache.decode(check_cache.encode(ops)) == ops
    with pytest.raises(TypeError):
        check_cache.encode({"p": object()})
    # a planted record that would call something on loading is refused, not run
    planted = pickle.dumps({"key": "k", "value": os.system})
    with pytest.raises(ValueError):
        check_cache.decode(planted)


def test_the_store_keeps_within_its_bounds(tmp_path):
    store = check_cache.Store(tmp_path / "c")
    for i in range(12):
        store.put(f"rev-{i}", {"n": i})
        os.utime(store.directory / f"rev-{i}.rec", (1000 + i, 1000 + i))
    store.evict(max_bytes=10**9, max_files=5)
    assert sorted(p.name for p in store.directory.iterdir()) == [f"rev-{i}.rec" for i in (10, 11, 7, 8, 9)]
    assert store.get("rev-11") == {"n": 11} and store.get("rev-0") is None


def test_two_runs_at_once_both_report_what_an_uncached_run_does(three):
    cmd = [sys.executable, "-m", "migrate_guard", "-c", str(three.ini), "check", "--range", "base:heads"]
    cmd += ["--format", "json"]
    expected = subprocess.run([*cmd, "--no-cache"], capture_output=True, text=True)
    runs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert (run.returncode, out) == (expected.returncode, expected.stdout), err
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert (again.returncode, again.stdout) == (expected.returncode, expected.stdout)
