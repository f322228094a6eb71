"""store country codes as two letters

expect: alter-column-type:customers.country_code, set-not-null:customers.country_code

Revision ID: 0c3180bf8276
Revises: 8ec24908d2dd
Create Date: 2024-05-03 10:47:12.481516

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0c3180bf8276'
down_revision: Union[str, Sequence[str], None] = '8ec24908d2dd'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    bind = op.get_bind()
    op.execute("UPDATE customers SET country_code = 'DE' WHERE country_code IS NULL")
    if bind.dialect.name == "mysql":
        op.execute("ALTER TABLE customers MODIFY COLUMN country_code CHAR(2) NOT NULL")
    else:
        op.alter_column(
            "customers",
            "country_code",
            existing_type=sa.String(length=3),
            type_=sa.String(length=2),
            nullable=False,
        )


def downgrade() -> None:
    pass
