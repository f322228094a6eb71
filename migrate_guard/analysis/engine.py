"""Operations -> findings: the rules applied to what each revision does, then the acknowledgements."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import GuardSettings
from .acks import Acknowledgement, BadAcknowledgement
from .operations import Operation
from .rules import Rule

SEVERITY_RANK = {"info": 1, "warning": 2, "error": 3}


@dataclass
class Finding:
    rule: str
    category: str
    severity: str
    message: str
    suggestion: str
    revision: str | None = None
    file: str | None = None
    line: int | None = None
    table: str | None = None
    column: str | None = None
    schema: str | None = None
    statement: str | None = None
    protected: bool = False
    allowed: bool = False
    allowed_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON contract of ``check --format json``."""
        return {
            "rule": self.rule,
            "category": self.category,
            "severity": self.severity,
            "revision": self.revision,
            "file": self.file,
            "line": self.line,
            "schema": self.schema,
            "table": self.table,
            "column": self.column,
            "statement": self.statement,
            "message": self.message,
            "suggestion": self.suggestion,
            "allowed": self.allowed,
        }


@dataclass
class RevisionOps:
    """What one revision does, whichever way it was read."""

    revision: str
    file: str
    operations: list[Operation]
    failure: str | None = None
    failure_line: int | None = None
    acks: list[Acknowledgement] = field(default_factory=list)
    bad_acks: list[BadAcknowledgement] = field(default_factory=list)


class Evaluator:
    def __init__(self, rules: Mapping[str, Rule], settings: GuardSettings, dialect: str | None):
        self.rules = rules
        self.settings = settings
        self.dialect = dialect
        self.by_kind: dict[str, list[Rule]] = {}  # every rule names its kind(s); look only at those
        for rule in rules.values():
            if rule.applies_to(dialect) and settings.severity.get(rule.id) != "off":
                kinds = rule.match["kind"]
                for kind in [kinds] if isinstance(kinds, str) else kinds:
                    self.by_kind.setdefault(kind, []).append(rule)

    # -- single findings ----------------------------------------------------------------------

    def finding(self, rule: Rule, op: Operation) -> Finding | None:
        override = self.settings.severity.get(rule.id)
        if override == "off":
            return None
        severity = override or rule.severity
        protected = self._protected(op)
        message = rule.render_message(op)
        note = op.details.get("note")
        if isinstance(note, str) and note:  # what the operation itself knows: why it costs, what it came from
            message += f" ({note})"
        if protected and rule.protected_severity:
            if SEVERITY_RANK[rule.protected_severity] > SEVERITY_RANK[severity]:
                severity = rule.protected_severity
            message += " (protected table)"
        return Finding(
            rule=rule.id,
            category=rule.category,
            severity=severity,
            message=message,
            suggestion=" ".join(rule.instead.split()),
            revision=op.revision,
            file=op.file,
            line=op.line,
            table=op.table,
            column=op.column,
            schema=op.schema,
            statement=op.statement,
            protected=protected,
        )

    def _protected(self, op: Operation) -> bool:
        if op.kind == "drop_schema":
            return self.settings.schema_is_protected(op.schema)
        return self.settings.is_protected(op.table, op.schema)

    def synthetic(self, rule_id: str, op: Operation) -> Finding | None:
        rule = self.rules.get(rule_id)
        if rule is None or not rule.applies_to(self.dialect):
            return None
        op.source = "engine"
        return self.finding(rule, op)

    # -- a revision ----------------------------------------------------------------------------

    def revision_findings(self, rev: RevisionOps, env_ops: Sequence[Operation] = ()) -> list[Finding]:
        found: list[Finding | None] = []
        if rev.failure:
            op = Operation("not_analyzable", revision=rev.revision, file=rev.file, line=rev.failure_line)
            op.details["detail"] = rev.failure
            found.append(self.synthetic("not-analyzable-offline", op))
        fresh = _NewObjects()
        lock_timeout_set = any(o.kind == "set_lock_timeout" for o in env_ops)
        lock_warned = False
        for op in rev.operations:
            if op.kind == "set_lock_timeout":
                lock_timeout_set = True
            if fresh.observe(op):
                continue  # created earlier in this revision: nothing to lose, nothing locked
            for rule in self.by_kind.get(op.kind, ()):
                if rule.matches(op):
                    f = self.finding(rule, op)
                    if f:
                        found.append(f)
            if not lock_timeout_set and not lock_warned and _holds_long_lock(op):
                lock_warned = True
                marker = Operation(
                    "lock_timeout_missing",
                    op.table,
                    op.column,
                    op.schema,
                    op.statement,
                    revision=rev.revision,
                    file=rev.file,
                    line=op.line,
                    details={"note": op.details["note"]} if op.details.get("note") else {},
                )
                found.append(self.synthetic("lock-timeout-missing", marker))
        return [f for f in found if f is not None]

    # -- acknowledgements ----------------------------------------------------------------------

    def acknowledge(
        self,
        findings: list[Finding],
        revisions: Iterable[RevisionOps],
        cli_acks: Sequence[Acknowledgement],
        report_stale: bool = True,
    ) -> list[Finding]:
        """Mark acknowledged findings as allowed; report acknowledgements that are wrong or (when
        ``report_stale``) match nothing. A downgrade does not report stale ones: they were written for the upgrade."""
        by_file: dict[str, list[Acknowledgement]] = {}
        extra: list[Finding | None] = []
        for rev in revisions:
            by_file.setdefault(rev.file, []).extend(rev.acks)
            for bad in rev.bad_acks:
                extra.append(self._invalid(bad.problem, rev.revision, bad.file, bad.line))
            for ack in rev.acks:
                if ack.rule not in self.rules:
                    ack.used = True  # reported below, not again as stale
                    extra.append(
                        self._invalid(
                            f"acknowledgement names unknown rule {ack.rule!r}", rev.revision, ack.file, ack.line
                        )
                    )
        for f in findings:
            if f.rule == "invalid-acknowledgement":
                continue
            for ack in [*by_file.get(f.file or "", ()), *cli_acks]:
                if ack.covers(f.rule, f.schema, f.table, f.column):
                    ack.used = True
                    f.allowed, f.allowed_reason = True, ack.reason
                    break
        for rev in revisions if report_stale else ():
            for ack in rev.acks:
                if not ack.used:
                    what = f"{ack.rule} {ack.target}" if ack.target else ack.rule
                    extra.append(
                        self._invalid(
                            f"acknowledgement 'allow {what}' matches no finding", rev.revision, ack.file, ack.line
                        )
                    )
        for ack in cli_acks:
            if not ack.used:
                what = f"{ack.rule}:{ack.target}" if ack.target else ack.rule
                extra.append(self._invalid(f"--allow {what} matches no finding", None, None, None))
        return findings + [f for f in extra if f is not None]

    def _invalid(self, detail: str, revision: str | None, file: str | None, line: int | None) -> Finding | None:
        op = Operation("invalid_acknowledgement", revision=revision, file=file, line=line, details={"detail": detail})
        return self.synthetic("invalid-acknowledgement", op)


