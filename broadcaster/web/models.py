"""What the API takes and gives. A job in a POST is the Python API's `JobRequest` (the same
validation, the same rows), with times that must carry an offset."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, Discriminator, Field, Tag, field_validator

from broadcaster.errors import InvalidPayload
from broadcaster.jobs.states import JobStatus
from broadcaster.produce.api import MAX_LABEL_BYTES, JobRequest
from broadcaster.vendor.payload import parse_payload, split_audience, unstorable
from broadcaster.web.config import MAX_BATCH


class BroadcastIn(JobRequest):
    """One send: the vendor's body (`payload`) plus when, for whom and how. Unknown fields
    are refused. An audience over 2000 groups becomes several jobs (keys `KEY#1`, …)."""

    payload: dict[str, Any] = Field(
        description="exactly the vendor's request body for customer_group_msg/add: name, "
        "staff_ext_id_list, group_ext_id_list, create_staff_ext_id, text, attachments"
    )
    send_at: AwareDatetime | None = Field(
        default=None, description="RFC 3339 with an offset (naive is refused); omitted: now"
    )
    expires_at: AwareDatetime | None = Field(
        default=None, description="RFC 3339 with an offset: not sent after this"
    )
    corp_id: str | None = Field(default=None, description="omitted: the default corp")
    dedupe_key: str | None = Field(
        default=None,
        min_length=1,
        description="unique; a replay with the same key and body answers the original "
        "job(s). The Idempotency-Key header sets it for a single job.",
    )
    ignore_quiet_hours: bool = Field(
        default=False,
        description="urgent: send even inside the corp's quiet hours (the row's "
        "ignore_quiet_hours column)",
    )

    @field_validator("payload")
    @classmethod
    def _vendor_body(cls, value: dict[str, Any]) -> dict[str, Any]:
        """The vendor's schema checked here, so one answer names every bad item; the
        vendor JSON of each part is kept for `to_rows`, so it is not built twice."""
        bodies = []
        for part in split_audience(value):
            try:
                bodies.append(parse_payload(part).to_vendor_json())
            except InvalidPayload as exc:
                raise ValueError(str(exc).removeprefix("payload invalid: ")) from None
        return CheckedPayload(value, bodies)

    def to_rows(self, *, storable_text: bool = False) -> list[dict[str, Any]]:
        """JobRequest.to_rows on the bodies already built (the part keys KEY#1, KEY#2, …
        named as it names them)."""
        if not isinstance(self.payload, CheckedPayload):
            return super().to_rows(storable_text=storable_text)
        bodies = self.payload.bodies
        key = self.dedupe_key
        return [
            self._row(body, f"{key}#{number}" if key is not None and len(bodies) > 1 else key)
            for number, body in enumerate(bodies, start=1)
        ]

    def _row(self, body: str, dedupe_key: str | None) -> dict[str, Any]:
        return {**super()._row(body, dedupe_key), "ignore_quiet_hours": self.ignore_quiet_hours}


class CheckedPayload(dict[str, Any]):
    """A payload as given, with the vendor JSON of each of its parts once validated."""

    def __init__(self, payload: dict[str, Any], bodies: list[str]) -> None:
        super().__init__(payload)
        self.bodies = bodies


def _shape(value: Any) -> str:
    return "many" if isinstance(value, list) else "one"


BroadcastBody = Annotated[
    Annotated[BroadcastIn, Tag("one")]
    | Annotated[list[BroadcastIn], Tag("many"), Field(min_length=1, max_length=MAX_BATCH)],
    Discriminator(_shape),
]
"""One job, or a list of 1 to 1000 (all validated before any is written)."""


class DeliveryOut(BaseModel):
    """What the vendor's mission list says about the message (null until tracked)."""

    vendor_mission_id: str | None = None
    status: str | None = None
    groups_reached: int | None = None
    groups_unreached: int | None = None
    staff_confirmed: int | None = None
    staff_total: int | None = None
    checked_at: datetime | None = None
    note: str | None = None


