"""drop the orders -> customers foreign key

expect: drop-constraint:orders

Revision ID: 978bd2803359
Revises: 4d438c3bc30c
Create Date: 2024-03-20 14:24:12.481516

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '978bd2803359'
down_revision: Union[str, Sequence[str], None] = '4d438c3bc30c'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # customers are being moved to the accounts service
    op.drop_constraint(op.f("fk_orders_customer_id_customers"), "orders", type_="foreignkey")


def downgrade() -> None:
    op.create_foreign_key(op.f("fk_orders_customer_id_customers"), "orders", "customers", ["customer_id"], ["id"])
