"""drop the legacy_flag columns

expect: drop-column:orders.legacy_flag, drop-column:products.legacy_flag

Revision ID: 0a6d23e530f3
Revises: b8235ce42b27
Create Date: 2024-06-20 16:23:12.481516

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0a6d23e530f3'
down_revision: Union[str, Sequence[str], None] = 'b8235ce42b27'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def _drop_legacy_flag(table: str) -> None:
    # both tables got the flag in the initial schema; nothing reads it since v2.4
    op.drop_column(table, "legacy_flag")


def upgrade() -> None:
    for table in ("orders", "products"):
        _drop_legacy_flag(table)


def downgrade() -> None:
    pass
