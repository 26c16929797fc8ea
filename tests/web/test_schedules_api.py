"""Recurring campaigns through the API (as `broadcaster schedules ...`), and the campaign
controls in the job view, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from broadcaster.bootstrap import Bootstrap
from broadcaster.campaigns.store import ScheduleStore
from broadcaster.jobs.tables import jobs
from broadcaster.timeutil import utcnow
from tests.web.conftest import BODY, Tokens

URL = "/api/v1/schedules"
WEEKLY: dict[str, Any] = {
    "cron": "0 20 * * 5",
    "tz": "Asia/Shanghai",
    "payload": {**BODY, "text": "本周精选 {date}"},
    "campaign": "weekly-digest",
}
WRITES = [
    ("POST", URL, WEEKLY),
    ("POST", f"{URL}/weekly-digest/pause", None),
    ("POST", f"{URL}/weekly-digest/resume", None),
    ("DELETE", f"{URL}/weekly-digest", None),
]


def test_add_list_pause_resume_remove(writer: TestClient, boot: Bootstrap) -> None:
    added = writer.post(URL, json={**WEEKLY, "start_at": "2030-01-01T00:00:00+08:00"})
    assert added.status_code == 201, added.text
    view = added.json()
    assert view["name"] == "weekly-digest" and view["corp_id"] == "corp-default"
    assert view["paused"] is False and view["start_at"] == "2029-12-31T16:00:00Z"
    assert view["next_occurrence"].endswith("T12:00:00Z")  # Fridays 20:00 in Shanghai
    assert view["payload"]["text"] == "本周精选 {date}"
    (listed,) = writer.get(URL).json()["items"]
    assert listed == view
    stored = ScheduleStore(boot.engine, default_corp="corp-default").all()
    assert [row.name for row in stored] == ["weekly-digest"]  # the CLI's store sees it

    paused = writer.post(f"{URL}/weekly-digest/pause").json()
    assert paused["schedule"]["paused"] is True and paused["jobs_cancelled"] == 0
    assert paused["schedule"]["next_occurrence"] is None
    resumed = writer.post(f"{URL}/{view['id']}/resume").json()
    assert resumed["schedule"]["paused"] is False

    removed = writer.delete(f"{URL}/weekly-digest")
    assert removed.status_code == 200
    assert removed.json() == {"id": view["id"], "name": "weekly-digest", "jobs_cancelled": 0}
    assert writer.get(URL).json()["items"] == []
    missing = writer.post(f"{URL}/weekly-digest/pause")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert writer.delete(f"{URL}/weekly-digest").status_code == 404


def test_a_duplicate_name_is_409(writer: TestClient) -> None:
    assert writer.post(URL, json=WEEKLY).status_code == 201
    again = writer.post(URL, json={**WEEKLY, "cron": "0 9 * * 1"})
    assert again.status_code == 409
    assert again.json()["errors"][0]["pointer"] == "/campaign"
    named = writer.post(URL, json={**WEEKLY, "name": "weekly-digest"})
    assert named.status_code == 409 and named.json()["errors"][0]["pointer"] == "/name"
    assert writer.post(URL, json={**WEEKLY, "name": "other"}).status_code == 201


@pytest.mark.parametrize(
    ("change", "pointer"),
    [
        ({"cron": "0 20 * *"}, "/cron"),
        ({"cron": "0 25 * * *"}, "/cron"),
        ({"tz": "Mars/Olympus"}, "/tz"),
        ({"payload": {**BODY, "group_ext_id_list": []}}, "/payload"),
        ({"start_at": "2030-01-02T00:00:00Z", "end_at": "2030-01-01T00:00:00Z"}, "/end_at"),
        ({"start_at": "2030-01-02T00:00:00"}, "/start_at"),  # no offset
        ({"name": "a\x00b"}, "/name"),
        ({"colour": "red"}, "/colour"),
    ],
)
def test_a_bad_field_is_named_and_nothing_stored(
    writer: TestClient, change: dict[str, Any], pointer: str
) -> None:
    answer = writer.post(URL, json={**WEEKLY, **change})
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert pointer in [error["pointer"] for error in answer.json()["errors"]]
    assert writer.get(URL).json()["items"] == []


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_a_read_token_cannot_change_schedules(
    client: TestClient, tokens: Tokens, method: str, path: str, body: object
) -> None:
    headers = tokens.header("read")
    assert client.request(method, path, json=body, headers=headers).status_code == 403
    assert client.get(URL, headers=headers).status_code == 200
    assert client.get(URL).status_code == 401


def test_the_job_view_says_held_and_urgent_and_trimmed(writer: TestClient, boot: Bootstrap) -> None:
    answer = writer.post(
        "/api/v1/broadcasts",
        json=[{"payload": BODY, "ignore_quiet_hours": True}, {"payload": BODY}],
    )
    assert answer.status_code == 201, answer.text
    urgent, plain = (item["jobs"][0]["id"] for item in answer.json()["items"])
    with boot.engine.begin() as connection:
        flags = dict(connection.execute(select(jobs.c.id, jobs.c.ignore_quiet_hours)).all())
        assert flags == {urgent: True, plain: False}
        connection.execute(
            update(jobs)
            .where(jobs.c.id == plain)
            .values(
                held_until=utcnow() + timedelta(hours=2),
                held_reason="quiet hours until 08:00 (Asia/Shanghai)",
                cap_left_out=json.dumps({"month": "2026-11", "cap": 30, "groups": ["g1"]}),
            )
        )
    held = writer.get(f"/api/v1/broadcasts/{plain}").json()
    assert held["held"] == "quiet hours until 08:00 (Asia/Shanghai)"
    assert held["held_reason"] == held["held"] and held["held_until"].endswith("Z")
    assert held["cap_left_out"] == {"month": "2026-11", "cap": 30, "groups": ["g1"]}
    assert held["ignore_quiet_hours"] is False
    free = writer.get(f"/api/v1/broadcasts/{urgent}").json()
    assert free["ignore_quiet_hours"] is True
    assert free["held"] is None and free["held_until"] is None and free["cap_left_out"] is None
    listed = {job["id"]: job for job in writer.get("/api/v1/broadcasts").json()["items"]}
    assert listed[plain]["held"] == held["held"] and listed[urgent]["ignore_quiet_hours"]
    # a replay that differs only in the flag is another body
    keyed = {"payload": BODY, "dedupe_key": "urgent-1", "ignore_quiet_hours": True}
    assert writer.post("/api/v1/broadcasts", json=keyed).status_code == 201
    assert writer.post("/api/v1/broadcasts", json=keyed).status_code == 200
    other = {**keyed, "ignore_quiet_hours": False}
    assert writer.post("/api/v1/broadcasts", json=other).status_code == 409


def test_pausing_cancels_the_jobs_made_ahead(writer: TestClient, boot: Bootstrap) -> None:
    added = writer.post(URL, json={**WEEKLY, "cron": "* * * * *", "name": "every-minute"})
    assert added.status_code == 201, added.text
    store = ScheduleStore(boot.engine, default_corp="corp-default")
    assert store.materialise(utcnow(), lookahead_s=150, grace_s=60).created >= 2
    paused = writer.post(f"{URL}/every-minute/pause").json()
    assert paused["jobs_cancelled"] >= 2
    last = writer.get(URL).json()["items"][0]
    assert last["last_outcome"] == "created" and last["last_job_id"] is not None


def test_a_large_request_keeps_its_urgent_rows(writer: TestClient, boot: Bootstrap) -> None:
    """PostgreSQL's COPY path (200 rows and more) stages only the SQL contract's columns:
    such a request with an urgent row is written by the statement path instead."""
    items = [{"payload": BODY, "ignore_quiet_hours": n == 0} for n in range(250)]
    answer = writer.post("/api/v1/broadcasts", json=items)
    assert answer.status_code == 201, answer.text
    ids = [item["jobs"][0]["id"] for item in answer.json()["items"]]
    with boot.engine.begin() as connection:
        flags = dict(connection.execute(select(jobs.c.id, jobs.c.ignore_quiet_hours)).all())
    assert [flags[job_id] for job_id in ids] == [True] + [False] * 249
