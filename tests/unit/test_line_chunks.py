"""`line_chunks` cuts a JSON Lines file into byte ranges that parsing processes read on
their own: read back chunk by chunk, the lines must be exactly those of the whole file
read as text (`newline=""`: LF, CRLF and a lone CR each end a line), whatever the line
ends, the chunk size and the characters (a cut never splits a CRLF or a UTF-8 sequence)."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from broadcaster.produce.importer import line_chunks

TEXT = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]))
LINE = st.tuples(TEXT, st.sampled_from(["\n", "\r\n", "\r"]))


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(LINE, max_size=60), tail=TEXT, size=st.integers(1, 200))
def test_chunks_hold_exactly_the_files_lines(
    lines: list[tuple[str, str]], tail: str, size: int
) -> None:
    text = "".join(body + end for body, end in lines) + tail
    data = text.encode()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "rows.jsonl"
        path.write_bytes(data)
        chunks = list(line_chunks(path, size))

    bounds = [0] + [chunk.end for chunk in chunks]
    assert [chunk.start for chunk in chunks] == bounds[:-1] and bounds[-1] == len(data)
    read_back = [
        line
        for chunk in chunks
        for line in io.StringIO(data[chunk.start : chunk.end].decode(), newline="")
    ]
    assert read_back == list(io.StringIO(text, newline=""))


def test_a_file_of_cr_line_ends_is_cut_too() -> None:
    """Not one chunk for the whole file (parsed in one process, returned in one piece)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "rows.jsonl"
        path.write_bytes(b"".join(b'{"n": %d}\r' % number for number in range(1000)))
        chunks = list(line_chunks(path, 1000))
    assert len(chunks) >= 10
