"""create carts

expect: safe

Revision ID: 6c8b0f115e1c
Revises: 228767b52747
Create Date: 2024-04-13 12:42:12.481516

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '6c8b0f115e1c'
down_revision: Union[str, Sequence[str], None] = '228767b52747'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "carts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_carts")),
    )


def downgrade() -> None:
    pass
