"""Which vendor mission is which job's: the pure decision, never a guess.

The create call is not idempotent and answers no mission id (DESIGN §9), so a job whose
call was ambiguous (`unknown`) is settled by finding its mission in the vendor's list, and
a `sent` job learns its mission id the same way. `match_calls` takes the jobs' calls and
the missions read, and gives each job one verdict. It does no I/O.

Each (call, mission) pair is compared on five criteria. A criterion is *equal*,
*different*, or *unknown*: the mission's field is None (not reported, or unreadable).

| criterion | the job                    | the mission                   | equal when          |
|-----------|----------------------------|-------------------------------|---------------------|
| creator   | `create_staff_ext_id`      | `creator` (`staff_ext_id`)    | the same (1)        |
| name      | `name`                     | `name`                        | the same (1)        |
| text      | `text`                     | `text` (of `msg_data`)        | the same (2)        |
| groups    | set of `group_ext_id_list` | union of sub-missions' groups | the same set (3)    |
| time      | `started_at` (call began)  | `created_at`                  | in the window (4)   |

(1) surrounding whitespace ignored on both sides; a blank one is unknown.
(2) `\\r\\n` and `\\r` become `\\n`, then surrounding whitespace is stripped; nothing else
(an inner space is a difference).
(3) an empty set is unknown, not different: a mission not yet split into sub-missions.
(4) `started_at - before_s <= created_at <= started_at + after_s`, both edges included.

A pair is YES when every criterion is equal, NO when any differs, MAYBE otherwise (none
differs, some are unknown). Then, per job, with Y its YES missions and M its MAYBE ones:

| the job                             | Y   | M   | also another job's YES/MAYBE  | verdict   |
|-------------------------------------|-----|-----|-------------------------------|-----------|
| `mission_id` known, in the read     |     |     | (two jobs hold it: AMBIGUOUS) | FOUND     |
| `mission_id` known, not in the read |     |     |                               | UNDECIDED |
| payload unreadable                  |     |     |                               | UNDECIDED |
| payload read                        | 1   | 0   | no                            | FOUND     |
|                                     | 1   | any | yes ("matches jobs 3 and 7")  | AMBIGUOUS |
|                                     | ≥2  | any | ("possibly created twice")    | AMBIGUOUS |
|                                     | any | ≥1  | (names the unknown fields)    | AMBIGUOUS |
|                                     | 0   | 0   | (`complete`: read to its end) | ABSENT    |
|                                     | 0   | 0   | (not `complete`)              | UNDECIDED |

Missions claimed by a known `mission_id` are taken out before the other jobs are matched.
Where several rows apply, an AMBIGUOUS reason names every problem.

Why these choices:

- Attachments are not compared: the shape the vendor's `msg_data` gives them is
  unconfirmed, so a difference could be our reading of it, not a different message. Two
  jobs that differ only in attachments therefore both match one mission: AMBIGUOUS, for a
  person, never a guess either way.
- Only ABSENT leads to a second create call, which costs a customer group its monthly
  quota if the first call did create the message. So everything uncertain leans away from
  it: an unknown field makes a pair MAYBE (never NO), an empty group set (a mission not yet
  split into sub-missions) is unknown rather than different, and ABSENT needs `complete`:
  the caller's promise that `missions` holds every mission created in each call's window.
- Names and creators are compared without surrounding whitespace because the payload
  parser strips it (the stored body may still carry it, and the vendor may keep or drop it).
- The list is read with offset paging while missions may be created, so one mission can
  appear on two pages: entries with the same `id` are one mission. When such entries
  disagree on a criterion, that criterion is unknown for the mission.
- The window (`MatchWindow`): before the call began because clocks differ and the
  vendor's China time is whole seconds; after it because the vendor may create late. The
  reconciler passes its `RECONCILE_AFTER_S`, the time it waits before settling a job, so a
  late creation is in the read or the job is not settled yet.
- A payload that cannot be read was never sent by us (the sender's claim parses it first),
  so it claims no mission and leaves the others' verdicts alone.

The result depends only on the calls and the missions as sets: not on their order.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from itertools import product
from math import isfinite
from typing import NamedTuple

from broadcaster.errors import InvalidPayload
from broadcaster.vendor.missions import Mission
from broadcaster.vendor.payload import parse_payload

CREATOR = "creator"
NAME = "name"
TEXT = "text"
GROUPS = "groups"
TIME = "time"
CRITERIA = (CREATOR, NAME, TEXT, GROUPS, TIME)
"""The five criteria, in the order reasons name them."""

_MAX_LISTED = 10
"""Reasons name at most this many jobs or missions, then say how many more."""
_MAX_DETAIL = 300
"""A payload's reason for being unreadable is cut to this many characters."""


