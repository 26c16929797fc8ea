"""The exception tree. Every error a user can meet is one of these, with a message that
names what is wrong and how to fix it; the CLI prints it as one line.

    BroadcasterError
     ├── SettingsError            a setting is missing or malformed
     ├── InvalidPayload           a vendor body fails validation
     ├── InvalidJob               a job's own fields (send_at, corp, ...) are wrong
     ├── JobStoreError            the database refused or is unreachable
     │    └── JobNotFound
     ├── BrokerUnavailable        Redis (the Dramatiq broker) is unreachable
     ├── StateConflict            an operation does not fit the job's current status
     ├── QuotaWait                no quota slot within the caller's patience (not a
     │                            failure: the caller retries after `retry_after_s`)
     └── VendorError              the Weiban call did not end with errcode 0
          ├── VendorUnreachable   certainly not sent (connect error, refused, DNS)
          ├── TokenRejected       10001: the access token is bad or expired
          ├── VendorBusy          10052: too many calls in flight for the corp
          ├── VendorBlocked       10053: frequency exceeded, the corp is blocked a while
          ├── VendorThrottled     HTTP 429 (a gateway's rate limit): not processed, wait
          ├── VendorRejected      any other errcode: a business error, do not retry
          ├── OutcomeUnknown      read timeout, reset after sending, 5xx: may exist
          ├── VendorAnswerUnreadable a read API's answer we cannot read: settles nothing
          └── CredentialsRejected the token API refused corp_id/secret

Messages never contain a secret, a token or a URL that carries one.

Three exceptions are kept out of the tree on purpose, as signals inside one module that
never reach a caller: `ops.readiness.Stopped` (told to stop while waiting; a handler of
`BroadcasterError` must not swallow it), `jobs.screening.Unfit` (one column's problem,
gathered into the row's reason) and the vendor client's `_AnswerTooLarge` (becomes
`OutcomeUnknown`).
"""

from __future__ import annotations


class BroadcasterError(Exception):
    """Base of every error broadcaster raises on purpose."""


class SettingsError(BroadcasterError):
    """A setting is missing or malformed."""


class InvalidPayload(BroadcasterError):
    """The message body does not match what the vendor accepts."""


class InvalidJob(BroadcasterError):
    """A job's fields other than the payload are wrong."""


class JobStoreError(BroadcasterError):
    """The job database refused an operation or could not be reached."""


class JobNotFound(JobStoreError):
    """No job has this id."""


class BrokerUnavailable(BroadcasterError):
    """The Redis broker could not be reached."""


class StateConflict(BroadcasterError):
    """The job's current status does not allow this operation."""


class QuotaWait(BroadcasterError):
    """No quota slot within the caller's patience: try again after `retry_after_s`.
    `blocked`: the corp is paused (a vendor block in force), not merely busy."""

    def __init__(self, retry_after_s: float, blocked: bool = False) -> None:
        super().__init__(retry_after_s, blocked)  # args as given: pickles and copies back
        self.retry_after_s = retry_after_s
        self.blocked = blocked

    def __str__(self) -> str:
        why = "the corp is blocked by the vendor" if self.blocked else "no quota slot free"
        return f"{why}: try again in {self.retry_after_s:.3f}s"


class VendorError(BroadcasterError):
    """The vendor call did not succeed. `errcode`/`errmsg` are the vendor's when it answered."""

    errcode: int | None = None
    errmsg: str = ""

    def __init__(self, message: str, *, errcode: int | None = None, errmsg: str = "") -> None:
        super().__init__(message)
        self.errcode = errcode
        self.errmsg = errmsg


class VendorUnreachable(VendorError):
    """The request certainly did not reach the vendor: safe to send again."""


class TokenRejected(VendorError):
    """errcode 10001: refresh the token once and retry."""


class VendorBusy(VendorError):
    """errcode 10052: the corp has too many calls in flight (maybe from other apps)."""


class VendorBlocked(VendorError):
    """errcode 10053: the corp exceeded a frequency limit and is blocked for a while."""


class VendorThrottled(VendorError):
    """HTTP 429 from the vendor or a gateway in front of it: the request was turned away
    unprocessed. Wait `retry_after_s` (its Retry-After), then send again; no attempt used."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class VendorRejected(VendorError):
    """A business error: the vendor refused this message; sending again will not help."""


class OutcomeUnknown(VendorError):
    """The request may have been processed: the message may exist at the vendor."""


class VendorAnswerUnreadable(VendorError):
    """A read API (the list of created missions) answered something we cannot read: not
    JSON, no errcode, no list of missions. For a read, an answer we cannot read settles
    nothing: no job is decided from it, and the call may be made again later."""


class CredentialsRejected(VendorError):
    """The token API refused the corp's credentials."""
