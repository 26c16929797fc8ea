"""Hostile input through the producer paths (issue 9, items 6 and 11): one bad line or item
never stops an import half way or fails a batch; it is rejected by its line number with a
reason, and everything else goes in. On SQLite and PostgreSQL, including PostgreSQL's COPY
path for large batches."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select, text

from broadcaster import schedule_broadcast, schedule_many
from broadcaster.db import is_sqlite
from broadcaster.errors import BroadcasterError, InvalidJob
from broadcaster.jobs.store import JobStore
from broadcaster.jobs.tables import PRODUCER_COLUMNS, jobs
from broadcaster.produce.importer import import_file
from broadcaster.timeutil import utcnow
from tests.helpers import body
from tests.integration.test_producers import cli

COLUMNS = list(PRODUCER_COLUMNS)
POISON = "the-database-refuses-this"
"""A campaign a test-only trigger/constraint makes the database refuse: a row that passes
every check of ours and still fails its insert, to prove only its own line is lost."""


@pytest.fixture
def copy_path(monkeypatch: pytest.MonkeyPatch, engine: Engine) -> bool:
    """Send batches of 3 rows or more through PostgreSQL's COPY path (normally 200)."""
    monkeypatch.setattr("broadcaster.jobs.store.insert.COPY_THRESHOLD", 3)
    return not is_sqlite(engine)


@pytest.fixture
def poison(engine: Engine) -> Iterator[None]:
    if is_sqlite(engine):  # this test's own database file
        with engine.begin() as connection:
            connection.execute(
                text(
                    "CREATE TRIGGER refuse_poison BEFORE INSERT ON broadcast_jobs "
                    f"WHEN NEW.campaign = '{POISON}' BEGIN SELECT RAISE(ABORT, 'poison'); END"
                )
            )
        yield
        return
    with engine.begin() as connection:
        connection.execute(
            text(
                "ALTER TABLE broadcast_jobs ADD CONSTRAINT test_poison "
                f"CHECK (campaign IS DISTINCT FROM '{POISON}')"
            )
        )
    try:
        yield
    finally:
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE broadcast_jobs DROP CONSTRAINT test_poison"))


def good(tag: str, number: int, **fields: Any) -> dict[str, Any]:
    return {
        "payload": body(),
        "dedupe_key": f"{tag}-{number}",
        "campaign": tag,
        "send_at": "2026-12-01T09:00:00+08:00",
        **fields,
    }


def dumps(value: Any) -> str:
    """JSON as people write it (UTF-8, not \\u escapes), but an unpaired surrogate, which
    UTF-8 cannot carry, as its JSON escape."""
    written = json.dumps(value, ensure_ascii=False)
    try:
        written.encode()
    except UnicodeEncodeError:
        return json.dumps(value)
    return written


def jsonl(records: list[dict[str, Any] | str]) -> str:
    return "".join((r if isinstance(r, str) else dumps(r)) + "\n" for r in records)


def csv_row(record: dict[str, Any] | str) -> str:
    """One CSV record as a line; a string is written as it is (a junk line)."""
    if isinstance(record, str):
        return record + "\n"
    out = io.StringIO()
    cells = []
    for column in COLUMNS:
        value = record.get(column)
        if column == "payload" and not isinstance(value, str | None):
            value = dumps(value)
        cells.append("" if value is None else str(value))
    csv.writer(out, lineterminator="\n").writerow(cells)
    return out.getvalue()


def csv_text(records: list[dict[str, Any] | str]) -> str:
    return ",".join(COLUMNS) + "\n" + "".join(csv_row(record) for record in records)


def rows_of(engine: Engine, tag: str) -> list[Any]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                text(
                    "SELECT dedupe_key, campaign, priority, send_at FROM broadcast_jobs "
                    "WHERE dedupe_key LIKE :prefix ORDER BY id"
                ),
                {"prefix": f"{tag}-%"},
            )
        )


