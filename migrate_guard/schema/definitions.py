"""Constraint and integrity definitions as data: TOML files beside the migrations.

A file holds any of these arrays of tables (the format is described in ``docs/constraints.md``):

``[[constraint]]``   name, table, expression (portable SQL), optional ``[constraint.dialects]``
                     overrides (postgresql / mysql / mariadb / sqlite), severity, description
``[[unique]]``       name, table, columns: values that must not repeat (checked, not enforced)
``[[check]]``        name, query that must return no rows, optional ``tables`` it needs, severity
``[[foreign_key]]``  name, table, columns, references, referenced_columns: a relation the engine
                     does not keep (MyISAM), checked for orphans like a reflected one
``[integrity]``      foreign_keys = "error" | "warning": the severity of orphans along the
                     database's own foreign keys (warning while old data is being cleaned up)

Which files: ``constraints = [...]`` in the guard settings, else ``constraints.toml`` beside
alembic.ini when it exists. Every unknown key or bad value is a one-line ``ConfigError``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Project, dialect_family
from ..errors import ConfigError

SEVERITIES = ("error", "warning")
DIALECT_KEYS = ("postgresql", "mysql", "mariadb", "sqlite")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(frozen=True)
class Constraint:
    name: str
    table: str
    expression: str
    dialects: dict[str, str] = field(default_factory=dict)  # dialect family -> expression
    severity: str = "error"  # error: enforced by the database; warning: only reported
    description: str = ""
    schema: str | None = None
    source: str = ""

    def sql(self, dialect: str) -> str:
        """The expression for ``dialect`` (its override, else the portable one)."""
        return self.dialects.get(dialect_family(dialect), self.expression)


@dataclass(frozen=True)
class Unique:
    name: str
    table: str
    columns: tuple[str, ...]
    severity: str = "error"
    description: str = ""
    schema: str | None = None


@dataclass(frozen=True)
class Check:
    name: str
    query: str
    dialects: dict[str, str] = field(default_factory=dict)
    tables: tuple[str, ...] = ()  # skipped while one of these does not exist (an earlier revision)
    severity: str = "error"
    description: str = ""

    def sql(self, dialect: str) -> str:
        return self.dialects.get(dialect_family(dialect), self.query)


@dataclass(frozen=True)
class DeclaredForeignKey:
    name: str
    table: str
    columns: tuple[str, ...]
    references: str
    referenced_columns: tuple[str, ...]
    severity: str = "error"


@dataclass(frozen=True)
class Definitions:
    constraints: tuple[Constraint, ...] = ()
    uniques: tuple[Unique, ...] = ()
    checks: tuple[Check, ...] = ()
    foreign_keys: tuple[DeclaredForeignKey, ...] = ()
    files: tuple[Path, ...] = ()
    reflected_fk_severity: str = "error"  # [integrity] foreign_keys: orphans along the database's own foreign keys

    def __bool__(self) -> bool:
        return bool(self.constraints or self.uniques or self.checks or self.foreign_keys)


def definition_files(project: Project) -> list[Path]:
    """The configured files, else ``constraints.toml`` beside alembic.ini when there is one."""
    configured = project.settings.constraints
    if configured is not None:
        return list(configured)
    default = project.root / "constraints.toml"
    return [default] if default.is_file() else []


def load(project: Project) -> Definitions:
    constraints: list[Constraint] = []
    uniques: list[Unique] = []
    checks: list[Check] = []
    fks: list[DeclaredForeignKey] = []
    files = definition_files(project)
    fk_severity = "error"
    for path in files:
        c, u, k, f, severity = parse_file(path)
        fk_severity = severity or fk_severity
        constraints += c
        uniques += u
        checks += k
        fks += f
    seen: dict[str, str] = {}
    items: list[Constraint | Unique | Check | DeclaredForeignKey] = [*constraints, *uniques, *checks, *fks]
    for item in items:
        if item.name.lower() in seen:
            raise ConfigError(
                f"{files[0].name if len(files) == 1 else 'constraints'}: name {item.name!r} is defined twice"
            )
        seen[item.name.lower()] = item.name
    return Definitions(tuple(constraints), tuple(uniques), tuple(checks), tuple(fks), tuple(files), fk_severity)


_KEYS = {
    "constraint": {"name", "table", "schema", "expression", "dialects", "severity", "description"},
    "unique": {"name", "table", "schema", "columns", "severity", "description"},
    "check": {"name", "query", "dialects", "tables", "severity", "description"},
    "foreign_key": {"name", "table", "columns", "references", "referenced_columns", "severity"},
}


def parse_file(path: Path) -> tuple[list[Constraint], list[Unique], list[Check], list[DeclaredForeignKey], str | None]:
    if not path.is_file():
        raise ConfigError(f"constraint definitions not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name}: invalid TOML: {exc}") from None

    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{path.name}: {key}: {problem}")

    for key in data:
        if key not in _KEYS and key != "integrity":
            raise fail(key, f"unknown key (known: {', '.join(sorted([*_KEYS, 'integrity']))})")
    settings = data.get("integrity", {})
    if not isinstance(settings, dict):
        raise fail("integrity", "must be a table")
    for key, value in settings.items():
        if key != "foreign_keys":
            raise fail(f"integrity.{key}", "unknown key (known: foreign_keys)")
        if value not in SEVERITIES:
            raise fail("integrity.foreign_keys", f"bad value {value!r} (choose {', '.join(SEVERITIES)})")
    out: dict[str, list[Any]] = {k: [] for k in _KEYS}
    for kind, known in _KEYS.items():
        entries = data.get(kind, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise fail(kind, f"must be an array of tables ([[{kind}]])")
        for i, entry in enumerate(entries):
            where = f"{kind}[{i}]"

            def text(key: str, _entry: dict[str, Any] = entry, _where: str = where) -> str:
                value = _entry.get(key)
                if not isinstance(value, str) or not value.strip():
                    raise fail(f"{_where}.{key}", "must be a non-empty string")
                return value.strip()

            def optional_text(
                key: str, _entry: dict[str, Any] = entry, _text: Callable[[str], str] = text
            ) -> str | None:
                return None if _entry.get(key) is None else _text(key)

            def names(key: str, _entry: dict[str, Any] = entry, _where: str = where) -> tuple[str, ...]:
                value = _entry.get(key)
                if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
                    raise fail(f"{_where}.{key}", "must be a non-empty list of names")
                return tuple(v.strip() for v in value)

            for key in entry:
                if key not in known:
                    raise fail(f"{where}.{key}", f"unknown key (known: {', '.join(sorted(known))})")
            name = text("name")
            if not _NAME.match(name):
                raise fail(f"{where}.name", f"{name!r} is not a plain SQL name (letters, digits, _; at most 63)")
            where = f"{kind} {name}"
            severity = entry.get("severity", "error")
            if severity not in SEVERITIES:
                raise fail(f"{where}.severity", f"bad value {severity!r} (choose {', '.join(SEVERITIES)})")
            dialects = entry.get("dialects", {})
            if not isinstance(dialects, dict):
                raise fail(f"{where}.dialects", "must be a table of dialect = expression")
            for d, expr in dialects.items():
                if d not in DIALECT_KEYS:
                    raise fail(f"{where}.dialects.{d}", f"unknown dialect (choose {', '.join(DIALECT_KEYS)})")
                if not isinstance(expr, str) or not expr.strip():
                    raise fail(f"{where}.dialects.{d}", "must be a non-empty string")
            overrides = {dialect_family(d): e.strip() for d, e in dialects.items()}
            description = entry.get("description", "")
            if not isinstance(description, str):
                raise fail(f"{where}.description", "must be a string")
            if kind == "constraint":
                expression = text("expression")
                if ";" in expression or any(";" in e for e in overrides.values()):
                    raise fail(f"{where}.expression", "must be one SQL expression (no ';')")
                out[kind].append(
                    Constraint(
                        name,
                        text("table"),
                        expression,
                        overrides,
                        severity,
                        description,
                        optional_text("schema"),
                        str(path),
                    )
                )
            elif kind == "unique":
                out[kind].append(
                    Unique(name, text("table"), names("columns"), severity, description, optional_text("schema"))
                )
            elif kind == "check":
                query = text("query")
                tables = names("tables") if "tables" in entry else ()
                out[kind].append(
                    Check(
                        name,
                        query.rstrip(";"),
                        {d: e.rstrip(";") for d, e in overrides.items()},
                        tables,
                        severity,
                        description,
                    )
                )
            else:
                columns, referenced = names("columns"), names("referenced_columns")
                if len(columns) != len(referenced):
                    raise fail(f"{where}.referenced_columns", "must name as many columns as columns")
                out[kind].append(
                    DeclaredForeignKey(name, text("table"), columns, text("references"), referenced, severity)
                )
    return out["constraint"], out["unique"], out["check"], out["foreign_key"], settings.get("foreign_keys")
