"""normalise legacy order statuses row by row

expect: safe

Revision ID: 228767b52747
Revises: f1beff78b2ec
Create Date: 2024-04-09 12:29:12.481516

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '228767b52747'
down_revision: Union[str, Sequence[str], None] = 'f1beff78b2ec'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, legacy_status FROM orders WHERE legacy_status IS NOT NULL")).fetchall()
    mapping = {"OPEN": "new", "DONE": "shipped", "X": "cancelled"}
    for order_id, legacy in rows:
        conn.execute(
            sa.text("UPDATE orders SET status = :status WHERE id = :id"),
            {"status": mapping.get(legacy, "new"), "id": order_id},
        )


def downgrade() -> None:
    pass