@dataclass(frozen=True)
class CallRecord:
    """A job as matching sees it."""

    job_id: int
    payload: str
    """The stored vendor JSON body."""
    started_at: datetime
    """Naive UTC: when its latest vendor call began."""
    mission_id: str | None
    """Already known (a tracked job), else None."""


class Verdict(StrEnum):
    FOUND = "found"
    """This mission is the job's."""
    ABSENT = "absent"
    """Certainly no mission is the job's: it may be sent again."""
    AMBIGUOUS = "ambiguous"
    """Missions may be the job's, and matching cannot say which: a person decides."""
    UNDECIDED = "undecided"
    """This read cannot say (the list not read to its end, a known mission not in it,
    an unreadable payload): ask again later."""


@dataclass(frozen=True)
class Match:
    verdict: Verdict
    mission: Mission | None
    """Set for FOUND, else None."""
    reason: str
    """One English line for an operator: the job, the missions, what differed or was
    unreadable."""


@dataclass(frozen=True)
class MatchWindow:
    """How far a mission's `created_at` may be from the start of the call that made it."""

    before_s: float = 60.0
    """A mission created up to this long before the call began still matches (clocks
    differ; the vendor's China time is whole seconds)."""
    after_s: float = 120.0
    """... and up to this long after it (the vendor may create late); the reconciler
    passes RECONCILE_AFTER_S."""

    def __post_init__(self) -> None:
        for name in ("before_s", "after_s"):
            value = getattr(self, name)
            if not isfinite(value) or value < 0:
                raise ValueError(f"MatchWindow.{name} must be a finite number >= 0, not {value}")


@dataclass(frozen=True)
class _Job:
    """A readable call's side of the criteria, normalised."""

    call: CallRecord
    creator: str
    name: str
    text: str
    groups: frozenset[str]


@dataclass(frozen=True)
class _View:
    """One mission (entries sharing an id merged) as the criteria see it."""

    index: int
    mission: Mission
    """The entry returned in a Match: of entries sharing an id, a final one first."""
    creator: str | None
    name: str | None
    text: str | None
    groups: frozenset[str] | None
    created_at: datetime | None
    conflicts: frozenset[str]
    """Criteria that entries sharing this id reported differently (so unknown)."""
    label: str


def match_calls(
    calls: Sequence[CallRecord],
    missions: Sequence[Mission],
    *,
    window: MatchWindow,
    complete: bool,
) -> dict[int, Match]:
    """Each call's verdict against `missions`, by job id (the rules: the module docstring).

    `complete` promises that `missions` holds every mission created within each call's
    window (the list was read to its end); without it nothing is ABSENT. Job ids must be
    distinct (ValueError otherwise).
    """
    seen: set[int] = set()
    for call in calls:
        if call.job_id in seen:
            raise ValueError(f"job {call.job_id} appears twice among the calls")
        seen.add(call.job_id)
    calls = sorted(calls, key=lambda call: call.job_id)
    views = _views(missions)
    result: dict[int, Match] = {}

    # Known mission ids first: they claim their missions before anyone is matched.
    by_id = {view.mission.id: view for view in views if view.mission.id is not None}
    holders: dict[str, list[int]] = defaultdict(list)
    for call in calls:
        if call.mission_id is not None:
            holders[call.mission_id].append(call.job_id)
    claimed: set[int] = set()
    for call in calls:
        if call.mission_id is None:
            continue
        known = by_id.get(call.mission_id)
        if known is None:
            result[call.job_id] = Match(
                Verdict.UNDECIDED,
                None,
                f"job {call.job_id}: its mission {call.mission_id} is not in this read",
            )
            continue
        claimed.add(known.index)
        if len(holders[call.mission_id]) > 1:
            result[call.job_id] = Match(
                Verdict.AMBIGUOUS,
                None,
                f"job {call.job_id}: {known.label} is held by {_jobs(holders[call.mission_id])}",
            )
        else:
            result[call.job_id] = Match(
                Verdict.FOUND, known.mission, f"job {call.job_id}: {known.label} is in this read"
            )

    # Readable payloads only.
    jobs: list[_Job] = []
    for call in calls:
        if call.mission_id is not None:
            continue
        try:
            jobs.append(_job(call))
        except InvalidPayload as exc:
            detail = " ".join(str(exc).split())
            if len(detail) > _MAX_DETAIL:
                detail = detail[: _MAX_DETAIL - 1] + "…"
            result[call.job_id] = Match(
                Verdict.UNDECIDED, None, f"job {call.job_id}: its payload is unreadable: {detail}"
            )

    pool = [view for view in views if view.index not in claimed]
    index = _index(pool)
    yes: dict[int, list[_View]] = {}
    maybe: dict[int, list[tuple[_View, tuple[str, ...]]]] = {}
    interest: dict[int, list[int]] = defaultdict(list)  # mission index → job ids, YES or MAYBE
    for job in jobs:
        found_yes: list[_View] = []
        found_maybe: list[tuple[_View, tuple[str, ...]]] = []
        for view in _candidates(index, job, window):
            different, unknown = _compare(job, view, window)
            if different:
                continue
            interest[view.index].append(job.call.job_id)
            if unknown:
                found_maybe.append((view, unknown))
            else:
                found_yes.append(view)
        yes[job.call.job_id] = sorted(found_yes, key=lambda view: view.index)
        maybe[job.call.job_id] = sorted(found_maybe, key=lambda pair: pair[0].index)

    for job in jobs:
        job_id = job.call.job_id
        result[job_id] = _decide(
            job, yes[job_id], maybe[job_id], interest, read=len(views), complete=complete
        )
    return result


