"""BROKER_HEARTBEAT_TIMEOUT_S: how long a silent worker lives, bounded by the beat below
and QUEUED_LEASE_S above, each refusal one line naming the setting."""

from __future__ import annotations

import pytest

from broadcaster.errors import SettingsError
from broadcaster.settings import BROKER_BEAT_S, load_settings


def _load(monkeypatch: pytest.MonkeyPatch, **env: str) -> float:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings(_env_file=None).broker_heartbeat_timeout_s


def _refused(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    with pytest.raises(SettingsError) as error:
        _load(monkeypatch, **env)
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_the_default_is_six_beats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BROKER_HEARTBEAT_TIMEOUT_S", raising=False)
    assert _load(monkeypatch) == 6.0 == 6 * BROKER_BEAT_S


def test_a_value_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _load(monkeypatch, BROKER_HEARTBEAT_TIMEOUT_S="2.5") == 2.5


@pytest.mark.parametrize("value", ["0.5", "1", "2"])
def test_two_beats_or_less_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    message = _refused(monkeypatch, BROKER_HEARTBEAT_TIMEOUT_S=value)
    assert message.startswith("BROKER_HEARTBEAT_TIMEOUT_S must exceed 2 s, twice the 1 s")
    assert f"(now {float(value):g})" in message


def test_at_or_past_the_queued_lease_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _refused(monkeypatch, BROKER_HEARTBEAT_TIMEOUT_S="300", QUEUED_LEASE_S="300")
    assert "BROKER_HEARTBEAT_TIMEOUT_S must be below QUEUED_LEASE_S" in message
    assert "(now 300 vs 300)" in message


@pytest.mark.parametrize(("value", "named"), [("0", "greater than 0"), ("ten", "number")])
def test_not_a_duration_is_refused(monkeypatch: pytest.MonkeyPatch, value: str, named: str) -> None:
    message = _refused(monkeypatch, BROKER_HEARTBEAT_TIMEOUT_S=value)
    assert message.startswith("BROKER_HEARTBEAT_TIMEOUT_S") and named in message
