"""Normalised operations: what a revision does, whichever way it was written.

Every source of evidence -- captured ``op.*`` calls, raw SQL split by sqlparse,
the static AST fallback -- produces these plain data objects; rules match on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The vocabulary of ``Operation.kind``. Rules match on these names (rules/*.toml).
KINDS = frozenset(
    {
        "create_table",
        "drop_table",
        "rename_table",
        "add_column",
        "drop_column",
        "rename_column",
        "alter_column_type",  # details: type_change = widening|narrowing|changed, old_type, new_type
        "set_not_null",
        "drop_not_null",
        "alter_column",  # any other column change (default, comment, ...)
        "create_index",  # details: concurrently, unique
        "drop_index",  # details: concurrently
        "add_constraint",  # details: constraint_type = unique|foreign_key|check|primary_key, not_valid
        "validate_constraint",
        "drop_constraint",
        "create_schema",
        "drop_schema",
        "truncate",
        "delete",  # details: has_where
        "update",  # details: has_where
        "insert",
        "select",
        "set_lock_timeout",  # SET [LOCAL] lock_timeout / lock_wait_timeout
        "set",  # any other SET
        "transaction",  # BEGIN / COMMIT / ROLLBACK
        "create_other",  # CREATE VIEW/FUNCTION/TRIGGER/EXTENSION/TYPE/SEQUENCE...
        "drop_other",  # DROP VIEW/FUNCTION/TRIGGER/EXTENSION/TYPE/SEQUENCE...
        "alter_other",
        "other",  # parsed, understood, and harmless (GRANT, COMMENT ON, ...)
        "unparsed",  # SQL we could not classify
        # synthesised by the engine, never by a parser
        "not_analyzable",
        "multiple_heads",
        "lock_timeout_missing",
        "invalid_acknowledgement",
    }
)


@dataclass
class Operation:
    kind: str
    table: str | None = None  # bare name, as written, lower case
    column: str | None = None
    schema: str | None = None
    statement: str | None = None  # the SQL (or Python) that does it, for the report
    details: dict[str, Any] = field(default_factory=dict)
    # where it came from; filled in by the capture layer
    revision: str | None = None
    file: str | None = None
    line: int | None = None
    source: str = "op"  # op | sql | ast | engine

    @property
    def qualified_table(self) -> str | None:
        if self.table is None:
            return None
        return f"{self.schema}.{self.table}" if self.schema else self.table
