"""require customers.email

expect: set-not-null:customers.email

Revision ID: 4d438c3bc30c
Revises: 23af873900e5
Create Date: 2024-03-16 13:11:12.481516

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '4d438c3bc30c'
down_revision: Union[str, Sequence[str], None] = '23af873900e5'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.execute("UPDATE customers SET email = concat('unknown+', id, '@example.invalid') WHERE email IS NULL")
    op.alter_column("customers", "email", existing_type=sa.String(length=255), nullable=False)


def downgrade() -> None:
    op.alter_column("customers", "email", existing_type=sa.String(length=255), nullable=True)
