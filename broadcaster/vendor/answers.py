"""What the vendor's answers mean: HTTP status, body and errcode sorted into success
or one `VendorError`, once, so the actor decides from the type alone."""

from __future__ import annotations

import contextlib
import email.utils
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from broadcaster.errors import (
    OutcomeUnknown,
    TokenRejected,
    VendorBlocked,
    VendorBusy,
    VendorError,
    VendorRejected,
    VendorThrottled,
    VendorUnreachable,
)
from broadcaster.logs import redact_text
from broadcaster.vendor.constants import (
    DELTA_SECONDS,
    ERR_BLOCKED,
    ERR_BUSY,
    ERR_TOKEN,
    ERRCODE_DIGITS,
    MAX_ERRMSG_CHARS,
    THROTTLE_DEFAULT_S,
    THROTTLE_MAX_S,
    TOKEN_TTL_BOUNDS_S,
)
from broadcaster.vendor.deadline import deadline_passed


def classify_errcode(errcode: int, errmsg: str, what: str) -> VendorError | None:
    """None for success, else the error that says what to do next."""
    if errcode == 0:
        return None
    detail = f"{what}: errcode {errcode} {errmsg}".strip()
    kinds: dict[int, type[VendorError]] = {
        ERR_TOKEN: TokenRejected,
        ERR_BUSY: VendorBusy,
        ERR_BLOCKED: VendorBlocked,
    }
    return kinds.get(errcode, VendorRejected)(detail, errcode=errcode, errmsg=errmsg)


def classify_transport(exc: httpx.HTTPError, what: str, *, budget_s: float) -> VendorError:
    """Did the request certainly not reach the vendor, or may it have been processed?"""
    late = deadline_passed()
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        reason = f"no connection within the call's {budget_s:g} s" if late else reason_of(exc)
        return VendorUnreachable(f"{what}: not sent, {type(exc).__name__}: {reason}")
    if late:
        return OutcomeUnknown(
            f"{what}: no complete answer within the call's {budget_s:g} s ({type(exc).__name__})"
        )
    return OutcomeUnknown(f"{what}: no answer, {type(exc).__name__}: {reason_of(exc)}")


def reason_of(exc: Exception) -> str:
    return redact_text(str(exc).split("\n")[0][:200]) or type(exc).__name__


@dataclass(frozen=True)
class Answer:
    """What came back over HTTP, read in full (and no more than MAX_ANSWER_BYTES)."""

    status: int
    headers: httpx.Headers
    body: bytes


@dataclass(frozen=True)
class Reply:
    """A readable vendor answer: its errcode, its errmsg (masked) and the whole object."""

    errcode: int
    errmsg: str
    data: dict[str, Any]


def read_reply(
    answer: Answer, what: str, *, unreadable: type[VendorError] = OutcomeUnknown
) -> Reply:
    """The vendor's JSON answer, or the error its HTTP status implies.

    3xx (redirects are not followed) and 4xx other than 429 come from something in front
    of the API that turned the request away: not processed, so sent again with backoff
    (an attempt used; `failed` when they run out). 429 is a rate limit: wait for its
    Retry-After, no attempt used. 5xx, or a 200 we cannot read, may follow a processed
    request: the outcome is unknown. A read API passes `unreadable` (its own error for a
    200 we cannot read: nothing was changed, but nothing can be learnt from it either).
    """
    status = answer.status
    if status == 429:
        wait_s = retry_after_s(answer.headers)
        raise VendorThrottled(
            f"{what}: HTTP 429 from the vendor or its gateway, not processed; "
            f"sending again in {wait_s:g} s",
            retry_after_s=wait_s,
        )
    if status >= 500:
        raise OutcomeUnknown(f"{what}: HTTP {status} from the vendor")
    if status >= 300:
        kind = "a redirect, not followed" if status < 400 else "refused"
        raise VendorUnreachable(
            f"{what}: HTTP {status} from the vendor ({kind}), not processed; check WEIBAN_BASE_URL"
        )
    try:
        data = json.loads(answer.body.decode("utf-8"))
    except (ValueError, RecursionError):  # not JSON, not UTF-8, a 5000-digit number, nesting
        raise unreadable(f"{what}: unreadable answer (not JSON)") from None
    errcode = _errcode(data.get("errcode") if isinstance(data, dict) else None)
    if errcode is None:
        raise unreadable(f"{what}: answer without a readable errcode")
    errmsg = data.get("errmsg", "")
    errmsg = redact_text(errmsg if isinstance(errmsg, str) else json.dumps(errmsg))
    return Reply(errcode, errmsg[:MAX_ERRMSG_CHARS], data)


def _errcode(value: Any) -> int | None:
    """An integer errcode; digits in a string are taken as the number they spell (a
    gateway that re-encodes JSON may quote it). Anything else is unreadable."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and ERRCODE_DIGITS.fullmatch(value.strip()):
        return int(value)
    return None


def retry_after_s(headers: httpx.Headers) -> float:
    """Retry-After as seconds (delta or HTTP date), bounded; absent or odd: the default."""
    raw = headers.get("retry-after", "").strip()
    seconds: float | None = None
    if DELTA_SECONDS.fullmatch(raw):
        seconds = float(raw[:8])
    elif raw:
        with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
            when = email.utils.parsedate_to_datetime(raw)
            seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds is None:
        return THROTTLE_DEFAULT_S
    return min(THROTTLE_MAX_S, max(1.0, seconds))


def token_ttl_s(value: Any) -> int:
    """The token's lifetime from `expires_in`, within sane bounds (odd: the default)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        low, high = TOKEN_TTL_BOUNDS_S
        return int(min(high, max(low, value)))
    return 7200
