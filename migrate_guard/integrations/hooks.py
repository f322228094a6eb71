"""Checking files a hook hands over (pre-commit, Alembic's ``post_write_hooks``): each file is checked
as ``check --revision FILE`` against the Alembic project it belongs to."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import alembic_bridge as bridge
from ..analysis.check import CheckOptions, CheckReport, run_check
from ..config import Project, load_project


@dataclass
class FilesResult:
    reports: list[tuple[Project, CheckReport]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # files that are no revision of any project found

    @property
    def exit_code(self) -> int:
        return max((report.exit_code for _, report in self.reports), default=0)


def find_project_config(path: Path) -> Path | None:
    """The nearest ``alembic.ini`` (or ``pyproject.toml`` with ``[tool.alembic]``) above ``path``."""
    for directory in path.resolve().parents:
        ini = directory / "alembic.ini"
        if ini.is_file():
            return ini
        pyproject = directory / "pyproject.toml"
        if pyproject.is_file() and _has_alembic_table(pyproject):
            return pyproject
    return None


def _has_alembic_table(pyproject: Path) -> bool:
    try:
        with pyproject.open("rb") as fh:
            return "alembic" in tomllib.load(fh).get("tool", {})
    except (OSError, tomllib.TOMLDecodeError):
        return False  # not ours to judge here; a project that uses it will report it when loaded


def check_files(
    files: Sequence[str], options: CheckOptions, config: str | None = None, url: str | None = None
) -> FilesResult:
    """Check each existing file that is a revision of its project. With ``config`` (or ``$ALEMBIC_CONFIG``)
    every file belongs to that project; otherwise each file's project is found by walking up from it."""
    explicit = config or os.environ.get("ALEMBIC_CONFIG")
    groups: dict[Path | None, list[str]] = {}
    result = FilesResult()
    for name in files:
        path = Path(name)
        if not path.is_file():
            result.skipped.append(name)  # deleted in this change: nothing left to check
            continue
        key = None if explicit else find_project_config(path)
        if key is None and not explicit:
            result.skipped.append(name)
            continue
        groups.setdefault(key, []).append(name)
    for key, names in groups.items():
        project = load_project(explicit if key is None else key, url)
        script = bridge.open_scripts(project, read_unimportable=True)  # read statically, as check does
        revision_files = {os.path.realpath(bridge.script_file(project, s)) for s in script.walk_revisions()}
        mine = [n for n in names if os.path.realpath(n) in revision_files]
        result.skipped.extend(n for n in names if n not in mine)
        if mine:
            result.reports.append(
                (project, run_check(project, replace(options, revisions=tuple(os.path.abspath(n) for n in mine))))
            )
    return result
