"""Operations -> findings: the rules applied to what each revision does, then the acknowledgements."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import GuardSettings
from .acks import Acknowledgement, BadAcknowledgement
from .operations import Operation
from .rules import Rule
from .server import Server
from .static import sets_lock_timeout

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
    def __init__(
        self, rules: Mapping[str, Rule], settings: GuardSettings, dialect: str | None, script_dir: str | None = None
    ):
        """``script_dir``: Alembic's script directory, whose env.py may set a lock_timeout for every revision."""
        self.rules = rules
        self.settings = settings
        self.dialect = dialect
        self.server = Server.of(settings, dialect)
        # offline rendering runs run_migrations_offline() only, so what the online path sets is read from source
        self.lock_timeout_outside = bool(settings.lock_timeout) or _env_sets_lock_timeout(script_dir)
        self.tracing = False  # findings of the trace_* kinds are made too (the trace command), so theirs can go stale
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
        instead = (op.details.get("instead_for") or {}).get(rule.id) or rule.instead  # this server's advice
        return Finding(
            rule=rule.id,
            category=rule.category,
            severity=severity,
            message=message,
            suggestion=" ".join(instead.split()),
            revision=op.revision,
            file=op.file,
            line=op.line,
            table=op.table,
            column=op.column,
            schema=op.schema,
            statement=op.statement,
            protected=protected,
        )

    def matched(self, op: Operation) -> list[Finding]:
        """The findings of every rule that matches ``op`` (what it is, not where it stands in its revision)."""
        found = (self.finding(rule, op) for rule in self.by_kind.get(op.kind, ()) if rule.matches(op))
        return [f for f in found if f is not None]

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
        lock_timeout_set = self.lock_timeout_outside or any(o.kind == "set_lock_timeout" for o in env_ops)
        lock_warned = False
        held: dict[tuple[str | None, str], str] = {}  # table -> what took ACCESS EXCLUSIVE on it, this transaction
        zone = _SessionZone(self.server.utc_zones)
        for env_op in env_ops:
            zone.observe(env_op)
        for op in rev.operations:
            zone.observe(op)
            op = self.server.judged(op, utc_session=zone.utc)
            if op.kind == "set_lock_timeout":
                lock_timeout_set = True
            elif op.kind == "transaction" and _ends_transaction(op):
                held.clear()
            elif op.kind in ("update", "delete") and op.table and (op.schema, op.table) in held:
                found.append(self._backfill_under_lock(rev, op, held[(op.schema, op.table)]))
            if fresh.observe(op):
                continue  # created earlier in this revision: nothing to lose, nothing locked
            found.extend(self.matched(op))
            if op.table and _takes_access_exclusive(op):
                what = f"{_LOCK_TAKERS.get(op.kind, op.kind.replace('_', ' ').upper())} on line {op.line or '?'}"
                for name in (op.table, op.details.get("new_name")):  # a renamed table stays locked
                    if name:
                        held.setdefault((op.schema, name), what)
            if not lock_timeout_set and not lock_warned and _blocks_table(op):
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

    def _backfill_under_lock(self, rev: RevisionOps, op: Operation, locked_by: str) -> Finding | None:
        marker = Operation(
            "backfill_under_lock",
            op.table,
            schema=op.schema,
            statement=op.statement,
            revision=rev.revision,
            file=rev.file,
            line=op.line,
            details={"command": op.kind.upper(), "locked_by": locked_by},
        )
        return self.synthetic("backfill-under-schema-lock", marker)

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
                if not ack.used and (self.tracing or not _traced_only(self.rules.get(ack.rule))):
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


