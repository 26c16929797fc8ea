"""How a long-running process learns it must stop: SIGTERM (a deploy, `honcho`,
Kubernetes) and SIGINT (Ctrl-C) both call one function, installed in one place."""

from __future__ import annotations

import signal
from collections.abc import Callable

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def on_stop_signal(stop: Callable[[], object]) -> None:
    """Call `stop()` when this process is asked to stop. Handlers only set events or ask
    loops to end: the process winds down in its own thread, never inside the handler."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda *_args: stop())
