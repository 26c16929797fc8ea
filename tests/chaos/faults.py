"""The faults a chaos round can inject, each with the evidence that it really hit."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.poison import insert_odd_row, odd_rows

if TYPE_CHECKING:
    from tests.chaos.round import Round


@dataclass
class Hit:
    fault: str
    at: float
    evidence: str
    proved: bool | None = None  # set after the round, from the vendor's counters


def kill9_worker(r: Round) -> Hit:
    """kill -9 of a worker process, preferably while calls are in flight."""
    deadline = time.time() + 3
    while time.time() < deadline and not r.vendor_in_flight():
        time.sleep(0.005)
    in_flight = r.vendor_in_flight()
    pid = r.worker_child_pid()
    os.kill(pid, signal.SIGKILL)
    return Hit("kill9_worker", time.time(), f"pid {pid} killed with {in_flight} calls in flight")


def kill9_scheduler(r: Round) -> Hit:
    """kill -9 of the scheduler (perhaps between a claim and its enqueue), then a new one."""
    process = r.scheduler
    os.killpg(process.popen.pid, signal.SIGKILL)
    process.popen.wait(5)
    token, lock_ms = _pass_lock(r)  # held now: perhaps by the dead scheduler, mid-pass
    r.scheduler = r.service.start("scheduler")
    held = ""
    if token is not None:
        r.dead_pass_locks.append(token)
        held = f", reconcile pass lock held at the kill ({lock_ms / 1000:.0f}s left)"
    return Hit("kill9_scheduler", time.time(), f"exit {process.popen.returncode}{held}, restarted")


RECONCILE_PASS_LOCK = "broadcaster:reconcile:pass"


def _pass_lock(r: Round) -> tuple[bytes | None, int]:
    """The reconcile pass lock's holder token and lease left, (None, -1) when free."""
    try:
        client = r.redis.client()
        return client.get(RECONCILE_PASS_LOCK), int(client.pttl(RECONCILE_PASS_LOCK))
    except Exception:  # Redis down under another fault: nothing known
        return None, -1


def sigterm_worker(r: Round) -> Hit:
    """A deploy: SIGTERM to the workers, which finish their calls; new workers start."""
    process = r.worker
    os.killpg(process.popen.pid, signal.SIGTERM)
    code = process.popen.wait(30)
    r.worker = r.service.start("worker", "--processes", "1", "--threads", "6")
    return Hit("sigterm_worker", time.time(), f"old workers exited {code}")


def second_scheduler(r: Round) -> Hit:
    r.extra.append(r.service.start("scheduler"))
    return Hit("second_scheduler", time.time(), "two schedulers claim at once")


def redis_flushall(r: Round) -> Hit:
    keys = r.redis.client().dbsize()
    r.redis.client().flushall()
    return Hit("redis_flushall", time.time(), f"{keys} keys dropped")


def redis_restart(r: Round) -> Hit:
    r.redis.restart(down_s=random.uniform(0.2, 1.5))
    return Hit("redis_restart", time.time(), "redis-server killed and started empty")


def rabbitmq_restart(r: Round) -> Hit:
    """RabbitMQ's application stopped and started (the node stays up; durable queues and
    persistent messages kept): the scheduler's batches in flight are handed back, the
    workers' connections drop with their unacked messages, both reconnect. Rounds with
    broker="rabbitmq" only; the app is always started again."""
    from broadcaster import schedule_many
    from tests.helpers import body
    from tests.rabbitmq_vhost import restart_app

    def failed_batches() -> int:
        return sum('"enqueue_failed"' in line for line in r.service.all_lines())

    before = failed_batches()

    def while_down() -> None:
        """Jobs due now, so the scheduler claims a batch it cannot publish: handed back,
        and sent once RabbitMQ is back. Waits (5 s at most) until one was handed back."""
        names = [f"rmq-down-{r.number}-{i}" for i in range(20)]
        requests = [{"payload": body(name=name), "corp_id": "corp-a"} for name in names]
        ids = schedule_many(requests, store=r.store).job_ids
        r.names.update(zip(names, ids, strict=True))
        deadline = time.time() + 5
        while failed_batches() == before and time.time() < deadline:
            time.sleep(0.05)

    down_s = restart_app(down_s=random.uniform(0.2, 1.0), while_down=while_down)
    return Hit(
        "rabbitmq_restart",
        time.time(),
        f"RabbitMQ unreachable for {down_s:.1f}s, 20 jobs fell due meanwhile; "
        f"{failed_batches() - before} batch(es) handed back",
    )