# ------------------------------------------------------------------ the issue's cases
ISSUE_CASES = [
    ({"send_at": "9999-12-31T23:59:59-05:00"}, "out of range once converted to UTC"),
    ({"priority": 10**20}, "priority: Input should be less than or equal to 2147483647"),
    ({"campaign": "nul\x00here"}, "campaign: contains a NUL character"),
    ({"corp_id": "  "}, "corp_id: must not be empty"),
]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_the_issues_lines_are_rejected_by_number_and_the_rest_imported(
    fmt: str, engine: Engine, store: JobStore, tmp_path: Path, copy_path: bool
) -> None:
    """Each bad line sits in a different batch, between good ones; batches of 5 rows go
    through COPY on PostgreSQL. Before the fix the first one ended the import with a
    traceback, and every row after its batch was silently not imported."""
    tag = f"issue-{fmt}"
    records: list[dict[str, Any]] = [good(tag, n) for n in range(40)]
    bad_at = {3: ISSUE_CASES[0], 11: ISSUE_CASES[1], 22: ISSUE_CASES[2], 37: ISSUE_CASES[3]}
    for index, (change, _) in bad_at.items():
        records[index] = {**records[index], **change}
    path = tmp_path / f"jobs.{fmt}"
    path.write_text(jsonl(records) if fmt == "jsonl" else csv_text(records), encoding="utf-8")

    report = import_file(path, store, tz="Asia/Shanghai", batch_size=5)

    first_line = 1 if fmt == "jsonl" else 2  # a CSV's line 1 is its header
    expected = [(index + first_line, reason) for index, (_, reason) in sorted(bad_at.items())]
    assert [line for line, _ in report.rejected] == [line for line, _ in expected]
    for (_, reason), (_, wanted) in zip(report.rejected, expected, strict=True):
        assert wanted in reason
    assert (report.lines, report.inserted, report.duplicates) == (40, 36, 0)
    keys = [row.dedupe_key for row in rows_of(engine, tag)]
    assert keys == [f"{tag}-{n}" for n in range(40) if n not in bad_at]


def test_the_cli_prints_the_summary_and_each_rejected_line(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    records: list[dict[str, Any] | str] = [good("cli", n) for n in range(6)]
    records[1] = {**good("cli", 1), "send_at": "9999-12-31T23:59:59-05:00"}
    records[2] = {**good("cli", 2), "priority": 10**20}
    records[3] = {**good("cli", 3), "campaign": "\x00"}
    records[4] = {**good("cli", 4), "corp_id": "\ud800"}
    path = tmp_path / "jobs.jsonl"
    path.write_text(jsonl(records), encoding="utf-8")

    done = cli(db_url, "import", str(path))

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "6 lines: 2 jobs inserted, 0 skipped as duplicate, 4 rejected" in done.stdout
    for line, reason in [
        (2, "out of range"),
        (3, "priority"),
        (4, "campaign: contains a NUL character (\\x00)"),
        (5, "corp_id: contains an unpaired surrogate '\\ud800'"),
    ]:
        assert f"line {line}: " in done.stdout and reason in done.stdout
    assert [row.dedupe_key for row in rows_of(engine, "cli")] == ["cli-0", "cli-5"]


# ------------------------------------------------------------------ encodings
@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("corp_id,payload\nbad-é,{}\n".encode("latin-1"), "(line 2: byte 0xe9)"),
        ("第一行\n".encode("gbk"), "(line 1: byte 0xb5)"),
        ("corp_id,payload\n".encode("utf-16"), "is UTF-16 text, not UTF-8"),
    ],
)
def test_a_file_that_is_not_utf8_is_refused_up_front_with_the_fix(
    db_url: str, engine: Engine, tmp_path: Path, content: bytes, named: str
) -> None:
    """Our choice (README): the whole file is refused before anything is written, naming
    the first bad line and the iconv command, rather than importing half of it."""
    good_first = csv_text([good("enc", 0)]).encode()
    path = tmp_path / "jobs.csv"
    path.write_bytes(content if content.startswith(b"\xff\xfe") else good_first + content)

    done = cli(db_url, "import", str(path))

    assert done.returncode == 1
    error = done.stderr.strip()
    assert error.count("\n") == 0 and "Traceback" not in error, error
    if "UTF-16" not in named:
        named = named.replace("line 1", "line 3").replace("line 2", "line 4")
    assert named in error
    assert "nothing was imported" in error and "iconv -f " in error and "-t UTF-8" in error
    assert rows_of(engine, "enc") == []


