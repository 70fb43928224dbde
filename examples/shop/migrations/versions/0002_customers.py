"""customers table"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table("customers", sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.Text))


def downgrade() -> None:
    op.drop_table("customers")
