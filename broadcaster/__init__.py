"""broadcaster: scheduled WeCom customer-group mass messages through the Weiban OpenAPI.

The flow, and the module that holds each step:

    producers (producer.py, importer.py, plain SQL)
        -> broadcast_jobs table (schema.py, store/, screening.py for odd rows)
        -> scheduler (scheduler/: claims due rows, enqueues ids via dispatch.py)
        -> Dramatiq actors (worker/)
        -> Weiban OpenAPI

The public Python API for producers is re-exported here.
"""

from broadcaster.producer import JobRequest, schedule_broadcast, schedule_many
from broadcaster.status import JobStatus

__all__ = ["JobRequest", "JobStatus", "schedule_broadcast", "schedule_many"]
