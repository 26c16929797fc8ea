"""What the migrations need for MySQL 8 / MariaDB 10.6+, frozen like the migrations
themselves (a revision never imports live code): changing any of this takes a new revision.

Collation: exact and NO PAD, so `dedupe_key` (and every other text) compares as written:
`_ci` collations would take 'Promo-1' and 'promo-1' for one key (dropping a producer's
second job as a duplicate), and PAD SPACE ones ('utf8mb4_bin') 'k' and 'k '. MariaDB calls
that collation utf8mb4_nopad_bin, MySQL 8 utf8mb4_0900_bin.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.mysql import DATETIME, MEDIUMTEXT

UTC_NOW = "(utc_timestamp(6))"
"""The database's clock as naive UTC, microseconds kept; in parentheses, as MySQL takes an
expression for a DEFAULT."""

Time = sa.DateTime().with_variant(DATETIME(fsp=6), "mysql")
LongText = sa.Text().with_variant(MEDIUMTEXT(), "mysql")


def Label(length: int) -> Any:
    """Text; a VARCHAR on MySQL, where TEXT cannot be a key (utf8mb4: 4 bytes a character,
    3072 bytes an index entry, so at most 768)."""
    return sa.Text().with_variant(sa.String(length), "mysql")


def table_options(bind: Any) -> dict[str, Any]:
    """The options for `op.create_table` (ignored by the other databases)."""
    if bind.dialect.name != "mysql":
        return {}
    mariadb = bool(getattr(bind.dialect, "is_mariadb", False))
    return {
        "mysql_engine": "InnoDB",
        "mysql_charset": "utf8mb4",
        "mysql_collate": "utf8mb4_nopad_bin" if mariadb else "utf8mb4_0900_bin",
    }
