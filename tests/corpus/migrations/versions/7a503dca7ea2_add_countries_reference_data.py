"""add countries reference table

expect: safe

Revision ID: 7a503dca7ea2
Revises: 0fe4adb37143
Create Date: 2024-01-12 10:43:12.481516

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '7a503dca7ea2'
down_revision: Union[str, Sequence[str], None] = '0fe4adb37143'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    countries = op.create_table(
        "countries",
        sa.Column("code", sa.String(length=2), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("eu_member", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_countries")),
    )
    op.bulk_insert(
        countries,
        [
            {"code": "DE", "name": "Germany", "eu_member": True},
            {"code": "FR", "name": "France", "eu_member": True},
            {"code": "GB", "name": "United Kingdom", "eu_member": False},
            {"code": "US", "name": "United States", "eu_member": False},
        ],
    )


def downgrade() -> None:
    op.drop_table("countries")
