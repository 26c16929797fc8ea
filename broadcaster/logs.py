"""structlog setup: JSON lines with the bound job and corp, and nothing secret in them.

The access token travels in the vendor URL's query string, so redaction works on values,
not only on key names: any `access_token=…` in any string is masked, and so is the
configured secret wherever it appears.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog
from structlog.typing import EventDict

SECRET_KEYS = re.compile(r"secret|token|password|authorization", re.IGNORECASE)
TOKEN_IN_TEXT = re.compile(r"(access_token=)[^&\s'\"]+", re.IGNORECASE)
SECRET_IN_JSON = re.compile(
    r"""(\\?["']?(?:access_token|secret)\\?["']?\s*[:=]\s*\\?["'])[^"'\\]+""", re.IGNORECASE
)
"""`"access_token": "…"` or `secret='…'`, also inside JSON text that was itself encoded
(`\\"access_token\\": \\"…\\"`): a vendor answer or a request echoed back."""
PASSWORD_IN_URL = re.compile(r"(://[^:/@\s]+:)[^/\s]+(@)")
"""Up to the last `@` before the host: a raw `@` inside a password is masked with it."""

MAX_KNOWN_TOKENS = 256
_known_secrets: tuple[str, ...] = ()
_known_tokens: tuple[str, ...] = ()
"""Each replaced whole, never mutated: threads that mask text while another registers a
token read one consistent tuple. Configured secrets are all kept; of the tokens (they come
and go every two hours) the newest."""


def register_secret(value: str | None) -> None:
    """Mask this configured secret in every later log line, stored error and printed text."""
    global _known_secrets
    if value and len(value) >= 6 and value not in _known_secrets:
        _known_secrets = (value, *_known_secrets)


def register_token(value: str | None) -> None:
    """Mask this access token likewise (only the newest MAX_KNOWN_TOKENS are kept)."""
    global _known_tokens
    if value and len(value) >= 6 and value not in _known_tokens:
        _known_tokens = (value, *_known_tokens)[:MAX_KNOWN_TOKENS]


def redact_text(text: str) -> str:
    """The one mask for text leaving a process: logs, the tables (`store.storable_text`)
    and the terminal all pass through it. Known secrets and tokens are replaced wherever
    they appear; token-shaped fields are masked even when the value was never seen."""
    text = TOKEN_IN_TEXT.sub(r"\1***", text)
    text = SECRET_IN_JSON.sub(r"\1***", text)
    text = PASSWORD_IN_URL.sub(r"\1***\2", text)
    for secret in (*_known_secrets, *_known_tokens):
        text = text.replace(secret, "***")
    return text


def _redact(value: Any, key: str = "") -> Any:
    if SECRET_KEYS.search(key) and value is not None and not isinstance(value, bool | int):
        return "***"
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(item) for item in value]
    return value


def redact_processor(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    return {key: _redact(value, key) for key, value in event_dict.items()}


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Idempotent; called once by each entry point, never at import time."""
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        # One write() per line: lines from several processes sharing stderr never interleave.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


log = structlog.get_logger("broadcaster")
