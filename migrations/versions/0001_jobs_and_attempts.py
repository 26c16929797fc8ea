"""broadcast_jobs and broadcast_attempts, with the producer-facing triggers.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations import mysql
from migrations.mysql import Label, LongText, Time

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
DUE = sa.text("coalesce(not_before, send_at)")
SCHEDULED = sa.text("status = 'scheduled'")
IN_FLIGHT = sa.text("status IN ('queued', 'sending')")

# Frozen copies of what the live schema had when this revision was written: a migration
# never imports live code, or editing the enum would silently rewrite history. Changing a
# status set or the clock takes a new revision.
STATUS_VALUES = (
    "'scheduled', 'queued', 'sending', 'sent', 'failed', 'unknown', 'cancelled', 'expired'"
)
# The database's clock as naive UTC, in each dialect's column format (see
# broadcaster.jobs.tables.utc_now for why: PostgreSQL's session time zone; SQLite's text shape).
UTC_NOW = {
    "postgresql": "timezone('utc', statement_timestamp())",
    "sqlite": "(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')",
    "mysql": mysql.UTC_NOW,
}

# SQLite stores timestamps as text; comparisons are textual, so every value must have the
# one shape SQLAlchemy writes. Producers may write '2026-12-01 01:00:00', an ISO 'T', or an
# offset: the triggers refuse what SQLite cannot read and rewrite the rest to UTC text.
CANONICAL = (
    "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9]"
    ".[0-9][0-9][0-9][0-9][0-9][0-9]"
)


def _sqlite_time_triggers(event: str) -> list[str]:
    """BEFORE: refuse unreadable times; AFTER: rewrite readable ones to canonical UTC."""
    of = " OF send_at, expires_at" if event == "UPDATE" else ""
    name = event.lower()
    check = f"""
    CREATE TRIGGER broadcast_jobs_check_times_{name} BEFORE {event}{of} ON broadcast_jobs
    BEGIN
      SELECT RAISE(ABORT, 'send_at must be UTC text like 2026-12-01 01:00:00')
      WHERE NEW.send_at IS NULL OR datetime(NEW.send_at) IS NULL;
      SELECT RAISE(ABORT, 'expires_at must be UTC text like 2026-12-01 01:00:00')
      WHERE NEW.expires_at IS NOT NULL AND datetime(NEW.expires_at) IS NULL;
    END"""
    normalise = f"""
    CREATE TRIGGER broadcast_jobs_normalise_times_{name} AFTER {event}{of} ON broadcast_jobs
    WHEN NEW.send_at NOT GLOB '{CANONICAL}'
      OR (NEW.expires_at IS NOT NULL AND NEW.expires_at NOT GLOB '{CANONICAL}')
    BEGIN
      UPDATE broadcast_jobs SET
        send_at = strftime('%Y-%m-%d %H:%M:%f', send_at) || '000',
        expires_at = CASE WHEN expires_at IS NULL THEN NULL
                     ELSE strftime('%Y-%m-%d %H:%M:%f', expires_at) || '000' END
      WHERE id = NEW.id;
    END"""
    return [check, normalise]


# PostgreSQL wakes the scheduler at once when a statement leaves a row `scheduled`
# (a producer's INSERT, a retry's reschedule): one notification per statement.
PG_NOTIFY = [
    """
    CREATE FUNCTION broadcast_jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF EXISTS (SELECT 1 FROM new_rows WHERE status = 'scheduled') THEN
        PERFORM pg_notify('broadcast_jobs_due', '');
      END IF;
      RETURN NULL;
    END $$""",
    """
    CREATE TRIGGER broadcast_jobs_notify_insert AFTER INSERT ON broadcast_jobs
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION broadcast_jobs_notify()""",
    """
    CREATE TRIGGER broadcast_jobs_notify_update AFTER UPDATE ON broadcast_jobs
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION broadcast_jobs_notify()""",
]


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    now = sa.text(UTC_NOW[dialect])
    op.create_table(
        "broadcast_jobs",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column(
            "corp_id", sa.Text, nullable=True, comment="NULL: the default corp (WEIBAN_CORP_ID)"
        ),
        sa.Column("payload", LongText, nullable=False, comment="the vendor's request body, JSON"),
        sa.Column("send_at", Time, nullable=False, server_default=now),
        sa.Column("dedupe_key", Label(768), nullable=True),
        sa.Column("campaign", sa.Text, nullable=True),
        sa.Column("priority", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("expires_at", Time, nullable=True),
        sa.Column("max_attempts", sa.Integer, nullable=False, server_default=sa.text("5")),
        sa.Column("status", Label(16), nullable=False, server_default=sa.text("'scheduled'")),
        sa.Column("not_before", Time, nullable=True, comment="service's own retry/wait time"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("lease_until", Time, nullable=True),
        sa.Column("sent_at", Time, nullable=True),
        sa.Column("last_errcode", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", Time, nullable=False, server_default=now),
        sa.Column("updated_at", Time, nullable=False, server_default=now),
        sa.CheckConstraint(f"status IN ({STATUS_VALUES})", name=op.f("ck_broadcast_jobs_status")),
        sa.CheckConstraint("max_attempts >= 1", name=op.f("ck_broadcast_jobs_max_attempts")),
        sa.PrimaryKeyConstraint("id", name="pk_broadcast_jobs"),
        sa.UniqueConstraint("dedupe_key", name="uq_broadcast_jobs_dedupe_key"),
        **mysql.table_options(op.get_bind()),
    )
    if dialect == "mysql":
        _mysql_claim_indexes()
    else:
        _partial_indexes()
    op.create_index(
        "ix_broadcast_jobs_campaign_status",
        "broadcast_jobs",
        ["campaign", "status"],
        mysql_length={"campaign": 191},
    )
    op.create_index("ix_broadcast_jobs_status", "broadcast_jobs", ["status"])

    op.create_table(
        "broadcast_attempts",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("job_id", Id, nullable=False),
        sa.Column("attempt_no", sa.Integer, nullable=False),
        sa.Column("started_at", Time, nullable=False),
        sa.Column("duration_ms", sa.Integer, nullable=True),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("errcode", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_broadcast_attempts"),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["broadcast_jobs.id"],
            ondelete="CASCADE",
            name="fk_broadcast_attempts_job_id_broadcast_jobs",
        ),
        **mysql.table_options(op.get_bind()),
    )
    op.create_index("ix_broadcast_attempts_job_id", "broadcast_attempts", ["job_id"])

    statements = {
        "postgresql": PG_NOTIFY,
        "sqlite": [*_sqlite_time_triggers("INSERT"), *_sqlite_time_triggers("UPDATE")],
    }.get(dialect, [])  # MySQL: DATETIME(6) and the strict sql_mode refuse a bad time
    for statement in statements:
        op.execute(statement)


def _partial_indexes() -> None:
    op.create_index(
        "ix_broadcast_jobs_due",
        "broadcast_jobs",
        [DUE],
        postgresql_where=SCHEDULED,
        sqlite_where=SCHEDULED,
    )
    op.create_index(
        "ix_broadcast_jobs_claim_order",
        "broadcast_jobs",
        [sa.text("priority DESC"), DUE],
        postgresql_where=SCHEDULED,
        sqlite_where=SCHEDULED,
    )
    op.create_index(
        "ix_broadcast_jobs_lease",
        "broadcast_jobs",
        ["lease_until"],
        postgresql_where=IN_FLIGHT,
        sqlite_where=IN_FLIGHT,
    )


def _mysql_claim_indexes() -> None:
    """No partial indexes on MySQL, and no expression indexes on MariaDB: a stored
    generated column holds when a job is due, and each index is led by `status`, so the
    claim and the sweep read only the scheduled (or in-flight) part however many finished
    rows pile up (bench/claim.py --finished)."""
    op.add_column(
        "broadcast_jobs",
        sa.Column(
            "due_at",
            Time,
            sa.Computed("coalesce(not_before, send_at)", persisted=True),
            comment="MySQL only, generated: when a scheduled job may next be sent",
        ),
    )
    op.create_index("ix_broadcast_jobs_my_due", "broadcast_jobs", ["status", "due_at"])
    op.create_index(
        "ix_broadcast_jobs_my_claim_order",
        "broadcast_jobs",
        [sa.text("status"), sa.text("priority DESC"), sa.text("due_at")],
    )
    op.create_index("ix_broadcast_jobs_my_lease", "broadcast_jobs", ["status", "lease_until"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS broadcast_jobs_notify() CASCADE")
    op.drop_table("broadcast_attempts")
    op.drop_table("broadcast_jobs")
