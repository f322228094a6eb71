"""drop audit_log"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    op.drop_table("audit_log", schema="ops")


def downgrade():
    pass
