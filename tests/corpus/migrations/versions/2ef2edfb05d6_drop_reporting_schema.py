"""drop the reporting schema

expect: drop-schema

Revision ID: 2ef2edfb05d6
Revises: 7a13709c0163
Create Date: 2024-04-01 10:03:12.481516

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '2ef2edfb05d6'
down_revision: Union[str, Sequence[str], None] = '7a13709c0163'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # the BI team moved to the warehouse; nothing reads these views any more
    op.execute("DROP SCHEMA IF EXISTS reporting CASCADE")


def downgrade() -> None:
    pass