def test_a_utf8_file_with_a_bom_imports(store: JobStore, engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "jobs.csv"
    path.write_bytes(b"\xef\xbb\xbf" + csv_text([good("bom", 0)]).encode())
    assert import_file(path, store, tz="UTC").inserted == 1


def test_a_csv_cell_over_128_kib_is_read(store: JobStore, tmp_path: Path) -> None:
    """A split audience's payload cell passes csv's default 128 KiB cell cap; before, the
    csv error stopped the import with a traceback."""
    groups = [f"group-ext-id-{i:08d}" for i in range(6000)]
    path = tmp_path / "jobs.csv"
    path.write_text(csv_text([good("wide", 0, payload=body(group_ext_id_list=groups))]))
    report = import_file(path, store, tz="UTC")
    assert (report.inserted, report.rejected) == (3, [])


# ------------------------------------------------------------------ the database refuses a row
def test_a_row_the_database_refuses_costs_only_its_own_line(
    store: JobStore, engine: Engine, tmp_path: Path, copy_path: bool, poison: None
) -> None:
    records: list[dict[str, Any]] = [good("db", n) for n in range(12)]
    records[4]["campaign"] = POISON
    records[9]["campaign"] = POISON
    path = tmp_path / "jobs.jsonl"
    path.write_text(jsonl(records), encoding="utf-8")

    report = import_file(path, store, tz="UTC", batch_size=4)

    assert [line for line, _ in report.rejected] == [5, 10]
    assert all("refused by the database" in reason for _, reason in report.rejected)
    assert report.inserted == 10
    assert len(rows_of(engine, "db")) == 10


# ------------------------------------------------------------------ Python API
def test_the_python_api_refuses_what_the_table_cannot_hold_and_writes_nothing(
    store: JobStore, engine: Engine, copy_path: bool
) -> None:
    items = [good("api", n) | {"send_at": None} for n in range(250)]
    for change, reason in [*ISSUE_CASES, ({"corp_id": ""}, "corp_id: must not be empty")]:
        bad = [*items[:100], {**items[100], **change}, *items[101:]]
        with pytest.raises(InvalidJob, match=f"item 100: .*{reason[:20]}"):
            schedule_many(bad, store=store)
        assert rows_of(engine, "api") == []
    assert len(schedule_many(items, store=store).job_ids) == 250


def test_schedule_broadcast_refuses_an_empty_corp_id(store: JobStore) -> None:
    """Before, `corp_id=''` was stored and sent as the default corp."""
    for corp in ("", " "):
        with pytest.raises(InvalidJob, match="corp_id: must not be empty"):
            schedule_broadcast(body(), store=store, corp_id=corp)
    assert store.list_jobs() == []


# ------------------------------------------------------------------ split parts vs other rows
def insert_by_hand(engine: Engine, key: str, groups: list[str], corp: str | None = None) -> int:
    with engine.begin() as connection:
        return connection.execute(
            text(
                "INSERT INTO broadcast_jobs (corp_id, payload, dedupe_key) "
                "VALUES (:corp, :payload, :key) RETURNING id"
            ),
            {"corp": corp, "payload": json.dumps(body(group_ext_id_list=groups)), "key": key},
        ).scalar_one()


AUDIENCE = [f"g{i}" for i in range(4500)]  # three parts: 2000, 2000, 500


def test_a_row_keyed_like_a_part_does_not_stand_in_for_it(store: JobStore, engine: Engine) -> None:
    """Before, the hand-written `camp#2` counted as part 2 already scheduled: groups
    g2000-g3999 would have received nothing, reported as a harmless duplicate."""
    stranger = insert_by_hand(engine, "camp#2", ["someone-else"])

    with pytest.raises(InvalidJob, match=rf"'camp#2'.*held by job {stranger}, which is not"):
        schedule_broadcast(body(group_ext_id_list=AUDIENCE), store=store, dedupe_key="camp")

    assert [job.dedupe_key for job in store.list_jobs()] == ["camp#2"], "nothing written"


def test_a_split_send_scheduled_again_is_a_duplicate(store: JobStore, engine: Engine) -> None:
    big = body(group_ext_id_list=AUDIENCE)
    first = schedule_broadcast(big, store=store, dedupe_key="camp")
    again = schedule_broadcast(big, store=store, dedupe_key="camp")
    assert len(first.job_ids) == 3
    assert (again.job_ids, again.duplicate_keys) == ([], ["camp#1", "camp#2", "camp#3"])
    # A part scheduled in another corp is not this part either.
    with pytest.raises(InvalidJob, match="'camp#1'"):
        schedule_broadcast(big, store=store, dedupe_key="camp", corp_id="corp-b")


def test_a_split_send_is_still_a_duplicate_once_the_claim_named_its_corp(
    store: JobStore,
) -> None:
    """The claim writes the default corp into a row sent with corp_id NULL; scheduling the
    same send again must still count as a duplicate, not a collision."""
    big = body(group_ext_id_list=AUDIENCE)
    schedule_broadcast(big, store=store, dedupe_key="camp")
    assert len(store.claim_due(utcnow(), 10, 60).claimed) == 3
    again = schedule_broadcast(big, store=store, dedupe_key="camp")
    assert (again.job_ids, again.duplicate_keys) == ([], ["camp#1", "camp#2", "camp#3"])


def test_a_user_key_ending_like_a_part_is_refused(store: JobStore) -> None:
    """A plain send keyed `camp#2` would otherwise be skipped as a 'duplicate' of part 2."""
    schedule_broadcast(body(group_ext_id_list=AUDIENCE), store=store, dedupe_key="camp")
    with pytest.raises(InvalidJob, match="dedupe_key: must not end in '#2'"):
        schedule_broadcast(body(), store=store, dedupe_key="camp#2")


def test_import_rejects_the_line_whose_part_is_held_by_another_row(
    store: JobStore, engine: Engine, tmp_path: Path
) -> None:
    insert_by_hand(engine, "imp-big#3", ["someone-else"])
    records = [
        good("imp", 0),
        good("imp", 1, dedupe_key="imp-big", payload=body(group_ext_id_list=AUDIENCE)),
        good("imp", 2),
        good("imp", 3, dedupe_key="imp-ok", payload=body(group_ext_id_list=AUDIENCE)),
    ]
    path = tmp_path / "jobs.jsonl"
    path.write_text(jsonl(records), encoding="utf-8")

    report = import_file(path, store, tz="UTC")

    assert [line for line, _ in report.rejected] == [2]
    assert "'imp-big#3'" in report.rejected[0][1]
    assert report.inserted == 2 + 3
    keys = {job.dedupe_key for job in store.list_jobs()}
    assert keys == {"imp-0", "imp-2", "imp-ok#1", "imp-ok#2", "imp-ok#3", "imp-big#3"}


# ------------------------------------------------------------------ property: random bad lines
BAD_KINDS: list[tuple[str, dict[str, Any], str, bool]] = [
    # (name, change to a good record, expected in the reason, possible in a UTF-8 CSV)
    ("late", {"send_at": "9999-12-31T23:59:59-05:00"}, "out of range", True),
    ("early", {"expires_at": "0001-01-01T00:00:00+01:00"}, "out of range", True),
    ("priority", {"priority": 10**20}, "priority", True),
    ("negative", {"priority": -(10**20)}, "priority", True),
    ("attempts", {"max_attempts": 0}, "max_attempts", True),
    ("nul campaign", {"campaign": "a\x00b"}, "campaign: contains a NUL", True),
    ("nul key", {"dedupe_key": "k\x00"}, "dedupe_key: contains a NUL", True),
    ("blank corp", {"corp_id": " "}, "corp_id: must not be empty", True),
    ("surrogate corp", {"corp_id": "\udc80"}, "corp_id: contains an unpaired surrogate", False),
    ("nul text", {"payload": body(text="\x00")}, "text: contains a NUL", True),
    ("surrogate group", {"payload": body(group_ext_id_list=["\ud800"])}, "unpaired", True),
    ("long text", {"payload": body(text="中" * 1400)}, "text: 4200 bytes", True),
    ("part key", {"dedupe_key": "x#3"}, "must not end in '#3'", True),
    ("long key", {"dedupe_key": "k" * 1001}, "dedupe_key: 1001 bytes", True),
    ("no payload", {"payload": None}, "payload", True),
    ("poison", {"campaign": POISON}, "refused by the database", True),
]
RAW_BAD = [
    # (JSON Lines line, CSV line, expected in the reason): lines no dict can be written as
    ('{"payload": ' + "[" * 5000 + "]" * 5000 + "}", "c," + "[" * 5000, "not valid JSON"),
    ('{"payload": {}, "priority": ' + "9" * 5000 + "}", ",{},,,," + "9" * 5000, "not valid JSON"),
]
JUNK = st.text(
    alphabet=st.characters(exclude_categories=("Cs",), exclude_characters='\r\n"'), min_size=1
).filter(lambda s: s.strip() and not s.startswith("\ufeff"))
LABEL = st.text(
    alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\x00\r\n"),
    min_size=1,
    max_size=30,
).filter(str.strip)


@st.composite
def lines(draw: st.DrawFn, fmt: str) -> list[tuple[str, Any]]:
    """A file's lines: ("good", fields) or ("bad", kind index) or ("junk", text)."""
    usable = [i for i, kind in enumerate(BAD_KINDS) if fmt == "jsonl" or kind[3]]
    line = st.one_of(
        st.tuples(
            st.just("good"),
            st.fixed_dictionaries(
                {},
                optional={
                    "corp_id": LABEL,
                    "priority": st.integers(-(2**31), 2**31 - 1),
                    "max_attempts": st.integers(1, 100),
                    "send_at": st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30)).map(
                        datetime.isoformat
                    ),
                    "text": LABEL,
                },
            ),
        ),
        st.tuples(st.just("bad"), st.sampled_from(usable)),
        st.tuples(st.just("raw"), st.sampled_from(range(len(RAW_BAD)))),
        st.tuples(st.just("junk"), JUNK),
    )
    return draw(st.lists(line, min_size=1, max_size=30))


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_bad_lines_are_rejected_by_number_and_every_good_line_is_imported(
    fmt: str,
    data: st.DataObject,
    store: JobStore,
    engine: Engine,
    tmp_path: Path,
    copy_path: bool,
    poison: None,
) -> None:
    drawn = data.draw(lines(fmt))
    batch_size = data.draw(st.integers(1, 8), label="batch_size")
    tag = f"p{uuid.uuid4().hex[:10]}"
    records: list[dict[str, Any] | str] = []
    expected_bad: dict[int, str] = {}
    good_keys = []
    first_line = 1 if fmt == "jsonl" else 2
    for index, (kind, value) in enumerate(drawn):
        number = index + first_line
        if kind == "good":
            fields = dict(value)
            payload = body(text=fields.pop("text", "全场五折"))
            record = good(tag, index, payload=payload, **fields)
            good_keys.append(record["dedupe_key"])
        elif kind == "bad":
            _, change, reason, _ = BAD_KINDS[value]
            record = {**good(tag, index), **change}
            if record["payload"] is None:
                del record["payload"]
            expected_bad[number] = reason
        elif kind == "raw":
            jsonl_line, csv_line, reason = RAW_BAD[value]
            record = jsonl_line if fmt == "jsonl" else csv_line
            expected_bad[number] = reason if fmt == "jsonl" else ""
        else:
            record = value
            expected_bad[number] = ""  # any reason
        records.append(record)
    path = tmp_path / f"{tag}.{fmt}"
    path.write_text(jsonl(records) if fmt == "jsonl" else csv_text(records), encoding="utf-8")
    zone = data.draw(st.sampled_from(["UTC", "Asia/Shanghai"]), label="tz")

    report = import_file(path, store, tz=zone, batch_size=batch_size)

    assert [line for line, _ in report.rejected] == sorted(expected_bad)
    for line, reason in report.rejected:
        assert expected_bad[line] in reason, (line, reason)
        assert reason.isprintable()
    assert report.lines == len(drawn)
    assert (report.inserted, report.duplicates) == (len(good_keys), 0)
    assert [row.dedupe_key for row in rows_of(engine, tag)] == good_keys