def db_connection_loss(r: Round) -> Hit:
    """PostgreSQL: terminate every connection of the service. SQLite: a writer holds the
    database locked for a while, which the service must wait out."""
    if r.db_url.startswith("postgresql"):
        with r.engine.connect() as connection:
            killed = connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar()
        return Hit("db_connection_loss", time.time(), f"{killed} connections terminated")
    import sqlite3

    locker = sqlite3.connect(r.db_url.removeprefix("sqlite:///"), timeout=30)
    locker.execute("BEGIN IMMEDIATE")
    time.sleep(random.uniform(0.5, 2.0))
    locker.rollback()
    locker.close()
    return Hit("db_connection_loss", time.time(), "database write-locked by another process")


def db_restart(r: Round) -> Hit:
    """PostgreSQL restarted under the service (a private pgserver instance, so the
    machine's server is left alone). SQLite has no server: a write lock stands in."""
    if r.pg_server is None:
        hit = db_connection_loss(r)
        return Hit("db_restart", hit.at, f"no server to restart (SQLite): {hit.evidence}")
    import pgserver

    started = time.time()
    pgserver.pg_ctl(
        ["-w", "-m", "fast", "restart"],
        pgdata=r.pg_server.pgdata,
        user=r.pg_server.system_user,
        timeout=60,
    )
    return Hit("db_restart", time.time(), f"restarted PostgreSQL in {time.time() - started:.2f}s")


def vendor_5xx(r: Round) -> Hit:
    r.sandbox.state.faults.http_5xx = random.randint(1, 3)
    return Hit("vendor_5xx", time.time(), f"next {r.sandbox.state.faults.http_5xx} calls 502")


def vendor_hang(r: Round) -> Hit:
    r.sandbox.state.faults.hang_after_create = random.randint(1, 2)
    return Hit("vendor_hang", time.time(), "creates, then hangs past the client's timeout")


def vendor_late(r: Round) -> Hit:
    """The vendor creates the message after the client gave up on the call (`create_late`),
    yet within its processing limit, which is shorter than RECONCILE_AFTER_S: the reconciler
    must find the late mission, never send the job again."""
    faults = r.sandbox.state.faults
    faults.late_s = random.uniform(r.timeout_s + 0.5, r.max_processing_s)
    faults.create_late = random.randint(1, 2)
    return Hit(
        "vendor_late",
        time.time(),
        f"next {faults.create_late} calls created {faults.late_s:.1f}s after they arrive",
    )


# The list faults last from their moment until the round lifts them (`Round._hold_list`):
# once nothing is pending, the fault has met at least one list call, and every `unknown`
# job carries the reconciler's note, or a deadline passes. While they last, the reconciler
# may settle nothing from a refused or malformed list; once lifted, every `unknown` job
# must end settled.
LIST_REFUSED_ERRCODE = 20003


def list_refused(r: Round) -> Hit:
    """The list API refuses (no paid seat): every list call answers an errcode."""
    r.sandbox.state.faults.list_refuse_errcode = LIST_REFUSED_ERRCODE
    return Hit("list_refused", time.time(), f"every list call answers {LIST_REFUSED_ERRCODE}")


def list_malformed(r: Round) -> Hit:
    """Every successful list answer is malformed, in turn: not JSON; no `missions`;
    missions with odd time text and `msg_data` not JSON."""
    r.sandbox.state.faults.list_malformed = 10**9
    return Hit("list_malformed", time.time(), "every list answer malformed")


def list_slow(r: Round) -> Hit:
    """List answers slow, around the client's timeout (some pages time out)."""
    slow_ms = random.uniform(300, 1500)
    r.sandbox.state.faults.list_slow_ms = slow_ms
    return Hit("list_slow", time.time(), f"every list answer {slow_ms:.0f} ms late")


def lift_list_fault(r: Round, name: str) -> None:
    faults = r.sandbox.state.faults
    if name == "list_refused":
        faults.list_refuse_errcode = 0
    elif name == "list_malformed":
        faults.list_malformed = 0
    elif name == "list_slow":
        faults.list_slow_ms = 0.0


