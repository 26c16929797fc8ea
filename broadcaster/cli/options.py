"""Bounds for the CLI's numeric options: what the database column (or the code) holds.

A value outside them is a usage error naming the option and the allowed range, before
anything reaches the database (where it would be an OverflowError traceback on SQLite and
a `NumericValueOutOfRange` on PostgreSQL). Ranges follow `broadcaster/jobs/tables.py`: ids are
BIGINT (INTEGER, 64-bit, on SQLite), `priority` and `max_attempts` are INTEGER (32-bit on
PostgreSQL, so the portable range).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import typer

BIGINT_MAX = 2**63 - 1
INT_MIN = -(2**31)
INT_MAX = 2**31 - 1

JOB_ID = (1, BIGINT_MAX)
LIMIT = (1, BIGINT_MAX)
PRIORITY = (INT_MIN, INT_MAX)
MAX_ATTEMPTS = (1, 100)  # the producer's own cap (broadcaster.produce.api.JobRequest)
BATCH_SIZE = (1, 1_000_000)
SHOW_REJECTED = (0, BIGINT_MAX)
WATCH_S = (0.1, 86_400.0)
PORT = (0, 65_535)
COUNT = (1, 100_000_000)
LATENCY_MS = (0.0, 600_000.0)
BLOCK_S = (0.1, 86_400.0)


def int_range(bounds: tuple[int, int]) -> Callable[[int | None], int | None]:
    """A typer callback refusing an int outside `bounds` (inclusive), with the range."""
    low, high = bounds

    def check(value: int | None) -> int | None:
        if value is not None and not low <= value <= high:
            raise typer.BadParameter(
                f"{value} is out of range; give a whole number from {low} to {high}"
            )
        return value

    return check


def float_range(
    bounds: tuple[float, float], unit: str = "seconds"
) -> Callable[[float | None], float | None]:
    """As `int_range`, for a duration; refuses nan and infinity too."""
    low, high = bounds

    def check(value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and low <= value <= high):
            raise typer.BadParameter(
                f"{value} is out of range; give a number of {unit} from {low:g} to {high:g}"
            )
        return value

    return check
