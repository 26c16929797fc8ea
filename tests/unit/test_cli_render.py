"""The one helper every CLI view prints stored text through (`broadcaster.cli.render`),
and the time parsing the CLI's --at / --expires-at rely on."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from rich.console import Console

from broadcaster.cli.render import json_text, literal, plain
from broadcaster.errors import InvalidJob
from broadcaster.logs import register_secret
from broadcaster.timeutil import parse_user_time

SECRET = "unit-render-secret-5d1e"


def printed(value: object, **kwargs: bool) -> str:
    """What a terminal-like rich console writes for `literal(value)`."""
    out = StringIO()
    console = Console(file=out, force_terminal=True, color_system="truecolor", width=500)
    console.print(literal(value, **kwargs))
    return out.getvalue()


@pytest.mark.parametrize(
    "stored",
    ["[/]", "[link=https://evil.example]click[/link]", "[bold red]x", ":smile: [b]", "a\\[b]"],
)
def test_markup_prints_literally_and_makes_no_link(stored: str) -> None:
    out = printed(stored)
    assert stored in out
    assert "\x1b]8;" not in out, "no OSC 8 hyperlink"
    assert "\x1b[1m" not in out, "no bold"


def test_control_characters_are_shown_as_escapes() -> None:
    stored = "a\x1b[2Jb\x1b]0;pwned\x07c\rd\x00e\x08f\x7fg\x9bh\u202ei\nj\tk"
    assert plain(stored) == (
        "a\\x1b[2Jb\\x1b]0;pwned\\x07c\\rd\\x00e\\x08f\\x7fg\\x9bh\\u202ei\nj\\tk"
    )
    assert plain(stored, one_line=True).endswith("i\\nj\\tk")
    assert "\x1b[2J" not in printed(stored) and "\x07" not in printed(stored)


def test_secrets_and_tokens_are_masked() -> None:
    register_secret(SECRET)
    stored = f"errmsg invalid secret {SECRET}; url ...?access_token=tok-live-987&x=1"
    assert plain(stored) == "errmsg invalid secret ***; url ...?access_token=***&x=1"
    assert SECRET not in printed(stored)


def test_none_and_non_text() -> None:
    assert plain(None) == "" and plain(42) == "42"


def test_json_text_is_valid_json_masked_and_free_of_terminal_controls() -> None:
    register_secret(SECRET)
    data = {"campaign": "[/]\x1b[2J\x9b\u202e", "error": f"secret {SECRET}", "n": 1}
    text = json_text(data)
    assert "\x1b" not in text and "\x9b" not in text and "\u202e" not in text
    assert json.loads(text) == {"campaign": "[/]\x1b[2J\x9b\u202e", "error": "secret ***", "n": 1}


@pytest.mark.parametrize("typed", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-05:00"])
def test_a_time_out_of_range_in_utc_is_one_clear_error(typed: str) -> None:
    with pytest.raises(InvalidJob, match="out of range once converted to UTC.*0001-01-01"):
        parse_user_time(typed, tz=None)


def test_a_naive_time_that_underflows_in_its_zone_is_refused() -> None:
    with pytest.raises(InvalidJob, match="out of range"):
        parse_user_time("0001-01-01 00:00", tz="Asia/Shanghai")
