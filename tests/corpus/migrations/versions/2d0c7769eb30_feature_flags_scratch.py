"""feature flags table, built in one go

expect: safe

Revision ID: 2d0c7769eb30
Revises: a216b78789f2
Create Date: 2024-06-12 13:57:12.481516

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '2d0c7769eb30'
down_revision: Union[str, Sequence[str], None] = 'a216b78789f2'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "feature_flags",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("draft_value", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feature_flags")),
    )
    op.add_column("feature_flags", sa.Column("enabled", sa.Boolean(), nullable=False))
    op.create_index(op.f("ix_feature_flags_name"), "feature_flags", ["name"], unique=True)
    op.drop_column("feature_flags", "draft_value")
    op.bulk_insert(
        sa.table("feature_flags", sa.column("id", sa.Integer), sa.column("name", sa.String), sa.column("enabled", sa.Boolean)),
        [{"id": 1, "name": "new_checkout", "enabled": False}],
    )


def downgrade() -> None:
    op.drop_table("feature_flags")
