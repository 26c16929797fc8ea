"""`broadcaster import FILE`: backfills from JSON Lines or CSV.

Each JSON line (or CSV row) is one job: `payload` (the vendor body; a JSON string in CSV)
plus the optional `send_at`, `corp_id`, `dedupe_key`, `campaign`, `priority`,
`expires_at`, `max_attempts`. Times are ISO 8601; one without an offset is read in `tz`.

A bad line is rejected with its line number and reason and the rest go in; a dedupe_key
already present is skipped and counted. Rows go in batches, one statement each.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from broadcaster.errors import BroadcasterError, InvalidJob
from broadcaster.producer import job_request
from broadcaster.store import JobStore
from broadcaster.timeutil import parse_user_time

TIME_FIELDS = ("send_at", "expires_at")
INT_FIELDS = ("priority", "max_attempts")


@dataclass
class ImportReport:
    inserted: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    lines: int = 0


def detect_format(path: Path, declared: str | None) -> str:
    if declared:
        return declared
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson", ".json"}:
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    raise InvalidJob(
        f"cannot tell the format of {path.name}; name it .jsonl or .csv, or pass --format"
    )


def read_records(handle: TextIO, fmt: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, record) pairs; a record that cannot be parsed comes as its error text."""
    if fmt == "csv":
        reader = csv.DictReader(handle)
        for record in reader:
            yield reader.line_num, _csv_record(record)
        return
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, f"not valid JSON: {exc.msg} at column {exc.colno}"
            continue
        yield number, record if isinstance(record, dict) else "a line must be a JSON object"


def _csv_record(record: dict[str, str | None]) -> dict[str, Any] | str:
    cleaned: dict[str, Any] = {
        key: value for key, value in record.items() if value not in ("", None)
    }
    if None in cleaned:
        return "more cells than header columns"
    if "payload" in cleaned:
        try:
            cleaned["payload"] = json.loads(cleaned["payload"])
        except json.JSONDecodeError as exc:
            return f"payload is not valid JSON: {exc.msg}"
    for name in INT_FIELDS:
        if name in cleaned:
            try:
                cleaned[name] = int(cleaned[name])
            except ValueError:
                return f"{name} must be a whole number, got {cleaned[name]!r}"
    return cleaned


def record_to_rows(record: dict[str, Any], tz: str) -> list[dict[str, Any]]:
    record = dict(record)
    for name in TIME_FIELDS:
        if isinstance(record.get(name), str):
            record[name] = parse_user_time(record[name], tz=tz)
    return job_request(record).to_rows()


def import_file(
    path: Path,
    store: JobStore,
    *,
    tz: str,
    fmt: str | None = None,
    batch_size: int = 2000,
    on_progress: Callable[[int], None] | None = None,
) -> ImportReport:
    report = ImportReport()
    fmt = detect_format(path, fmt)
    pending: list[dict[str, Any]] = []
    with path.open(encoding="utf-8-sig", newline="") as handle:
        for number, record in read_records(handle, fmt):
            report.lines += 1
            if isinstance(record, str):
                report.rejected.append((number, record))
            else:
                try:
                    pending.extend(record_to_rows(record, tz))
                except BroadcasterError as exc:
                    report.rejected.append((number, str(exc)))
            if len(pending) >= batch_size:
                _flush(store, pending, report)
            if on_progress and report.lines % 1000 == 0:
                on_progress(report.lines)
    _flush(store, pending, report)
    return report


def count_lines(path: Path) -> int:
    """Fast line count for the progress bar's total."""
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


def _flush(store: JobStore, pending: list[dict[str, Any]], report: ImportReport) -> None:
    if pending:
        result = store.insert_jobs(pending)
        report.inserted += len(result.inserted_ids)
        report.duplicates += len(result.duplicate_keys)
        pending.clear()
