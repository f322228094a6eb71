"""add loyalty points

expect: safe

Revision ID: 966e3397f9df
Revises: 0c3180bf8276
Create Date: 2024-05-07 12:00:12.481516

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '966e3397f9df'
down_revision: Union[str, Sequence[str], None] = '0c3180bf8276'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.add_column(
        "customers",
        sa.Column("loyalty_points", sa.Integer(), server_default="0", nullable=False),
    )


def downgrade() -> None:
    op.drop_column("customers", "loyalty_points")
