"""add help articles with seed content

expect: safe

Revision ID: f1beff78b2ec
Revises: 2ef2edfb05d6
Create Date: 2024-04-05 11:16:12.481516

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = 'f1beff78b2ec'
down_revision: Union[str, Sequence[str], None] = '2ef2edfb05d6'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "help_articles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=80), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_help_articles")),
        sa.UniqueConstraint("slug", name=op.f("uq_help_articles_slug")),
    )
    op.execute(
        "INSERT INTO help_articles (id, slug, body) VALUES "
        "(1, 'reset-data', 'Support staff: never run DROP TABLE customers; use the admin tool. "
        "TRUNCATE and DELETE FROM orders are disabled for your role.')"
    )
    op.execute(
        sa.text("INSERT INTO help_articles (id, slug, body) VALUES (2, 'sql', :body)").bindparams(
            body="Example: UPDATE orders SET status = 'void' -- always add a WHERE clause"
        )
    )


def downgrade() -> None:
    op.drop_table("help_articles")