def test_a_database_that_goes_away_stops_the_import_saying_how_far_it_got(
    engine: Engine, tmp_path: Path
) -> None:
    """Not a row's fault: no line is blamed; the one-line error says what is in."""
    from broadcaster.errors import JobStoreError

    class FailsOnSecondBatch(JobStore):
        calls = 0

        def insert_jobs(self, rows: Any) -> Any:
            self.calls += 1
            if self.calls == 2:
                raise JobStoreError("database unavailable: connection refused")
            return super().insert_jobs(rows)

    path = tmp_path / "jobs.jsonl"
    path.write_text(jsonl([good("gone", n) for n in range(10)]), encoding="utf-8")

    with pytest.raises(JobStoreError) as stopped:
        import_file(path, FailsOnSecondBatch(engine), tz="UTC", batch_size=4)

    message = str(stopped.value)
    assert message.startswith("database unavailable: connection refused; import stopped")
    assert "lines before 5 are in (4 jobs inserted, 0 duplicates, 0 rejected)" in message
    assert len(rows_of(engine, "gone")) == 4


@pytest.mark.parametrize("shared", [False, True], ids=["pool-only", "shared-with-writer"])
def test_parsing_processes_give_the_same_import_line_for_line(
    tmp_path: Path, sqlite_template: Path, monkeypatch: pytest.MonkeyPatch, shared: bool
) -> None:
    """`broadcaster import` parses a large file in processes of their own, by byte ranges
    each reads itself, and the writing process parses chunks too while the next result is
    not ready: the report and the rows must be exactly those of parsing in process, across
    chunk boundaries (small chunks here), with a BOM, CRLF and lone-CR line ends, blank,
    broken, rejected and duplicate lines among them."""
    from broadcaster.db import make_engine
    from broadcaster.produce import importer

    monkeypatch.setattr(importer, "CHUNK_BYTES", 300)
    if not shared:  # the writer never parses: every chunk goes through the pool
        monkeypatch.setattr(importer, "PARSED_AHEAD_MAX", 0)
    lines = []
    for number in range(60):
        item = {"payload": body(name=f"n{number}"), "dedupe_key": f"k{number % 50}"}
        if number % 11 == 3:
            lines.append("")
        elif number % 13 == 5:
            lines.append('{"payload": ')
        elif number % 17 == 2:
            lines.append(json.dumps({**item, "payload": {"name": "no audience"}}))
        else:
            lines.append(json.dumps({**item, "send_at": "2026-12-12 20:00"}, ensure_ascii=False))
    ends = ["\r\n" if number % 7 == 1 else "\r" if number == 40 else "\n" for number in range(60)]
    path = tmp_path / "rows.jsonl"
    text_with_ends = "".join(line + end for line, end in zip(lines, ends, strict=True))
    path.write_bytes(b"\xef\xbb\xbf" + text_with_ends.encode())

    def imported(processes: int) -> tuple[Any, list[tuple[Any, ...]]]:
        database = tmp_path / f"jobs-{processes}.db"
        database.write_bytes(sqlite_template.read_bytes())
        engine = make_engine(f"sqlite:///{database}")
        store = JobStore(engine, default_corp="corp-default")
        report = import_file(
            path, store, tz="Asia/Shanghai", batch_size=5, parse_processes=processes
        )
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT id, payload, send_at, dedupe_key FROM broadcast_jobs ORDER BY id")
            ).all()
        engine.dispose()
        return report, [tuple(row) for row in rows]

    in_process, parallel = imported(0), imported(1)
    assert parallel == in_process
    report, rows = parallel
    assert report.lines == 60 - len([line for line in lines if not line])
    assert report.rejected and report.duplicates == 5 and len(rows) == report.inserted
    assert [number for number, _ in report.rejected] == sorted(
        number for number, line in enumerate(lines, start=1) if line and "staff" not in line
    )


