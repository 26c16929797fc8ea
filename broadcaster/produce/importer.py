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
import io
import json
import multiprocessing
import os
import re
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO

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


def _json_record(number: int, line: str) -> Record:
    """Checking the line's text for what cannot be stored is one scan of a string; walking
    every string of the parsed body was a fifth of the import's time."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        return number, f"not valid JSON: {exc.msg} at column {exc.colno}", False
    except (ValueError, RecursionError) as exc:  # a 5000-digit number, deep nesting
        return number, f"not valid JSON: {exc}", False
    if not isinstance(record, dict):
        return number, "a line must be a JSON object", False
    return number, record, storable_json_text(line)


def read_csv_records(handle: TextIO) -> Iterator[Record]:
    """A CSV file's records (JSON Lines are read in chunks: `parse_chunk`); one that
    cannot be parsed comes as its error text."""
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

CHUNK_BYTES = 256 << 10
"""Bytes of whole lines parsed at a time (~1000 lines of a typical row)."""

POOL_CHUNKS_QUEUED = 4
"""Chunks queued for each parsing process: enough that it never waits while this process
parses a chunk itself (2 left the parsing process idle ~half the time)."""

PARSED_AHEAD_MAX = 32
"""Chunks this process parses itself, at most, while the head of the line waits on a
parsing process (at the start, while that process imports the models)."""

PARALLEL_MIN_LINES = 50_000
"""Below this a parsing process is not worth its start (~0.4 s for the fork server to
import the models)."""


def parse_processes_for(lines: int) -> int:
    """How many parsing processes `broadcaster import` starts for a file of `lines`: none
    for a small file; else about half the cores (the database and this process need the
    rest, and this process parses too when the pool falls behind), at most 4.
    `bench.import_speed --rows 300000` on 2 cores: a second parsing process gained nothing
    (49.0-50.0k rows/s against 44.4-51.6k with one, same run)."""
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
    not start processes), and each batch is written from a thread of its own while the
    next is gathered. The result is the same either way, line for line."""
    report = ImportReport()
    fmt = detect_format(path, fmt)
    require_utf8(path)
    pending: Pending = []
    rows = 0
    number = 0
    with _BatchWriter(store, report, in_thread=parse_processes > 0) as writer:
        try:
            for number, parsed in _parsed(path, fmt, tz, parse_processes):
                report.lines += 1
                if isinstance(parsed, str):
                    report.reject(number, parsed)
                else:
                    pending.append((number, parsed))
                    rows += len(parsed)
                if rows >= batch_size:
                    writer.write(pending, number)
                    pending, rows = [], 0
                if on_progress and report.lines % 1000 == 0:
                    on_progress(report.lines)
        except (BrokenProcessPool, FileChanged, KeyboardInterrupt) as exc:
            writer.finish()
            first = pending[0][0] if pending else number + 1
            why = _why_stopped(exc)
            again = "(once nothing writes to it)"
            raise BroadcasterError(f"{why}; {_stopped_at(first, report, again)}") from None
        writer.write(pending, number)
    report.rejected.sort(key=lambda rejected: rejected[0])
    return report


def _why_stopped(exc: BaseException) -> str:
    if isinstance(exc, BrokenProcessPool):
        return "a parsing process stopped unexpectedly (killed, or out of memory)"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    return str(exc)


class _BatchWriter:
    """Writes the batches in file order, one at a time. `in_thread`: from a thread of its
    own, so the database's work on one batch overlaps this process's gathering of the
    next (the driver waits with the GIL released). Alone, each waited on the other: the
    machine was a third idle during an import (bench/import_speed.py). At most one batch
    is in flight; its failure is raised at the next `write`, or on leaving."""

    def __init__(self, store: JobStore, report: ImportReport, *, in_thread: bool) -> None:
        self._store = store
        self._report = report
        self._thread = ThreadPoolExecutor(1, "import-writer") if in_thread else None
        self._in_flight: Future[None] | None = None

    def write(self, pending: Pending, line: int) -> None:
        if self._thread is None:
            _flush_or_stop(self._store, pending, self._report, line)
            return
        self.finish()
        self._in_flight = self._thread.submit(
            _flush_or_stop, self._store, pending, self._report, line
        )

    def finish(self) -> None:
        """Wait for the batch in flight: raises its failure, if any."""
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            in_flight.result()

    def __enter__(self) -> _BatchWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._thread is None:
            return
        try:
            if exc_info[0] is None:
                self.finish()
        finally:
            self._thread.shutdown(wait=True)


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


@dataclass(frozen=True)
class LineChunk:
    """Whole lines of a JSON Lines file, by byte offsets. A parsing process reads them
    itself: sending the lines through its pipe cost the writing process a tenth of its
    time, and that process is the one the database waits on. `version` is the file's
    (device, inode, size, mtime) when it was cut: a chunk of a file replaced, appended
    to or rewritten since is refused rather than read at offsets that no longer match."""

    path: str
    start: int
    end: int
    version: tuple[int, int, int, int]


ParsedChunk = tuple[int, list[Parsed]]
"""(lines in the chunk, blank ones too; each line's result, numbered from 1 in the chunk)."""


class FileChanged(InvalidJob):
    """The file changed (or went) while it was being imported."""


def _changed(path: str) -> FileChanged:
    return FileChanged(
        f"{Path(path).name} changed while it was being imported (replaced, written to or removed)"
    )