class JobOut(BaseModel):
    id: int
    status: str
    corp_id: str | None
    campaign: str | None
    dedupe_key: str | None
    priority: int | None
    send_at: datetime | None
    expires_at: datetime | None
    max_attempts: int | None
    attempts: int | None
    not_before: datetime | None
    sent_at: datetime | None
    last_call_at: datetime | None
    last_errcode: int | None
    last_error: str | None
    created_at: datetime | None
    updated_at: datetime | None
    payload: Any = Field(description="the stored body: an object, or the text if not JSON")
    ignore_quiet_hours: bool | None = Field(
        description="the producer asked to send even inside quiet hours"
    )
    held_until: datetime | None = Field(description="end of the service's last hold")
    held_reason: str | None = Field(
        description="why it was last held, e.g. 'quiet hours until 08:00 (Asia/Shanghai)'"
    )
    held: str | None = Field(
        description="held_reason while the job is scheduled and held_until is still ahead "
        "(what `jobs show` prints as held); null otherwise"
    )
    cap_left_out: Any = Field(
        description="groups the monthly cap left out ({month, cap, groups, reason}); null: none"
    )
    delivery: DeliveryOut


class AttemptOut(BaseModel):
    attempt_no: int
    started_at: datetime | None
    duration_ms: int | None
    outcome: str
    errcode: int | None
    error: str | None


class JobDetail(JobOut):
    attempt_history: list[AttemptOut]


class JobRef(BaseModel):
    """A job as a POST answers it; GET /api/v1/broadcasts/{id} has the rest."""

    id: int
    status: str
    dedupe_key: str | None
    corp_id: str | None
    campaign: str | None
    send_at: datetime | None


class ItemResult(BaseModel):
    index: int = Field(description="the item's place in the request (0 for a single job)")
    created: bool = Field(description="false: every job of it existed already (a replay)")
    jobs: list[JobRef] = Field(description="one, or one per 2000-group part of the audience")


class ScheduleOut(BaseModel):
    items: list[ItemResult]


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: done")


class CampaignOut(BaseModel):
    name: str
    total: int
    by_status: dict[str, int]
    by_delivery: dict[str, int] = Field(description="sent jobs by delivery status ('untracked')")


class CampaignCancelled(BaseModel):
    campaign: str
    cancelled: int
    left_sending: int = Field(description="already sending: cannot be taken back")


class ResolveIn(BaseModel):
    model_config = {"extra": "forbid"}

    decision: Literal["sent", "resend"] = Field(
        description="sent: the message exists at the vendor; resend: it does not, send again"
    )


class ScheduleIn(BaseModel):
    """A recurring campaign, as `broadcaster schedules add` takes it (the same checks)."""

    model_config = {"extra": "forbid"}

    cron: str = Field(
        min_length=1,
        max_length=1000,
        description="5 crontab fields (minute hour day month day-of-week, 0/7 = Sunday), or "
        "6 with seconds first",
    )
    payload: dict[str, Any] = Field(
        description="the vendor body; {date}, {time}, {datetime}, {month}, {weekday} in name "
        "and text are filled from each occurrence"
    )
    campaign: str = Field(min_length=1, max_length=1000, description="the jobs' campaign")
    tz: str | None = Field(
        default=None, min_length=1, max_length=200, description="the cron's zone; DEFAULT_TZ"
    )
    corp_id: str | None = Field(
        default=None, min_length=1, max_length=1000, description="omitted: the default corp"
    )
    name: str | None = Field(
        default=None, min_length=1, max_length=1000, description="unique; omitted: campaign"
    )
    start_at: AwareDatetime | None = Field(default=None, description="first moment (RFC 3339)")
    end_at: AwareDatetime | None = Field(default=None, description="last moment (RFC 3339)")

    @field_validator("cron", "campaign", "tz", "corp_id", "name")
    @classmethod
    def _storable(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if reason := unstorable(value):
            raise ValueError(reason)
        if len(value.encode()) > MAX_LABEL_BYTES:
            raise ValueError(f"over {MAX_LABEL_BYTES} bytes in UTF-8")
        return value


class ScheduleView(BaseModel):
    id: int
    name: str
    corp_id: str | None
    cron: str
    tz: str
    campaign: str | None
    payload: Any = Field(description="the template as stored")
    paused: bool
    start_at: datetime | None
    end_at: datetime | None
    next_occurrence: datetime | None = Field(description="null: paused, ended or unusable")
    last_occurrence: datetime | None
    last_outcome: str | None = Field(description="created, late or skipped")
    last_detail: str | None
    last_job_id: int | None


class ScheduleList(BaseModel):
    items: list[ScheduleView]


class ScheduleChanged(BaseModel):
    schedule: ScheduleView
    jobs_cancelled: int = Field(description="jobs made ahead for occurrences to come, cancelled")


class ScheduleRemoved(BaseModel):
    id: int
    name: str
    jobs_cancelled: int = Field(description="jobs made ahead for occurrences to come, cancelled")


StatusFilter = JobStatus
