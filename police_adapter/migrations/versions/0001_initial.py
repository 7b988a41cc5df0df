"""Citizen records, their history, and the PIN pools.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

ACTIVE = 1  # lienthong.population.v1.CITIZEN_STATE_ACTIVE


def upgrade() -> None:
    """Create the tables."""
    op.create_table(
        "citizen",
        sa.Column("pin", sa.String(12), primary_key=True),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("birth_registration", sa.String(80), nullable=False),
        sa.Column("request_id", sa.String(36), nullable=False, unique=True),
        sa.Column("province_code", sa.String(3), nullable=False),
        sa.Column("sex", sa.SmallInteger, nullable=False),
        sa.Column("birth_year", sa.Integer, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("replaced_by", sa.String(12)),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "citizen_active_registration",
        "citizen",
        ["birth_registration"],
        unique=True,
        sqlite_where=sa.text(f"state = {ACTIVE}"),
        postgresql_where=sa.text(f"state = {ACTIVE}"),
    )
    op.create_table(
        "pin_prefix_pool",
        sa.Column("prefix", sa.String(6), primary_key=True),
        sa.Column("remaining", sa.Integer, nullable=False),
    )
    op.create_table(
        "pin_pool_swap",
        sa.Column("prefix", sa.String(6), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("serial", sa.Integer, nullable=False),
    )
    op.create_table(
        "citizen_change",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("pin", sa.String(12), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("fields", sa.JSON, nullable=False),
        sa.Column("before_sha256", sa.String(64)),
        sa.Column("after_sha256", sa.String(64)),
        sa.Column("related_pin", sa.String(12)),
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("request_sha256", sa.String(64)),
        sa.Column("exchange_id", sa.String(64)),
        sa.Column("caller", sa.String(2048)),
        sa.Column("on_behalf_of", sa.String(256)),
        sa.Column("reason", sa.String(500)),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("request_id", "kind", name="citizen_change_request"),
    )
    op.create_index("ix_citizen_change_pin", "citizen_change", ["pin"])


def downgrade() -> None:
    """Drop the tables."""
    op.drop_index("ix_citizen_change_pin", "citizen_change")
    op.drop_table("citizen_change")
    op.drop_table("pin_pool_swap")
    op.drop_table("pin_prefix_pool")
    op.drop_index("citizen_active_registration", "citizen")
    op.drop_table("citizen")