AWKWARD_TEXTS = [
    "tab\there",
    "line\nbreak",
    "cr\rlf\r\n",
    "back\\slash",
    "\\N",
    "\\.",
    "引号\"'",
    "😀",
]


def test_awkward_text_and_times_go_through_copy_exactly(
    store: JobStore, engine: Engine, copy_path: bool
) -> None:
    """The COPY path writes its own text format (not psycopg's `write_row`): every value
    the producer columns can hold comes back byte for byte, and the same keys sent again
    are all found held (the keys go to the database as one JSON text)."""
    tag = f"awkward-{uuid.uuid4().hex[:8]}"
    rows = []
    for number, odd in enumerate(AWKWARD_TEXTS * 3):
        row = {column: None for column in COLUMNS}
        row.update(
            corp_id=f"corp {odd}",
            payload=json.dumps({**body(), "text": odd}, ensure_ascii=False),
            send_at=datetime(1, 1, 1) if number % 2 else datetime(9000, 6, 30, 12, 34, 56, 789012),
            dedupe_key=f"{tag} {number} {odd}",
            campaign=tag,
            priority=-(2**31) if number % 3 else 2**31 - 1,
            expires_at=None if number % 2 else datetime(9000, 6, 30, 12, 34, 56, 789012),
            max_attempts=number + 1,
        )
        rows.append(row)

    first = store.insert_jobs(rows)
    again = store.insert_jobs(rows)

    assert len(first.inserted_ids) == len(rows) and first.duplicate_keys == []
    assert again.inserted_ids == [] and again.duplicate_keys == [row["dedupe_key"] for row in rows]
    with engine.connect() as connection:
        stored = connection.execute(  # through the table: SQLite's times come back typed
            select(*(jobs.c[column] for column in COLUMNS))
            .where(jobs.c.campaign == tag)
            .order_by(jobs.c.id)
        ).all()
    assert [dict(zip(COLUMNS, row, strict=True)) for row in stored] == rows


