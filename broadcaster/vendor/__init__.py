"""Weiban, the vendor: its OpenAPI client, the body it takes, and a stand-in for it.

constants   the vendor's paths and codes, and the limits we hold its answers to
answers     an answer (HTTP status, body, errcode) sorted into success or one error
tokens      access tokens shared by every process through Redis, sealed
client      WeibanClient: each call bounded by one deadline
missions    the list of created missions as we read it (every field optional)
deadline    that deadline, enforced on every socket operation
payload     the create call's body, validated against the vendor's rules
sandbox/    the local stand-in for Weiban (quota rules, error codes, faults)
"""

from broadcaster.vendor.answers import (
    Answer,
    Reply,
    classify_errcode,
    classify_transport,
    read_reply,
    retry_after_s,
)
from broadcaster.vendor.client import (
    WeibanClient,
    call_budget_s,
    environment_proxy,
    slot_lease_s,
)
from broadcaster.vendor.constants import CREATE_API, CREATE_PATH, TOKEN_PATH
from broadcaster.vendor.missions import (
    MAX_PAGE_SIZE,
    MAX_WINDOW_S,
    RESULT_API,
    RESULT_PATH,
    Mission,
    MissionPage,
    SubMission,
    parse_mission_page,
)
from broadcaster.vendor.tokens import TokenCache, TokenSeal

__all__ = [
    "CREATE_API",
    "CREATE_PATH",
    "MAX_PAGE_SIZE",
    "MAX_WINDOW_S",
    "RESULT_API",
    "RESULT_PATH",
    "TOKEN_PATH",
    "Answer",
    "Mission",
    "MissionPage",
    "Reply",
    "SubMission",
    "TokenCache",
    "TokenSeal",
    "WeibanClient",
    "call_budget_s",
    "classify_errcode",
    "classify_transport",
    "environment_proxy",
    "parse_mission_page",
    "read_reply",
    "retry_after_s",
    "slot_lease_s",
]
