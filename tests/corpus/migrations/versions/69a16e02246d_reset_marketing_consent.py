"""reset marketing consent for the new privacy policy

expect: update-without-where:customers

Revision ID: 69a16e02246d
Revises: 94c60910ae74
Create Date: 2024-03-04 09:32:12.481516

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '69a16e02246d'
down_revision: Union[str, Sequence[str], None] = '94c60910ae74'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    customers = sa.table("customers", sa.column("marketing_opt_in", sa.Boolean))
    # legal: everybody has to opt in again under the 2024 policy
    op.execute(customers.update().values(marketing_opt_in=False))


def downgrade() -> None:
    pass
