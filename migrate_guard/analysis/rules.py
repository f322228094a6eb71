"""The rule catalogue: one TOML file per rule (``rules/<id>.toml``), loaded into :class:`Rule` objects.

Rules are data, not code: a rule says which :class:`Operation` it matches and how to word the
finding. Users add or override rules with extra directories of the same files.
"""

from __future__ import annotations

import fnmatch
import re
import string
import textwrap
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from migrate_guard.config import dialect_family
from migrate_guard.errors import ConfigError

from .operations import KINDS, Operation

SEVERITIES = ("info", "warning", "error")
CATEGORIES = ("destructive", "breaking", "locking", "hygiene")
# Dialect names as SQLAlchemy spells them; a closed list so that a typo ("postgres") is an error
# instead of a rule that silently never applies.
DIALECTS = ("postgresql", "mysql", "mariadb", "sqlite", "mssql", "oracle")


def _builtin_rules_dir() -> Path:
    # A checkout has rules/ next to the package; a wheel ships it as migrate_guard/_rules.
    # The marker file guards against an unrelated top-level "rules" package in site-packages.
    repo = Path(__file__).resolve().parents[2] / "rules"
    if (repo / "drop-table.toml").is_file():
        return repo
    return Path(__file__).resolve().parents[1] / "_rules"


BUILTIN_RULES_DIR: Path = _builtin_rules_dir()

_REQUIRED = ("id", "category", "severity", "summary", "message", "match")
# Optional so that a user rule can be short; the built-in rules fill every one (tests enforce it).
_OPTIONAL: dict[str, Any] = {
    "protected_severity": None,
    "dialects": ["*"],
    "why": "",
    "instead": "",
    "example_bad": "",
    "example_good": "",
}
_TEXT_KEYS = ("summary", "message", "why", "instead", "example_bad", "example_good")
_GLOB_KEYS = ("table", "column", "schema")
_ID_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


@dataclass(frozen=True)
class Rule:
    id: str
    category: str
    severity: str
    protected_severity: str | None
    dialects: tuple[str, ...]
    summary: str
    message: str
    why: str
    instead: str
    example_bad: str
    example_good: str
    match: Mapping[str, Any] = field(hash=False)
    path: Path = field(compare=False)

    def applies_to(self, dialect: str | None) -> bool:
        """True if the rule is checked for ``dialect`` (a SQLAlchemy dialect name; None = unknown)."""
        if dialect is None or "*" in self.dialects:
            return True
        name = dialect_family(dialect)
        return any(dialect_family(d) == name for d in self.dialects)

    def matches(self, op: Operation) -> bool:
        """True if every key of ``[match]`` matches ``op``."""
        return all(_match_key(key, want, op) for key, want in self.match.items())

    def render_message(self, op: Operation) -> str:
        """The one-line finding for ``op``; missing values show as ``?``. Never raises."""
        try:
            values = _Values({k: v for k, v in (op.details or {}).items() if isinstance(k, str)})
            for key in ("kind", "table", "column", "schema", "qualified_table"):
                if getattr(op, key, None) is not None:
                    values[key] = getattr(op, key)
            try:
                text = self.message.format_map(values)
            except Exception:  # noqa: BLE001 - a bad format spec in a user template: plain substitution instead
                text = re.sub(r"\{(\w+)[^{}]*\}", lambda m: values[m.group(1)], self.message)
        except Exception:  # noqa: BLE001 - a detail value whose str() fails: a finding must still be reported
            text = self.message
        return " ".join(text.split())


class _Values(dict[str, Any]):
    """Format values: None and missing keys render as ``?``, lists as comma-separated text."""

    def __getitem__(self, key: str) -> str:
        value = super().get(key)
        if value is None or value == "":
            return "?"
        if isinstance(value, (list, tuple, set, frozenset)):
            return ", ".join(str(v) for v in value) or "?"
        return str(value)


def _match_key(key: str, want: Any, op: Operation) -> bool:
    wants = want if isinstance(want, list) else [want]
    if key == "kind":
        return op.kind in wants
    if key == "sql":
        return op.statement is not None and re.search(want, op.statement, re.IGNORECASE) is not None
    if key in _GLOB_KEYS:
        # A dotted table pattern ("billing.*") is matched against schema.table.
        def subject(pattern: str) -> str:
            if key == "table" and "." in pattern:
                return op.qualified_table or ""
            return getattr(op, key) or ""

        return any(fnmatch.fnmatchcase(subject(w).lower(), w.lower()) for w in wants)
    if key not in op.details:
        return False
    return any(_same(op.details[key], w) for w in wants)


def _same(actual: Any, expected: Any) -> bool:
    # True == 1 in Python; a rule asking for `false` must not match a count of 0.
    if isinstance(actual, bool) or isinstance(expected, bool):
        return isinstance(actual, bool) and isinstance(expected, bool) and actual is expected
    same: bool = actual == expected
    return same


# --- loading -------------------------------------------------------------------------------------

_cache: dict[tuple[tuple[str, int, int], ...], dict[str, Rule]] = {}


