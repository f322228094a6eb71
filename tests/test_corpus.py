"""A labelled corpus of realistic revisions (tests/corpus/), checked on PostgreSQL, MySQL and SQLite.

Every revision's docstring has an ``expect:`` line: ``safe``, or the destructive and breaking
findings the revision must produce, comma-separated, each ``rule[:table[.column]][@dialect+...]``
(a ``@dialect`` suffix limits an expectation to those dialects). Per revision and dialect:

- every expected finding is reported (rule, table and column);
- no destructive or breaking finding is reported that the label does not list; for a ``safe``
  revision that means none at all (locking and hygiene findings are allowed: PostgreSQL warns
  about locks on some safe revisions, and revisions that cannot render offline get an info).

``test_recall_and_false_alarms`` prints recall and false-alarm counts per dialect.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

CORPUS = Path(__file__).parent / "corpus"
VERSIONS = CORPUS / "migrations" / "versions"
DIALECTS = ("postgresql", "mysql", "sqlite")
SCORED = ("destructive", "breaking")
RULES_DIR = Path(__file__).resolve().parents[1] / "rules"

# Revisions the tool gets wrong today: slug -> (dialects, reason). Listed in the final report.
KNOWN_BUGS: dict[str, tuple[tuple[str, ...], str]] = {}


@dataclass(frozen=True)
class Expect:
    rule: str
    table: str | None
    column: str | None
    dialects: tuple[str, ...]


@dataclass(frozen=True)
class Revision:
    id: str
    slug: str
    file: str
    down: object
    expect: tuple[Expect, ...]
    safe: bool

    def expected(self, dialect: str) -> set[tuple]:
        return {(e.rule, e.table, e.column) for e in self.expect if dialect in e.dialects}


_ITEM = re.compile(
    r"^(?P<rule>[a-z0-9-]+)(?::(?P<table>[a-z0-9_]+)(?:\.(?P<column>[a-z0-9_]+))?)?(?:@(?P<dialects>[a-z+]+))?$"
)


def _parse_expect(line: str, where: str) -> tuple[Expect, ...]:
    if line.strip() == "safe":
        return ()
    out = []
    for item in (i.strip() for i in line.split(",")):
        m = _ITEM.match(item)
        assert m, f"{where}: bad expect item {item!r}"
        dialects = tuple(m["dialects"].split("+")) if m["dialects"] else DIALECTS
        out.append(Expect(m["rule"], m["table"], m["column"], dialects))
    return tuple(out)


def load_corpus() -> list[Revision]:
    revisions = []
    for path in sorted(VERSIONS.glob("*.py")):
        tree = ast.parse(path.read_text())
        doc = ast.get_docstring(tree) or ""
        m = re.search(r"^expect:\s*(.+)$", doc, re.M)
        assert m, f"{path.name}: no 'expect:' line in the docstring"
        names = {}
        for node in tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                target = node.targets[0] if isinstance(node, ast.Assign) else node.target
                if isinstance(target, ast.Name) and node.value is not None:
                    names[target.id] = ast.literal_eval(node.value)
        expect = _parse_expect(m.group(1), path.name)
        slug = path.stem.split("_", 1)[1]
        revisions.append(Revision(names["revision"], slug, path.name, names["down_revision"], expect, not expect))
    return revisions


REVISIONS = load_corpus()


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, list[dict]]:
    """``check`` on the whole corpus, once per dialect (on a copy, so no __pycache__ lands in tests/)."""
    from migrate_guard.cli import cli

    root = tmp_path_factory.mktemp("corpus") / "corpus"
    shutil.copytree(CORPUS, root, ignore=shutil.ignore_patterns("__pycache__"))
    out = {}
    for dialect in DIALECTS:
        result = CliRunner().invoke(
            cli,
            [
                "-c",
                str(root / "alembic.ini"),
                "check",
                "--range",
                "base:heads",
                "--dialect",
                dialect,
                "--format",
                "json",
            ],
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output  # nothing is on a protected table: warnings only
        data = json.loads(result.stdout)
        assert data["summary"]["revisions"] == len(REVISIONS)
        out[dialect] = data["findings"]
    return out


def _of(results: dict[str, list[dict]], dialect: str, rev: Revision) -> list[dict]:
    return [f for f in results[dialect] if f["revision"] == rev.id]


def _scored(found: list[dict]) -> set[tuple]:
    return {(f["rule"], f["table"], f["column"]) for f in found if f["category"] in SCORED}


# --- the corpus itself ------------------------------------------------------------------------------


def test_corpus_is_realistic_and_well_formed():
    assert 38 <= len(REVISIONS) <= 45
    safe = [r for r in REVISIONS if r.safe]
    assert 0.4 <= len(safe) / len(REVISIONS) <= 0.6, len(safe)
    # labels name real destructive/breaking rules
    import tomllib

    categories = {p.stem: tomllib.loads(p.read_text())["category"] for p in RULES_DIR.glob("*.toml")}
    for rev in REVISIONS:
        for e in rev.expect:
            assert categories.get(e.rule) in SCORED, (rev.file, e)
            assert set(e.dialects) <= set(DIALECTS), (rev.file, e)
    # one history: a single base, a branch and its merge, a single head
    ids = {r.id for r in REVISIONS}
    downs = [r.down for r in REVISIONS]
    assert downs.count(None) == 1
    parents = [d for down in downs if down for d in ((down,) if isinstance(down, str) else down)]
    assert set(parents) <= ids
    assert len(ids - set(parents)) == 1, "exactly one head"
    assert any(isinstance(d, tuple) for d in downs), "a merge revision"
    # only alembic / sqlalchemy (and typing) imports, like generated revisions
    for path in VERSIONS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            else:
                continue
            assert all(m.split(".")[0] in ("alembic", "sqlalchemy", "typing") for m in mods), (path.name, mods)


# --- per revision and dialect -----------------------------------------------------------------------


def _params():
    for rev in REVISIONS:
        for dialect in DIALECTS:
            marks = []
            bug = KNOWN_BUGS.get(rev.slug)
            if bug and dialect in bug[0]:
                marks.append(pytest.mark.xfail(strict=True, reason=bug[1]))
            label = "safe" if rev.safe else "unsafe"
            yield pytest.param(rev, dialect, id=f"{rev.slug}-{label}-{dialect}", marks=marks)


@pytest.mark.parametrize("rev, dialect", list(_params()))
def test_revision(results, rev: Revision, dialect: str):
    found = _of(results, dialect, rev)
    got = _scored(found)
    want = rev.expected(dialect)
    assert want <= got, (
        f"{rev.file} on {dialect}: missed {sorted(want - got, key=repr)}; reported {sorted(got, key=repr)}"
    )
    assert got <= want, f"{rev.file} on {dialect}: false alarm {sorted(got - want, key=repr)}"
    for f in found:  # every finding points into the revision's own file, at a real line
        assert f["file"].endswith(rev.file) and f["line"], f


def test_known_bugs_name_corpus_revisions():
    slugs = {r.slug for r in REVISIONS}
    assert set(KNOWN_BUGS) <= slugs


# --- the scores -------------------------------------------------------------------------------------


def test_recall_and_false_alarms(results, capsys):
    lines = ["", "migrate-guard on the labelled corpus (destructive + breaking findings):"]
    misses_seen: set[tuple[str, str]] = set()
    for dialect in DIALECTS:
        expected = hit = false_alarms = 0
        safe_notes: list[str] = []
        for rev in REVISIONS:
            found = _of(results, dialect, rev)
            got, want = _scored(found), rev.expected(dialect)
            expected += len(want)
            hit += len(want & got)
            false_alarms += len(got - want)
            if want - got:
                misses_seen.add((rev.slug, dialect))
            if rev.safe:
                other = sorted({f["rule"] for f in found if f["category"] not in SCORED})
                if other:
                    safe_notes.append(f"{rev.slug}: {', '.join(other)}")
        safe_count = sum(r.safe for r in REVISIONS)
        lines.append(
            f"  {dialect:10} recall {hit}/{expected} = {hit / expected:.0%}; "
            f"false alarms {false_alarms} ({safe_count} safe, {len(REVISIONS) - safe_count} unsafe revisions)"
        )
        for note in safe_notes:
            lines.append(f"      safe revision with locking/hygiene findings: {note}")
        assert false_alarms == 0, dialect
    with capsys.disabled():
        print("\n".join(lines))
    known = {(slug, d) for slug, (dialects, _) in KNOWN_BUGS.items() for d in dialects}
    assert misses_seen == known, "a miss appeared or a known bug was fixed: update KNOWN_BUGS"
