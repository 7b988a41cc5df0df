"""Alembic environment: migrations run on the connection create_schema hands over."""

from __future__ import annotations

from alembic import context

from police_adapter.models import Base

VERSION_TABLE = "alembic_version_police"


def run_migrations_online() -> None:
    """Run the migrations in the caller's transaction."""
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection, target_metadata=Base.metadata, version_table=VERSION_TABLE
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