def _decide(
    job: _Job,
    yes: list[_View],
    maybe: list[tuple[_View, tuple[str, ...]]],
    interest: dict[int, list[int]],
    *,
    read: int,
    complete: bool,
) -> Match:
    job_id = job.call.job_id
    if not yes and not maybe:
        what = f"job {job_id}: no mission among the {read} read matches"
        if complete:
            return Match(Verdict.ABSENT, None, f"{what}, and the list was read to its end")
        return Match(Verdict.UNDECIDED, None, f"{what}, but the list was not read to its end")
    if len(yes) == 1 and not maybe and interest[yes[0].index] == [job_id]:
        view = yes[0]
        assert view.created_at is not None  # a YES pair compared it
        offset = (view.created_at - job.call.started_at).total_seconds()
        return Match(
            Verdict.FOUND,
            view.mission,
            f"job {job_id}: {view.label} matches on creator, name, text, groups and time "
            f"(created {_offset(offset)} the call began)",
        )
    problems: list[str] = []
    if len(yes) >= 2:
        every = "both" if len(yes) == 2 else "all"
        problems.append(f"{_missions(yes)} {every} match: possibly created twice")
    for view in yes:
        if len(interest[view.index]) > 1:
            problems.append(f"{view.label} matches {_jobs(interest[view.index])}")
    for view, unknown in maybe:
        fields = ", ".join(_unknown_field(view, field) for field in unknown)
        shared = interest[view.index]
        also = f", and matches {_jobs(shared)}" if len(shared) > 1 else ""
        problems.append(f"{view.label} may match (unknown: {fields}){also}")
    if len(problems) > _MAX_LISTED:
        problems[_MAX_LISTED - 1 :] = [f"{len(problems) - _MAX_LISTED + 1} more such problems"]
    return Match(Verdict.AMBIGUOUS, None, f"job {job_id}: " + "; ".join(problems))