def _version(handle: BinaryIO) -> tuple[int, int, int, int]:
    stat = os.fstat(handle.fileno())
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def line_chunks(path: Path, size: int) -> Iterator[LineChunk]:
    """The file cut into runs of whole lines of about `size` bytes."""
    start = 0
    with path.open("rb") as handle:
        version = _version(handle)
        total = version[2]
        while start < total:
            end = _chunk_end(handle, start, size, total)
            yield LineChunk(str(path), start, end, version)
            start = end


_LONE_CR = re.compile(rb"\r(?!\n)")


def _chunk_end(handle: BinaryIO, start: int, size: int, total: int) -> int:
    """Where the chunk from `start` ends: after the last line end within `size` bytes (an
    LF; in a file of CR line ends, a CR not followed by LF: a CRLF is never cut), else
    after the first LF past it (one line longer than `size`), else the file's end."""
    if start + size >= total:
        return total
    handle.seek(start)
    window = handle.read(size + 1)  # one byte more: is a CR at the edge followed by LF?
    if (cut := window.rfind(b"\n", 0, size)) >= 0:
        return start + cut + 1
    # a CR at `size` itself is not known to end a line: its LF may come next
    lone_crs = [
        at for found in _LONE_CR.finditer(window, 0, size + 1) if (at := found.start()) < size
    ]
    if lone_crs:
        return start + lone_crs[-1] + 1
    handle.seek(start + size)
    handle.readline()
    return min(handle.tell(), total)


def parse_chunk(chunk: LineChunk, tz: str) -> ParsedChunk:
    """A chunk's lines parsed and validated, in this process or a parsing one. Lines are
    split as the file object would (newline=""), so numbers match a CSV-style reading."""
    try:
        with open(chunk.path, "rb") as handle:
            if _version(handle) != chunk.version:
                raise _changed(chunk.path)
            handle.seek(chunk.start)
            data = handle.read(chunk.end - chunk.start)
        text = data.decode("utf-8-sig" if chunk.start == 0 else "utf-8")
    except (OSError, UnicodeDecodeError):
        raise _changed(chunk.path) from None
    parsed = []
    count = 0
    for count, line in enumerate(io.StringIO(text, newline=""), start=1):
        if line.strip():
            parsed.append(parse_record(_json_record(count, line), tz))
    return count, parsed


def _parsed(path: Path, fmt: str, tz: str, processes: int) -> Iterator[Parsed]:
    if fmt == "csv":  # a CSV record may span lines: read here
        with path.open(encoding="utf-8-sig", newline="") as handle:
            for record in read_csv_records(handle):
                yield parse_record(record, tz)
        return
    first_line = 0
    for count, parsed in _parsed_chunks(line_chunks(path, CHUNK_BYTES), tz, processes):
        for number, result in parsed:
            yield first_line + number, result
        first_line += count


def _parsed_chunks(chunks: Iterator[LineChunk], tz: str, processes: int) -> Iterator[ParsedChunk]:
    """Each chunk's result, in file order. Parsing and validating is two thirds of an
    import's CPU: in other processes it runs beside this one's COPY, a few chunks queued
    for each. Whenever the next result is not ready, this process parses the next
    chunk itself rather than wait (at the start, while the pool imports the models; and
    whenever the database leaves it idle), so no core sits idle for want of parsing."""
    if processes <= 0:
        yield from (parse_chunk(each, tz) for each in chunks)
        return
    with ProcessPoolExecutor(processes, mp_context=_parsing_context()) as pool:
        queued: deque[Future[ParsedChunk] | ParsedChunk] = deque()
        in_pool = 0
        chunk: LineChunk | None = next(chunks, None)
        while chunk is not None or queued:
            while chunk is not None and in_pool < POOL_CHUNKS_QUEUED * processes:
                queued.append(pool.submit(parse_chunk, chunk, tz))
                in_pool += 1
                chunk = next(chunks, None)
            head = queued[0]
            if (
                chunk is not None
                and isinstance(head, Future)
                and not head.done()
                and len(queued) - in_pool < PARSED_AHEAD_MAX
            ):
                queued.append(parse_chunk(chunk, tz))
                chunk = next(chunks, None)
                continue
            queued.popleft()
            if isinstance(head, Future):
                in_pool -= 1
                yield head.result()
            else:
                yield head


def _parsing_context() -> multiprocessing.context.BaseContext:
    """Where parsing processes come from: a fork server that imported this module (and
    what it needs) once. Not a fork of this process, which holds the database pool. A
    spawned process imported all of it again, and the whole command line with it: 0.5 s of
    a core before its first line; forked from the server, it still runs the command's
    main module, as multiprocessing does for every start method but fork, which now costs
    it ~0.16 s (`broadcaster import`: the CLI's own modules). Meanwhile this process
    parses the first chunks itself (`_parsed_chunks`)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


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
        again = "once the database is back"
        raise JobStoreError(f"{exc}; {_stopped_at(first, report, again)}") from exc


def _stopped_at(first: int, report: ImportReport, again: str) -> str:
    """How far a stopped import got, and how to finish it: `again` says when."""
    return (
        f"import stopped: lines before {first} are in ({report.inserted} jobs "
        f"inserted, {report.duplicates} duplicates, {len(report.rejected)} rejected), "
        f"lines {first} on are not. Import the file again {again}: lines with a "
        "dedupe_key already in are skipped (lines without one would be inserted twice)"
    )


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
