"""store order timestamps with time zone

expect: alter-column-type:orders.created_at@postgresql

Revision ID: c1018ec74a2c
Revises: 6d720d26da4d
Create Date: 2024-05-23 15:52:12.481516

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = 'c1018ec74a2c'
down_revision: Union[str, Sequence[str], None] = '6d720d26da4d'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.alter_column(
        "orders",
        "created_at",
        existing_type=sa.DateTime(),
        type_=sa.DateTime(timezone=True),
        existing_nullable=False,
        existing_server_default=sa.text("CURRENT_TIMESTAMP"),
    )


def downgrade() -> None:
    pass
