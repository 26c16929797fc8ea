"""Settings fail with one line naming the variable; logs never carry a secret."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import structlog

from broadcaster.errors import InvalidJob, SettingsError
from broadcaster.logs import configure_logging, redact_text, register_secret
from broadcaster.settings import load_settings, redact_url
from broadcaster.timeutil import parse_user_time


def test_a_malformed_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEIBAN_QUOTA_PER_MINUTE", "ten")
    with pytest.raises(SettingsError, match=r"^WEIBAN_QUOTA_PER_MINUTE: .*integer.*'ten'"):
        load_settings(_env_file=None)


def test_an_unknown_database_scheme_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "oracle://x")
    with pytest.raises(SettingsError, match="DATABASE_URL: .*sqlite://, postgresql:// or mysql://"):
        load_settings(_env_file=None)


def test_a_typo_in_dotenv_is_an_error_not_a_silent_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("WEIBAN_QUOTA_PER_MINUT=100\n")
    with pytest.raises(SettingsError, match="WEIBAN_QUOTA_PER_MINUT: Extra inputs"):
        load_settings(_env_file=env_file)


def test_a_bad_secret_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEIBAN_SECRET", "s3cr3t-value")
    settings = load_settings(_env_file=None)
    assert "s3cr3t-value" not in repr(settings)


def test_urls_and_tokens_are_redacted() -> None:
    assert redact_url("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    text = "POST https://x/open-api/customer_group_msg/add?access_token=abc.DEF-123&x=1 failed"
    assert "abc.DEF-123" not in redact_text(text)
    assert "access_token=***&x=1" in redact_text(text)


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("cannot reach postgresql://u:p@ss@db.example/x", "ss"),
        ('{"errcode": 0, "access_token": "tok-AbC123"}', "tok-AbC123"),
        ("request secret='s3cr3t-value' refused", "s3cr3t-value"),
        ("echo: access_token=tok.XYZ for you", "tok.XYZ"),
        (r'{"payload": "{\"access_token\": \"tok-in-json\"}"}', "tok-in-json"),
    ],
)
def test_secret_shapes_are_masked_even_when_never_registered(text: str, hidden: str) -> None:
    masked = redact_text(text)
    assert hidden not in masked and "***" in masked


@pytest.fixture
def json_logs() -> object:
    """Reset logging after a test that configures it: the logger binds the stderr pytest
    captures for that test only, and later tests would write to a closed file."""
    yield
    structlog.reset_defaults()


def test_log_lines_mask_secrets_by_key_and_by_value(
    capsys: pytest.CaptureFixture[str], json_logs: object
) -> None:
    configure_logging("DEBUG", "json")
    register_secret("corp-secret-xyz")
    log = structlog.get_logger("t")
    log.info(
        "vendor_call",
        url="https://v/add?access_token=tok123456",
        secret="hunter22",
        note="secret is corp-secret-xyz",
    )
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "vendor_call"
    assert "tok123456" not in line["url"] and line["secret"] == "***"
    assert "corp-secret-xyz" not in line["note"]


@pytest.mark.parametrize(
    ("typed", "tz", "utc"),
    [
        ("2026-12-01 09:00", "Asia/Shanghai", "2026-12-01 01:00:00"),
        ("2026-12-01T09:00:00+08:00", None, "2026-12-01 01:00:00"),
        ("2026-12-01T01:00:00Z", None, "2026-12-01 01:00:00"),
    ],
)
def test_user_times_become_naive_utc(typed: str, tz: str | None, utc: str) -> None:
    assert str(parse_user_time(typed, tz=tz)) == utc


def test_a_naive_time_without_a_zone_is_refused() -> None:
    with pytest.raises(InvalidJob, match="no UTC offset"):
        parse_user_time("2026-12-01 09:00", tz=None)


def test_configured_secrets_stay_masked_however_many_tokens_come_and_go() -> None:
    from broadcaster.logs import MAX_KNOWN_TOKENS, register_token

    register_secret("configured-secret-0e7b")
    for n in range(MAX_KNOWN_TOKENS + 50):
        register_token(f"token-{n:06d}")
    masked = redact_text("invalid secret configured-secret-0e7b, token token-000299")
    assert masked == "invalid secret ***, token ***"
    assert "token-000000" in redact_text("token-000000"), "only the newest tokens are kept"


def test_the_vendor_client_goes_through_a_proxy_named_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from broadcaster.vendor import environment_proxy

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "sandbox.local")
    assert environment_proxy("https://open.weibanzhushou.com") == "http://proxy.internal:3128"
    assert environment_proxy("https://sandbox.local:8800") is None
    monkeypatch.delenv("HTTPS_PROXY")
    assert environment_proxy("https://open.weibanzhushou.com") is None


def test_web_settings_come_from_dotenv_like_the_rest(tmp_path: Path) -> None:
    from broadcaster.web.config import load_web_settings

    env_file = tmp_path / ".env"
    env_file.write_text("WEB_PORT=9091\nWEB_CORS_ORIGINS=https://crm.example.com\n")
    web = load_web_settings(load_settings(_env_file=env_file), host="0.0.0.0")
    assert (web.host, web.port, web.origins()) == ("0.0.0.0", 9091, ["https://crm.example.com"])
    env_file.write_text("WEB_PORT=eighty\n")
    with pytest.raises(SettingsError, match="WEB_PORT"):
        load_settings(_env_file=env_file)
