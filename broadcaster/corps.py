"""Corps: credentials and quota limits per corp.

The default corp comes from WEIBAN_CORP_ID / WEIBAN_SECRET and the WEIBAN_QUOTA_* settings.
More corps come from WEIBAN_CORPS_FILE, a JSON object:

    {"corp-b": {"secret": "...", "quota_per_minute": 300, "quota_per_hour": 15000,
                "max_in_flight": 4, "headroom": 0.9,
                "quiet_hours": "21:00-09:00", "tz": "Asia/Shanghai", "monthly_cap": 20}}

Limits a corp does not name are the settings' defaults; so are its campaign controls
(`QUIET_HOURS`, `DEFAULT_TZ`, `MONTHLY_CAP`). `"quiet_hours": ""` turns quiet hours off
for that corp.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from broadcaster.campaigns.quiet import BadWindow, QuietWindow
from broadcaster.errors import SettingsError, VendorRejected
from broadcaster.settings import Settings, describe_validation_error


@dataclass(frozen=True)
class QuotaLimits:
    """The vendor's limits for one (corp, API), and the share of them we may use."""

    per_minute: int = 600
    per_hour: int = 36000
    max_in_flight: int = 4
    headroom: float = 1.0

    @property
    def usable_per_minute(self) -> int:
        return max(1, math.floor(self.per_minute * self.headroom))

    @property
    def usable_per_hour(self) -> int:
        return max(1, math.floor(self.per_hour * self.headroom))

    @property
    def per_second(self) -> float:
        return min(self.usable_per_minute / 60, self.usable_per_hour / 3600)


class _CorpEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret: SecretStr
    quota_per_minute: int | None = Field(default=None, gt=0, le=1_000_000)
    quota_per_hour: int | None = Field(default=None, gt=0, le=100_000_000)
    max_in_flight: int | None = Field(default=None, gt=0, le=1000)
    headroom: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)
    quiet_hours: str | None = None
    tz: str | None = None
    monthly_cap: int | None = Field(default=None, ge=1, le=10_000)

    @field_validator("quiet_hours")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        try:
            QuietWindow.parse(value)
        except BadWindow as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("tz")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        from broadcaster.timeutil import zone

        if value is not None:
            try:
                zone(value)
            except Exception:  # InvalidJob, and whatever ZoneInfo raises on odd text
                raise ValueError("unknown time zone; use an IANA name like Asia/Shanghai") from None
        return value


@dataclass(frozen=True)
class CampaignRules:
    """A corp's campaign controls (issue 15): its quiet hours, the zone they and the
    monthly cap's calendar month are read in, and the cap (None: the month's days)."""

    quiet: QuietWindow | None
    tz: str
    monthly_cap: int | None


@dataclass(frozen=True)
class Corp:
    corp_id: str
    secret: SecretStr | None
    limits: QuotaLimits
    campaign: CampaignRules | None = None
    """None: the settings' defaults."""


class CorpDirectory:
    def __init__(self, settings: Settings) -> None:
        self.defaults = QuotaLimits(
            per_minute=settings.weiban_quota_per_minute,
            per_hour=settings.weiban_quota_per_hour,
            max_in_flight=settings.weiban_max_in_flight,
            headroom=settings.weiban_quota_headroom,
        )
        self.default_corp = settings.weiban_corp_id
        self.default_campaign = CampaignRules(
            QuietWindow.parse(settings.quiet_hours), settings.default_tz, settings.monthly_cap
        )
        self._corps: dict[str, Corp] = {}
        if settings.weiban_corp_id:
            self._corps[settings.weiban_corp_id] = Corp(
                settings.weiban_corp_id, settings.weiban_secret, self.defaults
            )
        if settings.weiban_corps_file:
            self._corps.update(self._load(settings.weiban_corps_file))

    def _load(self, path: Path) -> dict[str, Corp]:
        try:
            raw = json.loads(path.read_text(encoding="utf-8-sig"))
        except UnicodeDecodeError as exc:
            raise SettingsError(
                f"WEIBAN_CORPS_FILE {path}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                "save it as UTF-8"
            ) from None
        except OSError as exc:
            raise SettingsError(
                f"WEIBAN_CORPS_FILE {path}: cannot read it: {exc.strerror or exc}"
            ) from None
        except json.JSONDecodeError as exc:
            raise SettingsError(
                f"WEIBAN_CORPS_FILE {path}: cannot read it as JSON: {exc}"
            ) from None
        if not isinstance(raw, dict):
            raise SettingsError(f"WEIBAN_CORPS_FILE {path}: must be an object of corp_id: {{...}}")
        corps = {}
        for corp_id, entry in raw.items():
            try:
                parsed = _CorpEntry.model_validate(entry)
            except ValidationError as exc:
                raise SettingsError(
                    f"WEIBAN_CORPS_FILE {path}, corp {corp_id}: {describe_validation_error(exc)}"
                ) from None
            limits = QuotaLimits(
                per_minute=parsed.quota_per_minute or self.defaults.per_minute,
                per_hour=parsed.quota_per_hour or self.defaults.per_hour,
                max_in_flight=parsed.max_in_flight or self.defaults.max_in_flight,
                headroom=parsed.headroom or self.defaults.headroom,
            )
            corps[corp_id] = Corp(corp_id, parsed.secret, limits, self._campaign(parsed))
        return corps

    def _campaign(self, entry: _CorpEntry) -> CampaignRules | None:
        named = entry.model_fields_set & {"quiet_hours", "tz", "monthly_cap"}
        if not named:
            return None
        default = self.default_campaign
        return CampaignRules(
            QuietWindow.parse(entry.quiet_hours) if "quiet_hours" in named else default.quiet,
            entry.tz or default.tz,
            entry.monthly_cap or default.monthly_cap,
        )

    def campaign(self, corp_id: str) -> CampaignRules:
        """The corp's campaign controls (the settings' defaults unless its entry names them)."""
        corp = self._corps.get(corp_id)
        return corp.campaign if corp and corp.campaign else self.default_campaign

    def with_own_campaign(self) -> dict[str, CampaignRules]:
        """The corps whose entry sets any campaign control, with their rules."""
        return {corp.corp_id: corp.campaign for corp in self._corps.values() if corp.campaign}

    def get(self, corp_id: str) -> Corp:
        corp = self._corps.get(corp_id)
        if corp is None or corp.secret is None:
            raise VendorRejected(
                f"no secret configured for corp {corp_id!r}: set WEIBAN_SECRET for the default "
                "corp or add it to WEIBAN_CORPS_FILE, then `broadcaster jobs retry`"
            )
        return corp

    def secret_value(self, corp_id: str) -> str | None:
        """The corp's secret in clear, for the token request and the masker; None if the
        corp or its secret is not configured."""
        corp = self._corps.get(corp_id)
        return corp.secret.get_secret_value() if corp and corp.secret else None

    def secret_fingerprint(self, corp_id: str) -> str:
        """A short hash of the corp's secret (salted with the corp id), never the secret:
        lets shared state such as a remembered refusal belong to one secret only."""
        corp = self._corps.get(corp_id)
        if corp is None or corp.secret is None:
            return "none"
        material = f"{corp_id}\0{corp.secret.get_secret_value()}".encode()
        return hashlib.sha256(material).hexdigest()[:12]

    def limits(self, corp_id: str) -> QuotaLimits:
        corp = self._corps.get(corp_id)
        return corp.limits if corp else self.defaults

    def known(self) -> list[str]:
        return sorted(self._corps)
