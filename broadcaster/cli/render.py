"""Stored text on the operator's terminal: literally, masked, and unable to steer it.

Everything a producer wrote (campaign, corp_id, dedupe_key, the payload) and everything
the vendor answered (errmsg, `last_error`) is data, never markup: it goes through
`literal()` (a rich `Text`, which rich never parses for markup or emoji) or `plain()`
(a `str`, for prompts and error lines). Both

- mask secrets and access tokens (`broadcaster.logs.redact_text`, the one place that
  knows what to mask), so a stored secret never reaches the terminal;
- show control characters as escapes (`\\x1b`, `\\r`, `\\x00`, and the Unicode
  direction overrides as `\\u202e`), so a row cannot move the cursor, clear the screen,
  retitle the window or reorder what the operator reads. A tab is shown as `\\t` (rich
  would turn it into spaces); a line break is kept, except in one-line views (table
  cells), where it is shown as `\\n`.

JSON output goes through `json_text()`: strings masked, the same characters escaped the
JSON way, so the result is still valid JSON that decodes to the masked values.
"""

from __future__ import annotations

import json
import re
from typing import Any

from rich.console import Console
from rich.highlighter import JSONHighlighter
from rich.text import Text

from broadcaster.logs import redact_text

# C0 controls except \n, DEL, C1 controls (a terminal may read U+009B as CSI), and
# the bidirectional overrides and isolates (they reorder what follows on the line).
_UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_ONE_LINE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def plain(value: object, *, one_line: bool = False) -> str:
    """Stored text as a safe `str`: secrets masked, control characters shown as escapes.

    None is the empty string. `one_line` also escapes line breaks (table cells).
    """
    if value is None:
        return ""
    text = redact_text(value if isinstance(value, str) else str(value))
    return (_UNSAFE_ONE_LINE if one_line else _UNSAFE).sub(_escape, text)


def literal(value: object, *, one_line: bool = False, style: str = "") -> Text:
    """Stored text as a rich `Text`: printed as is, never read as markup or emoji."""
    return Text(plain(value, one_line=one_line), style=style)


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {_masked(key): _masked(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(item) for item in value]
    return value


_JSON_UNSAFE = re.compile("[\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def json_text(data: Any) -> str:
    """`data` as indented JSON with every string masked; C1 controls and direction marks
    written as `\\uXXXX` escapes (json already escapes C0), so the terminal sees none."""
    text = json.dumps(_masked(data), ensure_ascii=False, indent=2, default=str)
    return _JSON_UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def print_json(console: Console, data: Any) -> None:
    """Print `data` as JSON (coloured on a terminal), safely; see `json_text`."""
    console.print(JSONHighlighter()(Text(json_text(data))), soft_wrap=True)
