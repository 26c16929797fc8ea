"""`broadcaster import FILE`: backfills from JSON Lines or CSV.

Each JSON line (or CSV row) is one job: `payload` (the vendor body; a JSON string in CSV)
plus the optional `send_at`, `corp_id`, `dedupe_key`, `campaign`, `priority`,
`expires_at`, `max_attempts`. Times are ISO 8601; one without an offset is read in `tz`.

The file must be UTF-8 (a BOM is allowed): one that is not is refused before anything is
written, naming the first line that does not decode and how to convert the file. A file of
mixed encodings half imported would be worse: its rows without a dedupe_key would go in
twice once the file is fixed and imported again.

A bad line is rejected with its line number and reason and the rest go in; a dedupe_key
already present is skipped and counted. Every value is validated before it reaches the
database (see `producer.JobRequest`), and should the database still refuse a batch, its
lines are inserted one by one so only the guilty line is rejected. Rows go in batches, one
statement each.
"""

from __future__ import annotations

import codecs
import csv
import json
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from broadcaster.errors import BroadcasterError, InvalidJob, JobStoreError
from broadcaster.jobs.store import JobStore, RowsRefused
from broadcaster.produce.api import job_request, part_collisions
from broadcaster.timeutil import parse_user_time
from broadcaster.vendor.payload import storable_json_text

TIME_FIELDS = ("send_at", "expires_at")
INT_FIELDS = ("priority", "max_attempts")
CSV_FIELD_LIMIT = 64 << 20
"""csv's default cap is 128 KiB a cell, less than the payload of a 4000-group audience."""
MAX_REASON_CHARS = 500


@dataclass
class ImportReport:
    inserted: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    lines: int = 0

    def reject(self, line: int, reason: str) -> None:
        self.rejected.append((line, printable(reason)))


def printable(reason: str) -> str:
    """A reason as one printable line: a rejected line's own text (a NUL, an unpaired
    surrogate, a terminal escape, a newline) is shown escaped, and kept short."""
    if not reason.isprintable():
        reason = "".join(c if c.isprintable() else repr(c)[1:-1] for c in reason)
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 1] + "…"
    return reason


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


def require_utf8(path: Path) -> None:
    """Refuse a file that is not UTF-8, naming the first bad line and the fix."""
    with path.open("rb") as handle:
        head = handle.read(4)
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise InvalidJob(
                f"{path.name} is UTF-16 text, not UTF-8; nothing was imported. Convert it "
                f"first: iconv -f UTF-16 -t UTF-8 {path.name} > {_utf8_name(path)}"
            )
        handle.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        line = 1
        while chunk := handle.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                _not_utf8(path, line + chunk.count(b"\n", 0, exc.start), chunk[exc.start])
            line += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            _not_utf8(path, line, None)


def _not_utf8(path: Path, line: int, byte: int | None) -> None:
    what = f"byte 0x{byte:02x}" if byte is not None else "a character cut short at the end"
    raise InvalidJob(
        f"{path.name} is not UTF-8 (line {line}: {what}); nothing was imported. Convert it "
        f"first, naming the encoding it was saved in, e.g. "
        f"iconv -f GBK -t UTF-8 {path.name} > {_utf8_name(path)} (or -f LATIN1)"
    )


def _utf8_name(path: Path) -> str:
    return f"{path.stem}-utf8{path.suffix}"


Record = tuple[int, dict[str, Any] | str, bool]
"""(line number, the record or why it cannot be read, whether its payload's JSON text was
seen to hold no NUL or unpaired surrogate: `parse_payload`'s `storable_text`)."""


def read_records(handle: TextIO, fmt: str) -> Iterator[Record]:
    """The file's records; one that cannot be parsed comes as its error text. Checking the
    line's text for what cannot be stored is one scan of a string; walking every string
    of the parsed body was a fifth of the import's time (bench/import_speed.py)."""
    if fmt == "csv":
        yield from _csv_records(handle)
        return
    for number, line in _json_lines(handle):
        yield _json_record(number, line)


def _json_lines(handle: TextIO) -> Iterator[tuple[int, str]]:
    """(line number, line) of each line that is not blank."""
    for number, line in enumerate(handle, start=1):
        if line.strip():
            yield number, line


def _json_record(number: int, line: str) -> Record:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        return number, f"not valid JSON: {exc.msg} at column {exc.colno}", False
    except (ValueError, RecursionError) as exc:  # a 5000-digit number, deep nesting
        return number, f"not valid JSON: {exc}", False
    if not isinstance(record, dict):
        return number, "a line must be a JSON object", False
    return number, record, storable_json_text(line)


def _csv_records(handle: TextIO) -> Iterator[Record]:
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    reader = csv.DictReader(handle)
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # the reader goes on at the next line
            yield reader.line_num, f"not valid CSV: {exc}", False
            continue
        payload = record.get("payload")
        storable = isinstance(payload, str) and storable_json_text(payload)
        yield reader.line_num, _csv_record(record), storable


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
        except (ValueError, RecursionError) as exc:
            return f"payload is not valid JSON: {exc}"
    for name in INT_FIELDS:
        if name in cleaned:
            try:
                cleaned[name] = int(cleaned[name])
            except ValueError:
                return f"{name} must be a whole number, got {cleaned[name][:40]!r}"
    return cleaned


def record_to_rows(
    record: dict[str, Any], tz: str, *, storable_text: bool = False
) -> list[dict[str, Any]]:
    record = dict(record)
    for name in TIME_FIELDS:
        value = record.get(name)
        if isinstance(value, str):
            try:
                record[name] = parse_user_time(value, tz=tz)
            except OverflowError:  # timeutil now says it in words; kept for safety
                raise InvalidJob(
                    f"{name}: {value[:40]!r} is out of range once converted to UTC "
                    "(years 1 to 9999)"
                ) from None
    return job_request(record).to_rows(storable_text=storable_text)


