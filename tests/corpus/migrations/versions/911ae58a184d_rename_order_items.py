"""rename order_items to order_lines

expect: rename-table:order_items

Revision ID: 911ae58a184d
Revises: ac0bfbf6fedc
Create Date: 2024-02-21 13:53:12.481516

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '911ae58a184d'
down_revision: Union[str, Sequence[str], None] = 'ac0bfbf6fedc'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.rename_table("order_items", "order_lines")


def downgrade() -> None:
    op.rename_table("order_lines", "order_items")
