"""drop customers.legacy_code

Revision ID: 0005
Revises: 0004
Create Date: 2024-06-10 09:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: Union[str, Sequence[str], None] = "0004"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# customers as 0004 left it. On SQLite, batch mode drops a column by rebuilding the table, which
# normally reflects the old table first; offline (--sql) there is nothing to reflect, and Alembic
# refuses. With copy_from the rebuild uses this description instead, online and offline alike, so
# it must be complete: an index left out here would not be recreated. Other databases ignore it
# and get a plain ALTER TABLE ... DROP COLUMN.
customers_0004 = sa.Table(
    "customers",
    sa.MetaData(),
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("customer_code", sa.String(length=16), nullable=False),
    sa.Column("name", sa.String(length=200), nullable=False),
    sa.Column("email", sa.String(length=255), nullable=True),
    sa.Column("phone", sa.String(length=32), nullable=True),
    sa.Column("status", sa.String(length=20), server_default="active", nullable=False),
    sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
    sa.Column("legacy_code", sa.String(length=20), nullable=True),
    sa.Column("notes", sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint("id", name="pk_customers"),
    sa.UniqueConstraint("customer_code", name="uq_customers_customer_code"),
    sa.Index("ix_customers_email", "email"),
)


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("customers", copy_from=customers_0004) as batch_op:
        # migrate-guard: allow drop-column customers.legacy_code -- superseded by customer_code since 0001, no reader left; reviewed by @dpham
        batch_op.drop_column("legacy_code")


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("customers") as batch_op:
        batch_op.add_column(sa.Column("legacy_code", sa.String(length=20), nullable=True))
