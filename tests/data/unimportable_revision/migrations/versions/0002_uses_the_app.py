"""drop accounts.legacy, using the application's models"""

from typing import Union

from alembic import op
from myapp.models import Base  # noqa: F401 - the application: not installed where the check runs

revision: str = "0002"
down_revision: Union[str, None] = "0001"  # noqa: UP007 - as Alembic's template writes it
branch_labels = None
depends_on = None


def upgrade():
    op.drop_column("accounts", "legacy")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_accounts_legacy_trgm")


def downgrade():
    pass
