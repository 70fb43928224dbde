"""Alembic against the app's database (DBOS_DATABASE_URL; the password comes from libpq's environment)."""

import os

import sqlalchemy as sa
from alembic import context

url = os.environ["DBOS_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
with sa.create_engine(url).connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