Pending = list[tuple[int, list[dict[str, Any]]]]
"""(line number, that line's rows): a line is one row, or one per part of a split audience."""

Parsed = tuple[int, list[dict[str, Any]] | str]
"""(line number, that line's rows, or why the line is rejected)."""

PARALLEL_CHUNK_LINES = 2000
"""Lines a parsing process gets at a time."""

PARALLEL_MIN_LINES = 50_000
"""Below this a parsing process is not worth its start (~1 s to import the models)."""


def parse_processes_for(lines: int) -> int:
    """How many parsing processes `broadcaster import` starts for a file of `lines`: none
    for a small file; else about half the cores (the database and this process need the
    rest), at most 4. `bench.import_speed --rows 300000` on 2 cores: one parser took
    PostgreSQL from 0.41-0.44 to 0.46 of raw COPY (0.51 in one run); a second one gained
    nothing there."""
    if lines < PARALLEL_MIN_LINES:
        return 0
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def import_file(
    path: Path,
    store: JobStore,
    *,
    tz: str,
    fmt: str | None = None,
    batch_size: int = 2000,
    on_progress: Callable[[int], None] | None = None,
    parse_processes: int = 0,
) -> ImportReport:
    """`parse_processes` > 0: JSON Lines are parsed and validated in that many processes
    of their own while this one writes (`broadcaster import` does; a web request does
    not start processes). The result is the same either way, line for line."""
    report = ImportReport()
    fmt = detect_format(path, fmt)
    require_utf8(path)
    pending: Pending = []
    rows = 0
    number = 0
    with path.open(encoding="utf-8-sig", newline="") as handle:
        for number, parsed in _parsed(handle, fmt, tz, parse_processes):
            report.lines += 1
            if isinstance(parsed, str):
                report.reject(number, parsed)
            else:
                pending.append((number, parsed))
                rows += len(parsed)
            if rows >= batch_size:
                _flush_or_stop(store, pending, report, number)
                rows = 0
            if on_progress and report.lines % 1000 == 0:
                on_progress(report.lines)
    _flush_or_stop(store, pending, report, number)
    report.rejected.sort(key=lambda rejected: rejected[0])
    return report


def parse_record(record: Record, tz: str) -> Parsed:
    """One record's rows, or why it is rejected: one line never stops the import."""
    number, content, storable_text = record
    if isinstance(content, str):
        return number, content
    try:
        return number, record_to_rows(content, tz, storable_text=storable_text)
    except BroadcasterError as exc:
        return number, str(exc)
    except Exception as exc:
        return number, f"cannot be read: {type(exc).__name__}: {exc}"


def parse_lines(lines: list[tuple[int, str]], tz: str) -> list[Parsed]:
    """A chunk of JSON Lines, in a parsing process."""
    return [parse_record(_json_record(number, line), tz) for number, line in lines]


def _parsed(handle: TextIO, fmt: str, tz: str, processes: int) -> Iterator[Parsed]:
    if processes <= 0 or fmt == "csv":  # a CSV record may span lines: read here
        for record in read_records(handle, fmt):
            yield parse_record(record, tz)
        return
    # Parsing and validating is two thirds of an import's CPU; in other processes it runs
    # beside this one's COPY. At most 2 chunks a process wait, in file order.
    context = multiprocessing.get_context("spawn")  # no fork of a process holding a pool
    with ProcessPoolExecutor(processes, mp_context=context) as pool:
        waiting: deque[Future[list[Parsed]]] = deque()
        for chunk in _line_chunks(handle):
            waiting.append(pool.submit(parse_lines, chunk, tz))
            if len(waiting) > 2 * processes:
                yield from waiting.popleft().result()
        while waiting:
            yield from waiting.popleft().result()


def _line_chunks(handle: TextIO) -> Iterator[list[tuple[int, str]]]:
    chunk: list[tuple[int, str]] = []
    for numbered in _json_lines(handle):
        chunk.append(numbered)
        if len(chunk) >= PARALLEL_CHUNK_LINES:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def count_lines(path: Path) -> int:
    """Fast line count for the progress bar's total."""
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


def _flush_or_stop(store: JobStore, pending: Pending, report: ImportReport, line: int) -> None:
    """Insert the pending lines; when the database itself fails (not one row's data), stop
    with one line that says how far the import got."""
    first = pending[0][0] if pending else line
    try:
        _flush(store, pending, report)
    except JobStoreError as exc:
        raise JobStoreError(
            f"{exc}; import stopped: lines before {first} are in ({report.inserted} jobs "
            f"inserted, {report.duplicates} duplicates, {len(report.rejected)} rejected), "
            f"lines {first} on are not. Import the file again once the database is back: "
            "lines with a dedupe_key already in are skipped (lines without one would be "
            "inserted twice)"
        ) from exc


def _flush(store: JobStore, pending: Pending, report: ImportReport) -> None:
    if not pending:
        return
    collisions = part_collisions(store, pending)
    for number, reason in collisions.items():
        report.reject(number, reason)
    lines = [(number, rows) for number, rows in pending if number not in collisions]
    pending.clear()
    try:
        _insert(store, [row for _, rows in lines for row in rows], report)
    except RowsRefused:
        # Some row passed validation yet the database refused it: find it, line by line.
        for number, rows in lines:
            try:
                _insert(store, rows, report)
            except RowsRefused as exc:
                report.reject(number, f"refused by the database: {exc}")


def _insert(store: JobStore, rows: list[dict[str, Any]], report: ImportReport) -> None:
    if rows:
        result = store.insert_jobs(rows)
        report.inserted += len(result.inserted_ids)
        report.duplicates += len(result.duplicate_keys)
