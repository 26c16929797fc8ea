"""The vendor's request body for `POST /open-api/customer_group_msg/add`, as pydantic models.

Fields follow the vendor page (`shared/seeds/`). The vendor marks every field required; in
practice an attachment carries one object, the one its `msgtype` names, so that is what we
require. Unknown top-level keys are refused: a typo such as `group_ext_ids` would otherwise
send a message to nobody.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from broadcaster.errors import InvalidPayload
from broadcaster.settings import describe_validation_error

MAX_GROUPS_PER_TASK = 2000
"""The vendor's cap on `group_ext_id_list` for one mass-message task."""

NonEmptyStr = Annotated[str, StringConstraints(min_length=1, strip_whitespace=True)]


def _https(url: str) -> str:
    if not url.startswith("https://"):
        raise ValueError("must be an https:// URL")
    return url


HttpsUrl = Annotated[NonEmptyStr, Field(description="an https:// URL")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Image(_Strict):
    title: str = ""
    url: HttpsUrl

    _check_url = field_validator("url")(_https)


class Link(_Strict):
    title: NonEmptyStr
    url: HttpsUrl
    desc: str = ""

    _check_url = field_validator("url")(_https)


class MiniProgram(_Strict):
    appid: NonEmptyStr
    title: NonEmptyStr
    page: NonEmptyStr
    cover: NonEmptyStr


class Video(_Strict):
    title: str = ""
    url: HttpsUrl

    _check_url = field_validator("url")(_https)


class Attachment(_Strict):
    """One attachment. `msgtype` names which of the four objects it carries."""

    msgtype: Literal["image", "link", "miniprogram", "video"]
    image: Image | None = None
    link: Link | None = None
    miniprogram: MiniProgram | None = None
    video: Video | None = None

    @model_validator(mode="after")
    def _matching_object(self) -> Attachment:
        if getattr(self, self.msgtype) is None:
            raise ValueError(f"msgtype {self.msgtype!r} needs a {self.msgtype!r} object")
        return self


class GroupMessage(_Strict):
    """The body of one customer-group mass message, as the vendor receives it."""

    name: NonEmptyStr
    staff_ext_id_list: list[NonEmptyStr]
    group_ext_id_list: list[NonEmptyStr] = Field(min_length=1, max_length=MAX_GROUPS_PER_TASK)
    create_staff_ext_id: NonEmptyStr
    text: str = ""
    attachments: list[Attachment] = Field(default_factory=list, max_length=9)

    @model_validator(mode="after")
    def _has_content(self) -> GroupMessage:
        if not self.text.strip() and not self.attachments:
            raise ValueError("a message needs a non-empty text or at least one attachment")
        return self

    def to_vendor_json(self) -> str:
        """The exact body stored in `broadcast_jobs.payload` and sent to the vendor."""
        return self.model_dump_json(exclude_none=True)


def parse_payload(raw: str | bytes | dict[str, Any]) -> GroupMessage:
    """Validate a payload from any producer; raise `InvalidPayload` naming every problem."""
    if isinstance(raw, str | bytes):
        try:
            raw = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidPayload(f"payload is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidPayload(f"payload must be a JSON object, not {type(raw).__name__}")
    try:
        return GroupMessage.model_validate(raw)
    except ValidationError as exc:
        raise InvalidPayload(f"payload invalid: {describe_validation_error(exc)}") from None


def split_audience(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """Split a body whose audience exceeds the vendor's cap into bodies of at most 2000
    groups each, in order; a body within the cap comes back as it is."""
    groups = raw.get("group_ext_id_list")
    if not isinstance(groups, list) or len(groups) <= MAX_GROUPS_PER_TASK:
        return [raw]
    return [
        {**raw, "group_ext_id_list": groups[start : start + MAX_GROUPS_PER_TASK]}
        for start in range(0, len(groups), MAX_GROUPS_PER_TASK)
    ]
