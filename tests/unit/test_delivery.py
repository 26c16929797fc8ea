"""The outcome table of DESIGN §4, walked row by row, and the vendor's answers sorted."""

from __future__ import annotations

import httpx
import pytest

from broadcaster.errors import (
    CredentialsRejected,
    OutcomeUnknown,
    TokenRejected,
    VendorBlocked,
    VendorBusy,
    VendorError,
    VendorRejected,
    VendorThrottled,
    VendorUnreachable,
)
from broadcaster.jobs.policy import backoff_s, decide
from broadcaster.jobs.states import JobStatus, Outcome
from broadcaster.vendor import (
    Answer,
    classify_errcode,
    classify_transport,
    read_reply,
    retry_after_s,
)

S, F, U = JobStatus.SCHEDULED, JobStatus.FAILED, JobStatus.UNKNOWN


@pytest.mark.parametrize(
    ("error", "attempts_before", "policy", "status", "counts", "retry_in"),
    [
        (None, 0, "unknown", JobStatus.SENT, True, None),
        (VendorUnreachable("refused"), 0, "unknown", S, True, 4.0),
        (VendorUnreachable("refused"), 4, "unknown", F, True, None),  # 5th of 5
        (TokenRejected("10001 twice", errcode=10001), 1, "unknown", S, True, 8.0),
        (VendorBusy("10052", errcode=10052), 4, "unknown", S, False, 1.0),
        (VendorBlocked("10053", errcode=10053), 4, "unknown", S, False, 60.0),
        (CredentialsRejected("bad secret"), 0, "unknown", S, False, 60.0),
        (VendorThrottled("429", retry_after_s=7.0), 4, "unknown", S, False, 7.0),
        (VendorRejected("bad body", errcode=20001), 0, "unknown", F, True, None),
        (OutcomeUnknown("read timeout"), 0, "unknown", U, True, None),
        (OutcomeUnknown("read timeout"), 0, "retry", S, True, 4.0),
        (OutcomeUnknown("read timeout"), 4, "retry", F, True, None),
    ],
)
def test_each_outcome_leads_to_its_documented_next_state(
    error: VendorError | None,
    attempts_before: int,
    policy: str,
    status: JobStatus,
    counts: bool,
    retry_in: float | None,
) -> None:
    decision = decide(
        error,
        attempts_before=attempts_before,
        max_attempts=5,
        on_ambiguous=policy,  # type: ignore[arg-type]
        backoff=lambda n: 4.0 * 2 ** (n - 1),
        block_s=60.0,
    )
    assert (decision.status, decision.counts_attempt, decision.retry_in_s) == (
        status,
        counts,
        retry_in,
    )
    if error is not None:
        assert decision.error and str(error) in decision.error
        assert decision.errcode == error.errcode


@pytest.mark.parametrize(
    ("error", "policy", "stored"),
    [
        (None, "unknown", "sent"),
        (VendorUnreachable("refused"), "unknown", "not_sent"),
        (VendorError("unforeseen"), "unknown", "not_sent"),
        (TokenRejected("10001 twice", errcode=10001), "unknown", "token"),
        (VendorBusy("10052", errcode=10052), "unknown", "busy"),
        (VendorBlocked("10053", errcode=10053), "unknown", "blocked"),
        (VendorThrottled("429", retry_after_s=7.0), "unknown", "throttled"),
        (CredentialsRejected("bad secret"), "unknown", "credentials"),
        (VendorRejected("bad body", errcode=20001), "unknown", "rejected"),
        (OutcomeUnknown("read timeout"), "unknown", "ambiguous"),
        (OutcomeUnknown("read timeout"), "retry", "ambiguous"),
    ],
)
def test_each_outcome_is_recorded_under_its_stored_name(
    error: VendorError | None, policy: str, stored: str
) -> None:
    decision = decide(
        error,
        attempts_before=0,
        max_attempts=5,
        on_ambiguous=policy,  # type: ignore[arg-type]
        backoff=lambda n: 1.0,
    )
    assert isinstance(decision.outcome, Outcome) and decision.outcome == stored


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    low = [backoff_s(n, base_s=5, max_s=60, rng=lambda: 0.0) for n in range(1, 7)]
    high = [backoff_s(n, base_s=5, max_s=60, rng=lambda: 1.0) for n in range(1, 7)]
    assert high == [5, 10, 20, 40, 60, 60]
    assert low == [2.5, 5, 10, 20, 30, 30]


