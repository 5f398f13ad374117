"""The project database as a Dagster resource (SQLite by default, PostgreSQL by URL)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from sqlalchemy.orm import Session, sessionmaker

from vidpipe_dagster.db.session import session_factory, session_scope


class DatabaseResource(dg.ConfigurableResource):
    """SQLAlchemy access to the system of record. ``url`` may carry a password: pass an EnvVar."""

    url: str

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on error."""
        with session_scope(self.url) as session:
            yield session

    def sessionmaker(self) -> sessionmaker[Session]:
        return session_factory(self.url)
