"""Runs whose process is gone: proven from the run's own events, and cleared with a reason.

A run executed in-process (``vidpipe-dagster materialize``) that is killed (SIGKILL, a closed
laptop, an OOM) never writes its end: Dagster keeps it STARTED forever, and the nightly schedule,
which never doubles a project's run, would skip that project forever. Dagster's run monitoring does
not watch in-process runs (and the default run launcher cannot check its workers), so we look
ourselves:

- every process a run executed in is in its event log (``Executing steps in process (pid: N)``,
  ``Started process for run (pid: N)``, each event's pid);
- the machine is the run's ``vidpipe/host`` tag (the CLI's runner sets it); without it a pid means
  nothing here, so such a run is never called dead;
- a pid is the run's process only if a process with that pid exists on this host, is not a zombie
  and started no later than the event that named it (a pid reused by a newer process is not it).

A run is dead when every process it named is gone. Clearing one (``clear_dead_run``) marks it
failed in the instance with the evidence as the reason; its ledger rows are untouched, so the next
run resumes any request still in flight from its operation name instead of paying again.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

HOST_TAG = "vidpipe/host"  # the machine whose processes ran the run (hostname)
CLEAR_COMMAND = "vidpipe-dagster runs clear-dead {slug}"
# /proc gives a process's start in clock ticks since boot and the boot time in whole seconds
_START_SLACK_S = 2.0


def this_host() -> str:
    return socket.gethostname()


def host_tags() -> dict[str, str]:
    """The tags that let a later tick (or ``runs clear-dead``) prove the run's process gone."""
    return {HOST_TAG: this_host()}


@dataclass(frozen=True)
class RunHealth:
    """``dead``: True when proven gone, False when a process of the run is alive, None when this
    host cannot tell (another machine ran it, or the run names no process)."""

    run_id: str
    status: str
    dead: bool | None
    evidence: str


def run_pids(instance: dg.DagsterInstance, run_id: str) -> dict[int, float]:
    """Each process the run's events name, with the time of the first event naming it."""
    records = instance.get_records_for_run(
        run_id,
        of_type={dg.DagsterEventType.ENGINE_EVENT, dg.DagsterEventType.RUN_START},
    ).records
    pids: dict[int, float] = {}
    for record in records:
        entry = record.event_log_entry
        event = entry.dagster_event
        if event is None:
            continue
        found = [event.pid] if event.pid else []
        metadata = getattr(event.event_specific_data, "metadata", None) or {}
        value = metadata.get("pid")
        text = getattr(value, "text", value)
        if isinstance(text, str | int) and str(text).isdigit():
            found.append(int(text))
        for pid in found:
            pids.setdefault(int(pid), entry.timestamp)
    return pids


def process_alive(pid: int, named_at: float) -> bool:
    """Whether ``pid`` on this host is still the process an event named at ``named_at``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    state, started = _proc_stat(pid)
    if state == "Z":  # killed, not yet reaped: nothing runs any more
        return False
    return started is None or started <= named_at + _START_SLACK_S


def _proc_stat(pid: int) -> tuple[str | None, float | None]:
    """(state letter, start time as a Unix timestamp) from ``/proc``; (None, None) elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration, ValueError, IndexError):
        return None, None
    fields = stat[stat.rfind(")") + 2 :].split()  # the command name may contain spaces
    try:
        return fields[0], boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (IndexError, ValueError, OSError):
        return fields[0] if fields else None, None


def assess_run(instance: dg.DagsterInstance, run: dg.DagsterRun) -> RunHealth:
    """Whether ``run``'s processes are gone, and the evidence in words."""
    status = run.status.value.lower()
    host = run.tags.get(HOST_TAG)
    if host is None:
        return RunHealth(
            run.run_id,
            status,
            None,
            "the run does not record which machine ran it (launched by the daemon or the UI, "
            "or by an older vidpipe-dagster)",
        )
    if host != this_host():
        return RunHealth(
            run.run_id, status, None, f"it ran on {host}; run this command there to check it"
        )
    pids = run_pids(instance, run.run_id)
    if not pids:
        return RunHealth(run.run_id, status, None, "its events name no process yet")
    alive = sorted(pid for pid, named_at in pids.items() if process_alive(pid, named_at))
    if alive:
        listed = ", ".join(str(pid) for pid in alive)
        return RunHealth(run.run_id, status, False, f"process {listed} on {host} is running")
    listed = ", ".join(str(pid) for pid in sorted(pids))
    return RunHealth(
        run.run_id,
        status,
        True,
        f"its process{'es' if len(pids) > 1 else ''} {listed} on {host} "
        f"{'are' if len(pids) > 1 else 'is'} gone (killed, or the machine restarted)",
    )


def clear_dead_run(instance: dg.DagsterInstance, run: dg.DagsterRun, health: RunHealth) -> None:
    """Mark a run proven dead as failed, with the evidence and who cleared it as the reason."""
    if health.dead is not True:
        raise ValueError(f"run {run.run_id} is not proven dead: {health.evidence}")
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    instance.report_run_failed(
        run,
        message=(
            f"Marked failed by `vidpipe-dagster runs clear-dead` at {when}: {health.evidence}. "
            "Its ledger rows are kept: the next run resumes requests still in flight."
        ),
    )
