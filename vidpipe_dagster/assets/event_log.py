"""Dagster's local SQLite event log, kept open while a step reports many events.

Dagster's SQLite event storage opens and closes a connection for every event it stores (one per
run file and one for the cross-run index). Its files are in WAL mode, where the last connection
to close a database checkpoints it and deletes its write-ahead log: so every event paid a
checkpoint and a new log. One idle connection per file, held while a step reports its scenes,
keeps the log between events (docs/sqlite.md has the figures). It holds no transaction: writers,
readers and automatic checkpoints go on as before. Other storages (PostgreSQL) are left alone.
"""

import contextlib
import os
import sqlite3
from collections.abc import Iterator

import dagster as dg

INDEX_SHARD = "index"  # the cross-run file of Dagster's run-sharded SQLite event storage


@contextlib.contextmanager
def kept_open(instance: dg.DagsterInstance, run_id: str | None = None) -> Iterator[int]:
    """Hold the event log's cross-run file (and the run's file, given its id, once it exists)
    open for the block; yields how many are held (0 when the instance does not store its events
    in SQLite files)."""
    storage = instance.event_log_storage
    paths: list[str] = []
    if callable(shard := getattr(storage, "path_for_shard", None)):  # run-sharded (the default)
        paths = [shard(INDEX_SHARD), *([shard(run_id)] if run_id else [])]
    elif callable(single := getattr(storage, "get_db_path", None)):  # consolidated
        paths = [single()]
    held: list[sqlite3.Connection] = []
    try:
        for path in paths:
            if not os.path.isfile(path):  # never create a file Dagster has not
                continue
            try:
                connection = sqlite3.connect(f"file:{path}?mode=rw", uri=True)
                connection.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            except sqlite3.Error:  # a speed-up only: the step runs the same without it
                continue
            held.append(connection)
        yield len(held)
    finally:
        for connection in held:
            connection.close()
