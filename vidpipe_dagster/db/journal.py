"""The ledger's fallback journal: ledger writes the database refused, kept on disk until replayed.

A paid request's operation name exists nowhere else once the API has returned it: if the database
is locked or its connection drops at that moment, losing the name means paying again. So a write
the database refuses is appended here (one JSON line, flushed and fsynced before the call
returns), and the next run replays the journal into the database before it plans anything
(``db.ledger.Ledger.replay_journal``).

Several processes may append at once (runs, the schedule's tick): every append and every claim
holds an exclusive ``flock`` on ``<journal>.lock``. A replay first renames the journal aside
(``<journal>.replaying-<id>``) under the lock, so appends made meanwhile start a new file and are
never truncated away; the claimed file is deleted only after its writes were committed. A replay
that fails leaves its file, and the next replay takes it again (the writes are idempotent).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SUFFIX = ".ledger-journal"


@dataclass(frozen=True)
class JournalRecord:
    """One ledger write: the method's name, the row and the method's arguments."""

    op: str
    entry_id: str
    args: dict[str, Any]
    at: str

    def describe(self) -> str:
        detail = self.args.get("operation_name") or self.args.get("error") or ""
        return f"{self.op} on ledger row {self.entry_id}" + (f" ({detail})" if detail else "")


class LedgerJournal:
    """An append-only file of ledger writes, replayed by ``Ledger.replay_journal``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    @classmethod
    def beside_sqlite(cls, database: Path) -> LedgerJournal:
        """The journal of a SQLite file: next to it (not ``-journal``, SQLite's own name)."""
        return cls(database.with_name(database.name + SUFFIX))

    @classmethod
    def in_folder(cls, folder: Path, key: str) -> LedgerJournal:
        """The journal of a database that has no file of its own (PostgreSQL), in ``folder``
        under a name made from ``key`` (the database URL without its password)."""
        import hashlib

        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return cls(folder / f".vidpipe{SUFFIX}-{digest}")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def append(self, op: str, entry_id: Any, args: Mapping[str, Any]) -> None:
        """Add one write and make it durable (fsync) before returning; raises ``OSError``."""
        record = {
            "op": op,
            "entry_id": str(entry_id),
            "args": dict(args),
            "at": datetime.now(UTC).isoformat(),
        }
        line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
        with self._locked():
            created = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line  # a line torn by a crash must not swallow this one
                os.write(fd, line)  # one write of one line, under the lock
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                _fsync_folder(self.path.parent)

    def _claimed_files(self) -> list[Path]:
        return sorted(self.path.parent.glob(self.path.name + ".replaying-*"))

    def pending(self) -> bool:
        """Whether anything waits to be replayed (one ``stat`` when nothing does)."""
        if self.path.exists():
            return True
        return self.path.parent.is_dir() and bool(self._claimed_files())

    @contextlib.contextmanager
    def claim(self) -> Iterator[tuple[list[JournalRecord], list[str]]]:
        """The records waiting (oldest first) and the lines that could not be read; the files
        are deleted when the block ends without an error, and kept for the next replay if not."""
        with self._locked():
            if self.path.exists():
                os.replace(self.path, self.path.with_name(f"{self.path.name}.replaying-{_stamp()}"))
                _fsync_folder(self.path.parent)
            files = self._claimed_files()
        records: list[JournalRecord] = []
        unreadable: list[str] = []
        for file in files:
            with contextlib.suppress(FileNotFoundError):  # another replay finished it
                for number, text in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
                    record = _parse(text)
                    if record is None:
                        if text.strip():
                            unreadable.append(f"{file.name} line {number}: {text[:120]!r}")
                        continue
                    records.append(record)
        yield records, unreadable
        if unreadable:  # kept for a person, never silently dropped
            kept = self.path.with_name(self.path.name + ".unreadable")
            with self._locked(), kept.open("a", encoding="utf-8") as handle:
                handle.write("".join(line + "\n" for line in unreadable))
        for file in files:
            with contextlib.suppress(FileNotFoundError):
                file.unlink()


def _parse(text: str) -> JournalRecord | None:
    try:
        data = json.loads(text)
        return JournalRecord(
            op=str(data["op"]),
            entry_id=str(data["entry_id"]),
            args=dict(data.get("args") or {}),
            at=str(data.get("at") or ""),
        )
    except (ValueError, KeyError, TypeError):
        return None  # a line torn by a crash mid-write


def _stamp() -> str:
    return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}"


def _fsync_folder(folder: Path) -> None:
    """Make a new or renamed file's directory entry durable too."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
