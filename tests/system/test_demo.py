"""`broadcaster demo` from a clean directory with nothing configured: green, in time, and
`--keep` leaves a database that `status` and `jobs list` can read."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def test_the_demo_keeps_its_promises_on_embedded_defaults(tmp_path: Path) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("WEIBAN_", "DATABASE_URL", "REDIS_URL", "SCHEDULER_"))
    }
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "120"
    started = time.monotonic()
    demo = subprocess.run(
        ["broadcaster", "demo", "--keep"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    took = time.monotonic() - started
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "demo OK" in demo.stdout and took < 120, took
    assert "Traceback" not in demo.stdout + demo.stderr
    assert not (tmp_path / ".broadcaster-demo").exists(), "it cleans up what it started"

    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'broadcaster-demo.db'}"
    status = subprocess.run(
        ["broadcaster", "status", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0 and '"sent": 330' in status.stdout, status.stdout
    failed = subprocess.run(
        ["broadcaster", "jobs", "list", "--status", "failed"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode == 0 and "payload" in failed.stdout
