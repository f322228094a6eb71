"""expand: add customers.display_name and backfill it

expect: safe

Revision ID: b8235ce42b27
Revises: 2d0c7769eb30
Create Date: 2024-06-16 15:10:12.481516

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = 'b8235ce42b27'
down_revision: Union[str, Sequence[str], None] = '2d0c7769eb30'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.add_column("customers", sa.Column("display_name", sa.String(length=100), nullable=True))
    # backfill the new column only; the app writes both columns from v3.2 on
    op.execute("UPDATE customers SET display_name = name")


def downgrade() -> None:
    op.drop_column("customers", "display_name")
