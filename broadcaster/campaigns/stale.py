"""The stale-send guard: a job not sent within `MAX_LATENESS_S` of its `send_at` ends
`expired` with the reason, instead of sending yesterday's promotion after an outage.

Lateness is counted from `send_at`, or from the end of a hold the service itself imposed
(`held_until`: the monthly cap's `hold` waits for the next month on purpose), and time
inside the corp's quiet hours does not count: a job due at 23:00 that waited for the
08:00 end of a 22:00-08:00 window is on time at 08:00.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from broadcaster.campaigns.quiet import QuietWindow


def lateness_s(
    send_at: datetime,
    held_until: datetime | None,
    now: datetime,
    quiet: QuietWindow | None,
    tz: ZoneInfo,
) -> float:
    """Seconds the job is late at `now`, not counting deliberate waits."""
    since = max(send_at, held_until) if held_until is not None else send_at
    late = (now - since).total_seconds()
    if late <= 0:
        return 0.0
    if quiet is not None:
        late -= quiet.quiet_seconds(since, now, tz)
    return max(0.0, late)


def stale_reason(
    send_at: datetime,
    held_until: datetime | None,
    now: datetime,
    *,
    max_lateness_s: float,
    quiet: QuietWindow | None,
    tz: ZoneInfo,
) -> str | None:
    """Why the job must not be sent any more, or None (also when the guard is off: 0)."""
    if max_lateness_s <= 0:
        return None
    late = lateness_s(send_at, held_until, now, quiet, tz)
    if late <= max_lateness_s:
        return None
    return (
        f"stale: not sent within MAX_LATENESS_S={max_lateness_s:g}s of send_at "
        f"{send_at:%Y-%m-%d %H:%M:%S} UTC ({_span(late)} late"
        + (", quiet hours not counted)" if quiet is not None else ")")
    )


def _span(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"
