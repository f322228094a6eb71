"""drop orders.legacy_status after normalisation

expect: drop-column:orders.legacy_status

Revision ID: 0926c3360deb
Revises: c65571fc37ce
Create Date: 2024-05-31 11:18:12.481516

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0926c3360deb'
down_revision: Union[str, Sequence[str], None] = 'c65571fc37ce'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    conn = op.get_bind()
    conn.execute(sa.text("ALTER TABLE orders DROP COLUMN legacy_status"))


def downgrade() -> None:
    pass
