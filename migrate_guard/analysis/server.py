"""What a server of a given version does with an operation: the version-dependent facts rules match on.

The versions each feature arrived in are data (``since`` in rules/data/server-behaviour.toml); a
server without a configured version has them all (current servers: the fast behaviour).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from migrate_guard.config import GuardSettings, dialect_family, parse_version

from .alembic_ops import server_behaviour
from .operations import Operation

_TYPE_REBUILDS = frozenset({"rewrite", "narrowing", "changed"})
_SHOWN = {"postgresql": "PostgreSQL", "mysql": "MySQL", "mariadb": "MariaDB"}


def _instead(rule_id: str, text: str) -> dict[str, Any]:
    """What to do instead on this server, for the finding of ``rule_id`` (engine.Evaluator.finding)."""
    return {"instead_for": {rule_id: text}}


@dataclass(frozen=True)
class Server:
    name: str  # postgresql, mysql, mariadb, sqlite, ... ("" when the dialect is unknown)
    version: tuple[int, ...] | None = None

    @classmethod
    def of(cls, settings: GuardSettings, dialect: str | None) -> Server:
        """The server ``dialect`` is checked against; a MySQL dialect with only ``mariadb_version`` set
        is MariaDB (``mysql+pymysql://`` reaches either)."""
        name = (dialect or "").split("+", 1)[0].lower()
        versions = settings.server_versions
        if name == "mysql" and "mysql" not in versions and "mariadb" in versions:
            name = "mariadb"
        return cls(name, settings.version_of(name))

    @property
    def family(self) -> str:
        return dialect_family(self.name) if self.name else ""

    @property
    def label(self) -> str:
        shown = _SHOWN.get(self.name, self.name)
        return f"{shown} {'.'.join(map(str, self.version))}" if self.version else shown

    def has(self, feature: str) -> bool:
        """Whether this server has ``feature`` (a key of ``since``); True when its version is unknown."""
        since = self.since(feature)
        return self.version is None or since is None or self.version >= parse_version(since)

    def since(self, feature: str) -> str | None:
        for section in (self.name, self.family):
            value = server_behaviour(section).get("since", {}).get(feature)
            if isinstance(value, str):
                return value
        return None

    @property
    def utc_zones(self) -> frozenset[str]:
        zones = server_behaviour(self.family).get("utc_zones", []) if self.family else []
        return frozenset(str(z).lower() for z in zones)

    def judged(self, op: Operation, utc_session: bool = False) -> Operation:
        """``op`` with the details that depend on this server's version (a copy when any changes);
        ``utc_session``: the revision set the session's time zone to UTC before it."""
        changes = self._changes(op)
        if (
            utc_session
            and op.details.get("time_zone_dependent")
            and self.family == "postgresql"
            and self.has("timestamptz_in_place_under_utc")
        ):
            note = "in place: the session time zone is UTC, so no stored value changes"
            changes = {**changes, "type_change": "widening", "note": note}
        if not changes:
            return op
        return dataclasses.replace(op, details={**op.details, **changes})

    def _changes(self, op: Operation) -> dict[str, Any]:
        d = op.details
        if self.family == "postgresql":
            return self._postgresql(op.kind, d)
        if self.family == "mysql":
            return self._mysql(op.kind, d)
        return {}

    def _before(self, feature: str) -> str:
        return f"{self.label}, older than {self.since(feature)},"

    def _postgresql(self, kind: str, d: dict[str, Any]) -> dict[str, Any]:
        fast_default = self.has("fast_column_default")
        if kind == "add_column" and d.get("rewrites_table") is False and d.get("server_default") and not fast_default:
            note = f"{self._before('fast_column_default')} writes any default into every existing row"
            return {"rewrites_table": True, "note": note}
        if kind == "reindex" and d.get("concurrently") is False and not self.has("reindex_concurrently"):
            return _instead(
                "reindex-non-concurrently",
                f"{self._before('reindex_concurrently')} has no REINDEX CONCURRENTLY. Build a replacement "
                "with CREATE INDEX CONCURRENTLY inside op.get_context().autocommit_block(), then drop the old "
                "index and rename the new one; or run the REINDEX at a quiet time, as an operations task "
                "rather than a migration.",
            )
        if (
            kind == "detach_partition"
            and d.get("concurrently") is False
            and not self.has("detach_partition_concurrently")
        ):
            return _instead(
                "detach-partition-non-concurrently",
                f"{self._before('detach_partition_concurrently')} has no DETACH PARTITION CONCURRENTLY. "
                "Run the DETACH in a revision of its own at a quiet time, after SET LOCAL lock_timeout = '2s', "
                "and retry it when it times out.",
            )
        if kind == "alter_other" and d.get("action") == "add_value" and not self.has("enum_add_value_in_transaction"):
            note = f"{self._before('enum_add_value_in_transaction')} cannot run ADD VALUE in a transaction block at all"
            advice = _instead(
                "enum-add-value-in-transaction",
                "Run the ALTER TYPE inside `with op.get_context().autocommit_block():` (`IF NOT EXISTS` makes it "
                "safe to re-run), and use the new value only after the block.",
            )
            return {"note": note, **advice}
        return {}

    def _mysql(self, kind: str, d: dict[str, Any]) -> dict[str, Any]:
        if kind == "add_column" and not d.get("rewrites_table"):  # that one is add-column-rewrites-table's
            if not self.has("instant_add_column"):
                return {
                    "rebuilds_table": True,
                    "note": f"{self._before('instant_add_column')} has no instant ADD COLUMN",
                }
            if d.get("position", "end") != "end" and not self.has("instant_add_column_anywhere"):
                note = f"{self._before('instant_add_column_anywhere')} adds only a last column instantly"
                return {"rebuilds_table": True, "note": note}
        if kind == "alter_column_type" and not d.get("rebuilds_table"):
            if d.get("charset_change"):
                return {"rebuilds_table": True, "note": "a new character set converts every row"}
            if d.get("type_change") in _TYPE_REBUILDS and d.get("old_type") is not None:
                return {"rebuilds_table": True}
        if kind == "drop_constraint" and d.get("constraint_type") in ("primary", "primary_key"):
            return {"rebuilds_table": True, "note": "without a primary key InnoDB rebuilds the clustered index"}
        return {}
