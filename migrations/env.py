"""Alembic environment. Run through `broadcaster db upgrade` (see broadcaster/migrate.py),
which passes a connection in `config.attributes`; plain `alembic` works too and reads
DATABASE_URL from the settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from broadcaster.db import make_engine
from broadcaster.jobs.tables import metadata
from broadcaster.settings import load_settings


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
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
