"""add an order totals view

expect: safe

Revision ID: d9752d2e8267
Revises: 8e0efdc51f7e
Create Date: 2024-04-25 16:21:12.481516

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = 'd9752d2e8267'
down_revision: Union[str, Sequence[str], None] = '8e0efdc51f7e'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.execute(
        """
        CREATE VIEW order_totals AS
        SELECT o.id AS order_id, count(l.id) AS line_count
        FROM orders o LEFT JOIN order_lines l ON l.order_id = o.id
        GROUP BY o.id
        """
    )


def downgrade() -> None:
    op.execute("DROP VIEW order_totals")
