"""The send-rate chart as inline SVG, drawn on the server: numbers only in the markup
(a corp's name goes into the legend as escaped text by the template)."""

from __future__ import annotations

from dataclasses import dataclass

WIDTH, HEIGHT = 960, 200
LEFT, RIGHT, TOP, BOTTOM = 44, 10, 10, 24
COLORS = ("#2563eb", "#d97706", "#059669", "#7c3aed", "#db2777", "#0891b2")


@dataclass(frozen=True)
class Line:
    corp: str
    points: str
    color: str
    last: int


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    lines: list[Line]
    limit_y: float | None
    limit: int | None
    top: int
    ticks: list[tuple[float, str]]
    baseline: float
    left: int
    right: float


def rate_chart(
    series: dict[str, list[int]], limit: int | None, minutes: int, labels: list[str]
) -> Chart:
    """Calls per minute per corp over `minutes`, against the per-minute `limit`."""
    peak = max([*(max(values, default=0) for values in series.values()), limit or 0, 1])
    top = _nice(peak * 1.1)
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM

    def x(index: int) -> float:
        return LEFT + plot_w * index / max(1, minutes - 1)

    def y(value: float) -> float:
        return TOP + plot_h * (1 - value / top)

    lines = [
        Line(
            corp,
            " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values)),
            COLORS[n % len(COLORS)],
            values[-1] if values else 0,
        )
        for n, (corp, values) in enumerate(sorted(series.items()))
    ]
    ticks = [(x(i), labels[i]) for i in range(0, minutes, 5)] + [(x(minutes - 1), labels[-1])]
    return Chart(
        WIDTH,
        HEIGHT,
        lines,
        y(limit) if limit else None,
        limit,
        top,
        ticks,
        y(0),
        LEFT,
        WIDTH - RIGHT,
    )


def _nice(value: float) -> int:
    """A round top for the axis at or above `value`."""
    step = 1
    while True:
        for factor in (1, 1.5, 2, 3, 4, 5, 6, 8):
            if value <= step * factor:
                return int(step * factor)
        step *= 10
