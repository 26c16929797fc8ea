"""Every word the console shows, in Chinese and English: one catalog, one lookup.

Chinese comes first: the operators are mostly Chinese-speaking marketing and operations
staff. The language is the `lang` cookie (set by a `?lang=zh|en` switch link), else the
best of `Accept-Language`, else Chinese. A key missing from the catalog is a bug; the
tests render every page in both languages, and `text()` fails loudly on one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

LANGS = ("zh", "en")
DEFAULT_LANG = "zh"
HTML_LANG = {"zh": "zh-CN", "en": "en"}

CATALOG: dict[str, tuple[str, str]] = {
    # key: (中文, English)
    "app.title": ("群发控制台", "Broadcast console"),
    "nav.overview": ("概览", "Overview"),
    "nav.unknown": ("待确认", "Unknown inbox"),
    "nav.schedule": ("新建群发", "Schedule"),
    "nav.import": ("导入", "Import"),
    "nav.logout": ("退出登录", "Log out"),
    "nav.signed_in": ("令牌", "Token"),
    "nav.read_only": ("只读", "read-only"),
    "lang.zh": ("中文", "中文"),
    "lang.en": ("English", "English"),
    # login
    "login.title": ("登录", "Log in"),
    "login.token": ("访问令牌", "Access token"),
    "login.help": (
        "使用 broadcaster tokens create 生成的令牌。只读令牌只能查看。",
        "A token from broadcaster tokens create. A read-only token can look, not act.",
    ),
    "login.submit": ("登录", "Log in"),
    "login.error": (
        "令牌无效：输入有误、格式不对或已被吊销。",
        "That token is not valid: wrong, malformed or revoked.",
    ),
    "login.expired": ("表单已过期，请重新提交。", "The form expired; please submit it again."),
    "login.logged_out": ("已退出登录。", "You are logged out."),
    # statuses
    "status.scheduled": ("待发送", "scheduled"),
    "status.queued": ("排队中", "queued"),
    "status.sending": ("发送中", "sending"),
    "status.sent": ("已发送", "sent"),
    "status.failed": ("失败", "failed"),
    "status.unknown": ("待确认", "unknown"),
    "status.expired": ("已过期", "expired"),
    "status.cancelled": ("已取消", "cancelled"),
    "delivery.untracked": ("未跟踪", "untracked"),
    "delivery.waiting": ("等待员工确认", "waiting for staff"),
    "delivery.completed": ("已完成", "completed"),
    "delivery.failed": ("失败", "failed"),
    "delivery.canceled": ("已取消", "cancelled"),
    "delivery.create_failed": ("创建失败", "create failed"),
    "delivery.none": ("未找到任务", "no mission found"),
    "delivery.other": ("其他", "other"),
    # attempt outcomes (broadcast_attempts.outcome)
    "outcome.sent": ("成功", "sent"),
    "outcome.rejected": ("被拒绝", "rejected"),
    "outcome.ambiguous": ("结果不明", "ambiguous"),
    "outcome.not_sent": ("未发出", "not sent"),
    "outcome.token": ("令牌被拒", "token refused"),
    "outcome.busy": ("并发超限", "too many in flight"),
    "outcome.blocked": ("被限流", "blocked"),
    "outcome.throttled": ("请求过多", "throttled"),
    "outcome.credentials": ("凭证错误", "credentials refused"),
    "outcome.found": ("对账：已找到", "reconcile: found"),
    "outcome.absent": ("对账：未找到", "reconcile: absent"),
    # overview
    "overview.title": ("概览", "Overview"),
    "overview.quota": ("配额", "Quota"),
    "overview.calls_minute": ("近 60 秒调用", "calls in the last 60 s"),
    "overview.in_flight": ("进行中", "in flight"),
    "overview.of": ("/", "of"),
    "overview.blocked": ("微伴已限流，恢复倒计时", "Blocked by the vendor; resumes in"),
    "overview.seconds": ("秒", "s"),
    "overview.rate": ("近 15 分钟发送速率（次/分钟）", "Send rate, last 15 minutes (calls/min)"),
    "overview.limit": ("上限", "limit"),
    "overview.no_redis": (
        "未配置 REDIS_URL，无法读取配额。",
        "REDIS_URL is unset: the quota cannot be read.",
    ),
    "overview.redis_down": ("Redis 无法连接，配额暂不可读。", "Redis is unreachable: no quota."),
    "overview.workers_none": (
        "没有存活的工作进程：消息不会发出。请启动 broadcaster worker 或 broadcaster run。",
        "No worker is alive: nothing is sent. Start `broadcaster worker` or `broadcaster run`.",
    ),
    "overview.workers_short": (
        "工作进程不足：{processes} 个进程共 {threads} 个线程，低于配额所需的 {needed} 个；"
        "请增加工作进程（WORKER_PROCESSES）或线程（WORKER_THREADS）。",
        "Workers too few: {processes} process(es), {threads} threads, below the {needed} the "
        "quota needs; run more worker processes (WORKER_PROCESSES) or threads (WORKER_THREADS).",
    ),
    "overview.workers_ok": (
        "工作进程：{processes} 个，共 {threads} 个线程（配额需要 {needed} 个）。",
        "Workers: {processes} process(es), {threads} threads (the quota needs {needed}).",
    ),
    "overview.campaigns": ("活动", "Campaigns"),
    "overview.no_campaigns": ("还没有群发任务。", "No jobs yet."),
    "overview.no_corps": ("没有配置企业。", "No corps configured."),
    "overview.total": ("合计", "total"),
    "overview.lateness": ("延迟（近 15 分钟）", "Lateness (last 15 minutes)"),
    "overview.p50": ("中位数", "p50"),
    "overview.p99": ("P99", "p99"),
    "overview.no_sends": ("近 15 分钟没有发送。", "Nothing sent in the last 15 minutes."),
    "overview.figures_age": ("活动统计更新于", "Campaign counts as of"),
    "overview.seconds_ago": ("秒前", "s ago"),
    "overview.counting": (
        "正在首次统计各活动的任务数……",
        "Counting the campaigns' jobs for the first time…",
    ),
    "overview.figures_down": (
        "活动统计暂不可读（数据库无响应），稍后自动重试。",
        "The campaign counts cannot be read now (the database did not answer); retrying.",
    ),
    "overview.no_campaign_name": ("（无活动名）", "(no campaign)"),
    "overview.more_campaigns": (
        "另有 {n} 个活动未列出（尚有任务未完成的排在前面）。",
        "{n} more campaigns not listed (those with work left come first).",
    ),
    "overview.delivery": ("送达", "Delivery"),
    # campaign page
    "campaign.title": ("活动", "Campaign"),
    "campaign.cancel": ("取消活动", "Cancel campaign"),
    "campaign.retry_failed": ("重试失败任务", "Retry failed"),
    "campaign.filter": ("筛选", "Filter"),
    "campaign.all": ("全部", "all"),
    "campaign.search": ("搜索", "Search"),
    "campaign.search_help": (
        "去重键、消息名、正文或群 ID",
        "dedupe key, name, text or group id",
    ),
    "campaign.next": ("下一页", "Next page"),
    "campaign.first": ("第一页", "First page"),
    "campaign.no_jobs": ("没有符合条件的任务。", "No jobs match."),
    "campaign.staff_confirmed": ("员工已确认", "staff confirmed"),
    "campaign.groups_reached": ("已送达群", "groups reached"),
    "campaign.not_found": ("没有名为 {name} 的活动。", "No campaign named {name}."),
    "confirm.cancel_title": ("确认取消活动", "Cancel this campaign?"),
    "confirm.cancel_body": (
        "将取消 {n} 个尚未发送的任务（待发送、排队中、待确认）。"
        "发送中的 {sending} 个任务无法撤回。",
        "This cancels {n} jobs not yet sending (scheduled, queued, unknown). "
        "The {sending} sending now cannot be taken back.",
    ),
    "confirm.retry_title": ("确认重试失败任务", "Retry the failed jobs?"),
    "confirm.retry_body": (
        "将重新发送 {n} 个失败任务，每个任务重新计算尝试次数。",
        "This sends {n} failed jobs again, each with a fresh set of attempts.",
    ),
    "confirm.confirm": ("确认", "Confirm"),
    "confirm.back": ("返回", "Back"),
    "confirm.nothing": ("没有可处理的任务。", "There is nothing to do."),
    "flash.campaign_cancelled": (
        "已取消 {n} 个任务；{sending} 个正在发送。",
        "Cancelled {n} jobs; {sending} were sending.",
    ),
    "flash.retried": ("已重新排期 {n} 个失败任务。", "Rescheduled {n} failed jobs."),
    "flash.job_cancelled": ("任务已取消。", "The job is cancelled."),
    "flash.job_retried": ("任务已重新排期。", "The job is scheduled again."),
    "flash.resolved_sent": ("已标记为已发送。", "Marked as sent."),
    "flash.resolved_resend": ("已安排重新发送。", "Scheduled to be sent again."),
    "flash.bulk_resolved": ("已处理 {n} 个任务。", "Resolved {n} jobs."),
    "flash.bulk_skipped": ("{n} 个任务已不是待确认状态，已跳过。", "{n} were no longer unknown."),
    "flash.none_selected": ("请先勾选任务。", "Select some jobs first."),
    "flash.conflict": ("无法执行：{reason}", "Not done: {reason}"),
    # table columns
    "col.id": ("ID", "ID"),
    "col.status": ("状态", "Status"),
    "col.corp": ("企业", "Corp"),
    "col.name": ("消息名", "Name"),
    "col.send_at": ("计划时间", "Send at"),
    "col.sent_at": ("发送时间", "Sent at"),
    "col.attempts": ("尝试", "Attempts"),
    "col.delivery": ("送达", "Delivery"),
    "col.dedupe_key": ("去重键", "Dedupe key"),
    "col.campaign": ("活动", "Campaign"),
    "col.last_error": ("最近错误", "Last error"),
    "col.select": ("选择", "Select"),
    # job page
    "job.title": ("任务", "Job"),
    "job.not_found": ("没有 ID 为 {id} 的任务。", "No job with id {id}."),
    "job.payload": ("消息内容", "Message"),
    "job.text": ("正文", "Text"),
    "job.attachments": ("附件", "Attachments"),
    "job.groups": ("群数量", "Groups"),
    "job.staff": ("发送员工", "Staff"),
    "job.attempts": ("调用记录", "Attempts"),
    "job.no_attempts": ("还没有调用。", "No calls yet."),
    "job.errcode": ("错误码", "errcode"),
    "job.errmsg": ("错误信息", "errmsg"),
    "job.duration": ("耗时", "duration"),
    "job.outcome": ("结果", "outcome"),
    "job.vendor": ("微伴任务与送达", "Vendor mission and delivery"),
    "job.mission": ("任务 ID", "Mission id"),
    "job.delivery_status": ("送达状态", "Delivery status"),
    "job.checked_at": ("上次检查", "Checked at"),
    "job.note": ("说明", "Note"),
    "job.cancel": ("取消任务", "Cancel job"),
    "job.retry": ("重试", "Retry"),
    "job.resolve_sent": ("确认已发送", "Resolve: it was sent"),
    "job.resolve_resend": ("重新发送", "Resolve: send again"),
    "job.evidence": ("对账证据", "Reconcile evidence"),
    "job.resolve_help": (
        "该任务的调用结果不明。请在微伴后台核对：若已发出，确认已发送；否则重新发送。",
        "The call's outcome is not known. Check the vendor's back office: if the message "
        "is there, resolve as sent; if not, send it again.",
    ),
    "job.details": ("详情", "Details"),
    "job.priority": ("优先级", "Priority"),
    "job.expires_at": ("过期时间", "Expires at"),
    "job.held": ("暂缓原因", "Held"),
    "job.created_at": ("创建时间", "Created at"),
    "job.raw": ("原始内容", "Raw payload"),
    # unknown inbox
    "unknown.title": ("待确认任务", "Unknown inbox"),
    "unknown.help": (
        "这些任务的调用结果不明（可能已发出）。逐个核对后批量处理。",
        "These jobs' calls may or may not have reached the vendor. Check, then resolve.",
    ),
    "unknown.empty": ("没有待确认的任务。", "Nothing is unknown."),
    "unknown.bulk_sent": ("批量确认已发送", "Resolve selected: sent"),
    "unknown.bulk_resend": ("批量重新发送", "Resolve selected: send again"),
    # schedule form
    "schedule.title": ("新建群发", "Schedule a message"),
    "schedule.name": ("消息名", "Name"),
    "schedule.text": ("正文", "Text"),
    "schedule.group_ids": ("客户群 ID（每行一个）", "Group ids (one per line)"),
    "schedule.staff_ids": ("发送员工 ID（每行一个）", "Staff ids (one per line)"),
    "schedule.send_at": ("发送时间", "Send at"),
    "schedule.send_at_help": (
        "如 2026-12-12 20:00；留空即立即发送；无时区的时间按 {tz} 理解（也可写 +08:00）。",
        "Like 2026-12-12 20:00; empty: now. A time without an offset is read in {tz} "
        "(or add one, e.g. +08:00).",
    ),
    "schedule.expires_at": ("过期时间（可选）", "Expires at (optional)"),
    "schedule.corp_id": ("企业 ID（可选）", "Corp id (optional)"),
    "schedule.campaign": ("活动名（可选）", "Campaign (optional)"),
    "schedule.dedupe_key": ("去重键（可选）", "Dedupe key (optional)"),
    "schedule.priority": ("优先级", "Priority"),
    "schedule.ignore_quiet_hours": ("紧急：忽略免打扰时段", "Urgent: ignore quiet hours"),
    "schedule.submit": ("创建", "Schedule"),
    "schedule.errors": ("请修正标出的字段。", "Please fix the fields marked."),
    "schedule.done": ("已创建 {n} 个任务。", "Scheduled {n} jobs."),
    "schedule.replayed": (
        "该去重键已存在，未重复创建。",
        "That dedupe key exists already: nothing new was created.",
    ),
    "schedule.open_job": ("查看任务 {id}", "Open job {id}"),
    "schedule.err.groups": ("请至少填写一个客户群 ID。", "Give at least one group id."),
    "schedule.err.staff": ("请至少填写一个发送员工 ID。", "Give at least one staff id."),
    "schedule.err.name": ("请填写消息名。", "Give the message a name."),
    "schedule.err.text": ("正文和附件不能都为空。", "Write a text (or add an attachment)."),
    "schedule.err.time": (
        "无法识别的时间，请写成 2026-12-12 20:00 这样的格式。",
        "This time cannot be read; write it like 2026-12-12 20:00.",
    ),
    # import
    "import.title": ("导入任务", "Import jobs"),
    "import.help": (
        "上传 JSON Lines（.jsonl）或 CSV 文件，每行一个任务，与命令行 broadcaster import 相同。",
        "Upload JSON Lines (.jsonl) or CSV, one job a line, as `broadcaster import` takes.",
    ),
    "import.file": ("文件", "File"),
    "import.submit": ("导入", "Import"),
    "import.summary": (
        "共 {lines} 行：插入 {inserted} 个任务，{duplicates} 个重复跳过，{rejected} 行被拒绝"
        "（无时区的时间按 {tz} 理解）",
        "{lines} lines: {inserted} jobs inserted, {duplicates} skipped as duplicate, "
        "{rejected} rejected (times without an offset read as {tz})",
    ),
    "import.line": ("第 {line} 行", "line {line}"),
    "import.more": ("…… 另有 {n} 行", "… and {n} more"),
    "import.no_file": ("请选择文件。", "Choose a file first."),
    "import.refused": ("文件未导入：{reason}", "Nothing imported: {reason}"),
    # errors
    "error.not_found": ("找不到", "Not found"),
    "error.back": ("返回概览", "Back to the overview"),
    "error.forbidden": ("无权执行", "Not allowed"),
    "error.read_only": (
        "只读令牌不能执行操作；请使用可写令牌登录。",
        "A read-only token cannot act; log in with a write token.",
    ),
    "error.csrf": (
        "表单已过期或来源不明，请刷新页面后重试。",
        "The form expired or did not come from this console; reload the page and retry.",
    ),
    "error.login_needed": ("请先登录。", "Please log in."),
    "error.unavailable": ("数据库暂不可用：{reason}", "The database is unavailable: {reason}"),
}


def text(lang: str, key: str, **values: Any) -> str:
    """The catalog's text for `key` in `lang`, with `{name}` fields filled in (the values
    are escaped by the template's autoescape, as every value is)."""
    zh, en = CATALOG[key]
    chosen = zh if lang == "zh" else en
    return chosen.format_map(_Blank(values)) if values or "{" in chosen else chosen


