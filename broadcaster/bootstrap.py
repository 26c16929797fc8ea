"""One bootstrap: settings in, the parts every entry point wires together out.

The scheduler, the worker, the CLI, the demo and the Python API all need some of: the
database engine, the job store (with the default corp), Redis, the corps, the quota and
the vendor client. Each is built here, once per `Bootstrap`, and only when first asked
for, so a command that only reads jobs never touches Redis. A rule about wiring (the
slot's lease, the default corp, waiting for a dependency) therefore lives in one place.

`wait` turns the checks into patient ones: a service started before its database or
Redis logs one line per try and carries on when they appear (`readiness.wait_for`).
Without it, a missing dependency is one clear error at once, as the CLI wants.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from functools import cached_property
from typing import TypeVar

import redis
from sqlalchemy import Engine

from broadcaster.broker.dispatch import Dispatcher, make_broker
from broadcaster.broker.rabbitmq import RabbitDispatcher
from broadcaster.corps import CorpDirectory, QuotaLimits
from broadcaster.db import make_engine
from broadcaster.jobs.store import JobStore
from broadcaster.ops.readiness import check_schema, wait_for
from broadcaster.ports import Dispatch
from broadcaster.quota.limiter import RedisQuota
from broadcaster.reconcile.reconciler import PassLock, ReconcileConfig, Reconciler
from broadcaster.redis_conn import connect, resolve_redis_url
from broadcaster.settings import Settings
from broadcaster.vendor import WeibanClient, slot_lease_s

T = TypeVar("T")


class Bootstrap:
    def __init__(self, settings: Settings, *, wait: threading.Event | None = None) -> None:
        self.settings = settings
        self._stop = wait

    def _ready(self, attempt: Callable[[], T], what: str) -> T:
        """Run a readiness check: once (raising its one-line error), or, when waiting,
        until it passes or the process is told to stop (`readiness.Stopped`)."""
        return attempt() if self._stop is None else wait_for(attempt, what, self._stop)

    @cached_property
    def engine(self) -> Engine:
        """The database, unchecked: `db upgrade` uses it before any table exists."""
        return make_engine(self.settings.database_url)

    @cached_property
    def store(self) -> JobStore:
        """The job tables, checked first: the file exists (never created here), the server
        answers, the schema is at head; else one line saying to run `db upgrade`."""
        self._ready(lambda: check_schema(self.engine), "database")
        return JobStore(self.engine, default_corp=self.settings.weiban_corp_id)

    @cached_property
    def redis_url(self) -> str:
        """REDIS_URL, or the embedded server this process starts when it is unset (the
        supervisor hands that URL to its worker processes in their settings)."""
        return resolve_redis_url(self.settings)

    @cached_property
    def redis(self) -> redis.Redis:
        url = self.redis_url
        return self._ready(lambda: connect(url), "redis")

    @cached_property
    def dispatcher(self) -> Dispatch:
        """The scheduler's way to the workers: RabbitMQ with confirmed batches when
        BROKER_URL is set (checked, or waited for, like the database), else Redis."""
        url = self.settings.broker_url
        if url is None:
            return Dispatcher(make_broker(self.redis))
        dispatcher = RabbitDispatcher(url)
        self._ready(dispatcher.connect, "broker")
        return dispatcher

    @cached_property
    def corps(self) -> CorpDirectory:
        return CorpDirectory(self.settings)

    @cached_property
    def quota(self) -> RedisQuota:
        settings = self.settings
        return RedisQuota(
            self.redis,
            self.corps.limits,
            slot_lease_s=slot_lease_s(settings.weiban_timeout_s),
            block_s=settings.weiban_block_s,
            block_max_s=settings.weiban_block_max_s,
        )

    @cached_property
    def read_quota(self) -> RedisQuota:
        """The list API's own bucket per corp, at DELIVERY_READ_SHARE of the corp's
        limits: the rest stays for the corp's other apps reading the same API."""
        settings = self.settings
        share = settings.delivery_read_share

        def limits(corp_id: str) -> QuotaLimits:
            full = self.corps.limits(corp_id)
            return replace(full, headroom=full.headroom * share)

        return RedisQuota(
            self.redis,
            limits,
            slot_lease_s=slot_lease_s(settings.weiban_timeout_s),
            block_s=settings.weiban_block_s,
            block_max_s=settings.weiban_block_max_s,
        )

    @cached_property
    def reconciler(self) -> Reconciler:
        settings = self.settings
        config = ReconcileConfig(
            on_ambiguous=settings.weiban_on_ambiguous,
            after_s=settings.reconcile_after_s,
            track_s=settings.delivery_track_s,
        )
        # Renewed after every page and span: a killed scheduler holds the pass this long.
        lease_s = max(60.0, 2 * settings.reconcile_interval_s)
        return Reconciler(
            self.store,
            self.vendor,
            self.read_quota,
            config,
            lock=PassLock(self.redis, lease_s=lease_s),
        )

    @cached_property
    def vendor(self) -> WeibanClient:
        settings = self.settings
        return WeibanClient(
            settings.weiban_base_url, self.corps, self.redis, timeout_s=settings.weiban_timeout_s
        )

    def check_vendor(self) -> None:
        """The default corp can get a token: the base URL answers and its secret is right
        (waited for like the others when waiting)."""
        corp_id = self.settings.weiban_corp_id
        if corp_id and self.settings.weiban_secret is not None:
            self._ready(lambda: self.vendor.tokens.get(corp_id), "vendor")