def load_rules(extra_dirs: Sequence[Path] = ()) -> dict[str, Rule]:
    """Load the built-in rules, then each of ``extra_dirs`` in order (a rule with a known id replaces it).

    Raises ConfigError (one line, naming the file and key) on any problem.
    """
    dirs = [BUILTIN_RULES_DIR, *(Path(d) for d in extra_dirs)]
    files: list[Path] = []
    for i, d in enumerate(dirs):
        if not d.is_dir():
            what = "built-in rules directory" if i == 0 else "rules directory"
            raise ConfigError(f"{_show_path(d)}: {what} does not exist")
        files.extend(sorted(d.glob("*.toml")))
    # Keyed on file stats too, so an edited rule file is re-read; stat-ing ~22 files is cheap.
    key = tuple((str(f), *_stat(f)) for f in files)
    if key not in _cache:
        rules: dict[str, Rule] = {}
        for f in files:
            rule = _load_file(f)
            rules[rule.id] = rule
        _cache[key] = rules
    return dict(_cache[key])


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def _show_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def _load_file(path: Path) -> Rule:
    where = _show_path(path)

    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(" ".join(f"{where}: key '{key}': {problem}".split()))

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(" ".join(f"{where}: invalid TOML: {exc}".split())) from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror}") from None

    for key in _REQUIRED:
        if key not in data:
            raise ConfigError(f"{where}: missing required key '{key}'")
    for key in data:
        if key not in _REQUIRED and key not in _OPTIONAL:
            allowed = ", ".join((*_REQUIRED, *_OPTIONAL))
            raise ConfigError(f"{where}: unknown key '{key}' (allowed: {allowed})")
    values = {**_OPTIONAL, **data}

    for key in ("id", "category", "severity", *_TEXT_KEYS):
        if not isinstance(values[key], str):
            raise fail(key, f"must be a string, not {type(values[key]).__name__}")
    if not _ID_RE.fullmatch(values["id"]):
        raise fail("id", f"{values['id']!r} must be lower-case words joined by '-'")
    if values["id"] != path.stem:
        raise fail("id", f"{values['id']!r} must match the file name ({path.stem}.toml)")
    _check_choice(fail, "category", values["category"], CATEGORIES)
    _check_choice(fail, "severity", values["severity"], SEVERITIES)
    protected = values["protected_severity"]
    if protected is not None:
        if not isinstance(protected, str):
            raise fail("protected_severity", "must be a string")
        _check_choice(fail, "protected_severity", protected, SEVERITIES)
        if values["category"] != "destructive":
            raise fail("protected_severity", "only destructive rules have a protected severity")
    dialects = values["dialects"]
    if not isinstance(dialects, list) or not dialects or not all(isinstance(d, str) for d in dialects):
        raise fail("dialects", 'must be a non-empty list of strings, e.g. ["*"] or ["postgresql"]')
    for d in dialects:
        _check_choice(fail, "dialects", d, ("*", *DIALECTS))
    if not values["summary"].strip():
        raise fail("summary", "must not be empty")
    _check_message(fail, values["message"])

    return Rule(
        id=values["id"],
        category=values["category"],
        severity=values["severity"],
        protected_severity=protected,
        dialects=tuple(dialects),
        summary=" ".join(values["summary"].split()),
        message=values["message"],
        why=values["why"].strip(),
        instead=values["instead"].strip(),
        example_bad=textwrap.dedent(values["example_bad"]).strip("\n"),
        example_good=textwrap.dedent(values["example_good"]).strip("\n"),
        match=MappingProxyType(_check_match(fail, values["match"])),
        path=path,
    )


def _check_choice(fail: Any, key: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise fail(key, f"{value!r} is not one of {', '.join(choices)}")


def _check_message(fail: Any, message: str) -> None:
    if not message.strip() or "\n" in message.strip():
        raise fail("message", "must be a non-empty single line")
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(message) if name is not None]
    except ValueError as exc:
        raise fail("message", f"bad template: {exc}") from None
    for name in fields:
        if not name.isidentifier():
            raise fail("message", f"placeholder {{{name}}} must be a plain name such as {{table}}")


def _check_match(fail: Any, match: Any) -> dict[str, Any]:
    if not isinstance(match, dict) or not match:
        raise fail("match", "must be a non-empty table")
    if "kind" not in match:  # without a kind a rule would match every operation
        raise fail("match.kind", "is missing; every rule must name the operation kind it matches")
    out: dict[str, Any] = {}
    for key, want in match.items():
        k = f"match.{key}"
        items = want if isinstance(want, list) else [want]
        if isinstance(want, list) and not want:
            raise fail(k, "must not be an empty list")
        if key in ("kind", "sql", *_GLOB_KEYS):
            if not all(isinstance(w, str) for w in items):
                raise fail(k, "must be a string or a list of strings")
        elif not all(isinstance(w, (bool, int, str)) for w in items):
            raise fail(k, "must be a boolean, integer, string, or a list of them")
        if key == "kind":
            for w in items:
                if w not in KINDS:
                    raise fail(k, f"unknown kind {w!r} (see migrate_guard/analysis/operations.py KINDS)")
        if key == "sql":
            if isinstance(want, list):
                raise fail(k, "must be a single regular expression (use | for alternatives)")
            try:
                re.compile(want, re.IGNORECASE)
            except re.error as exc:
                raise fail(k, f"invalid regular expression: {exc}") from None
        out[key] = list(want) if isinstance(want, list) else want
    return out
