"""Run broadcaster as a user does: real OS processes, real Redis, a real database, and the
sandbox vendor over HTTP. Logs of every process are kept for assertions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any

from broadcaster import schedule_many
from broadcaster.jobs.store import JobStore
from broadcaster.vendor.sandbox import SandboxServer
from tests.helpers import body


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in list(self.lines):
            if f'"{name}"' in line:
                try:
                    found.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return found


class Service:
    """`broadcaster` commands as child processes sharing one environment."""

    def __init__(self, db_url: str, redis_url: str, sandbox: SandboxServer, **env: str) -> None:
        self.env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "REDIS_URL": redis_url,
            "WEIBAN_BASE_URL": sandbox.url,
            "WEIBAN_CORP_ID": "corp-a",
            "WEIBAN_SECRET": "sandbox-secret",
            "SCHEDULER_POLL_INTERVAL_S": "0.1",
            "SCHEDULER_SWEEP_INTERVAL_S": "0.5",
            "LOG_LEVEL": "INFO",
            "MONTHLY_CAP_POLICY": "off",  # thousands of messages to the same two groups
            **env,
        }
        self.cwd = tempfile.mkdtemp(prefix="broadcaster-sys-")
        self.processes: list[Process] = []

    def start(self, *args: str) -> Process:
        popen = subprocess.Popen(
            [sys.executable, "-m", "broadcaster.cli.main", *args],
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        process = Process(" ".join(args), popen)
        threading.Thread(target=self._drain, args=(process,), daemon=True).start()
        self.processes.append(process)
        return process

    @staticmethod
    def _drain(process: Process) -> None:
        assert process.popen.stdout is not None
        for line in process.popen.stdout:
            process.lines.append(line.rstrip("\n"))

    def stop(self, timeout: float = 40) -> None:
        for process in self.processes:
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.popen.pid, signal.SIGKILL)
                process.popen.wait(5)

    def all_lines(self) -> list[str]:
        return [line for process in self.processes for line in process.lines]


def schedule_named(store: JobStore, count: int, prefix: str = "job") -> dict[str, int]:
    """Schedule `count` jobs due now whose vendor body `name` identifies them."""
    names = [f"{prefix}-{i}" for i in range(count)]
    result = schedule_many(
        [{"payload": body(name=name), "corp_id": "corp-a"} for name in names], store=store
    )
    return dict(zip(names, result.job_ids, strict=True))


def delivery_report(store: JobStore, sandbox: SandboxServer, ids: dict[str, int]) -> dict[str, Any]:
    """The invariants: per job, how many messages the vendor created, and its status."""
    created: dict[str, int] = {}
    for message in sandbox.state.created_list():
        name = message["body"]["name"]
        created[name] = created.get(name, 0) + 1
    statuses = {name: store.get(job_id).status for name, job_id in ids.items()}
    return {
        "created": created,
        "statuses": statuses,
        "duplicates": {name: n for name, n in created.items() if n > 1},
        "sent_not_created": [n for n, s in statuses.items() if s == "sent" and n not in created],
        "created_not_sent_or_unknown": [
            n for n in created if statuses.get(n) not in ("sent", "unknown")
        ],
    }
