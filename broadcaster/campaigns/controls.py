"""The campaign controls as the claim sees them: settings and the corps file, read once."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from zoneinfo import ZoneInfo

from broadcaster.campaigns.cap import Policy
from broadcaster.campaigns.quiet import QuietWindow, local_hhmm
from broadcaster.corps import CampaignRules, CorpDirectory
from broadcaster.settings import Settings
from broadcaster.timeutil import zone


@dataclass(frozen=True)
class QuietHold:
    """Rows of these corps that fall due now wait until `until` (naive UTC).
    `corps` None: every corp but `exclude` (those with rules of their own)."""

    until: datetime
    reason: str
    corps: list[str] | None = None
    exclude: list[str] = field(default_factory=list)


@cache
def _zone(name: str) -> ZoneInfo:
    return zone(name)


class CampaignControls:
    def __init__(
        self,
        corps: CorpDirectory,
        *,
        max_lateness_s: float,
        cap_policy: Policy,
    ) -> None:
        self.corps = corps
        self.max_lateness_s = max_lateness_s
        self.cap_policy = cap_policy
        self._own = corps.with_own_campaign()

    @classmethod
    def from_settings(
        cls, settings: Settings, corps: CorpDirectory | None = None
    ) -> CampaignControls:
        return cls(
            corps or CorpDirectory(settings),
            max_lateness_s=settings.max_lateness_s,
            cap_policy=settings.monthly_cap_policy,
        )

    def rules(self, corp_id: str) -> CampaignRules:
        return self.corps.campaign(corp_id)

    def zone(self, corp_id: str) -> ZoneInfo:
        return _zone(self.rules(corp_id).tz)

    @property
    def any_quiet(self) -> bool:
        return self.corps.default_campaign.quiet is not None or any(
            rules.quiet is not None for rules in self._own.values()
        )

    def quiet_holds(self, now: datetime) -> list[QuietHold]:
        """The quiet windows in force at `now` (naive UTC), and whom each holds."""
        holds = []
        default = self.corps.default_campaign
        if default.quiet is not None:
            hold = _hold(default.quiet, default.tz, now)
            if hold is not None:
                holds.append(QuietHold(hold[0], hold[1], corps=None, exclude=sorted(self._own)))
        for corp_id, rules in sorted(self._own.items()):
            if rules.quiet is not None:
                hold = _hold(rules.quiet, rules.tz, now)
                if hold is not None:
                    holds.append(QuietHold(hold[0], hold[1], corps=[corp_id]))
        return holds

    def quiet_until(self, corp_id: str, now: datetime) -> datetime | None:
        """When the corp's quiet window ends, if it is in force at `now`."""
        rules = self.rules(corp_id)
        if rules.quiet is None:
            return None
        return rules.quiet.held_until(now, _zone(rules.tz))


def _hold(window: QuietWindow, tz_name: str, now: datetime) -> tuple[datetime, str] | None:
    tz = _zone(tz_name)
    until = window.held_until(now, tz)
    if until is None:
        return None
    return until, quiet_reason(until, tz_name)


def quiet_reason(until: datetime, tz_name: str) -> str:
    """The text `status` and `jobs show` print: "quiet hours until 08:00 (Asia/Shanghai)"."""
    return f"quiet hours until {local_hhmm(until, _zone(tz_name))} ({tz_name})"
