"""Alembic environment. Run through `broadcaster db upgrade` (see broadcaster/migrate.py),
which passes a connection in `config.attributes`; plain `alembic` works too and reads
DATABASE_URL from the settings."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection

from broadcaster.db import make_engine
from broadcaster.jobs.tables import MYSQL_INDEXES, MYSQL_ONLY_COLUMNS, PARTIAL_INDEXES, metadata
from broadcaster.settings import load_settings


def _compared_on_mysql(
    item: Any, name: str | None, kind: str, reflected: bool, compare_to: Any
) -> bool:
    """On MySQL the partial indexes of the models are not made; the generated column and
    the indexes that stand in for them are (the migrations), and the MySQL test checks them."""
    if kind == "index" and name in PARTIAL_INDEXES | MYSQL_INDEXES:
        return False
    return not (kind == "column" and name in MYSQL_ONLY_COLUMNS)


def _run(connection: Connection) -> None:
    mysql = connection.dialect.name == "mysql"
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=_compared_on_mysql if mysql else None,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = make_engine(load_settings().database_url)
    with engine.connect() as new_connection:
        _run(new_connection)
