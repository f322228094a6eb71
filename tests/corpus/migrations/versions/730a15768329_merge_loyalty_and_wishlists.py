"""merge loyalty and wishlists

expect: safe

Revision ID: 730a15768329
Revises: 966e3397f9df, ab8c8efb4ef9
Create Date: 2024-05-15 14:26:12.481516

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '730a15768329'
down_revision: Union[str, Sequence[str], None] = ('966e3397f9df', 'ab8c8efb4ef9')
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
