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
        "add_column",  # details: nullable, server_default, type, rewrites_table (None: dialect unknown),
        # position = end|first|after (MySQL's FIRST / AFTER c), type_family (as column_type's)
        "drop_column",
        "rename_column",
        "alter_column_type",  # details: type_change = widening|rewrite|narrowing|changed, old_type, new_type,
        # charset_change (MySQL: CHARACTER SET given and different)
        "column_type",  # a column of a new table (create_table): type_family (alembic_ops.type_family), new_table,
        # primary_key (the only primary key column, and not a foreign key)
        "set_not_null",
        "drop_not_null",
        "alter_column",  # any other column change (default, comment, ...)
        "create_index",  # details: concurrently, unique; transaction (see below) when concurrently
        "drop_index",  # details: concurrently; transaction when concurrently
        "add_constraint",  # details: constraint_type = unique|foreign_key|check|primary_key, not_valid
        "validate_constraint",
        "drop_constraint",
        "reference_table",  # a new table's foreign key locks the table it references; details: referenced_by
        "create_schema",
        "drop_schema",
        "truncate",
        "delete",  # details: has_where (false also for a WHERE that is always true: WHERE 1=1)
        "update",  # details: has_where (as for delete)
        "insert",
        "select",
        "set_lock_timeout",  # SET [LOCAL] lock_timeout / lock_wait_timeout
        "set",  # any other SET
        "transaction",  # BEGIN / COMMIT / ROLLBACK; details: action, savepoint (ROLLBACK TO / RELEASE)
        # PostgreSQL maintenance and explicit locks
        "reindex",  # details: target = index|table|schema|database|system, name, concurrently
        "vacuum",  # details: full, rewrites, command, target
        "cluster",  # details: rewrites (always true), command, index, target
        "lock_table",  # LOCK TABLE / MySQL LOCK TABLES; details: mode (upper case), blocks_writes
        "detach_partition",  # ALTER TABLE ... DETACH PARTITION; details: partition, concurrently, finalize
        # details["transaction"] on statements that cannot run in a transaction block (CONCURRENTLY,
        # ALTER TYPE ... ADD VALUE): "inside", "outside" or "unknown" (sqltext.mark_transaction_blocks)
        "create_other",  # CREATE VIEW/FUNCTION/TRIGGER/EXTENSION/TYPE/SEQUENCE...; if_not_exists, or_replace;
        # DOMAIN: with_check
        "drop_other",  # DROP VIEW/FUNCTION/TRIGGER/EXTENSION/TYPE/SEQUENCE...
        "alter_other",  # ALTER TYPE ... ADD VALUE: action = add_value, value; DOMAIN: with_check;
        # ALTER TABLE actions not listed above: action (the text), rebuilds_table (CONVERT TO, ALGORITHM=COPY)
        # details["rebuilds_table"] (MySQL/MariaDB): the change copies the table (server.Server.judged)
        "other",  # parsed, understood, and harmless (GRANT, COMMENT ON, ...)
        "unparsed",  # SQL we could not classify
        # synthesised by the engine, never by a parser
        "not_analyzable",
        "multiple_heads",
        "lock_timeout_missing",
        "backfill_under_lock",  # an UPDATE/DELETE while the revision's DDL holds ACCESS EXCLUSIVE on its table
        "invalid_acknowledgement",
        # measured by `trace` on a scratch copy of the server (migrate_guard/trace/)
        "trace_rewrite",  # a statement rewrote an existing table (new relfilenode; MariaDB: ALGORITHM=COPY)
        "trace_access_exclusive_scan",  # ACCESS EXCLUSIVE held while the statement read the whole table
        "trace_fails_in_transaction",  # the server refused the statement inside a transaction block
        "trace_copy",  # MariaDB/MySQL: only ALGORITHM=COPY was accepted
        "trace_failed",  # any other failure of a revision's statement on the server
    }
)


@dataclass
class Operation:
    kind: str
    table: str | None = None  # bare name, as written, lower case
    column: str | None = None
    schema: str | None = None
    statement: str | None = None  # the SQL (or Python) that does it, for the report
    details: dict[str, Any] = field(default_factory=dict)  # "note": why, appended to the finding's message
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
