"""move audit_log into the archive schema

expect: drop-table:audit_log

Revision ID: 8ec24908d2dd
Revises: d9752d2e8267
Create Date: 2024-04-29 09:34:12.481516

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '8ec24908d2dd'
down_revision: Union[str, Sequence[str], None] = 'd9752d2e8267'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS archive")
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=True),
        sa.Column("action", sa.String(length=50), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
        schema="archive",
    )
    op.execute("INSERT INTO archive.audit_log (id, actor, action, at) SELECT id, actor, action, at FROM audit_log")
    op.drop_table("audit_log")


def downgrade() -> None:
    pass
