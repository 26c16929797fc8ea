"""The claim loop of `SchedulerRunner` on a fake service: it ticks again as soon as the
service says so, never sleeps past the poll interval (it once slept APScheduler's 30 s
backstop when a fast tick's re-arm lost a race), honours a wake-up that arrives during a
tick, and stops promptly. Real time, but every wait is on a condition with a deadline."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from scheduler.runner import SchedulerRunner
from scheduler.service import TickReport
from tests.helpers import wait_until


class FakeService:
    def __init__(self, next_in_s: float, *, block_first: bool = False) -> None:
        self.settings = SimpleNamespace(
            scheduler_sweep_interval_s=3600,
            reconcile_interval_s=3600,
            schedules_interval_s=3600,
        )
        self.next_in_s = next_in_s
        self.started: list[float] = []
        self.in_first = threading.Event()
        self.release_first = threading.Event()
        if not block_first:
            self.release_first.set()

    def tick(self) -> TickReport:
        self.started.append(time.monotonic())
        if len(self.started) == 1:
            self.in_first.set()
            self.release_first.wait(10)
        return TickReport()

    def sweep(self) -> None:
        pass

    def next_wakeup(self, report: TickReport, now: datetime) -> datetime:
        return now + timedelta(seconds=self.next_in_s)


def running(service: FakeService) -> tuple[SchedulerRunner, threading.Thread]:
    fake: Any = service
    runner = SchedulerRunner(fake)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    return runner, thread


def stop(runner: SchedulerRunner, thread: threading.Thread) -> float:
    started = time.monotonic()
    runner.shutdown()
    thread.join(10)
    assert not thread.is_alive()
    return time.monotonic() - started


def test_fast_ticks_follow_each_other_at_the_pace_the_service_asks() -> None:
    service = FakeService(next_in_s=0.01)
    runner, thread = running(service)
    try:
        wait_until(lambda: runner.ticks >= 100, timeout=10)
    finally:
        stop(runner, thread)
    gaps = [b - a for a, b in zip(service.started, service.started[1:], strict=False)]
    assert max(gaps) < 1.0, f"the loop slept {max(gaps):.2f}s between ticks"


def test_a_wake_up_during_a_tick_starts_the_next_tick_at_once() -> None:
    service = FakeService(next_in_s=30, block_first=True)
    runner, thread = running(service)
    try:
        assert service.in_first.wait(5)
        runner.wake()  # e.g. a NOTIFY for a row inserted while the tick ran
        service.release_first.set()
        wait_until(lambda: runner.ticks >= 2, timeout=5)
        assert service.started[1] - service.started[0] < 5
    finally:
        stop(runner, thread)


def test_a_wake_up_between_ticks_cuts_the_sleep_short() -> None:
    service = FakeService(next_in_s=30)
    runner, thread = running(service)
    try:
        wait_until(lambda: runner.ticks >= 1, timeout=5)
        runner.wake()
        wait_until(lambda: runner.ticks >= 2, timeout=5)
    finally:
        stop(runner, thread)


def test_shutdown_does_not_wait_for_the_next_poll() -> None:
    service = FakeService(next_in_s=30)
    runner, thread = running(service)
    wait_until(lambda: runner.ticks >= 1, timeout=5)
    assert stop(runner, thread) < 5
