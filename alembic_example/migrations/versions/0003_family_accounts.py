"""create family_accounts and family_members

Revision ID: 0003
Revises: 0002
Create Date: 2024-04-02 09:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: Union[str, Sequence[str], None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "family_accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_customer_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("max_members", sa.Integer(), server_default=sa.text("5"), nullable=False),
        sa.Column("current_members", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint(
            "current_members <= max_members", name=op.f("ck_family_accounts_members_within_limit")
        ),
        sa.ForeignKeyConstraint(
            ["owner_customer_id"],
            ["customers.id"],
            name=op.f("fk_family_accounts_owner_customer_id_customers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_family_accounts")),
    )
    op.create_table(
        "family_members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("family_account_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=20), server_default="member", nullable=False),
        sa.Column("joined_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_family_members_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["family_account_id"],
            ["family_accounts.id"],
            name=op.f("fk_family_members_family_account_id_family_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_family_members")),
        sa.UniqueConstraint(
            "family_account_id", "customer_id", name=op.f("uq_family_members_family_account_id_customer_id")
        ),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("family_members")
    op.drop_table("family_accounts")
