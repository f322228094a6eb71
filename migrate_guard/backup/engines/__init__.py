"""One engine per dialect, each on that database's own trusted dump tools (``base`` says what an engine
does; ``sqlite``, ``postgresql`` and ``mysql`` do it), chosen here by the URL's dialect."""

from __future__ import annotations

from sqlalchemy.engine import make_url

from ...errors import ConfigError
from .base import Engine

__all__ = ["Engine", "engine_for"]


def engine_for(url: str) -> Engine:
    """The engine for a SQLAlchemy URL's dialect."""
    try:
        backend = make_url(url).get_backend_name()
    except Exception as exc:  # noqa: BLE001 - whatever make_url raises, the URL is bad
        raise ConfigError(f"bad database URL: {exc}") from None
    if backend == "sqlite":
        from .sqlite import SQLiteEngine

        return SQLiteEngine(url)
    if backend == "postgresql":
        from .postgresql import PostgreSQLEngine

        return PostgreSQLEngine(url)
    if backend in ("mysql", "mariadb"):
        from .mysql import MySQLEngine

        return MySQLEngine(url)
    raise ConfigError(f"no backup engine for {backend!r} databases (supported: sqlite, postgresql, mysql/mariadb)")
