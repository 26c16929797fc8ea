"""api_tokens: the web API's bearer tokens, only their hashes (issue 12).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations import mysql
from migrations.mysql import Label, Time

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# Frozen copy of broadcaster.jobs.tables.utc_now when this revision was written.
UTC_NOW = {
    "postgresql": "timezone('utc', statement_timestamp())",
    "sqlite": "(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')",
    "mysql": mysql.UTC_NOW,
}


def upgrade() -> None:
    now = sa.text(UTC_NOW[op.get_bind().dialect.name])
    op.create_table(
        "api_tokens",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("name", Label(255), nullable=False, comment="the operator's label"),
        sa.Column("key_id", Label(64), nullable=False, comment="public part of the token"),
        sa.Column("token_hash", sa.Text, nullable=False, comment="SHA-256 of the whole token, hex"),
        sa.Column("scope", sa.Text, nullable=False, comment="read or write"),
        sa.Column("created_at", Time, nullable=False, server_default=now),
        sa.Column("revoked_at", Time, nullable=True),
        sa.CheckConstraint("scope IN ('read', 'write')", name=op.f("ck_api_tokens_scope")),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("name", name="uq_api_tokens_name"),
        sa.UniqueConstraint("key_id", name="uq_api_tokens_key_id"),
        **mysql.table_options(op.get_bind()),
    )


def downgrade() -> None:
    op.drop_table("api_tokens")
