"""Benchmark: how long a ledger-sized write waits for SQLite's write lock under C concurrent
writers, with WAL and ``synchronous=FULL`` (what ``db/session.py`` runs: SQLite's default) against
``synchronous=NORMAL`` (issue 17; the argument is ``docs/sqlite.md``).

C threads (the clip engine's in-flight clips share one process) each write ``--writes`` rows of a
ledger row's size, one transaction each (``BEGIN IMMEDIATE``, as SQLAlchemy's first write takes
the lock), pausing 10 ms between writes as the engine does between events. Printed per setting:
each write's time from BEGIN to COMMIT (median, p95, max) and the wall time, against a floor
measured in the same run: the same writes from one writer (nothing to wait for) with FULL.
Run: ``.venv/bin/python bench/sqlite_locks.py [--writers 32 --writes 10 --rounds 3]``.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import threading
import time


def run(folder: str, synchronous: str, writers: int, writes: int) -> tuple[float, list[float]]:
    path = os.path.join(folder, f"ledger-{synchronous}-{writers}-{time.monotonic_ns()}.db")
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE ledger (id INTEGER PRIMARY KEY, fingerprint TEXT, details TEXT)")
    setup.commit()
    setup.close()
    waits: list[float] = []
    lock = threading.Lock()

    def writer(number: int) -> None:
        connection = sqlite3.connect(path, timeout=30, isolation_level=None)
        for pragma in ("journal_mode=WAL", f"synchronous={synchronous}", "busy_timeout=30000"):
            connection.execute(f"PRAGMA {pragma}")
        for index in range(writes):
            started = time.perf_counter()
            connection.execute("BEGIN IMMEDIATE")
            connection.execute(
                "INSERT INTO ledger (fingerprint, details) VALUES (?, ?)",
                (f"{number:04d}-{index:04d}" * 4, "d" * 400),
            )
            connection.execute("COMMIT")
            with lock:
                waits.append(time.perf_counter() - started)
            time.sleep(0.01)
        connection.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, waits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=32)
    parser.add_argument("--writes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, list[float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="vidpipe-bench-sqlite-") as folder:
        for _ in range(args.rounds):  # interleaved: disk load from others falls on all alike
            for label, sync, writers in (
                ("floor: 1 writer, FULL", "FULL", 1),
                (f"C={args.writers}, FULL", "FULL", args.writers),
                (f"C={args.writers}, NORMAL", "NORMAL", args.writers),
            ):
                results.setdefault(label, []).append(run(folder, sync, writers, args.writes))
    floor = statistics.median(w for _, waits in results["floor: 1 writer, FULL"] for w in waits)
    print(
        f"SQLite WAL, one transaction per ledger-sized write, {args.writes} writes per writer, "
        f"{args.rounds} rounds; floor (median write, one writer, FULL): {floor * 1000:.2f} ms"
    )
    for label, rounds in results.items():
        waits = sorted(w for _, ws in rounds for w in ws)
        median = statistics.median(waits)
        p95 = waits[int(len(waits) * 0.95)]
        wall = statistics.median(total for total, _ in rounds)
        print(
            f"  {label:22} per write: median {median * 1000:7.2f} ms ({median / floor:6.1f} x "
            f"floor), p95 {p95 * 1000:7.2f} ms ({p95 / floor:6.1f} x), max "
            f"{waits[-1] * 1000:7.1f} ms ({waits[-1] / floor:6.1f} x); wall {wall:.2f} s"
        )


if __name__ == "__main__":
    main()
