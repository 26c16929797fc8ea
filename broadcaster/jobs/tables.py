"""The tables: `broadcast_jobs` (the public SQL contract, DESIGN §3) and `broadcast_attempts`.

SQLAlchemy Core, not the ORM: every statement the service runs on these tables is a
deliberate, set-based one (claim a batch, compare-and-set a status), and Core says so.
Alembic migrations (`migrations/`) create these; `alembic check` keeps the two in step.

All timestamps are naive UTC. On SQLite they are text `YYYY-MM-DD HH:MM:SS.ffffff`
(a trigger normalises what producers write, see the first migration); on MySQL/MariaDB
`DATETIME(6)`, read and written with the session at '+00:00' (`broadcaster.db`).

MySQL/MariaDB differ in three ways that shape the columns (`mysql` variants below): TEXT
cannot be a unique key, so the unique labels are VARCHARs short enough for an index entry
(3072 bytes = 768 utf8mb4 characters); other indexed texts are indexed by a prefix; and
there are no partial or (on MariaDB) expression indexes, so a generated column `due_at`
(MySQL only) and indexes led by `status` stand in for them (`MYSQL_INDEXES`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.mysql import DATETIME as MYSQL_DATETIME
from sqlalchemy.dialects.mysql import MEDIUMTEXT
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from broadcaster.jobs.states import JobStatus
from broadcaster.vendor.missions import FINAL_MISSION_STATUSES


class utc_now(FunctionElement):
    """The database's clock as naive UTC, in the column format of each dialect.

    PostgreSQL's CURRENT_TIMESTAMP cast to `timestamp` would be in the session's time
    zone, so it is taken at UTC explicitly; SQLite's is already UTC but second-precision
    and in another text shape than SQLAlchemy writes, which would break comparisons.
    """

    type = DateTime()
    inherit_cache = True


@compiles(utc_now, "postgresql")
def _utc_now_pg(element: utc_now, compiler: object, **kw: object) -> str:
    return "timezone('utc', statement_timestamp())"


@compiles(utc_now, "sqlite")
def _utc_now_sqlite(element: utc_now, compiler: object, **kw: object) -> str:
    return "(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')"


@compiles(utc_now, "mysql")
def _utc_now_mysql(element: utc_now, compiler: object, **kw: object) -> str:
    # In parentheses: MySQL takes an expression as a column DEFAULT only so.
    return "(utc_timestamp(6))"


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# BIGINT on PostgreSQL and MySQL, INTEGER (the rowid alias) on SQLite.
Id = BigInteger().with_variant(Integer(), "sqlite")
Time = DateTime().with_variant(MYSQL_DATETIME(fsp=6), "mysql")
"""A naive UTC time; microseconds on MySQL too (its DATETIME drops them)."""
LongText = Text().with_variant(MEDIUMTEXT(), "mysql")
"""JSON that may pass MySQL's TEXT limit of 64 KiB (a payload of many groups)."""


def Label(length: int) -> Any:
    """Text; a VARCHAR of `length` characters on MySQL, where it is a (unique) key."""
    return Text().with_variant(String(length), "mysql")


MYSQL_TABLE: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}
"""The collation (exact, NO PAD) is the migrations' choice, per server: see
`migrations/mysql.py`."""

PRODUCER_COLUMNS = (
    "corp_id",
    "payload",
    "send_at",
    "dedupe_key",
    "campaign",
    "priority",
    "expires_at",
    "max_attempts",
)
"""The columns a producer writes (DESIGN §3); the service owns the others."""

FINAL_DELIVERY_VALUES = sorted(FINAL_MISSION_STATUSES)

STATUS_VALUES = ", ".join(f"'{status.value}'" for status in JobStatus)