def _compare(
    job: _Job, view: _View, window: MatchWindow
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The criteria that differ and those unknown, in `CRITERIA` order."""
    different: list[str] = []
    unknown: list[str] = []
    ours = {CREATOR: job.creator, NAME: job.name, TEXT: job.text, GROUPS: job.groups}
    theirs = {CREATOR: view.creator, NAME: view.name, TEXT: view.text, GROUPS: view.groups}
    for criterion, value in ours.items():
        if theirs[criterion] is None:
            unknown.append(criterion)
        elif theirs[criterion] != value:
            different.append(criterion)
    if view.created_at is None:
        unknown.append(TIME)
    else:
        start = job.call.started_at
        if not (
            start - timedelta(seconds=window.before_s)
            <= view.created_at
            <= start + timedelta(seconds=window.after_s)
        ):
            different.append(TIME)
    return tuple(different), tuple(unknown)


_Key = tuple[str | None, str | None, frozenset[str] | None]


@dataclass
class _Bucket:
    """The missions of one (creator, name, groups): by creation time, and those without."""

    times: list[datetime]
    timed: list[_View]
    untimed: list[_View]


def _index(pool: Iterable[_View]) -> dict[_Key, _Bucket]:
    """Missions by (creator, name, groups), None kept as a key part, each bucket sorted by
    `created_at`: a job looks up the eight combinations of its own values and None, and in
    each bucket only the missions created within its window (and those of unknown time),
    so it is never compared with a mission that differs in creator, name, groups or time.
    A campaign of a thousand jobs alike but for their time stays fast this way."""
    buckets: dict[_Key, _Bucket] = {}
    for view in sorted(pool, key=lambda view: (view.created_at or datetime.min, view.index)):
        bucket = buckets.setdefault((view.creator, view.name, view.groups), _Bucket([], [], []))
        if view.created_at is None:
            bucket.untimed.append(view)
        else:
            bucket.times.append(view.created_at)
            bucket.timed.append(view)
    return buckets


def _candidates(index: dict[_Key, _Bucket], job: _Job, window: MatchWindow) -> Iterable[_View]:
    earliest = job.call.started_at - timedelta(seconds=window.before_s)
    latest = job.call.started_at + timedelta(seconds=window.after_s)
    for creator, name, groups in product((job.creator, None), (job.name, None), (job.groups, None)):
        bucket = index.get((creator, name, groups))
        if bucket is not None:
            low = bisect_left(bucket.times, earliest)
            high = bisect_right(bucket.times, latest)
            yield from bucket.timed[low:high]
            yield from bucket.untimed


def _job(call: CallRecord) -> _Job:
    """The call's criteria from its payload; InvalidPayload when it cannot be read."""
    body = parse_payload(call.payload)
    return _Job(
        call=call,
        creator=body.create_staff_ext_id.strip(),
        name=body.name.strip(),
        text=normalise_text(body.text),
        groups=frozenset(group.strip() for group in body.group_ext_id_list),
    )


def normalise_text(text: str) -> str:
    """Line endings as `\\n`, surrounding whitespace stripped; nothing else."""
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def _views(missions: Sequence[Mission]) -> list[_View]:
    """The missions in a canonical order (so nothing depends on the input's), entries
    sharing an id merged into one."""
    by_id: dict[str, list[Mission]] = defaultdict(list)
    loose: list[Mission] = []
    for mission in missions:
        if mission.id is None:
            loose.append(mission)
        else:
            by_id[mission.id].append(mission)
    groups = [sorted(entries, key=_preference) for entries in by_id.values()]
    groups += [[mission] for mission in loose]
    groups.sort(key=lambda entries: _order(entries[0]))
    return [_view(index, entries) for index, entries in enumerate(groups)]


def _preference(mission: Mission) -> tuple[bool, str]:
    """Of entries sharing an id, a final one first (a status only moves towards final),
    then any fixed order."""
    return (not mission.is_final, repr(mission))


def _order(mission: Mission) -> tuple[bool, str, datetime, str]:
    return (mission.id is None, mission.id or "", mission.created_at or datetime.min, repr(mission))


def _view(index: int, entries: list[Mission]) -> _View:
    reports = [_fields(mission) for mission in entries]
    merged = reports[0]
    conflicts = frozenset(
        criterion
        for position, criterion in enumerate(CRITERIA)
        if any(report[position] != merged[position] for report in reports)
    )
    if conflicts:
        merged = merged._replace(**dict.fromkeys(_FIELD_OF[c] for c in conflicts))
    first = entries[0]
    return _View(index, first, *merged, conflicts=conflicts, label=_label(first))


class _Fields(NamedTuple):
    """A mission's side of the criteria, normalised, in `CRITERIA` order."""

    creator: str | None
    name: str | None
    text: str | None
    groups: frozenset[str] | None
    created_at: datetime | None


_FIELD_OF = dict(zip(CRITERIA, _Fields._fields, strict=True))
"""The `_Fields` attribute of each criterion."""


def _fields(mission: Mission) -> _Fields:
    groups = mission.groups
    return _Fields(
        # Our creator and name are never blank: a blank one is one not reported.
        creator=(mission.creator or "").strip() or None,
        name=(mission.name or "").strip() or None,
        text=None if mission.text is None else normalise_text(mission.text),
        # A mass message always has a group: an empty set is one not yet reported.
        groups=frozenset(group.strip() for group in groups) if groups else None,
        created_at=mission.created_at,
    )


def _label(mission: Mission) -> str:
    if mission.id is not None:
        return f"mission {mission.id}"
    if mission.created_at is not None:
        return f"a mission without id created {mission.created_at:%Y-%m-%d %H:%M:%S} UTC"
    return "a mission without id or creation time"


def _unknown_field(view: _View, criterion: str) -> str:
    if criterion in view.conflicts:
        return f"{criterion} (reported two ways)"
    return f"{criterion} (not reported or unreadable)"


def _jobs(job_ids: Sequence[int]) -> str:
    return "jobs " + _listing([str(job_id) for job_id in sorted(job_ids)])


def _missions(views: Sequence[_View]) -> str:
    ids = [view.mission.id for view in views]
    if all(mission_id is not None for mission_id in ids):
        return "missions " + _listing([str(mission_id) for mission_id in ids])
    return _listing([view.label for view in views])


def _listing(items: list[str]) -> str:
    if len(items) > _MAX_LISTED:
        items = [*items[: _MAX_LISTED - 1], f"{len(items) - _MAX_LISTED + 1} more"]
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def _offset(seconds: float) -> str:
    if seconds < 0:
        return f"{-seconds:g} s before"
    return f"{seconds:g} s after"
