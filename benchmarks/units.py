"""What the benchmark scripts share: sizes in decimal units, as pg_dump's and du's figures are read;
the env.py of their throw-away Alembic projects."""

from __future__ import annotations


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


# The env.py of a benchmark's throw-away Alembic project: offline (--sql), on a connection handed in through
# config.attributes (as migrate-safe and trace do), or on its own engine.
ENV_PY = """
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is None:
        engine = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
                                    poolclass=pool.NullPool)
        connection = engine.connect()
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
"""
