"""The exception tree. Every error a user can meet is one of these, with a message that
names what is wrong and how to fix it; the CLI prints it as one line.

    BroadcasterError
     ├── SettingsError            a setting is missing or malformed
     ├── InvalidPayload           a vendor body fails validation
     ├── InvalidJob               a job's own fields (send_at, corp, ...) are wrong
     ├── JobStoreError            the database refused or is unreachable
     │    └── JobNotFound
     ├── BrokerUnavailable        Redis (the Dramatiq broker) is unreachable
     └── StateConflict            an operation does not fit the job's current status
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
