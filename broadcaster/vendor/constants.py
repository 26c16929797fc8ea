"""The vendor's paths, codes and the limits we hold its answers to."""

from __future__ import annotations

import re

TOKEN_PATH = "/open-api/access_token/get"
CREATE_PATH = "/open-api/customer_group_msg/add"
CREATE_API = "customer_group_msg/add"
"""The quota key of the create endpoint: the vendor counts quota per API."""

ERR_TOKEN, ERR_BUSY, ERR_BLOCKED = 10001, 10052, 10053
TOKEN_EARLY_REFRESH_S = 300
"""Replace a token this long before the vendor says it expires."""
MAX_ANSWER_BYTES = 1 << 20
"""The vendor answers a few hundred bytes; a bigger answer is not read into memory."""
MAX_ERRMSG_CHARS = 500
THROTTLE_DEFAULT_S = 5.0
THROTTLE_MAX_S = 3600.0
"""A 429's Retry-After is honoured within these bounds (none given: the default)."""
TOKEN_TTL_BOUNDS_S = (60, 86_400)
ERRCODE_DIGITS = re.compile(r"-?[0-9]{1,11}")
DELTA_SECONDS = re.compile(r"[0-9]+")
"""ASCII digits only: `str.isdigit` also takes '²', which `int` then refuses."""
