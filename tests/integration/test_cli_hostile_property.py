"""Property (issue 9): any text a producer or the vendor stored, printed by every CLI
view, appears literally: no markup read, no crash, no control character reaching the
terminal, no secret or token shown. On SQLite and PostgreSQL, rows inserted by plain SQL,
views run in process through the real entry point (`broadcaster.cli.main.main`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from broadcaster.cli.main import main
from broadcaster.logs import redact_text
from tests.helpers import body

SECRET = "prop-cli-secret-41b7"
TOKEN = "tok-PROP-93c2e1"

FRAGMENTS = [
    "[/]",
    "[link=https://evil.example/login]Weiban[/link]",
    "[bold red]",
    "[/bold red]",
    ":smile:",
    "\\[b]",
    "\x1b[2J",
    "\x1b]0;pwned\x07",
    "\x1b]8;;https://evil.example\x1b\\",
    "\r",
    "\n",
    "\t",
    "\x00",
    "\x08",
    "\x9b31m",
    "\u202e",
    "\u2028",
    "\u0301",
    "全场五折",
    SECRET,
    f"access_token={TOKEN}",
    "'",
    '"',
    " ",
]
DANGEROUS = {chr(c) for c in range(0x20) if chr(c) != "\n"} | {chr(c) for c in range(0x7F, 0xA0)}
DANGEROUS |= {
    "\u200e",
    "\u200f",
    *map(chr, range(0x202A, 0x202F)),
    *map(chr, range(0x2066, 0x206A)),
}

JSON_FIELD_TOKEN = f'"access_token": "{TOKEN}"'
"""A vendor answer quoting the token, as `last_error` may hold it. Not in the payload's
strings: JSON-escaped there (`\\"access_token\\": \\"…\\"`), `redact_text` does not
recognise the shape (reported; the known secret and `access_token=` are masked anywhere)."""


def texts(*extra: str) -> st.SearchStrategy[str]:
    pieces = st.one_of(
        st.sampled_from([*FRAGMENTS, *extra]),
        st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
    )
    return st.lists(pieces, max_size=5).map("".join)


stored_text = texts(JSON_FIELD_TOKEN)
payload_text = texts()


def shown(value: str, *, one_line: bool) -> str:
    """What the operator must see for stored `value`: the masked text, each character
    that could steer a terminal written as an escape, all else as stored."""
    out = []
    for char in redact_text(value):
        code = ord(char)
        if char == "\n" and not one_line:
            out.append(char)
        elif char in {"\n": 1, "\t": 1, "\r": 1}:
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[char])
        elif code < 0x20 or 0x7F <= code <= 0x9F:
            out.append(f"\\x{code:02x}")
        elif char in DANGEROUS or (one_line and char in "\u2028\u2029"):
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


@pytest.fixture
def cli_env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("WEIBAN_CORP_ID", "corp-default")
    monkeypatch.setenv("WEIBAN_SECRET", SECRET)
    monkeypatch.setenv("COLUMNS", "20000")  # wide: a table cell is never wrapped
    monkeypatch.delenv("REDIS_URL", raising=False)
    yield
    structlog.reset_defaults()  # the CLI bound logging to this test's captured stderr


def run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """One command through the real entry point; its stdout, after checking it ended 0."""
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    assert exited.value.code == 0, f"{args}: exit {exited.value.code}: {err}"
    assert "Traceback" not in err
    return out


@pytest.mark.usefixtures("cli_env")
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    campaign=stored_text,
    corp_id=stored_text,
    dedupe_key=stored_text,
    name=payload_text,
    message=payload_text,
    last_error=stored_text,
)
def test_any_stored_text_prints_literally_in_every_view(
    engine: Engine,
    capsys: pytest.CaptureFixture[str],
    campaign: str,
    corp_id: str,
    dedupe_key: str,
    name: str,
    message: str,
    last_error: str,
) -> None:
    if engine.dialect.name == "postgresql":  # PostgreSQL text cannot hold NUL
        campaign, corp_id, dedupe_key, name, message, last_error = (
            value.replace("\x00", "")
            for value in (campaign, corp_id, dedupe_key, name, message, last_error)
        )
    payload = json.dumps(body(name=name, text=message), ensure_ascii=False)
    row: dict[str, Any] = {
        "campaign": campaign,
        "corp_id": corp_id,
        "dedupe_key": dedupe_key,
        "payload": payload,
        "last_error": last_error,
    }
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM broadcast_attempts"))
        connection.execute(text("DELETE FROM broadcast_jobs"))
        job_id = connection.execute(
            text(
                "INSERT INTO broadcast_jobs (campaign, corp_id, dedupe_key, payload, last_error,"
                " send_at) VALUES (:campaign, :corp_id, :dedupe_key, :payload, :last_error,"
                " '2030-01-01 00:00:00') RETURNING id"
            ),
            row,
        ).scalar_one()
        connection.execute(
            text(
                "INSERT INTO broadcast_attempts (job_id, attempt_no, started_at, outcome, error)"
                " VALUES (:j, 1, '2030-01-01 00:00:00', 'failed', :e)"
            ),
            {"j": job_id, "e": last_error},
        )

    outputs = {
        "status": run(capsys, "status"),
        "jobs list": run(capsys, "jobs", "list"),
        "jobs show": run(capsys, "jobs", "show", str(job_id)),
    }
    corp_shown = corp_id or "corp-default"  # NULL-like '' is the default corp in `status`
    expected = {
        "status": [shown(corp_shown, one_line=True), shown(campaign, one_line=True)],
        "jobs list": [shown(v, one_line=True) for v in (corp_id, campaign, last_error)],
        "jobs show": [
            f"{key}: {shown(row[key], one_line=False)}\n"
            for key in ("campaign", "corp_id", "dedupe_key", "payload", "last_error")
        ]
        + [f"failed errcode=None {shown(last_error, one_line=False)}\n"],
    }
    for view, out in outputs.items():
        assert not set(out) & DANGEROUS, f"{view}: a control character reached the terminal"
        assert SECRET not in out and TOKEN not in out, f"{view}: a secret was shown"
        for literal in expected[view]:
            assert literal in out, f"{view}: {literal!r} not shown literally in {out!r}"

    listed = json.loads(run(capsys, "jobs", "list", "--json"))
    one = json.loads(run(capsys, "jobs", "show", str(job_id), "--json"))
    for data in (listed[0], one):
        assert {key: data[key] for key in row} == {k: redact_text(v) for k, v in row.items()}

    cancelled = run(capsys, "jobs", "cancel", f"--campaign={campaign}")
    assert cancelled == f"campaign {shown(campaign, one_line=True)}: 1 jobs cancelled\n"
