"""The audit leaf of each change, and repeatable ISSUED and RESTORED changes.

A change records the leaf index of its exchange's request entry in the gateway's audit log.
A re-send after drift may restore a record, or issue a new PIN, under a request_id that
already issued one, so (request_id, kind) stays unique only for the other kinds.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

ONCE_PER_REQUEST = "kind NOT IN ('ISSUED', 'RESTORED')"


def upgrade() -> None:
    """Add citizen_change.exchange_leaf; narrow the request_id uniqueness, index it in full."""
    # SQLite cannot drop a constraint in place: batch mode copies the table.
    with op.batch_alter_table("citizen_change") as batch:
        batch.add_column(sa.Column("exchange_leaf", sa.BigInteger))
        batch.drop_constraint("citizen_change_request", type_="unique")
    op.create_index(
        "citizen_change_request",
        "citizen_change",
        ["request_id", "kind"],
        unique=True,
        sqlite_where=sa.text(ONCE_PER_REQUEST),
        postgresql_where=sa.text(ONCE_PER_REQUEST),
    )
    # Lookups by request_id and kind cannot use the partial index on SQLite.
    op.create_index("ix_citizen_change_request_id", "citizen_change", ["request_id"])


def downgrade() -> None:
    """Undo upgrade; fails while a request_id has two ISSUED or RESTORED changes."""
    op.drop_index("ix_citizen_change_request_id", "citizen_change")
    op.drop_index("citizen_change_request", "citizen_change")
    with op.batch_alter_table("citizen_change") as batch:
        batch.create_unique_constraint("citizen_change_request", ["request_id", "kind"])
        batch.drop_column("exchange_leaf")
