"""`demo --web`: what it does once the demo has run (the demo itself is test_demo.py's):
serve the console on the demo's database, print its URL and a write token that logs in,
and stop cleanly on SIGTERM."""

from __future__ import annotations

import io
import os
import re
import signal
import threading

import httpx
from rich.console import Console

from broadcaster.bootstrap import Bootstrap
from broadcaster.cli.services import console_after_demo
from broadcaster.web.console.session import COOKIE
from tests.helpers import wait_until


def test_demo_web_serves_the_console_with_a_fresh_token_until_sigterm(boot: Bootstrap) -> None:
    output = io.StringIO()
    serve = console_after_demo(Console(file=output, width=200), 0)
    seen: dict[str, object] = {}

    def use_it() -> None:
        try:
            text = wait_until(
                lambda: output.getvalue() if "Ctrl-C" in output.getvalue() else "", timeout=30
            )
            url = re.search(r"http://127\.0\.0\.1:\d+/", text)
            token = re.search(r"bct_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", text)
            assert url is not None and token is not None, text
            with httpx.Client(base_url=url.group()) as client:
                form = client.get("/login").text
                csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
                assert csrf is not None
                client.post("/login", data={"token": token.group(), "csrf_token": csrf.group(1)})
                seen["session"] = COOKIE in client.cookies
                seen["overview"] = client.get("/").status_code
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    user = threading.Thread(target=use_it)
    user.start()
    try:
        serve(boot)  # returns on SIGTERM, in the main thread as in the demo
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        user.join(10)
    assert seen == {"session": True, "overview": 200}
