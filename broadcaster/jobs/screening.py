"""Judging a claimed row on its own, before a worker ever sees it (issue 9).

Producers write `broadcast_jobs` by plain SQL, and SQLite keeps whatever type they wrote:
text in `priority` (INTEGER affinity keeps what does not look like a number), a blob in
any column, a real for an integer past 64 bits, text that is not UTF-8; PostgreSQL keeps
times Python cannot hold (`infinity`, BC, years past 9999). Reading such a row as its
declared type raised in the middle of a claim: the TypeError or ValueError stalled the
whole batch (left `queued` until its lease ran out) or every claim after it.

So the claim reads every column it judges in a form that cannot fail to load
(`store/loading.py`) (on SQLite
the storage class and the raw bytes; on PostgreSQL times as text), and `judge` decides
per row: sent on, `expired`, or `failed` with a reason that names each bad column. A row
that passes has what the worker relies on: a non-empty text corp, a valid payload,
integer `priority`, `max_attempts` >= 1 and `attempts` >= 0, and readable times.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from broadcaster.errors import BroadcasterError
from broadcaster.vendor.payload import parse_payload

TEXT_COLUMNS = ("corp_id", "payload", "dedupe_key", "campaign")
INTEGER_COLUMNS = ("priority", "max_attempts", "attempts")
TIME_COLUMNS = ("send_at", "not_before", "expires_at")
JUDGED_COLUMNS = TEXT_COLUMNS + INTEGER_COLUMNS + TIME_COLUMNS
"""The producer's columns, plus the two service columns a producer could also write
(`attempts`, `not_before`) that the worker or the claim order rely on."""

MINIMUM = {"max_attempts": 1, "attempts": 0}
TIME_SHAPE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,6})?")
SHOWN_CHARS = 60


def read_time(value: str | bytes | None) -> datetime | None:
    """A `store.loading.loadable_time` value as a naive UTC datetime; None if NULL or not a time
    Python can hold."""
    if value is None:
        return None
    try:
        return _time("time", Cell("text", value))
    except (Unfit, ValueError):
        return None


class Cell(NamedTuple):
    """One stored value: its storage class (null, integer, real, text, blob) and value
    (raw bytes from SQLite, the loaded value from PostgreSQL)."""

    kind: str
    value: Any

    def text(self) -> str:
        if isinstance(self.value, bytes):
            return self.value.decode("utf-8")  # UnicodeDecodeError: a ValueError
        return str(self.value)

    def shown(self) -> str:
        """The value for an error message, short and literal."""
        if self.kind == "blob":
            return f"a blob of {len(self.value)} bytes"
        try:
            text = self.text()
        except ValueError:
            return "text that is not valid UTF-8"
        if self.kind == "integer":
            return f"the integer {text}"
        if self.kind == "real":
            shown = f"the real number {text}"
            try:
                if abs(float(text)) >= 2**63:
                    shown += " (an integer past 64 bits is stored as a real)"
            except ValueError:
                pass
            return shown
        if len(text) > SHOWN_CHARS:
            text = text[:SHOWN_CHARS] + "…"
        return f"the text {text!r}"


def cells_of(row: Any, dialect: str) -> dict[str, Cell]:
    mapping = row._mapping
    if dialect == "sqlite":
        return {
            name: Cell(mapping[type_key], mapping[raw_key])
            for name, type_key, raw_key in SQLITE_KEYS
        }
    cells = {}
    for name in JUDGED_COLUMNS:
        value = mapping[name]
        kind = "null" if value is None else "integer" if isinstance(value, int) else "text"
        cells[name] = Cell(kind, value)
    return cells


SQLITE_KEYS = [(name, f"{name}__type", f"{name}__raw") for name in JUDGED_COLUMNS]


class Unfit(Exception):
    """What is wrong with one column (the message omits the column's name)."""


@dataclass
class Verdict:
    """`outcome` is `claimed`, `expired` or `failed`."""

    outcome: str
    corp_id: str = ""
    priority: int = 0
    due_at: datetime = datetime.min
    problems: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str:
        return "; ".join(self.problems)


def judge(row: Any, dialect: str, *, default_corp: str | None, now: datetime) -> Verdict:
    """Decide one claimed row. Never raises for anything stored in the row."""
    try:  # the common case, cheaply; anything odd takes the long way, which says why
        fast = (
            _fast_sqlite(row, default_corp) if dialect == "sqlite" else _fast_pg(row, default_corp)
        )
    except (ValueError, TypeError, BroadcasterError):
        fast = None
    if fast is not None:
        corp_id, priority, due, expires_at = fast
        if expires_at is not None and expires_at <= now:
            return Verdict("expired")
        return Verdict("claimed", corp_id, priority, due)
    return _judge_slowly(row, dialect, default_corp=default_corp, now=now)


_TEXT_OR_NULL = ("text", "null")
# The fast paths unpack rows by position, in this order.
assert JUDGED_COLUMNS == (
    "corp_id",
    "payload",
    "dedupe_key",
    "campaign",
    "priority",
    "max_attempts",
    "attempts",
    "send_at",
    "not_before",
    "expires_at",
), "update _fast_sqlite and _fast_pg"
_Fast = tuple[str, int, datetime, datetime | None]


def _fast_sqlite(row: Any, default_corp: str | None) -> _Fast | None:
    """A row of the usual storage classes and canonical times, or None (the row's order is
    `judged_columns`': id, then type and bytes of each of JUDGED_COLUMNS)."""
    # Columns after these (the campaign controls' own, `ClaimStore._campaign_columns`) are
    # read by `campaigns/gate.py`.
    (_, ct, cr, pt, pr, dt, dr, gt, gr, it, ir, mt, mr, at, ar, st, sr, nt, nr, et, er) = row[:21]
    if not (
        pt == "text"
        and it == "integer"
        and mt == "integer"
        and at == "integer"
        and st == "text"
        and ct in _TEXT_OR_NULL
        and dt in _TEXT_OR_NULL
        and gt in _TEXT_OR_NULL
        and nt in _TEXT_OR_NULL
        and et in _TEXT_OR_NULL
    ):
        return None
    corp = default_corp if cr is None else cr.decode()
    if not corp or not corp.strip() or int(mr) < 1 or int(ar) < 0:
        return None
    if dr is not None:
        dr.decode()
    if gr is not None:
        gr.decode()
    send_at = _canonical_time(sr.decode())
    due = send_at if nr is None else _canonical_time(nr.decode())
    expires_at = None if er is None else _canonical_time(er.decode())
    parse_payload(pr.decode())
    return corp, int(ir), due, expires_at


def _fast_pg(row: Any, default_corp: str | None) -> _Fast | None:
    (_, corp, payload, _dedupe, _campaign, priority, max_attempts, attempts, sr, nr, er) = row[:11]
    corp = default_corp if corp is None else corp
    if not corp or not corp.strip() or max_attempts < 1 or attempts < 0:
        return None
    send_at = _canonical_time(sr.removesuffix(" AD"))
    due = send_at if nr is None else _canonical_time(nr.removesuffix(" AD"))
    expires_at = None if er is None else _canonical_time(er.removesuffix(" AD"))
    parse_payload(payload)
    return corp, priority, due, expires_at


def _canonical_time(text: str) -> datetime:
    """'YYYY-MM-DD HH:MM:SS.ffffff', years 1 to 9999; ValueError otherwise."""
    if len(text) != 26 or text[10] != " ":
        raise ValueError(text)
    return datetime.fromisoformat(text)


def _judge_slowly(row: Any, dialect: str, *, default_corp: str | None, now: datetime) -> Verdict:
    """Every column checked, every problem named."""
    cells = cells_of(row, dialect)
    problems: list[str] = []

    def take(read: Any, name: str) -> Any:
        try:
            return read(name, cells[name])
        except Unfit as unfit:
            problems.append(f"{name}: {unfit}")
        except BroadcasterError as exc:  # parse_payload's reasons already name `payload`
            problems.append(str(exc))
        except Exception as exc:  # anything else is this row's problem only
            problems.append(f"{name}: unreadable ({type(exc).__name__}: {exc})")
        return None

    expires_at = take(_time, "expires_at")
    if expires_at is not None and expires_at <= now:
        return Verdict("expired")
    corp_id = take(lambda name, cell: _corp(cell, default_corp), "corp_id")
    take(_payload, "payload")
    take(_text, "dedupe_key")
    take(_text, "campaign")
    priority = take(_integer, "priority")
    take(_integer, "max_attempts")
    take(_integer, "attempts")
    send_at = take(_time, "send_at")
    not_before = take(_time, "not_before")
    if cells["send_at"].kind == "null":
        problems.append("send_at: NULL; write a UTC time or leave it out for now")
    if problems:
        return Verdict("failed", problems=problems)
    return Verdict("claimed", corp_id, priority, not_before or send_at)


def _text(name: str, cell: Cell) -> str | None:
    if cell.kind == "null":
        return None
    if cell.kind != "text":
        raise Unfit(f"must be text, not {cell.shown()}")
    try:
        return cell.text()
    except ValueError:
        raise Unfit("text that is not valid UTF-8") from None


def _corp(cell: Cell, default_corp: str | None) -> str:
    corp = _text("corp_id", cell)
    if corp is None:
        if not default_corp:
            raise Unfit(
                "NULL and no default corp is set; write corp_id in the row or set WEIBAN_CORP_ID"
            )
        return default_corp
    if not corp.strip():
        raise Unfit(
            f"{cell.shown()} is blank; write a corp id, or NULL for the default corp "
            "(WEIBAN_CORP_ID)"
        )
    return corp


def _payload(name: str, cell: Cell) -> None:
    if cell.kind != "text":
        raise Unfit(f"must be JSON text, not {cell.shown()}")
    parse_payload(_text(name, cell) or "")


def _integer(name: str, cell: Cell) -> int:
    if cell.kind != "integer":
        raise Unfit(f"must be an integer, not {cell.shown()}")
    value = int(cell.text())
    minimum = MINIMUM.get(name)
    if minimum is not None and value < minimum:
        raise Unfit(f"must be at least {minimum}, not {value}")
    return value


def _time(name: str, cell: Cell) -> datetime | None:
    if cell.kind == "null":
        return None
    wanted = "a UTC time like 2026-12-01 01:00:00 (years 1 to 9999)"
    if cell.kind != "text":
        raise Unfit(f"must be {wanted}, not {cell.shown()}")
    text = _text(name, cell) or ""
    text = text.removesuffix(" AD")  # PostgreSQL's era (BC stays and is refused)
    if TIME_SHAPE.fullmatch(text):
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    raise Unfit(f"must be {wanted}, not {cell.shown()}")


def sending_problem(row: Any) -> str | None:
    """What the worker relies on, checked once more as it takes a row to send (columns
    `corp_id`, `payload`, `attempts`, `max_attempts`, as the driver loaded them). A row
    the claim passed always passes; this catches a row queued by a version before the
    claim screened types, or changed by hand while queued: its message is already in
    the broker, and a text `max_attempts` turned a certain answer into `unknown`."""
    problems = []
    corp = row.corp_id
    if corp is not None and (not isinstance(corp, str) or not corp.strip()):
        problems.append(f"corp_id: must be a corp id or NULL, not {_cell_of(corp).shown()}")
    if not isinstance(row.payload, str):
        problems.append(f"payload: must be JSON text, not {_cell_of(row.payload).shown()}")
    for name in ("attempts", "max_attempts"):
        value = getattr(row, name)
        if type(value) is not int:
            problems.append(f"{name}: must be an integer, not {_cell_of(value).shown()}")
        elif value < MINIMUM[name]:
            problems.append(f"{name}: must be at least {MINIMUM[name]}, not {value}")
    return "; ".join(problems) or None


def _cell_of(value: Any) -> Cell:
    kinds = {str: "text", int: "integer", float: "real", bytes: "blob", type(None): "null"}
    kind = kinds.get(type(value), "text")
    return Cell(kind, value if kind in ("text", "blob", "null") else str(value).encode())
