"""The scheduler's and the workers' own metrics (`broadcaster.process_metrics`), scraped
over HTTP from prometheus_client's server; the workers' from real processes through the
multiprocess directory, summed on one port."""

from __future__ import annotations

import multiprocessing
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import values
from prometheus_client.parser import text_string_to_metric_families

from broadcaster.errors import OutcomeUnknown, SettingsError, VendorBusy, VendorRejected
from broadcaster.jobs.states import Outcome
from broadcaster.process_metrics import (
    MULTIPROC_ENV,
    SchedulerMetrics,
    TimedVendor,
    WorkerMetrics,
    call_outcome,
    mark_process_dead,
    multiprocess_registry,
    prepare_multiprocess_dir,
    serve,
    serving,
)
from broadcaster.reconcile.reconciler import CorpPass, PassReport
from scheduler.service import TickReport


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_scheduler_figures_over_http() -> None:
    metrics = SchedulerMetrics()
    metrics.tick(TickReport(enqueued=7, failed=1, expired=2), 0.01)
    metrics.tick(TickReport(enqueued=3), 0.2)
    metrics.tick_failed(0.5)
    metrics.reconcile_pass(
        PassReport(
            corps=[
                CorpPass("corp-a", found=[1, 2], resent=[3]),
                CorpPass("corp-b", found=[4], failed=[5], unsettled={6: "list unreadable"}),
            ]
        )
    )
    metrics.reconcile_pass(PassReport(skipped="another scheduler is reconciling"))
    metrics.reconcile_failed()
    with serving(metrics.registry, 0) as server:
        assert server is not None
        got = scrape(server.port)
    assert got[("broadcaster_scheduler_ticks_total", (("result", "ok"),))] == 2
    assert got[("broadcaster_scheduler_ticks_total", (("result", "error"),))] == 1
    assert got[("broadcaster_scheduler_tick_seconds_count", ())] == 3
    claimed = "broadcaster_scheduler_claimed_jobs_total"
    assert got[(claimed, (("result", "enqueued"),))] == 10
    assert got[(claimed, (("result", "failed"),))] == 1
    assert got[(claimed, (("result", "expired"),))] == 2
    passes = "broadcaster_scheduler_reconcile_passes_total"
    assert [got[(passes, (("result", r),))] for r in ("done", "skipped", "error")] == [1, 1, 1]
    verdicts = "broadcaster_scheduler_reconciled_jobs_total"
    assert {v: got[(verdicts, (("verdict", v),))] for v in ("found", "resent", "failed")} == {
        "found": 3,
        "resent": 1,
        "failed": 1,
    }
    assert got[(verdicts, (("verdict", "unsettled"),))] == 1


def test_serving_nothing_without_a_port_and_one_line_on_a_taken_one() -> None:
    metrics = SchedulerMetrics()
    with serving(metrics.registry, None) as server:
        assert server is None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SettingsError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve(metrics.registry, port)


def test_call_outcomes_are_the_policys() -> None:
    assert call_outcome(None) == Outcome.SENT
    assert call_outcome(VendorRejected("no", errcode=40058)) == Outcome.REJECTED
    assert call_outcome(OutcomeUnknown("timed out")) == Outcome.AMBIGUOUS
    assert call_outcome(VendorBusy("10052", errcode=10052)) == Outcome.BUSY


class _Vendor:
    """Answers by the body: ok, rejected, ambiguous, or a crash."""

    def create_group_message(self, corp_id: str, body: str) -> None:
        if body == "rejected":
            raise VendorRejected("refused", errcode=40058)
        if body == "ambiguous":
            raise OutcomeUnknown("timed out after sending")
        if body == "crash":
            raise RuntimeError("a bug")

    def close(self) -> None:
        pass


def _worker_process(bodies: list[str]) -> None:
    """A worker process's part: metrics from the inherited directory, calls through
    TimedVendor, each message's outcome counted."""
    metrics = WorkerMetrics.in_this_process()
    assert metrics is not None, "the supervisor's directory is inherited"
    vendor = TimedVendor(_Vendor(), metrics)
    for body in bodies:
        try:
            vendor.create_group_message("corp-a", body)
            metrics.handled(Outcome.SENT)
        except (VendorRejected, OutcomeUnknown) as error:
            metrics.handled(call_outcome(error))
        except RuntimeError:
            metrics.handled(Outcome.AMBIGUOUS)
    vendor.close()  # the rest of the client passes through


@pytest.fixture
def isolated_values(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """This process's value class and environment restored after the test."""
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path / "unused"))
    monkeypatch.delenv(MULTIPROC_ENV)
    yield str(tmp_path / "metrics")


def test_worker_processes_summed_on_one_port_with_the_schedulers(isolated_values: str) -> None:
    stale = Path(isolated_values)
    stale.mkdir()
    (stale / "counter_999999.db").write_bytes(b"a previous run's")
    path = prepare_multiprocess_dir(isolated_values)
    assert os.environ[MULTIPROC_ENV] == path and not list(stale.glob("*.db"))
    scheduler = SchedulerMetrics()  # `run`: in the supervisor's process, in memory
    scheduler.tick(TickReport(enqueued=5), 0.01)
    context = multiprocessing.get_context("spawn")
    plans = [["ok", "ok", "rejected"], ["ok", "ambiguous", "crash"]]
    children = [context.Process(target=_worker_process, args=(plan,)) for plan in plans]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
        mark_process_dead(child.pid)  # counters of a dead process still count
    registry = multiprocess_registry(path, registry=scheduler.registry)
    with serving(registry, 0) as server:
        assert server is not None
        got = scrape(server.port)
    calls = "broadcaster_worker_vendor_calls_total"
    assert {
        outcome: got[(calls, (("outcome", outcome),))]
        for outcome in ("sent", "rejected", "ambiguous", "crashed")
    } == {"sent": 3, "rejected": 1, "ambiguous": 1, "crashed": 1}
    assert got[("broadcaster_worker_vendor_call_seconds_count", ())] == 6
    messages = "broadcaster_worker_messages_total"
    assert got[(messages, (("outcome", "sent"),))] == 3
    assert got[(messages, (("outcome", "ambiguous"),))] == 2
    claimed = "broadcaster_scheduler_claimed_jobs_total"
    assert got[(claimed, (("result", "enqueued"),))] == 5, "the scheduler's on the same port"


def test_no_metrics_dir_no_worker_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    assert WorkerMetrics.in_this_process() is None
