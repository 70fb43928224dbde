"""greetings table"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table("greetings", sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.Text),
                    sa.Column("status", sa.Text), sa.Column("created_at", sa.DateTime, server_default=sa.func.now()))


def downgrade() -> None:
    op.drop_table("greetings")
