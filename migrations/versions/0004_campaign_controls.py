"""Campaign controls (issue 15): quiet hours and holds on each job, the groups each job
sends to (the per-group monthly cap), recurring schedules and what became of each
occurrence.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations import mysql
from migrations.mysql import Label, LongText, Time

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# Frozen copy of broadcaster.jobs.tables.utc_now when this revision was written.
UTC_NOW = {
    "postgresql": "timezone('utc', statement_timestamp())",
    "sqlite": "(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')",
    "mysql": mysql.UTC_NOW,
}

COLUMNS = (
    ("held_until", Time, "end of the service's last hold"),
    ("held_reason", sa.Text, "why it was held (quiet hours, cap)"),
    ("cap_left_out", LongText, "JSON: groups trimmed by the cap, why"),
)


def upgrade() -> None:
    now = sa.text(UTC_NOW[op.get_bind().dialect.name])
    options = mysql.table_options(op.get_bind())
    op.add_column(
        "broadcast_jobs",
        sa.Column(
            "ignore_quiet_hours",
            sa.Boolean(),
            nullable=False,
            server_default=sa.text("false"),
            comment="producer: send even inside the corp's quiet hours",
        ),
    )
    for name, kind, comment in COLUMNS:
        op.add_column("broadcast_jobs", sa.Column(name, kind, nullable=True, comment=comment))
    op.create_table(
        "broadcast_group_sends",
        sa.Column("job_id", Id, nullable=False),
        sa.Column("group_id", Label(700), nullable=False),
        sa.Column("corp_id", sa.Text, nullable=False),
        sa.Column("month", sa.Text, nullable=False, comment="YYYY-MM in the corp's time zone"),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["broadcast_jobs.id"],
            name="fk_broadcast_group_sends_job_id_broadcast_jobs",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", "group_id", name="pk_broadcast_group_sends"),
        comment="the groups each claimed job sends to, for the per-group monthly cap; a row "
        "counts while its job is queued, sending, sent or unknown",
        **options,
    )
    op.create_index(
        "ix_broadcast_group_sends_corp_id_month_group_id",
        "broadcast_group_sends",
        ["corp_id", "month", "group_id"],
        mysql_length={"corp_id": 191, "month": 16, "group_id": 191},
    )
    op.create_table(
        "broadcast_schedules",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("name", Label(768), nullable=False),
        sa.Column("corp_id", sa.Text, nullable=True, comment="NULL: the default corp"),
        sa.Column(
            "cron", sa.Text, nullable=False, comment="5 fields (crontab) or 6 (seconds first)"
        ),
        sa.Column("tz", sa.Text, nullable=False, comment="IANA zone the cron is read in"),
        sa.Column(
            "payload", LongText, nullable=False, comment="the vendor body, {date}-style fields"
        ),
        sa.Column("campaign", sa.Text, nullable=True),
        sa.Column("start_at", Time, nullable=True),
        sa.Column("end_at", Time, nullable=True),
        sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("last_occurrence", Time, nullable=True, comment="the latest one handled"),
        sa.Column("created_at", Time, nullable=False, server_default=now),
        sa.Column("updated_at", Time, nullable=False, server_default=now),
        sa.PrimaryKeyConstraint("id", name="pk_broadcast_schedules"),
        sa.UniqueConstraint("name", name="uq_broadcast_schedules_name"),
        **options,
    )
    op.create_table(
        "broadcast_schedule_events",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("schedule_id", Id, nullable=False),
        sa.Column("occurrence", Time, nullable=False, comment="UTC; the first of a skipped run"),
        sa.Column("outcome", sa.Text, nullable=False, comment="created, late or skipped"),
        sa.Column("job_id", Id, nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
        sa.Column("recorded_at", Time, nullable=False, server_default=now),
        sa.CheckConstraint(
            "outcome IN ('created', 'late', 'skipped')",
            name=op.f("ck_broadcast_schedule_events_outcome"),
        ),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["broadcast_schedules.id"],
            name="fk_broadcast_schedule_events_schedule_id_broadcast_schedules",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_broadcast_schedule_events"),
        **options,
    )
    op.create_index(
        "ix_broadcast_schedule_events_schedule_id_occurrence",
        "broadcast_schedule_events",
        ["schedule_id", "occurrence"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_table("broadcast_schedule_events")
    op.drop_table("broadcast_schedules")
    op.drop_table("broadcast_group_sends")
    with op.batch_alter_table("broadcast_jobs") as batch:
        for name, _kind, _comment in reversed(COLUMNS):
            batch.drop_column(name)
        batch.drop_column("ignore_quiet_hours")