@pytest.mark.parametrize(
    ("errcode", "kind"),
    [
        (0, None),
        (10001, TokenRejected),
        (10052, VendorBusy),
        (10053, VendorBlocked),
        (20001, VendorRejected),
        (10002, VendorRejected),
        (-1, VendorRejected),
    ],
)
def test_errcodes_are_sorted_by_what_to_do_next(errcode: int, kind: type | None) -> None:
    error = classify_errcode(errcode, "说明", "POST /x")
    assert (type(error) if error else None) is kind
    if error is not None:
        assert error.errcode == errcode and "说明" in str(error)


REQUEST = httpx.Request("POST", "https://v/open-api/x?access_token=SECRET-TOKEN")


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused", request=REQUEST), VendorUnreachable),
        (httpx.ConnectTimeout("timed out", request=REQUEST), VendorUnreachable),
        (httpx.PoolTimeout("no connection", request=REQUEST), VendorUnreachable),
        (httpx.ReadTimeout("timed out", request=REQUEST), OutcomeUnknown),
        (httpx.WriteTimeout("timed out", request=REQUEST), OutcomeUnknown),
        (httpx.RemoteProtocolError("Server disconnected", request=REQUEST), OutcomeUnknown),
        (httpx.ReadError("Connection reset by peer", request=REQUEST), OutcomeUnknown),
    ],
)
def test_transport_errors_split_into_not_sent_and_maybe_sent(
    exc: httpx.HTTPError, kind: type
) -> None:
    error = classify_transport(exc, "POST /open-api/customer_group_msg/add", budget_s=10)
    assert type(error) is kind
    assert "SECRET-TOKEN" not in str(error)


@pytest.mark.parametrize(
    ("status", "content", "kind"),
    [
        (502, b"<html>bad gateway</html>", OutcomeUnknown),
        (503, b"", OutcomeUnknown),
        (200, b"<html>not json</html>", OutcomeUnknown),
        (200, b"\xff\xfe not utf-8", OutcomeUnknown),
        (200, b'{"no": "errcode"}', OutcomeUnknown),
        (200, b'{"errcode": "ok"}', OutcomeUnknown),
        (200, b'{"errcode": true}', OutcomeUnknown),
        (200, b'{"errcode": 1.5}', OutcomeUnknown),
        (200, b"[0]", OutcomeUnknown),
        (200, '{"errcode": "²"}'.encode(), OutcomeUnknown),
        (200, b'{"errcode": "--5"}', OutcomeUnknown),
        (200, b'{"errcode": ' + b"9" * 5000 + b"}", OutcomeUnknown),
        (200, b"[" * 100_000 + b"]" * 100_000, OutcomeUnknown),
        (302, b"", VendorUnreachable),
        (404, b"not found", VendorUnreachable),
        (429, b"slow down", VendorThrottled),
    ],
)
def test_odd_answers_are_classified(status: int, content: bytes, kind: type) -> None:
    with pytest.raises(kind):
        read_reply(Answer(status, httpx.Headers(), content), "POST /x")


def test_an_errcode_spelled_as_digits_is_read_as_the_number() -> None:
    reply = read_reply(Answer(200, httpx.Headers(), b'{"errcode": "0", "errmsg": "ok"}'), "x")
    assert (reply.errcode, reply.errmsg) == (0, "ok")


def test_an_errmsg_that_is_not_text_is_kept_as_json_text() -> None:
    reply = read_reply(Answer(200, httpx.Headers(), b'{"errcode": 20001, "errmsg": [1]}'), "x")
    assert reply.errmsg == "[1]"


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, 5.0),
        ("7", 7.0),
        ("0", 1.0),
        ("99999999999999999999", 3600.0),
        ("soon", 5.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 1.0),  # in the past
        ("-3", 5.0),
        (b"\xb2", 5.0),  # latin-1 for '²', which str.isdigit takes and float refuses
    ],
)
def test_retry_after_is_honoured_within_bounds(header: str | bytes | None, seconds: float) -> None:
    headers = httpx.Headers({"Retry-After": header} if header is not None else {})
    assert retry_after_s(headers) == seconds
