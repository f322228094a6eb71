"""rename customers.phone to phone_number

expect: rename-column:customers.phone

Revision ID: a216b78789f2
Revises: e340f813043a
Create Date: 2024-06-08 12:44:12.481516

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = 'a216b78789f2'
down_revision: Union[str, Sequence[str], None] = 'e340f813043a'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.execute("ALTER TABLE customers RENAME COLUMN phone TO phone_number")


def downgrade() -> None:
    op.execute("ALTER TABLE customers RENAME COLUMN phone_number TO phone")
