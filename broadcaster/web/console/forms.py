"""The schedule form: its fields turned into the API's `BroadcastIn` (the same validation,
the same rows as POST /api/v1/broadcasts), and every refusal pinned to the field it is
about, so the form can show it next to that field."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from pydantic import ValidationError

from broadcaster.errors import InvalidJob
from broadcaster.timeutil import parse_user_time
from broadcaster.web.models import BroadcastIn

FIELDS = (
    "name",
    "text",
    "group_ids",
    "staff_ids",
    "send_at",
    "expires_at",
    "corp_id",
    "campaign",
    "dedupe_key",
    "priority",
)
PAYLOAD_FIELDS = {
    "name": "name",
    "text": "text",
    "attachments": "text",
    "group_ext_id_list": "group_ids",
    "staff_ext_id_list": "staff_ids",
    "create_staff_ext_id": "staff_ids",
}
"""The vendor body's fields, by the form field that fills them."""


@dataclass(frozen=True)
class FieldError:
    """One refusal: the model's own words (`detail`), and where a common one has words in
    the catalog, its key (`key`), so an operator reads it in their language."""

    detail: str
    key: str | None = None


EMPTY = ("at least 1 item", "at least 1 character", "Field required")
PLAIN_WORDS = {
    "group_ids": "schedule.err.groups",
    "staff_ids": "schedule.err.staff",
    "name": "schedule.err.name",
}
"""A required field left empty, by the form field, in plain words."""


@dataclass
class ScheduleForm:
    values: dict[str, str] = field(default_factory=dict)
    urgent: bool = False
    errors: dict[str, list[FieldError]] = field(default_factory=dict)

    def fail(self, name: str, detail: str, key: str | None = None) -> None:
        name = name if name in FIELDS else "form"
        if key is None and name in PLAIN_WORDS and any(words in detail for words in EMPTY):
            key = PLAIN_WORDS[name]
        if key is None and "non-empty text or at least one attachment" in detail:
            key = "schedule.err.text"
        problems = self.errors.setdefault(name, [])
        if FieldError(detail, key) not in problems:
            problems.append(FieldError(detail, key))


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.replace(",", "\n").splitlines() if line.strip()]


def read_form(data: Mapping[str, Any]) -> ScheduleForm:
    values = {name: str(data.get(name) or "") for name in FIELDS}
    return ScheduleForm(values=values, urgent=bool(data.get("ignore_quiet_hours")))


def to_request(form: ScheduleForm, tz: str) -> BroadcastIn | None:
    """The form as the API's model; None with `form.errors` filled when it is refused."""
    values = form.values
    staff = _lines(values["staff_ids"])
    body: dict[str, Any] = {
        "payload": {
            "name": values["name"].strip(),
            "text": values["text"],
            "group_ext_id_list": _lines(values["group_ids"]),
            "staff_ext_id_list": staff,
            "create_staff_ext_id": staff[0] if staff else "",
        },
        "ignore_quiet_hours": form.urgent,
    }
    for name in ("corp_id", "campaign", "dedupe_key"):
        if values[name].strip():
            body[name] = values[name].strip()
    if values["priority"].strip():
        body["priority"] = values["priority"].strip()
    for name in ("send_at", "expires_at"):
        if values[name].strip():
            try:
                body[name] = parse_user_time(values[name], tz=tz).replace(tzinfo=UTC)
            except InvalidJob as exc:
                form.fail(name, str(exc), "schedule.err.time")
    try:
        request = BroadcastIn.model_validate(body)
    except ValidationError as exc:
        _pin(form, exc)
        return None
    return None if form.errors else request


def _pin(form: ScheduleForm, exc: ValidationError) -> None:
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ())]
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if location[:1] == ["payload"]:
            for part in message.split("; "):
                name, sep, _detail = part.partition(": ")
                root = name.split(".")[0] if sep else ""
                form.fail(PAYLOAD_FIELDS.get(root, "text"), part)
        elif location:
            form.fail(location[0], message)
        else:  # a check across fields (expires_at before send_at) names its field
            form.fail("expires_at" if "expires_at" in message else "form", message)
