"""`broadcaster status`: the operator's view, once or refreshed with `--watch`."""

from __future__ import annotations

import time
from typing import Any

import redis
import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from broadcaster.broker.rabbitmq import broker_in_use
from broadcaster.cli.context import CliContext
from broadcaster.cli.options import WATCH_S, float_range
from broadcaster.cli.render import literal, print_json
from broadcaster.errors import BroadcasterError
from broadcaster.jobs.states import JobStatus
from broadcaster.ops.report import collect, workers_view
from broadcaster.quota.limiter import RedisQuota


def register(app: typer.Typer) -> None:
    app.command(name="status")(status)


def _quota(cli: CliContext) -> RedisQuota | str:
    """Quota figures live in Redis, or a line saying why there are none."""
    if not cli.settings.redis_url:
        return "REDIS_URL is unset (an embedded Redis lives only while `run` runs)"
    try:
        return cli.boot.quota
    except BroadcasterError as exc:
        return str(exc)


def _workers_redis(cli: CliContext) -> redis.Redis | str:
    """The Redis the workers beat in, or why their threads cannot be counted."""
    if cli.settings.broker_url:
        return (
            "not counted with BROKER_URL (RabbitMQ): the workers beat only on the Redis "
            "broker; `broadcaster doctor` checks the configured shape"
        )
    if not cli.settings.redis_url:
        return "REDIS_URL is unset (an embedded Redis lives only while `run` runs)"
    try:
        return cli.boot.redis
    except BroadcasterError as exc:
        return str(exc)


def render(report: dict[str, Any]) -> Group:
    statuses = [status.value for status in JobStatus]
    table = Table("corp", "campaign", *statuses, title="broadcast jobs")
    for group in report["groups"]:
        counts = group["counts"]
        table.add_row(
            literal(group["corp_id"], one_line=True),
            literal(group["campaign"], one_line=True),
            *(str(counts.get(s, "")) for s in statuses),
        )
    table.add_row(
        Text("total", style="bold"), "", *(str(report["totals"].get(s, "")) for s in statuses)
    )
    parts: list[Any] = [table]
    if any(group["delivery"] for group in report["groups"]):
        parts.append(_delivery_table(report["groups"]))
    quota = report["quota"]
    if "error" in quota:
        parts.append(Text.assemble("quota: ", literal(quota["error"])))
    else:
        quota_table = Table(
            "corp",
            "calls last 60 s",
            "limit",
            "used",
            "in flight",
            "blocked",
            title="vendor quota (customer_group_msg/add)",
        )
        for corp, q in quota.items():
            blocked = f"{q['blocked_for_s']:.0f}s left" if q["blocked_for_s"] else ""
            quota_table.add_row(
                literal(corp, one_line=True),
                str(q["calls_last_minute"]),
                str(q["per_minute_limit"]),
                f"{q['used_pct']}%",
                str(q["in_flight"]),
                blocked,
            )
        parts.append(quota_table)
    late = report["lateness_last_hour_s"]
    lines = [
        f"oldest due job waiting: {report['behind_s']:.1f}s"
        if report["oldest_due"]
        else "nothing due",
        f"lateness over the last hour (call start - send_at), {late['count']} sent: "
        f"p50 {late['p50']}s, p99 {late['p99']}s"
        if late["count"]
        else "nothing sent in the last hour",
    ]
    if report["awaiting_decision"]:
        lines.append(
            f"{report['awaiting_decision']} unknown jobs not settled yet "
            "(broadcaster jobs list --status unknown):"
        )
    if "broker" in report:
        lines.append(f"messages carried by {report['broker']}")
    parts.append(Text("\n".join(lines)))
    workers = report.get("workers")
    if workers:
        if "error" in workers:
            parts.append(Text.assemble("workers: ", literal(workers["error"])))
        else:
            parts.append(Text(workers["line"], style="bold yellow" if workers["short"] else ""))
    for reason in report["unknown_reasons"]:
        parts.append(
            Text.assemble(f"  {reason['jobs']} × ", literal(reason["reason"] or "(no reason yet)"))
        )
    parts.extend(_campaign_parts(report.get("campaign_controls")))
    return Group(*parts)


