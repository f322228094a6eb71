"""purge old audit entries and sessions

expect: truncate-table:audit_log, delete-without-where:sessions

Revision ID: aba2c5d5ecae
Revises: 5ab0bb8733c8
Create Date: 2024-02-09 11:14:12.481516

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = 'aba2c5d5ecae'
down_revision: Union[str, Sequence[str], None] = '5ab0bb8733c8'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # audit_log is replicated to the warehouse nightly; start fresh
    op.execute(
        """
        INSERT INTO audit_log (actor, action) VALUES ('migration', 'purge');
        TRUNCATE TABLE audit_log;
        DELETE FROM sessions;
        """
    )


def downgrade() -> None:
    pass
