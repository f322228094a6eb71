"""add customers.notes, import_staging and an index on customers.email

Revision ID: 0004
Revises: 0003
Create Date: 2024-05-06 09:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: Union[str, Sequence[str], None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column("customers", sa.Column("notes", sa.Text(), nullable=True))
    op.create_index(op.f("ix_customers_email"), "customers", ["email"])
    op.create_table(
        "import_staging",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("imported_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_staging")),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("import_staging")
    op.drop_index(op.f("ix_customers_email"), table_name="customers")
    # SQLite >= 3.35 drops an unindexed column in place, so no batch rebuild is needed here.
    op.drop_column("customers", "notes")
