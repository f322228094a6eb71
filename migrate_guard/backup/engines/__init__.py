"""One engine per dialect, each on that database's own trusted dump tools."""
from __future__ import annotations

from .base import Engine, engine_for

__all__ = ["Engine", "engine_for"]
