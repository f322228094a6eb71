import sys
from logging.config import fileConfig
from pathlib import Path

from alembic import context
from sqlalchemy import Connection, engine_from_config, pool

# prepend_sys_path = . only helps when alembic runs from alembic_example/; make models importable anyway.
PROJECT_DIR = str(Path(__file__).resolve().parents[1])
if PROJECT_DIR not in sys.path:
    sys.path.insert(0, PROJECT_DIR)

import models  # noqa: E402

config = context.config
shared_connection = config.attributes.get("connection")

# A caller that shares its connection (Alembic cookbook) owns logging too.
if config.config_file_name is not None and shared_connection is None:
    fileConfig(config.config_file_name)

target_metadata = models.Base.metadata


def run_migrations_offline() -> None:
    """Emit the migrations as SQL to stdout, for ``--sql``."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place: autogenerate batch operations there.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run against a live database: the caller's connection if it passed one, else our own engine."""
    if shared_connection is not None:
        # Borrowed: the caller opened it and closes it. If the caller already began a transaction,
        # context.begin_transaction() joins it and leaves commit or rollback to the caller.
        do_run_migrations(shared_connection)
        return

    engine = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with engine.connect() as connection:
        do_run_migrations(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
