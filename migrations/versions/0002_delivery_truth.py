"""Delivery truth: the vendor's mission and its delivery on each job (issue 11).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations.mysql import LongText, Time

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Frozen copy of the final mission statuses when this revision was written.
TRACKING = sa.text(
    "status = 'sent' AND (delivery_status IS NULL OR delivery_status NOT IN "
    "('canceled', 'completed', 'create_failed', 'failed'))"
)

COLUMNS = (
    ("last_call_at", Time, "when the latest vendor call began"),
    ("vendor_mission_id", sa.Text, "the vendor's mission, from its list"),
    ("delivery_status", sa.Text, "the mission's status as last read"),
    ("delivery_groups_reached", sa.Integer, None),
    ("delivery_groups_unreached", sa.Integer, None),
    ("delivery_staff_confirmed", sa.Integer, None),
    ("delivery_staff_total", sa.Integer, None),
    ("delivery_detail", LongText, "JSON: groups reached, not reached"),
    ("delivery_checked_at", Time, None),
    ("delivery_note", sa.Text, "why delivery is not (yet) known"),
)


def upgrade() -> None:
    for name, kind, comment in COLUMNS:
        op.add_column("broadcast_jobs", sa.Column(name, kind, nullable=True, comment=comment))
    if op.get_bind().dialect.name == "mysql":
        # No partial index: led by status (sent rows only), then the mission's status,
        # so rows whose delivery is final are skipped by range, not read.
        op.create_index(
            "ix_broadcast_jobs_my_tracking",
            "broadcast_jobs",
            ["status", "delivery_status", "sent_at"],
            mysql_length={"delivery_status": 32},
        )
        return
    op.create_index(
        "ix_broadcast_jobs_tracking",
        "broadcast_jobs",
        ["sent_at"],
        postgresql_where=TRACKING,
        sqlite_where=TRACKING,
    )


def downgrade() -> None:
    mysql = op.get_bind().dialect.name == "mysql"
    tracking = "ix_broadcast_jobs_my_tracking" if mysql else "ix_broadcast_jobs_tracking"
    op.drop_index(tracking, table_name="broadcast_jobs")
    with op.batch_alter_table("broadcast_jobs") as batch:
        for name, _kind, _comment in reversed(COLUMNS):
            batch.drop_column(name)
