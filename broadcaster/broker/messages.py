"""The broker message the scheduler sends and the worker's actor receives.

Defined once here so the scheduler can enqueue without importing the worker (and its
Weiban client). The message carries only the job id: the database is the truth, and a
lost or doubled message costs nothing (DESIGN §2).
"""

from __future__ import annotations

from dramatiq import Message

ACTOR_NAME = "send_broadcast"
QUEUE_NAME = "broadcasts"


def send_broadcast_message(job_id: int) -> Message:
    return Message(
        queue_name=QUEUE_NAME, actor_name=ACTOR_NAME, args=(job_id,), kwargs={}, options={}
    )
