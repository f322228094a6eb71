"""add table and column comments

expect: safe

Revision ID: 94c60910ae74
Revises: 99f15a07d5e4
Create Date: 2024-02-29 16:19:12.481516

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '94c60910ae74'
down_revision: Union[str, Sequence[str], None] = '99f15a07d5e4'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table_comment("orders", "One row per checkout", existing_comment=None)
    op.alter_column(
        "orders",
        "status",
        existing_type=sa.String(length=20),
        existing_nullable=False,
        existing_server_default="new",
        comment="new, paid, shipped or cancelled",
    )
    op.alter_column("customers", "email", existing_type=sa.String(length=255), comment="login and contact address")


def downgrade() -> None:
    pass
