"""remove the 'failed' payment status

expect: alter-column-type:payments.status

Revision ID: 7a13709c0163
Revises: 1d1110953177
Create Date: 2024-03-28 15:50:12.481516

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '7a13709c0163'
down_revision: Union[str, Sequence[str], None] = '1d1110953177'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # failed attempts are kept in payment_attempts now; existing 'failed' rows make this fail
    op.alter_column(
        "payments",
        "status",
        existing_type=sa.Enum("pending", "paid", "failed", "refunded", name="payment_status"),
        type_=sa.Enum("pending", "paid", "refunded", name="payment_status"),
        existing_nullable=False,
        existing_server_default="pending",
    )


def downgrade() -> None:
    pass
