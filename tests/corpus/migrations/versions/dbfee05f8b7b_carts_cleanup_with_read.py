"""clean up carts after checking for orphans

expect: delete-without-where:carts

Revision ID: dbfee05f8b7b
Revises: 6c8b0f115e1c
Create Date: 2024-04-17 13:55:12.481516

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = 'dbfee05f8b7b'
down_revision: Union[str, Sequence[str], None] = '6c8b0f115e1c'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    bind = op.get_bind()
    orphans = bind.execute(
        sa.text("SELECT count(*) FROM carts WHERE customer_id NOT IN (SELECT id FROM customers)")
    ).scalar()
    if orphans:
        # too many to fix one by one: start over, carts are rebuilt from the session store
        bind.execute(sa.text("DELETE FROM carts"))


def downgrade() -> None:
    pass
