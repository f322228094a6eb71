"""migrate-guard: make Alembic migrations safe to run against data people cannot afford to lose."""

__version__ = "0.1.0"