def token_invalidate(r: Round) -> Hit:
    r.sandbox.state.invalidate_tokens()
    return Hit("token_invalidate", time.time(), "every token revoked")


def force_10053(r: Round) -> Hit:
    r.sandbox.state.faults.force_10053 = 1
    r.forced_blocks += 1
    return Hit("force_10053", time.time(), "next call blocks its corp")


def malformed_rows(r: Round) -> Hit:
    """Rows another app got wrong in every way Hypothesis finds, by plain SQL, mid-run."""
    inserted: list[int] = []
    refused: list[str] = []

    @settings(
        max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(payload=bad_payloads())
    def insert(payload: str) -> None:
        # A body that happens to be valid is sent: give each a name of its own so the
        # vendor's record can be matched to its row.
        name = f"malformed-{r.number}-{len(inserted)}"
        payload = payload.replace('"name": "m"', f'"name": "{name}"')
        try:
            with r.engine.begin() as connection:
                job_id = connection.execute(
                    text(
                        "INSERT INTO broadcast_jobs (corp_id, payload, campaign) "
                        "VALUES ('corp-a', :p, 'malformed') RETURNING id"
                    ),
                    {"p": payload},
                ).scalar_one()
        except DBAPIError:  # the database itself refuses it (PostgreSQL and a NUL byte)
            refused.append(payload)
            return
        inserted.append(job_id)
        r.names[name] = job_id

    odd_kept: list[int] = []
    odd_refused: list[dict[str, object]] = []

    @settings(
        max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(odd=odd_rows(due_only=True))
    def insert_odd(odd: dict[str, object]) -> None:
        # Odd types in any producer column (issue 9): text in `priority`, blobs, reals past
        # 64 bits, blank corps, times Python cannot hold. Each must fail alone at claim
        # time, or be refused by the database; none may stall the rows claimed with it.
        name = f"odd-{r.number}-{len(odd_kept) + len(odd_refused)}"
        job_id = insert_odd_row(r.engine, name, odd, campaign="malformed")
        if job_id is None:
            odd_refused.append(odd)
            return
        odd_kept.append(job_id)
        r.names[name] = job_id

    insert()
    insert_odd()
    r.malformed_ids.extend(inserted + odd_kept)
    return Hit(
        "malformed_rows",
        time.time(),
        f"{len(inserted)} rows inserted, {len(refused)} refused by the database; "
        f"odd types: {len(odd_kept)} inserted, {len(odd_refused)} refused",
    )


def bad_payloads() -> st.SearchStrategy[str]:
    good = {
        "name": "m",
        "staff_ext_id_list": ["s"],
        "group_ext_id_list": ["g"],
        "create_staff_ext_id": "s",
        "text": "t",
    }
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=8,
    )
    mutated = st.builds(
        lambda key, value: json.dumps({**good, key: value}),
        st.sampled_from([*good, "attachments", "extra"]),
        json_values,
    )
    dropped = st.builds(
        lambda key: json.dumps({k: v for k, v in good.items() if k != key}),
        st.sampled_from(list(good)),
    )
    return st.one_of(st.text(max_size=50), json_values.map(json.dumps), mutated, dropped)


FAULTS: dict[str, Callable[[Round], Hit]] = {
    f.__name__: f
    for f in (
        kill9_worker,
        kill9_scheduler,
        sigterm_worker,
        second_scheduler,
        redis_flushall,
        redis_restart,
        rabbitmq_restart,
        db_connection_loss,
        db_restart,
        vendor_5xx,
        vendor_hang,
        vendor_late,
        list_refused,
        list_malformed,
        list_slow,
        token_invalidate,
        force_10053,
        malformed_rows,
    )
}
REDIS_FAULTS = {"redis_flushall", "redis_restart"}
RABBITMQ_FAULTS = {"rabbitmq_restart"}
"""Faults only a round with broker="rabbitmq" can take."""
LIST_FAULTS = {
    "list_refused": "list_refuse_errcode",
    "list_malformed": "list_malformed",
    "list_slow": "list_slow_ms",
}
"""The list faults, and the sandbox's `faults_served` counter that proves each fired."""
BLOCKING_LIST_FAULTS = {"list_refused", "list_malformed"}
"""While one of these lasts, no list read can settle a job."""