def _parsing_processes() -> list[int]:
    """The processes this test process's fork server has forked: an import's parsers."""
    from multiprocessing import forkserver

    server = forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == server:
            children.append(int(stat.parent.name))
    return children


def _stopped_import(
    store: JobStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tag: str,
    upset: Callable[[Path], None],
    processes: int,
) -> str:
    """Import 5000 lines in small chunks, calling `upset(path)` once the first 1000 lines
    are read; the import must stop: its one-line message."""
    from broadcaster.produce import importer

    monkeypatch.setattr(importer, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(importer, "PARSED_AHEAD_MAX", 0)  # every chunk through the pool
    path = tmp_path / "rows.jsonl"
    path.write_text(jsonl([good(tag, number) for number in range(5000)]), encoding="utf-8")
    upset_already: list[int] = []

    def on_progress(lines: int) -> None:
        if not upset_already:
            upset_already.append(lines)
            upset(path)

    with pytest.raises(BroadcasterError) as stopped:
        import_file(
            path,
            store,
            tz="UTC",
            batch_size=500,
            on_progress=on_progress,
            parse_processes=processes,
        )
    return str(stopped.value)


def assert_exactly_the_lines_said_are_in(message: str, engine: Engine, tag: str) -> None:
    reached = re.search(r"lines before (\d+) are in \((\d+) jobs inserted", message)
    assert reached, message
    first, inserted = int(reached[1]), int(reached[2])
    assert 1000 < first <= 5000
    assert inserted == first - 1 == len(rows_of(engine, tag))


def test_a_parsing_process_killed_mid_import_stops_it_saying_how_far_it_got(
    store: JobStore, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kill -9` of a parsing process (or the kernel's OOM killer): one line that says
    which lines are in, and exactly those are."""
    tag = f"killed-{uuid.uuid4().hex[:8]}"
    killed: list[int] = []

    def kill_the_parsers(_path: Path) -> None:
        killed.extend(_parsing_processes())
        for pid in killed:
            os.kill(pid, signal.SIGKILL)

    message = _stopped_import(store, tmp_path, monkeypatch, tag, kill_the_parsers, 1)

    assert killed, "no parsing process was found to kill"
    assert message.startswith("a parsing process stopped unexpectedly"), message
    assert_exactly_the_lines_said_are_in(message, engine, tag)


SAID_FIRST = {
    "replaced": "rows.jsonl changed while it was being imported",
    "ctrl-c": "interrupted (Ctrl-C); import stopped",
}


@pytest.mark.parametrize("processes", [0, 1], ids=["in-process", "parsing-process"])
@pytest.mark.parametrize("event", sorted(SAID_FIRST))
def test_an_import_replaced_or_interrupted_mid_way_says_how_far_it_got(
    store: JobStore,
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    event: str,
    processes: int,
) -> None:
    """The file replaced meanwhile (`mv new.jsonl rows.jsonl`: chunks are read by byte
    offsets, which must not be read in another file), or Ctrl-C: the batch being written
    is finished (or not at all), and one line says which lines are in, exactly those."""
    tag = f"{event}-{uuid.uuid4().hex[:8]}"
    other = f"other-{tag}"

    def replace_the_file(path: Path) -> None:
        # ASCII (\u escapes), so its bytes at the old offsets still decode: only the
        # check of the file's identity can tell
        replacement = tmp_path / "new.jsonl"
        replacement.write_text(
            "".join(json.dumps(good(other, n)) + "\n" for n in range(5000)), encoding="utf-8"
        )
        os.replace(replacement, path)

    def ctrl_c(_path: Path) -> None:
        raise KeyboardInterrupt

    upset = replace_the_file if event == "replaced" else ctrl_c
    message = _stopped_import(store, tmp_path, monkeypatch, tag, upset, processes)

    assert message.startswith(SAID_FIRST[event]), message
    assert_exactly_the_lines_said_are_in(message, engine, tag)
    assert rows_of(engine, other) == []