class _NewObjects:
    """Tracks what a revision creates, so later operations on it are exempt."""

    def __init__(self) -> None:
        self.tables: set[tuple[str | None, str]] = set()
        self.columns: set[tuple[str | None, str, str]] = set()
        self.names: set[str] = set()  # indexes and constraints
        self.schemas: set[str] = set()
        self.objects: set[tuple[Any, ...]] = set()  # views, functions, sequences, types... (_object_key)

    def observe(self, op: Operation) -> bool:
        """Record ``op``; True when it acts on something created earlier in the same revision."""
        name = op.details.get("name")
        table = (op.schema, op.table) if op.table else None
        new = (
            (table is not None and table in self.tables)
            or (op.kind == "drop_column" and (op.schema, op.table, op.column) in self.columns)
            or (op.kind in ("drop_index", "drop_constraint") and name is not None and name in self.names)
            or (op.kind == "drop_schema" and op.schema in self.schemas)
            or (op.kind == "update" and _only_new_columns(op, self.columns))
            or (op.kind in ("drop_other", "alter_other") and _object_key(op) in self.objects)
        )
        if op.kind == "create_table" and table and not op.details.get("if_not_exists"):
            self.tables.add(table)
        elif (
            op.kind == "create_other" and name and not (op.details.get("if_not_exists") or op.details.get("or_replace"))
        ):
            self.objects.add(_object_key(op))  # IF NOT EXISTS and OR REPLACE may find one there already
        elif op.kind == "create_schema" and op.schema:
            self.schemas.add(op.schema)
        elif op.kind == "add_column" and op.table and op.column:
            self.columns.add((op.schema, op.table, op.column))
        elif op.kind in ("create_index", "add_constraint") and name:
            self.names.add(name)
        elif op.kind == "rename_table" and new and op.details.get("new_name"):
            self.tables.add((op.schema, op.details["new_name"]))
        return new


def _object_key(op: Operation) -> tuple[Any, ...]:
    """What names a view, function, type... (a trigger also by its table): CREATE and DROP alike."""
    d = op.details
    return (d.get("object_type"), op.schema, op.table, d.get("name"))


def _only_new_columns(op: Operation, added: set[tuple[str | None, str, str]]) -> bool:
    """An UPDATE that only fills columns added earlier in the revision (a backfill) loses nothing."""
    columns = op.details.get("set_columns") or ()
    return bool(columns) and all((op.schema, op.table, c) in added for c in columns)


def _holds_long_lock(op: Operation) -> bool:
    """DDL that keeps an ACCESS EXCLUSIVE (or SHARE) lock while it rewrites or scans the table."""
    d = op.details
    if op.kind == "alter_column_type":
        return d.get("type_change") != "widening"
    if op.kind == "set_not_null":
        return True
    if op.kind == "create_index":
        return not d.get("concurrently")
    if op.kind == "add_constraint":
        return d.get("constraint_type") in ("unique", "primary_key") or not d.get("not_valid")
    if op.kind == "add_column":
        return d.get("rewrites_table") is True
    if op.kind == "lock_table":
        return d.get("blocks_writes") is True
    if op.kind == "cluster":  # rewrites the table under ACCESS EXCLUSIVE
        return True
    if op.kind == "vacuum":
        return d.get("full") is True
    if op.kind in ("reindex", "detach_partition"):
        return not d.get("concurrently")
    # SHARE ROW EXCLUSIVE on the referenced table, held to the end of the transaction
    return op.kind == "reference_table"


def exit_code_for(findings: Iterable[Finding], fail_on: str) -> int:
    """0 when no unacknowledged finding reaches ``fail_on``, else 3."""
    if fail_on == "never":
        return 0
    threshold = SEVERITY_RANK[fail_on]
    return 3 if any(not f.allowed and SEVERITY_RANK[f.severity] >= threshold for f in findings) else 0