class _SessionZone:
    """Whether the session's time zone is UTC at each operation: SET [LOCAL] TIME ZONE / timezone."""

    def __init__(self, utc_zones: frozenset[str]) -> None:
        self.zones = utc_zones
        self.session = False
        self.local: bool | None = None  # SET LOCAL: until the transaction ends

    @property
    def utc(self) -> bool:
        return self.local if self.local is not None else self.session

    def observe(self, op: Operation) -> None:
        d = op.details
        if op.kind == "set" and str(d.get("name") or "").lower() in ("timezone", "time zone"):
            utc = str(d.get("value") or "").strip().lower() in self.zones
            if d.get("scope") == "local":
                self.local = utc
            else:
                self.session, self.local = utc, None
        elif op.kind == "transaction" and _ends_transaction(op):
            self.local = None


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
        if op.kind == "column_type":
            return False  # a declaration, judged whether its table is new or not
        name = op.details.get("name")
        table = (op.schema, op.table) if op.table else None
        new = (
            (table is not None and table in self.tables)
            or (op.kind == "drop_column" and (op.schema, op.table, op.column) in self.columns)
            or (op.kind in ("drop_index", "drop_constraint") and name is not None and name in self.names)
            or (op.kind == "drop_schema" and op.schema in self.schemas)
            or (op.kind == "update" and _only_new_columns(op, self.columns))
            or (op.kind in ("drop_other", "alter_other") and _object_key(op) in self.objects and not _adds_value(op))
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


def _traced_only(rule: Rule | None) -> bool:
    """A rule only ``trace`` can match (its kinds are measured on a server, not read offline)."""
    if rule is None:
        return False
    kinds = rule.match.get("kind")
    return all(str(k).startswith("trace_") for k in ([kinds] if isinstance(kinds, str) else kinds or ()))


def _adds_value(op: Operation) -> bool:
    """ALTER TYPE ... ADD VALUE: its value is unusable until commit even when the enum is new in the
    same transaction (PostgreSQL 15, measured: "unsafe use of new value")."""
    return op.details.get("action") == "add_value"


def _object_key(op: Operation) -> tuple[Any, ...]:
    """What names a view, function, type... (a trigger also by its table): CREATE and DROP alike."""
    d = op.details
    return (d.get("object_type"), op.schema, op.table, d.get("name"))


def _only_new_columns(op: Operation, added: set[tuple[str | None, str, str]]) -> bool:
    """An UPDATE that only fills columns added earlier in the revision (a backfill) loses nothing."""
    columns = op.details.get("set_columns") or ()
    return bool(columns) and all((op.schema, op.table, c) in added for c in columns)


def _env_sets_lock_timeout(script_dir: str | None) -> bool:
    if not script_dir:
        return False
    try:
        with open(os.path.join(script_dir, "env.py"), encoding="utf-8") as fh:
            return sets_lock_timeout(fh.read())
    except (OSError, UnicodeDecodeError):
        return False  # no env.py of its own to read: nothing is known to set one


def _ends_transaction(op: Operation) -> bool:
    """COMMIT or ROLLBACK of the whole transaction (Alembic's around autocommit_block(), or the revision's)."""
    return op.details.get("action") in ("commit", "rollback", "end", "abort") and not op.details.get("savepoint")


# DDL that always takes ACCESS EXCLUSIVE on an existing PostgreSQL table: no reads, no writes while held
_LOCK_TAKERS = {
    "drop_table": "DROP TABLE",
    "rename_table": "RENAME",
    "add_column": "ADD COLUMN",
    "drop_column": "DROP COLUMN",
    "rename_column": "RENAME COLUMN",
    "alter_column_type": "ALTER COLUMN TYPE",
    "set_not_null": "SET NOT NULL",
    "drop_not_null": "DROP NOT NULL",
    "alter_column": "ALTER COLUMN",
    "drop_constraint": "DROP CONSTRAINT",
    "truncate": "TRUNCATE",
    "cluster": "CLUSTER",
}


def _takes_access_exclusive(op: Operation) -> bool:
    d = op.details
    if op.kind in _LOCK_TAKERS:
        return True
    if op.kind == "add_constraint":  # a foreign key takes SHARE ROW EXCLUSIVE: reads go on
        return d.get("constraint_type") != "foreign_key"
    if op.kind in ("drop_index", "detach_partition"):
        return not d.get("concurrently")
    if op.kind == "lock_table":
        return d.get("mode") == "ACCESS EXCLUSIVE"
    if op.kind == "vacuum":
        return d.get("full") is True
    return op.kind == "alter_other" and d.get("object_type") is None  # another ALTER TABLE action


def _blocks_table(op: Operation) -> bool:
    """A statement that, on an existing table, takes a lock blocking its readers or writers (and so
    queues every later query behind it while it waits): ACCESS EXCLUSIVE, or SHARE and stronger."""
    d = op.details
    if _takes_access_exclusive(op):
        return True
    if op.kind in ("create_index", "reindex"):  # SHARE on the table: writes wait
        return not d.get("concurrently")
    if op.kind == "add_constraint":
        return True
    if op.kind == "lock_table":
        return d.get("blocks_writes") is True
    if op.kind in ("create_other", "drop_other"):  # a trigger, rule or policy locks its table
        return op.table is not None and d.get("object_type") in ("trigger", "rule", "policy")
    # SHARE ROW EXCLUSIVE on the referenced table, held to the end of the transaction
    return op.kind == "reference_table"


def exit_code_for(findings: Iterable[Finding], fail_on: str) -> int:
    """0 when no unacknowledged finding reaches ``fail_on``, else 3."""
    if fail_on == "never":
        return 0
    threshold = SEVERITY_RANK[fail_on]
    return 3 if any(not f.allowed and SEVERITY_RANK[f.severity] >= threshold for f in findings) else 0
