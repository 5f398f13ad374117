"""The project database as a Dagster resource (SQLite by default, PostgreSQL by URL)."""

from __future__ import annotations

import dagster as dg

from vidpipe_dagster.db.session import Database


class DatabaseResource(dg.ConfigurableResource):
    """SQLAlchemy access to the system of record. ``url`` may carry a password: pass an EnvVar."""

    url: str

    def database(self) -> Database:
        return Database(self.url)
