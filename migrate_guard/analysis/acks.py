"""Reviewed acknowledgements: a finding a reviewer has accepted, written where code review sees it.

In a revision file (applies to that revision only)::

    # migrate-guard: allow drop-column customers.legacy_code -- moved to customer_code; reviewed by @ana

On the command line (applies to every revision checked)::

    --allow drop-column:customers.legacy_code

The target is ``table``, ``table.column`` or ``schema.table[.column]`` (globs allowed) and may be
left out to allow every finding of that rule in the revision. A file acknowledgement needs a reason.
"""

from __future__ import annotations

import fnmatch
import io
import re
import tokenize
from dataclasses import dataclass

from ..errors import UsageError

MARKER = "migrate-guard:"
_DIRECTIVE = re.compile(
    r"^allow\s+(?P<rule>[A-Za-z0-9_-]+)(?:(?:\s+|:)(?P<target>[^\s]+?))?\s*(?:--\s*(?P<reason>.*?))?\s*$"
)


@dataclass
class Acknowledgement:
    rule: str
    target: str | None
    reason: str | None
    file: str | None = None  # None for --allow
    line: int | None = None
    used: bool = False

    def covers(self, rule: str, schema: str | None, table: str | None, column: str | None) -> bool:
        if rule != self.rule:
            return False
        if not self.target:
            return True
        parts = self.target.lower().split(".")
        candidates = [
            (table, column),  # table[.column]
            (schema, table),  # schema.table
        ]
        if len(parts) == 1:
            return table is not None and fnmatch.fnmatchcase(table, parts[0])
        if len(parts) == 2:
            return any(
                a is not None and b is not None and _glob(a, parts[0]) and _glob(b, parts[1]) for a, b in candidates
            )
        return (
            None not in (schema, table, column)
            and _glob(schema, parts[0])  # type: ignore[arg-type]
            and _glob(table, parts[1])  # type: ignore[arg-type]
            and _glob(column, ".".join(parts[2:]))  # type: ignore[arg-type]
        )


def _glob(name: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern)


@dataclass
class BadAcknowledgement:
    file: str
    line: int
    problem: str


def read_file_acks(path: str, source: str) -> tuple[list[Acknowledgement], list[BadAcknowledgement]]:
    """Acknowledgement comments in a revision file (real comments only, not text in strings)."""
    if MARKER not in source:
        return [], []
    acks: list[Acknowledgement] = []
    bad: list[BadAcknowledgement] = []
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return [], []
    for tok in tokens:
        if tok.type != tokenize.COMMENT:
            continue
        body = tok.string.lstrip("#").strip()
        if not body.startswith(MARKER):
            continue
        line = tok.start[0]
        directive = body[len(MARKER) :].strip()
        match = _DIRECTIVE.match(directive)
        if not match:
            bad.append(
                BadAcknowledgement(
                    path,
                    line,
                    f"cannot read acknowledgement {directive!r} (expected: allow RULE [TABLE[.COLUMN]] -- REASON)",
                )
            )
            continue
        if not (match["reason"] or "").strip():
            bad.append(BadAcknowledgement(path, line, f"acknowledgement of {match['rule']} needs a reason after '--'"))
            continue
        acks.append(Acknowledgement(match["rule"], match["target"], match["reason"].strip(), path, line))
    return acks, bad


def parse_cli_allow(spec: str, known_rules: set[str] | frozenset[str]) -> Acknowledgement:
    """``RULE[:TABLE[.COLUMN]]`` from ``--allow``; an unknown rule is a usage error."""
    rule, _, target = spec.strip().partition(":")
    if not rule:
        raise UsageError(f"--allow {spec!r}: expected RULE[:TABLE[.COLUMN]]")
    if rule not in known_rules:
        raise UsageError(f"--allow {spec!r}: unknown rule {rule!r} (see `migrate-guard rules`)")
    return Acknowledgement(rule, target or None, "allowed on the command line")
