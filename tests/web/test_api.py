"""The /api/v1 routes through FastAPI's TestClient, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select, text, update
from structlog.testing import capture_logs

from broadcaster.bootstrap import Bootstrap
from broadcaster.jobs.tables import jobs
from broadcaster.produce.api import schedule_broadcast
from broadcaster.web.app import create_app
from tests.web.conftest import BODY, Tokens, web_settings

URL = "/api/v1/broadcasts"


def _count(boot: Bootstrap) -> int:
    with boot.engine.begin() as connection:
        return connection.execute(select(func.count()).select_from(jobs)).scalar_one()


def _post(client: TestClient, body: Any, **headers: str) -> Any:
    return client.post(URL, json=body, headers=headers)


def test_one_job_is_created_and_read_back_with_its_delivery_fields(writer: TestClient) -> None:
    answer = _post(
        writer,
        {"payload": BODY, "send_at": "2030-12-12T20:00:00+08:00", "campaign": "c1", "priority": 3},
    )
    assert answer.status_code == 201, answer.text
    (item,) = answer.json()["items"]
    assert item["created"] is True and item["index"] == 0
    (job,) = item["jobs"]
    assert job["send_at"] == "2030-12-12T12:00:00Z"
    assert job["corp_id"] == "corp-default" and job["status"] == "scheduled"
    shown = writer.get(f"{URL}/{job['id']}").json()
    assert shown["payload"]["group_ext_id_list"] == ["group-1"]
    assert shown["attempt_history"] == []
    assert shown["delivery"] == {
        "vendor_mission_id": None,
        "status": None,
        "groups_reached": None,
        "groups_unreached": None,
        "staff_confirmed": None,
        "staff_total": None,
        "checked_at": None,
        "note": None,
    }


def test_the_api_writes_the_row_the_python_api_writes(writer: TestClient, boot: Bootstrap) -> None:
    fields = {"send_at": "2030-12-12T20:00:00+08:00", "campaign": "same", "priority": 2}
    api_id = _post(writer, {"payload": BODY, **fields, "dedupe_key": "a"}).json()["items"][0][
        "jobs"
    ][0]["id"]
    python = schedule_broadcast(
        BODY,
        send_at=datetime.fromisoformat(fields["send_at"]),
        campaign="same",
        priority=2,
        dedupe_key="b",
        store=boot.store,
    )
    columns = (
        "corp_id",
        "payload",
        "send_at",
        "campaign",
        "priority",
        "expires_at",
        "max_attempts",
        "status",
    )
    with boot.engine.begin() as connection:
        rows = {
            row.id: tuple(getattr(row, c) for c in columns)
            for row in connection.execute(select(jobs))
        }
    assert rows[api_id] == rows[python.job_ids[0]]


def test_naive_times_unknown_fields_and_bad_payloads_are_named(writer: TestClient) -> None:
    answer = _post(
        writer,
        [
            {"payload": BODY, "send_at": "2030-12-12T20:00:00"},
            {"payload": BODY, "colour": "red"},
            {"payload": {**BODY, "text": 5}},
            {"payload": BODY, "priority": 2**40},
        ],
    )
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    pointers = [e["pointer"] for e in answer.json()["errors"]]
    assert pointers == ["/0/send_at", "/1/colour", "/2/payload", "/3/priority"]
    assert "timezone" in answer.json()["errors"][0]["detail"]


def test_a_batch_with_one_bad_item_writes_nothing(writer: TestClient, boot: Bootstrap) -> None:
    items: list[dict[str, Any]] = [{"payload": BODY} for _ in range(20)]
    items[17] = {"payload": {**BODY, "group_ext_id_list": "group-1"}}
    answer = _post(writer, items)
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["pointer"] == "/17/payload"
    assert _count(boot) == 0
    answer = _post(writer, [{"payload": BODY}] * 1001)
    assert answer.status_code == 422 and _count(boot) == 0
    answer = _post(writer, [{"payload": BODY}] * 100)
    assert answer.status_code == 201 and len(answer.json()["items"]) == 100
    assert _count(boot) == 100


def test_bad_bodies_are_400_415_and_413(boot: Bootstrap, tokens: Tokens) -> None:
    app = create_app(boot, web_settings(max_body_bytes=4096))
    with TestClient(app, headers=tokens.header("write")) as client:
        answer = client.post(URL, content=b"{nope", headers={"content-type": "application/json"})
        assert answer.status_code == 400 and "not valid JSON" in answer.json()["detail"]
        answer = client.post(URL, content=b"{}", headers={"content-type": "text/plain"})
        assert answer.status_code == 415
        answer = _post(client, [{"payload": BODY}] * 50)
        assert answer.status_code == 413
        assert answer.headers["content-type"] == "application/problem+json"

        def chunks() -> Any:  # no Content-Length: counted as it streams
            for _ in range(10):
                yield b" " * 1000

        answer = client.post(URL, content=chunks(), headers={"content-type": "application/json"})
        assert answer.status_code == 413
    assert _count(boot) == 0


def test_idempotency_key_replays_and_conflicts(writer: TestClient, boot: Bootstrap) -> None:
    with capture_logs() as logs:
        first = _post(writer, {"payload": BODY, "campaign": "k"}, **{"Idempotency-Key": "order-1"})
    assert first.status_code == 201
    (audit,) = [line for line in logs if line["event"] == "api_jobs_scheduled"]
    assert audit["token"] == "writer" and audit["jobs_created"] == 1
    again = _post(writer, {"payload": BODY, "campaign": "k"}, **{"Idempotency-Key": "order-1"})
    assert again.status_code == 200
    assert again.json()["items"][0]["created"] is False
    assert again.json()["items"][0]["jobs"] == first.json()["items"][0]["jobs"]
    other = _post(writer, {"payload": {**BODY, "text": "另一条"}}, **{"Idempotency-Key": "order-1"})
    assert other.status_code == 409
    assert other.json()["errors"][0]["pointer"] == "/dedupe_key"
    by_body = _post(writer, {"payload": BODY, "campaign": "k", "dedupe_key": "order-1"})
    assert by_body.status_code == 200
    mismatch = _post(writer, {"payload": BODY, "dedupe_key": "x"}, **{"Idempotency-Key": "y"})
    assert mismatch.status_code == 422
    on_list = _post(writer, [{"payload": BODY}], **{"Idempotency-Key": "z"})
    assert on_list.status_code == 422
    assert on_list.json()["errors"][0]["pointer"] == "header:Idempotency-Key"
    part_key = _post(writer, {"payload": BODY}, **{"Idempotency-Key": "camp#2"})
    assert part_key.status_code == 422
    repeated = _post(writer, [{"payload": BODY, "dedupe_key": "r"}] * 2)
    assert (
        repeated.status_code == 422 and repeated.json()["errors"][0]["pointer"] == "/1/dedupe_key"
    )
    assert _count(boot) == 1


def test_a_large_audience_is_split_and_replayed_whole(writer: TestClient) -> None:
    body = {
        "payload": {**BODY, "group_ext_id_list": [f"g{i}" for i in range(4500)]},
        "dedupe_key": "big",
    }
    first = _post(writer, body)
    assert first.status_code == 201
    parts = first.json()["items"][0]["jobs"]
    assert [job["dedupe_key"] for job in parts] == ["big#1", "big#2", "big#3"]
    sizes = [
        len(writer.get(f"{URL}/{job['id']}").json()["payload"]["group_ext_id_list"])
        for job in parts
    ]
    assert sizes == [2000, 2000, 500]
    again = _post(writer, body)
    assert again.status_code == 200 and again.json()["items"][0]["jobs"] == parts


def test_cursor_pages_cover_every_job_once_newest_first(writer: TestClient) -> None:
    for campaign in ("a", "b", "a", "a", "b"):
        assert _post(writer, {"payload": BODY, "campaign": campaign}).status_code == 201
    seen: list[int] = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = writer.get(URL, params=params).json()
        seen += [job["id"] for job in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)) == 5
    only_a = writer.get(URL, params={"campaign": "a", "status": "scheduled"}).json()["items"]
    assert len(only_a) == 3
    default_corp = writer.get(URL, params={"corp_id": "corp-default"}).json()["items"]
    assert len(default_corp) == 5, "NULL corp_id is the default corp"
    assert writer.get(URL, params={"status": "done"}).status_code == 422
    assert writer.get(URL, params={"cursor": "garbage"}).status_code == 422
    assert writer.get(URL, params={"limit": 0}).status_code == 422


def test_cancel_retry_resolve_and_their_conflicts(writer: TestClient, boot: Bootstrap) -> None:
    ids = [_post(writer, {"payload": BODY}).json()["items"][0]["jobs"][0]["id"] for _ in range(3)]
    assert writer.post(f"{URL}/{ids[0]}/cancel").json()["status"] == "cancelled"
    again = writer.post(f"{URL}/{ids[0]}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]
    assert writer.post(f"{URL}/{ids[1]}/retry").status_code == 409
    assert writer.post(f"{URL}/999999/retry").status_code == 404
    assert writer.get(f"{URL}/999999").status_code == 404
    assert writer.get(f"{URL}/0").status_code == 422
    with boot.engine.begin() as connection:
        connection.execute(update(jobs).where(jobs.c.id == ids[1]).values(status="failed"))
        connection.execute(update(jobs).where(jobs.c.id == ids[2]).values(status="unknown"))
    assert writer.post(f"{URL}/{ids[1]}/retry").json()["status"] == "scheduled"
    bad = writer.post(f"{URL}/{ids[2]}/resolve", json={"decision": "maybe"})
    assert bad.status_code == 422
    resolved = writer.post(f"{URL}/{ids[2]}/resolve", json={"decision": "sent"})
    assert resolved.json()["status"] == "sent"


def test_campaign_counts_and_cancel(writer: TestClient, boot: Bootstrap) -> None:
    for _ in range(3):
        _post(writer, {"payload": BODY, "campaign": "双十二"})
    with boot.engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE broadcast_jobs SET status = 'sent', delivery_status = 'completed' "
                "WHERE id = (SELECT min(id) FROM broadcast_jobs)"
            )
        )
    counts = writer.get("/api/v1/campaigns/双十二").json()
    assert counts == {
        "name": "双十二",
        "total": 3,
        "by_status": {"scheduled": 2, "sent": 1},
        "by_delivery": {"completed": 1},
    }
    cancelled = writer.post("/api/v1/campaigns/双十二/cancel").json()
    assert cancelled == {"campaign": "双十二", "cancelled": 2, "left_sending": 0}
    assert writer.get("/api/v1/campaigns/nothing").status_code == 404


def test_status_is_the_status_report(writer: TestClient) -> None:
    _post(writer, {"payload": BODY, "campaign": "s"})
    report = writer.get("/api/v1/status").json()
    assert report["totals"] == {"scheduled": 1}
    assert "corp-default" in report["quota"]


def test_openapi_document_and_docs_page(client: TestClient) -> None:
    document = client.get("/api/v1/openapi.json").json()
    assert "/api/v1/broadcasts" in document["paths"]
    assert "HTTPBearer" in document["components"]["securitySchemes"]
    assert client.get("/api/v1/docs").status_code == 200


def test_rows_written_oddly_by_sql_are_shown_not_a_500(writer: TestClient, boot: Bootstrap) -> None:
    """Producers' SQL can store what Python cannot read (the scheduler fails such rows):
    the API shows them, with null where a value does not load."""
    odd = (
        [
            "INSERT INTO broadcast_jobs (payload, priority, campaign, send_at) VALUES "
            "('{\"x\": 1}', 'high', CAST(X'FF41' AS TEXT), '0000-06-01')"
        ]
        if boot.engine.dialect.name == "sqlite"
        else [
            "INSERT INTO broadcast_jobs (payload, send_at, campaign) "
            "VALUES ('not json', '-infinity', 'odd')"
        ]
    )
    with boot.engine.begin() as connection:
        for statement in odd:
            connection.execute(text(statement))
        job_id = connection.execute(text("SELECT max(id) FROM broadcast_jobs")).scalar_one()
    _post(writer, {"payload": BODY})
    page = writer.get(URL)
    assert page.status_code == 200, page.text
    assert len(page.json()["items"]) == 2
    shown = writer.get(f"{URL}/{job_id}")
    assert shown.status_code == 200, shown.text
    job = shown.json()
    assert job["send_at"] is None
    if boot.engine.dialect.name == "sqlite":
        assert job["priority"] is None and job["campaign"] == "\\xffA"
    else:
        assert job["payload"] == "not json"
