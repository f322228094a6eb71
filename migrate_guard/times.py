"""Time as the repository and the journal record it: timezone-aware UTC, ISO 8601 with a ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_iso(text: Any) -> datetime | None:
    """An ISO 8601 time (UTC unless it says otherwise), or None when ``text`` is not one."""
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