class _Blank(dict[str, Any]):
    """Fill values for `str.format_map`: a field not given (a flash cookie someone edited)
    is left empty instead of failing the page."""

    def __missing__(self, key: str) -> str:
        return ""


def translator(lang: str) -> Callable[..., str]:
    def t(key: str, **values: Any) -> str:
        return text(lang, key, **values)

    return t


def status_label(lang: str, status: str) -> str:
    """A job status in words; an unknown value (a producer's odd row) as it is."""
    key = f"status.{status}"
    return text(lang, key) if key in CATALOG else status


def outcome_label(lang: str, outcome: str) -> str:
    key = f"outcome.{outcome}"
    return text(lang, key) if key in CATALOG else outcome


def delivery_label(lang: str, state: str | None) -> str:
    key = f"delivery.{state or 'untracked'}"
    return text(lang, key) if key in CATALOG else str(state)


def pick_lang(query: str | None, cookie: str | None, accept: str | None) -> str:
    """`?lang=`, then the cookie, then Accept-Language by its q-values, then Chinese."""
    for chosen in (query, cookie):
        if chosen in LANGS:
            return chosen
    best, best_q = DEFAULT_LANG, -1.0
    for order, item in enumerate((accept or "").split(",")):
        tag, _, params = item.strip().partition(";")
        primary = tag.strip().lower().split("-")[0]
        if primary not in LANGS:
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > best_q or (q == best_q and order == 0):
            best, best_q = primary, q
    return best
