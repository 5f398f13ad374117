"""PostgreSQL test helpers: a fresh, randomly named database per use, always dropped afterwards.

``VIDPIPE_TEST_POSTGRES_URL`` names a database the role can log in to and a role that may create
databases (``.ci/postgres.sh`` sets both up and prints the variable).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, make_url, text

from vidpipe_dagster.db.session import get_engine

URL_ENV = "VIDPIPE_TEST_POSTGRES_URL"

requires_postgres = pytest.mark.skipif(
    not os.environ.get(URL_ENV),
    reason=f"{URL_ENV} is not set (run `bash .ci/postgres.sh` to start a local server)",
)


def admin_url() -> str:
    url = os.environ.get(URL_ENV)
    if not url:
        pytest.skip(f"{URL_ENV} is not set")
    return url


def _execute_outside_transaction(admin: str, statement: str) -> None:
    """CREATE/DROP DATABASE cannot run inside a transaction block."""
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(statement))
    finally:
        engine.dispose()


@contextmanager
def temporary_database(prefix: str = "vidpipe_t") -> Iterator[str]:
    """Create an empty database, yield its SQLAlchemy URL, then drop it (even on failure)."""
    admin = admin_url()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _execute_outside_transaction(admin, f'CREATE DATABASE "{name}"')
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        get_engine(url).dispose()  # the process-wide cached engine holds pooled connections
        # FORCE (PostgreSQL 13+) ends sessions a failed test may have left open.
        _execute_outside_transaction(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def dagster_pg_env(url: str) -> dict[str, str]:
    """The ``DAGSTER_PG_*`` variables ``deploy/dagster.yaml`` reads, for the database at ``url``."""
    parsed = make_url(url)
    return {
        "DAGSTER_PG_HOST": parsed.host or "127.0.0.1",
        "DAGSTER_PG_PORT": str(parsed.port or 5432),
        "DAGSTER_PG_USER": parsed.username or "",
        "DAGSTER_PG_PASSWORD": parsed.password or "",
        "DAGSTER_PG_DB": parsed.database or "",
    }
