"""create service_packages and customer_services

Revision ID: 0002
Revises: 0001
Create Date: 2024-03-11 09:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: Union[str, Sequence[str], None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "service_packages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("category_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("price", sa.Numeric(precision=10, scale=2), nullable=False),
        sa.Column("duration_months", sa.Integer(), nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.CheckConstraint("price >= 0", name=op.f("ck_service_packages_price_non_negative")),
        sa.ForeignKeyConstraint(
            ["category_id"],
            ["service_categories.id"],
            name=op.f("fk_service_packages_category_id_service_categories"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_packages")),
    )
    op.create_table(
        "customer_services",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("package_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("activated_at", sa.DateTime(), nullable=True),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("price", sa.Numeric(precision=10, scale=2), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'active', 'expired', 'cancelled')",
            name=op.f("ck_customer_services_status"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_customer_services_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["package_id"],
            ["service_packages.id"],
            name=op.f("fk_customer_services_package_id_service_packages"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer_services")),
    )
    # The table was created just above, so this index locks nothing that holds data.
    op.create_index(op.f("ix_customer_services_customer_id"), "customer_services", ["customer_id"])


def downgrade() -> None:
    """Downgrade schema."""
    # Dropping the table drops its index. An explicit drop_index would fail on MariaDB, where
    # InnoDB adopts ix_customer_services_customer_id as the index backing the customer_id foreign key.
    op.drop_table("customer_services")
    op.drop_table("service_packages")
