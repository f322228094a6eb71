"""re-add the payments foreign key without a long lock

expect: safe

Revision ID: 1d1110953177
Revises: 978bd2803359
Create Date: 2024-03-24 14:37:12.481516

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '1d1110953177'
down_revision: Union[str, Sequence[str], None] = '978bd2803359'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("SET LOCAL lock_timeout = '3s'")
    op.create_foreign_key(
        "fk_payments_order_id_orders_v2",
        "payments",
        "orders",
        ["order_id"],
        ["id"],
        postgresql_not_valid=True,
    )
    if op.get_context().dialect.name == "postgresql":
        op.execute("ALTER TABLE payments VALIDATE CONSTRAINT fk_payments_order_id_orders_v2")


def downgrade() -> None:
    op.drop_constraint("fk_payments_order_id_orders_v2", "payments", type_="foreignkey")