def _campaign_parts(view: dict[str, Any] | None) -> list[Any]:
    """Held jobs, the monthly cap's counts and the schedules (issue 15)."""
    if not view:
        return []
    parts: list[Any] = []
    for held in view["held"]:
        parts.append(
            Text.assemble(
                f"{held['jobs']} job(s) of ",
                literal(held["corp_id"], one_line=True),
                " held: ",
                literal(held["reason"] or "", one_line=True),
            )
        )
    cap = view["monthly_cap"]
    if cap["policy"] != "off" and cap["corps"]:
        table = Table(
            "corp",
            "month",
            "cap",
            "groups counted",
            "at the cap",
            "most sent to one group",
            title=f"monthly cap per customer group (policy {cap['policy'] or 'unknown'})",
        )
        for corp, counts in cap["corps"].items():
            top = ", ".join(f"{g['group_id']} {g['messages']}" for g in counts["top_groups"][:3])
            table.add_row(
                literal(corp, one_line=True),
                f"{counts['month']} ({counts['tz']})",
                str(counts["cap"]),
                str(counts["groups_counted"]),
                str(counts["groups_at_cap"]),
                literal(top or "-", one_line=True),
            )
        parts.append(table)
    schedules = view["schedules"]
    if schedules["active"] or schedules["paused"]:
        parts.append(
            Text(
                f"schedules: {schedules['active']} active, {schedules['paused']} paused; "
                f"last 24 h: {schedules['late_last_day']} occurrence(s) late, "
                f"{schedules['skipped_last_day']} skipped (broadcaster schedules list)"
            )
        )
    return parts


def _delivery_table(groups: list[dict[str, Any]]) -> Table:
    """What happened after the vendor accepted: missions found in its list, staff who
    confirmed them in WeCom, groups reached (DESIGN §9)."""
    table = Table(
        "corp",
        "campaign",
        "sent",
        "missions found",
        "confirmed by staff",
        "groups reached",
        "groups not reached",
        "completed",
        "failed",
        title="delivery (from the vendor's list)",
    )
    for group in groups:
        d = group["delivery"]
        if not d:
            continue
        table.add_row(
            literal(group["corp_id"], one_line=True),
            literal(group["campaign"], one_line=True),
            str(d["sent"]),
            str(d["missions"]),
            f"{d['staff_confirmed']}/{d['staff_asked']}",
            str(d["groups_reached"]),
            str(d["groups_not_reached"]),
            str(d["completed"]),
            str(d["failed"]),
        )
    return table


def status(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json"),
    watch: float | None = typer.Option(
        None,
        "--watch",
        help=f"Refresh every N seconds ({WATCH_S[0]:g} to {WATCH_S[1]:g}).",
        callback=float_range(WATCH_S),
    ),
) -> None:
    """Counts per corp and campaign, lateness, quota use, vendor blocks, unknown jobs, and
    whether the workers alive can reach the corps' quota."""
    cli: CliContext = ctx.obj
    corps = cli.boot.corps
    quota = _quota(cli)
    workers_redis = _workers_redis(cli)
    policy = cli.settings.monthly_cap_policy

    def report() -> dict[str, Any]:
        return {
            **collect(cli.store, corps, quota, cap_policy=policy),
            "broker": broker_in_use(cli.settings.broker_url),
            "workers": workers_view(workers_redis, cli.store, corps),
        }

    if as_json:
        print_json(cli.console, report())
        return
    if not watch:
        cli.console.print(render(report()))
        return
    with Live(render(report()), console=cli.console) as live:
        try:
            while True:
                time.sleep(watch)
                live.update(render(report()))
        except KeyboardInterrupt:
            pass