jobs = Table(
    "broadcast_jobs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    # --- written by producers ---
    Column("corp_id", Text, nullable=True, comment="NULL: the default corp (WEIBAN_CORP_ID)"),
    Column("payload", LongText, nullable=False, comment="the vendor's request body, JSON"),
    Column("send_at", Time, nullable=False, server_default=utc_now()),
    Column("dedupe_key", Label(768), nullable=True, unique=True),
    Column("campaign", Text, nullable=True),
    Column("priority", Integer, nullable=False, server_default=text("0")),
    Column("expires_at", Time, nullable=True),
    Column("max_attempts", Integer, nullable=False, server_default=text("5")),
    # --- owned by the service ---
    Column(
        "status", Label(16), nullable=False, server_default=text(f"'{JobStatus.SCHEDULED.value}'")
    ),
    Column("not_before", Time, nullable=True, comment="service's own retry/wait time"),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("lease_until", Time, nullable=True),
    Column("sent_at", Time, nullable=True),
    Column("last_errcode", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", Time, nullable=False, server_default=utc_now()),
    Column("updated_at", Time, nullable=False, server_default=utc_now()),
    # --- delivery truth (issue 11), owned by the service ---
    Column("last_call_at", Time, nullable=True, comment="when the latest vendor call began"),
    Column("vendor_mission_id", Text, nullable=True, comment="the vendor's mission, from its list"),
    Column("delivery_status", Text, nullable=True, comment="the mission's status as last read"),
    Column("delivery_groups_reached", Integer, nullable=True),
    Column("delivery_groups_unreached", Integer, nullable=True),
    Column("delivery_staff_confirmed", Integer, nullable=True),
    Column("delivery_staff_total", Integer, nullable=True),
    Column("delivery_detail", LongText, nullable=True, comment="JSON: groups reached, not reached"),
    Column("delivery_checked_at", Time, nullable=True),
    Column("delivery_note", Text, nullable=True, comment="why delivery is not (yet) known"),
    # --- campaign controls (issue 15) ---
    Column(
        "ignore_quiet_hours",
        Boolean,
        nullable=False,
        server_default=text("false"),
        comment="producer: send even inside the corp's quiet hours",
    ),
    Column("held_until", Time, nullable=True, comment="end of the service's last hold"),
    Column("held_reason", Text, nullable=True, comment="why it was held (quiet hours, cap)"),
    Column("cap_left_out", LongText, nullable=True, comment="JSON: groups trimmed by the cap, why"),
    CheckConstraint(f"status IN ({STATUS_VALUES})", name="status"),
    CheckConstraint("max_attempts >= 1", name="max_attempts"),
    **MYSQL_TABLE,
)

due_expression = func.coalesce(jobs.c.not_before, jobs.c.send_at)


class _due_at(FunctionElement[Any]):
    """`due_expression` in a query; on MySQL the generated column that holds it (MariaDB
    has no expression index, and MySQL matches an expression to its index less surely)."""

    type = DateTime()
    inherit_cache = True


@compiles(_due_at)
def _due_at_default(element: _due_at, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(due_expression, **kw))


@compiles(_due_at, "mysql")
def _due_at_mysql(element: _due_at, compiler: Any, **kw: Any) -> str:
    return "broadcast_jobs.due_at"


due_at = _due_at()
"""When a scheduled job may next be sent: the producer's send_at, or the service's later
not_before after a retry or quota wait (send_at itself stays as written, for audit)."""

SCHEDULED_ONLY = jobs.c.status == JobStatus.SCHEDULED.value

# Claiming reads only scheduled rows; partial indexes keep it cheap however many finished
# rows pile up. One serves "next due time", the other the claim order.
Index(
    "ix_broadcast_jobs_due",
    due_expression,
    postgresql_where=SCHEDULED_ONLY,
    sqlite_where=SCHEDULED_ONLY,
)
Index(
    "ix_broadcast_jobs_claim_order",
    jobs.c.priority.desc(),
    due_expression,
    postgresql_where=SCHEDULED_ONLY,
    sqlite_where=SCHEDULED_ONLY,
)
# The recovery sweep reads rows in flight by lease.
IN_FLIGHT = jobs.c.status.in_([JobStatus.QUEUED.value, JobStatus.SENDING.value])
Index(
    "ix_broadcast_jobs_lease",
    jobs.c.lease_until,
    postgresql_where=IN_FLIGHT,
    sqlite_where=IN_FLIGHT,
)
# Delivery tracking reads sent rows whose mission is not final yet, newest first.
TRACKING = (jobs.c.status == JobStatus.SENT.value) & (
    jobs.c.delivery_status.is_(None) | jobs.c.delivery_status.not_in(FINAL_DELIVERY_VALUES)
)
Index(
    "ix_broadcast_jobs_tracking",
    jobs.c.sent_at,
    postgresql_where=TRACKING,
    sqlite_where=TRACKING,
)
PARTIAL_INDEXES = frozenset(
    {
        "ix_broadcast_jobs_due",
        "ix_broadcast_jobs_claim_order",
        "ix_broadcast_jobs_lease",
        "ix_broadcast_jobs_tracking",
    }
)
"""Created on PostgreSQL and SQLite only; MySQL has `MYSQL_INDEXES` instead."""
MYSQL_INDEXES = frozenset(
    {
        "ix_broadcast_jobs_my_due",
        "ix_broadcast_jobs_my_claim_order",
        "ix_broadcast_jobs_my_lease",
        "ix_broadcast_jobs_my_tracking",
    }
)
"""MySQL's stand-ins for the partial indexes, each led by `status` so that finished rows,
however many, sit in other parts of the index than the ones a claim, the sweep or delivery
tracking reads (made by the migrations, with the generated column `due_at`)."""
MYSQL_ONLY_COLUMNS = frozenset({"due_at"})

Index(
    "ix_broadcast_jobs_campaign_status",
    jobs.c.campaign,
    jobs.c.status,
    mysql_length={"campaign": 191},
)
Index("ix_broadcast_jobs_status", jobs.c.status)

attempts = Table(
    "broadcast_attempts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column(
        "job_id",
        Id,
        ForeignKey("broadcast_jobs.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("attempt_no", Integer, nullable=False),
    Column("started_at", Time, nullable=False),
    Column("duration_ms", Integer, nullable=True),
    Column("outcome", Text, nullable=False),
    Column("errcode", Integer, nullable=True),
    Column("error", Text, nullable=True),
    **MYSQL_TABLE,
)

# --- the web API's bearer tokens (issue 12), owned by `broadcaster tokens` ---
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", Label(255), nullable=False, unique=True, comment="the operator's label"),
    Column("key_id", Label(64), nullable=False, unique=True, comment="public part of the token"),
    Column("token_hash", Text, nullable=False, comment="SHA-256 of the whole token, hex"),
    Column("scope", Text, nullable=False, comment="read or write"),
    Column("created_at", Time, nullable=False, server_default=utc_now()),
    Column("revoked_at", Time, nullable=True),
    CheckConstraint("scope IN ('read', 'write')", name="scope"),
    **MYSQL_TABLE,
)

# --- campaign controls (issue 15) ---
group_sends = Table(
    "broadcast_group_sends",
    metadata,
    Column("job_id", Id, ForeignKey("broadcast_jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("group_id", Label(700), primary_key=True),
    Column("corp_id", Text, nullable=False),
    Column("month", Text, nullable=False, comment="YYYY-MM in the corp's time zone"),
    comment="the groups each claimed job sends to, for the per-group monthly cap; a row "
    "counts while its job is queued, sending, sent or unknown",
    **MYSQL_TABLE,
)
Index(
    "ix_broadcast_group_sends_corp_id_month_group_id",
    group_sends.c.corp_id,
    group_sends.c.month,
    group_sends.c.group_id,
    mysql_length={"corp_id": 191, "month": 16, "group_id": 191},
)

schedules = Table(
    "broadcast_schedules",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", Label(768), nullable=False, unique=True),
    Column("corp_id", Text, nullable=True, comment="NULL: the default corp"),
    Column("cron", Text, nullable=False, comment="5 fields (crontab) or 6 (seconds first)"),
    Column("tz", Text, nullable=False, comment="IANA zone the cron is read in"),
    Column("payload", LongText, nullable=False, comment="the vendor body, {date}-style fields"),
    Column("campaign", Text, nullable=True),
    Column("start_at", Time, nullable=True),
    Column("end_at", Time, nullable=True),
    Column("paused", Boolean, nullable=False, server_default=text("false")),
    Column("last_occurrence", Time, nullable=True, comment="the latest one handled"),
    Column("created_at", Time, nullable=False, server_default=utc_now()),
    Column("updated_at", Time, nullable=False, server_default=utc_now()),
    **MYSQL_TABLE,
)

schedule_events = Table(
    "broadcast_schedule_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column(
        "schedule_id",
        Id,
        ForeignKey("broadcast_schedules.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("occurrence", Time, nullable=False, comment="UTC; the first of a skipped run"),
    Column("outcome", Text, nullable=False, comment="created, late or skipped"),
    Column("job_id", Id, nullable=True),
    Column("detail", Text, nullable=True),
    Column("recorded_at", Time, nullable=False, server_default=utc_now()),
    CheckConstraint("outcome IN ('created', 'late', 'skipped')", name="outcome"),
    **MYSQL_TABLE,
)
Index(
    "ix_broadcast_schedule_events_schedule_id_occurrence",
    schedule_events.c.schedule_id,
    schedule_events.c.occurrence,
    unique=True,
)
