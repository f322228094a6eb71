"""backfill customers.country_code

expect: safe

Revision ID: 823c0c2cfc2e
Revises: 6eab5a48f2f2
Create Date: 2024-02-01 15:48:12.481516

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '823c0c2cfc2e'
down_revision: Union[str, Sequence[str], None] = '6eab5a48f2f2'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    customers = sa.table(
        "customers",
        sa.column("id", sa.Integer),
        sa.column("country_code", sa.String),
        sa.column("phone", sa.String),
    )
    op.execute(
        customers.update()
        .where(customers.c.country_code.is_(None))
        .where(customers.c.phone.like("+49%"))
        .values(country_code="DE")
    )
    op.execute("UPDATE customers SET country_code = 'FR' WHERE country_code IS NULL AND phone LIKE '+33%'")


def downgrade() -> None:
    pass
