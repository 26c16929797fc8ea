"""The vendor's request body for `POST /open-api/customer_group_msg/add`, as pydantic models.

Fields follow the vendor page (`shared/seeds/`). The vendor marks every field required; in
practice an attachment carries one object, the one its `msgtype` names, so that is what we
require. Unknown top-level keys are refused: a typo such as `group_ext_ids` would otherwise
send a message to nobody.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from broadcaster.errors import InvalidPayload
from broadcaster.settings import describe_validation_error

MAX_GROUPS_PER_TASK = 2000
"""The vendor's cap on `group_ext_id_list` for one mass-message task."""

# Size limits, in UTF-8 bytes. The Weiban page (`shared/seeds/`) states none; Weiban hands
# the message to WeCom's 创建企业群发 API (externalcontact/add_msg_template, documented at
# https://developer.work.weixin.qq.com/document/path/92135), whose documented limits are
# these: text.content 最多4000个字节, link.title 最长128个字节, link.desc 最多512个字节,
# link.url 最长2048个字节, miniprogram.title 最多64个字节.
MAX_TEXT_BYTES = 4000
VENDOR_BYTE_LIMITS = {
    ("link", "title"): 128,
    ("link", "desc"): 512,
    ("link", "url"): 2048,
    ("miniprogram", "title"): 64,
}
MAX_PAYLOAD_BYTES = 1 << 20
"""Our own cap on one stored body (the vendor JSON of one job, after the audience split):
2000 group ids and a full text fit many times over; a body past it is a mistake, and would
otherwise travel whole through the database, the broker and the vendor call."""

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


def unstorable(text: str) -> str | None:
    """Why `text` cannot be stored or sent as it is, or None: PostgreSQL refuses NUL in
    text, and an unpaired surrogate (`"\\ud800"` in JSON) is not Unicode that UTF-8 can
    carry, so either would fail the whole batch of rows it travels with."""
    if "\x00" in text:
        return "contains a NUL character (\\x00)"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"contains an unpaired surrogate {text[exc.start]!r}, which is not valid Unicode"
    return None


_NUL_OR_SURROGATE_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")


def storable_json_text(text: str) -> bool:
    """True when JSON text cannot decode to a string `unstorable` refuses, so the walk over
    every string of the body can be skipped (the claim parses every row it sends): a NUL
    or a surrogate can only come from a raw one in the text or a `\\u` escape. An emoji
    escaped as a surrogate pair is still walked, which is slower, never wrong."""
    if "\x00" in text or _NUL_OR_SURROGATE_ESCAPE.search(text):
        return False
    return text.isascii() or unstorable(text) is None


def _first_unstorable(value: Any) -> str | None:
    """The first string (key or value) inside `value` that cannot be stored, as 'path: why'.
    Iterative: a body nested a thousand deep is refused for its types later, not here."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if reason := unstorable(item):
                return f"{path or 'payload'}: {reason}"
        elif isinstance(item, dict):
            children = []
            for key, child in item.items():
                if isinstance(key, str) and (reason := unstorable(key)):
                    return f"{key!a}: the key {reason}"
                children.append((f"{path}.{key}" if path else str(key), child))
            stack.extend(reversed(children))
        elif isinstance(item, list):
            indexed = [(f"{path}.{index}", child) for index, child in enumerate(item)]
            stack.extend(reversed(indexed))
    return None


def _over(value: str, limit: int) -> int | None:
    """The UTF-8 size of `value` when it is over `limit` bytes, else None (fast for short)."""
    if len(value) * 4 <= limit:
        return None
    size = len(value.encode("utf-8"))
    return size if size > limit else None


class GroupMessage(_Strict):
    """The body of one customer-group mass message, as the vendor receives it."""

    name: NonEmptyStr
    staff_ext_id_list: list[NonEmptyStr]
    group_ext_id_list: list[NonEmptyStr] = Field(min_length=1, max_length=MAX_GROUPS_PER_TASK)
    create_staff_ext_id: NonEmptyStr
    text: str = ""
    attachments: list[Attachment] = Field(default_factory=list, max_length=9)

    @model_validator(mode="before")
    @classmethod
    def _storable_strings(cls, data: Any, info: ValidationInfo) -> Any:
        if info.context and info.context.get("storable_text"):
            return data  # parsed from JSON text already known to hold no such character
        if found := _first_unstorable(data):
            raise ValueError(found)
        return data

    @model_validator(mode="after")
    def _has_content(self) -> GroupMessage:
        if not self.text.strip() and not self.attachments:
            raise ValueError("a message needs a non-empty text or at least one attachment")
        return self

    @model_validator(mode="after")
    def _within_vendor_limits(self) -> GroupMessage:
        """Checked here, not per field, so the error names the field and the limit without
        echoing a text of many kilobytes back."""
        problems = []
        if size := _over(self.text, MAX_TEXT_BYTES):
            problems.append(f"text: {size} bytes in UTF-8, over WeCom's limit of {MAX_TEXT_BYTES}")
        for index, attachment in enumerate(self.attachments):
            for (kind, name), limit in VENDOR_BYTE_LIMITS.items():
                value = getattr(getattr(attachment, kind) or object(), name, None)
                if isinstance(value, str) and (size := _over(value, limit)):
                    problems.append(
                        f"attachments.{index}.{kind}.{name}: {size} bytes in UTF-8, "
                        f"over WeCom's limit of {limit}"
                    )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def to_vendor_json(self) -> str:
        """The exact body stored in `broadcast_jobs.payload` and sent to the vendor;
        `InvalidPayload` when it is over `MAX_PAYLOAD_BYTES`."""
        body = self.model_dump_json(exclude_none=True)
        if len(body) * 4 > MAX_PAYLOAD_BYTES and (size := len(body.encode())) > MAX_PAYLOAD_BYTES:
            raise InvalidPayload(
                f"payload is {size} bytes as JSON, over the limit of {MAX_PAYLOAD_BYTES} "
                "(1 MiB) for one message"
            )
        return body


def parse_payload(
    raw: str | bytes | dict[str, Any], *, storable_text: bool = False
) -> GroupMessage:
    """Validate a payload from any producer; raise `InvalidPayload` naming every problem.

    `storable_text`: a dict the caller parsed from JSON text that passed
    `storable_json_text` (the importer checks each line), so its strings need no walk."""
    context = {"storable_text": True} if storable_text else None
    if isinstance(raw, str | bytes):
        text = raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw
        if storable_json_text(text):
            context = {"storable_text": True}
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # also a 5000-digit number, deep nesting
            raise InvalidPayload(f"payload is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidPayload(f"payload must be a JSON object, not {type(raw).__name__}")
    try:
        return GroupMessage.model_validate(raw, context=context)
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
