"""broadcaster: scheduled WeCom customer-group mass messages through the Weiban OpenAPI.

The flow, and the package that holds each step:

    producers (produce/: the Python API and import; or plain SQL)
        -> broadcast_jobs table (jobs/: states, tables, the store by caller, screening)
        -> scheduler (scheduler/: claims due rows, enqueues ids through broker/)
        -> Dramatiq actors (worker/: the retry policy in jobs/policy.py, quota/)
        -> Weiban OpenAPI (vendor/: client, payload, the sandbox that stands in for it)

Beside them: cli/ (every command), ops/ (status report, readiness, doctor, the demo),
and the shared core here (settings, errors, logs, db, bootstrap, ports, corps).

The public Python API for producers is re-exported here.

The public Python API for producers is re-exported here.
"""

from broadcaster.jobs.states import JobStatus
from broadcaster.produce.api import JobRequest, schedule_broadcast, schedule_many

__all__ = ["JobRequest", "JobStatus", "schedule_broadcast", "schedule_many"]
