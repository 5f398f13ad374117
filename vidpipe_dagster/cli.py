"""The ``vidpipe-dagster`` command line.

Errors exit non-zero with one readable line; ``--debug`` shows the traceback. ``status`` reads the
database only: it starts without importing Dagster and never migrates.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from vidpipe_dagster.settings import Settings, SettingsError

if TYPE_CHECKING:
    from vidpipe_dagster.db.ledger import Ledger


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _init(settings: Settings) -> None:
    from vidpipe_dagster.db.session import migrate

    settings.ensure_dirs()
    migrate(settings.database_url)


def _ledger(settings: Settings) -> Ledger:
    """The ledger as the stages open it: the catalog's prices, and its journal (a PostgreSQL
    ledger's, in the media root) replayed before it answers."""
    from vidpipe_dagster.db.ledger import Ledger
    from vidpipe_dagster.db.session import session_factory

    return Ledger(
        session_factory(settings.database_url),
        catalog=settings.model_catalog(),
        journal_dir=settings.media_root,
    )


def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    from vidpipe_dagster.runner import ensure_dagster_home

    _init(settings)
    home = ensure_dagster_home(settings)
    print(f"database:     {settings.database_url}")
    print(f"media root:   {settings.media_root}")
    print(f"DAGSTER_HOME: {home}")
    return 0


def _import(settings: Settings, spec: Path) -> str:
    from vidpipe_dagster.db.session import Database
    from vidpipe_dagster.runner import report_inputs
    from vidpipe_dagster.stages.project_import import import_spec

    _init(settings)
    summary = import_spec(
        Database(settings.database_url), spec, settings.media_root, settings.model_catalog()
    )
    report_inputs(summary.slug, settings)  # the UI sees which scenes the import made stale
    return summary.describe()


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from vidpipe_dagster.stages.project_import import SpecError

    try:
        print(_import(settings, Path(args.spec)))
    except SpecError as exc:
        raise CliError(str(exc)) from exc
    _reload_ui(settings)
    return 0


def _reload_ui(settings: Settings) -> None:
    """Ask a running webserver to reload the code location, or say the one step to take."""
    from vidpipe_dagster.webserver_reload import reload_code_location

    print(reload_code_location(settings.webserver_url).message)


def cmd_archive(args: argparse.Namespace, settings: Settings) -> int:
    from vidpipe_dagster.db import queries
    from vidpipe_dagster.db.session import session_scope

    _init(settings)
    with session_scope(settings.database_url) as session:
        try:
            project = queries.project_by_slug(session, args.slug)
        except queries.NotFound as exc:
            raise CliError(str(exc)) from exc
        project.archived = args.command == "archive"
    state = "archived: hidden from the graph, history kept" if project.archived else "active again"
    print(f"project {args.slug!r} {state}")
    _reload_ui(settings)
    return 0


def cmd_regenerate(args: argparse.Namespace, settings: Settings) -> int:
    """Stop reusing a scene's paid clip (or resuming its operation): the next clips run pays."""
    from vidpipe_dagster.db import queries
    from vidpipe_dagster.db.session import session_scope

    _init(settings)
    with session_scope(settings.database_url) as session:
        try:
            project = queries.project_by_slug(session, args.slug)
            scene = queries.scene_of(session, project, args.scene)
        except queries.NotFound as exc:
            raise CliError(str(exc)) from exc
        fingerprints = [scene.clip.fingerprint] if scene.clip and scene.clip.fingerprint else []
        if scene.clip is not None:  # the schedule will now request it too
            scene.clip.status = "failed"
            scene.clip.error = f"regeneration requested: {args.reason}"
    ledger = _ledger(settings)
    given_up = ledger.give_up(args.slug, str(args.scene), fingerprints, args.reason)
    if not given_up:
        print(
            f"scene {args.scene} of {args.slug!r}: no finished or open request to give up; the "
            f"next run generates it anyway: vidpipe-dagster materialize {args.slug} --stage "
            f"clips --partition {args.scene}"
        )
        return 0
    paid = sum(e.cost_usd for e in given_up if e.state == "done")
    maybe = sum(
        float((e.details or {}).get("estimate_usd", 0.0)) for e in given_up if e.state != "done"
    )
    cost = f"they cost {paid:.2f} USD" + (
        f", plus up to {maybe:.2f} USD for requests whose video never arrived" if maybe else ""
    )
    print(
        f"scene {args.scene} of {args.slug!r}: {len(given_up)} ledger row(s) no longer reused "
        f"({cost}; they stay in the ledger). The next run pays again: "
        f"vidpipe-dagster materialize {args.slug} --stage clips --partition {args.scene}"
    )
    return 0


def cmd_choose(args: argparse.Namespace, settings: Settings) -> int:
    """A person picks another take of a scene's clip: nothing is paid (the takes are on disk);
    the scene's clip partition is then materialized again (a cached run) to show it."""
    import getpass
    from datetime import UTC, datetime

    from vidpipe_dagster.definitions import stage_context
    from vidpipe_dagster.runner import RunnerError, materialize_project
    from vidpipe_dagster.stages.takes import TakeChoiceError, choose_take

    _init(settings)
    ctx = stage_context(settings)
    who = args.by
    if who is None:
        try:
            who = getpass.getuser()
        except (KeyError, OSError):  # no user name known to the system
            who = None
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    try:
        choice = choose_take(ctx, args.slug, args.scene, args.take, who=who, when=when)
    except TakeChoiceError as exc:
        raise CliError(str(exc)) from exc
    was = f"was {choice.previous_reason}" if choice.previous_reason else "was take 1"
    print(
        f"scene {args.scene} of {args.slug!r}: {choice.reason} ({was}); no request sent, "
        "nothing paid. Showing it in Dagster (a cached run of the scene's clip):"
    )
    try:
        reports = materialize_project(
            args.slug,
            ("clips",),
            partitions=[str(args.scene)],
            settings=settings,
            log_level="INFO" if args.debug else "CRITICAL",
        )
    except RunnerError as exc:
        raise CliError(
            f"take {args.take} is chosen, but the clip was not shown again: {exc}"
        ) from exc
    return 0 if _print_reports(args.slug, reports) else 1


def _print_reports(slug: str, reports: Sequence[Any]) -> bool:
    """One line per stage; each failed partition on its own line naming the asset key to
    materialize again (what the UI shows), then the one command that retries them all."""
    from vidpipe_dagster.db.project_graphs import graph_name

    ok = True
    for report in reports:
        stage = report.stage
        if report.skipped:
            print(f"{slug} {stage}: skipped ({report.skipped})")
            continue
        if not report.succeeded and not report.failed:
            print(f"{slug} {stage}: nothing to do (none of the chosen partitions belongs to it)")
            continue
        done = f"materialized [{', '.join(report.succeeded)}]" if report.succeeded else ""
        failed = f"{len(report.failed)} failed" if report.failed else ""
        print(f"{slug} {stage}: {', '.join(p for p in (done, failed) if p)}")
        if not report.failed:
            continue
        ok = False
        key = f"{graph_name(slug)}/{report.asset}"
        for partition, reason in report.failed.items():
            where = key if partition == "all" else f"{key} partition {partition}"
            print(f"{slug} {stage}: FAILED {where}: {reason}")
        retry = f"vidpipe-dagster materialize {slug} --stage {stage}"
        retry += "".join(f" --partition {p}" for p in report.failed if p != "all")
        runs = ", ".join(report.run_ids)
        print(f"{slug} {stage}: to retry: {retry}" + (f" (run log: {runs})" if runs else ""))
    return ok


def cmd_materialize(args: argparse.Namespace, settings: Settings) -> int:
    from vidpipe_dagster.runner import RunnerError, materialize_project

    stages = STAGE_CHOICES if args.stage == "all" else (args.stage,)
    try:
        reports = materialize_project(
            args.slug,
            stages,
            partitions=args.partition,
            settings=settings,
            asset_config={"clean_sheet": {"tier": args.tier}},
            # the CLI prints each failure as one line; the run's log keeps the detail (and the
            # stack trace) in the Dagster instance; --debug shows it here as well
            log_level="INFO" if args.debug else "CRITICAL",
        )
    except RunnerError as exc:
        raise CliError(str(exc)) from exc
    return 0 if _print_reports(args.slug, reports) else 1


def _require_schema(settings: Settings) -> None:
    """Readers never create or migrate a database: a missing or outdated one is one line."""
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import make_url

    from vidpipe_dagster.db.session import MIGRATIONS_DIR, current_revision

    url = make_url(settings.database_url)
    on_disk = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
    if on_disk and not Path(str(url.database)).exists():
        raise CliError(
            f"no database at {url.database} yet: import a project first "
            "(vidpipe-dagster import SPEC.yaml), or check VIDPIPE_HOME / VIDPIPE_DATABASE_URL"
        )
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    current = current_revision(settings.database_url)
    if current != head:
        state = "has no vidpipe schema" if current is None else f"is at schema {current}"
        raise CliError(
            f"the database {url.render_as_string(hide_password=True)} {state}, this version "
            f"reads schema {head}: run `vidpipe-dagster init` to create or upgrade it"
        )


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from vidpipe_dagster.db.session import session_scope
    from vidpipe_dagster.stages.status import StatusError, project_status

    _require_schema(settings)
    try:
        with session_scope(settings.database_url) as session:
            status = project_status(session, args.slug, settings.media_root)
    except StatusError as exc:
        raise CliError(str(exc)) from exc
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        for line in status_lines(status):
            print(line)
    return 0


COST_COLUMNS = (
    "created_at",
    "ledger_row",
    "kind",
    "subject",
    "model",
    "backend",
    "resolution",
    "takes",
    "duration_seconds",
    "generate_audio",
    "seed",
    "state",
    "charge",
    "cost_usd",
    "at_risk_usd",
    "run_id",
    "operation_name",
)


def cmd_costs(args: argparse.Namespace, settings: Settings) -> int:
    """Every paid request of a project with its billing labels and cost, so a studio can match
    its cloud bill line by line (the ``vidpipe_ledger_row`` label is the ledger row)."""
    import csv

    from vidpipe_dagster.db import queries
    from vidpipe_dagster.db.session import session_scope

    _init(settings)
    with session_scope(settings.database_url) as session:
        try:
            queries.project_by_slug(session, args.slug)
        except queries.NotFound as exc:
            raise CliError(str(exc)) from exc
    ledger = _ledger(settings)
    lines = ledger.cost_report(args.slug)
    billed = round(sum(line.cost_usd for line in lines), 4)
    at_risk = round(sum(line.at_risk_usd for line in lines), 4)
    if args.json:
        report = {
            "project": args.slug,
            "currency": "USD",
            "billed_usd": billed,
            "at_risk_usd": at_risk,
            "requests": [line.as_dict() for line in lines],
        }
        print(json.dumps(report, indent=2))
        return 0
    if args.csv:
        label_keys = sorted({key for line in lines for key in line.labels})
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow([*COST_COLUMNS, *(f"label:{key}" for key in label_keys)])
        for line in lines:
            row = line.as_dict()
            writer.writerow(
                [
                    *("" if row[c] is None else row[c] for c in COST_COLUMNS),
                    *(line.labels.get(key, "") for key in label_keys),
                ]
            )
        return 0
    if not lines:
        print(f"{args.slug}: no paid requests recorded")
        return 0
    for line in lines:
        when = line.created_at.strftime("%Y-%m-%d %H:%M:%S") if line.created_at else "-"
        labels = " ".join(f"{k}={v}" for k, v in sorted(line.labels.items())) or "(no labels)"
        video = f" {line.resolution} x{line.takes}" if line.kind == "video" else ""
        risk = f" (up to {line.at_risk_usd:.2f} at risk)" if line.at_risk_usd else ""
        print(
            f"{when}  {line.ledger_row}  {line.kind} {line.subject or '-'}  "
            f"{line.model}{video}  {line.charge} {line.cost_usd:.2f} USD{risk}  {labels}"
        )
    print(
        f"{args.slug}: {len(lines)} request(s), {billed:.2f} USD billed"
        + (f", up to {at_risk:.2f} USD more pending or uncertain" if at_risk else "")
    )
    return 0


def status_lines(status: dict[str, Any]) -> list[str]:
    """The human ``status``: a table with one row per scene (clip state, backend or preview label,
    cost, identity, references), then each failed scene's reason and the command that retries it."""
    from vidpipe_dagster.domain.preview import backend_label
    from vidpipe_dagster.stages.status import identity_cell, take_cell

    slug, prefix = status["project"], status["asset_prefix"]
    scenes = status["scenes"]
    clips = [s["clip"] or {} for s in scenes]
    states: dict[str, int] = {}
    for clip in clips:
        states[clip.get("status", "none")] = states.get(clip.get("status", "none"), 0) + 1
    counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    total = sum(float(c.get("cost_usd") or 0.0) for c in clips)
    archived = " (archived)" if status["archived"] else ""
    lines = [
        f"{slug}: {status['name']}{archived}; {len(scenes)} scene(s), {status['video_model']}; "
        f"clips: {counts or 'none'}; clip cost {total:.2f} USD"
    ]
    rows = [("scene", "clip", "backend", "cost", "take", "identity", "references")]
    notes: list[str] = []
    for scene, clip in zip(scenes, clips, strict=True):
        index = str(scene["index"])
        state = clip.get("status", "none")
        if clip.get("cached"):
            state += " (cached)"
        backend = backend_label(clip.get("backend")) if clip.get("backend") else "-"
        cost = f"{float(clip['cost_usd']):.2f} USD" if clip.get("cost_usd") is not None else "-"
        identity = identity_cell(clip.get("identity")) if clip else "-"
        take = take_cell(clip) if clip else "-"
        rows.append((index, state, backend, cost, take, identity, _references_cell(scene)))
        if (clip.get("takes") or 0) > 1 and clip.get("take_choice"):
            notes.append(f"  scene {index}: {clip['take_choice']}")
        if clip.get("status") == "failed":
            notes.append(f"  scene {index} failed: {clip.get('error') or 'no reason recorded'}")
            notes.append(
                f"    retry: vidpipe-dagster materialize {slug} --stage clips --partition "
                f"{index}   (asset {prefix}/scene_clip, partition {index})"
            )
        if scene["selection_current"] is False:
            notes.append(
                f"  scene {index}: the manifest changed since its references were selected; "
                f"materialize {prefix}/scene_references partition {index} "
                f"(vidpipe-dagster materialize {slug} --stage references --partition {index})"
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  " + "  ".join([*cells, row[-1]]).rstrip())
    return lines + notes


def _references_cell(scene: dict[str, Any]) -> str:
    """The references the clip stage sends: tag, face crop or not, and the image's source."""
    if scene["selected_references"]:
        return ", ".join(
            f"{r['tag']}{' face' if r['face_crop'] else ''} ({r['source']})"
            for r in scene["selected_references"]
        )
    tags = scene["selected_reference_tags"]
    if tags is None:
        return "not selected yet"
    if scene["selection_current"] is False:
        return f"{', '.join(tags) or 'none'} (out of date)"
    return "none"


def cmd_runs_clear_dead(args: argparse.Namespace, settings: Settings) -> int:
    """Mark the project's runs whose process is proven gone as failed, so its schedule resumes."""
    import dagster as dg

    from vidpipe_dagster.automation import UNFINISHED_RUN_STATUSES
    from vidpipe_dagster.jobs import PROJECT_TAG
    from vidpipe_dagster.run_health import assess_run, clear_dead_run
    from vidpipe_dagster.runner import ensure_dagster_home

    ensure_dagster_home(settings)
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs(
            filters=dg.RunsFilter(
                tags={PROJECT_TAG: args.slug},
                statuses=UNFINISHED_RUN_STATUSES,
                run_ids=args.run or None,
            )
        )
        if not runs:
            which = f" among {', '.join(args.run)}" if args.run else ""
            print(f"{args.slug}: no unfinished run{which}; nothing to clear")
            return 0
        left = 0
        for run in runs:
            health = assess_run(instance, run)
            if health.dead is True:
                if args.dry_run:
                    print(
                        f"run {run.run_id} ({health.status}): would mark failed: {health.evidence}"
                    )
                    continue
                clear_dead_run(instance, run, health)
                print(f"run {run.run_id} ({health.status}): marked failed: {health.evidence}")
                continue
            left += 1
            why = "alive" if health.dead is False else "cannot tell from here"
            print(
                f"run {run.run_id} ({health.status}): left alone, {why}: {health.evidence}"
                + (
                    ""
                    if health.dead is False
                    else "; if you know it is gone, terminate it in the UI (Runs, the run, "
                    "Terminate)"
                )
            )
    return 0 if left == 0 else 1


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from vidpipe_dagster.demo import write_demo_projects
    from vidpipe_dagster.runner import ensure_dagster_home, materialize_project

    started = time.monotonic()
    _init(settings)
    home = ensure_dagster_home(settings)
    inputs = settings.home / "demo_inputs"
    ok = True
    for spec in write_demo_projects(inputs):
        print(_import(settings, spec))
    from vidpipe_dagster.demo import DEMO_SLUGS

    for slug in DEMO_SLUGS:
        ok = _print_reports(slug, materialize_project(slug, settings=settings)) and ok
    print()
    print(f"Took:          {time.monotonic() - started:.1f} s (local previews: no quota pacing)")
    print(f"Demo inputs:   {inputs}")
    print(f"Media root:    {settings.media_root}")
    print(f"Database:      {settings.database_url}")
    for slug in DEMO_SLUGS:
        print(f"Status:        .venv/bin/vidpipe-dagster status {slug} --json")
    print("Open the UI:")
    print(f"  export DAGSTER_HOME={home} VIDPIPE_HOME={settings.home}")
    print("  .venv/bin/dagster dev -w workspace.yaml    # then open http://127.0.0.1:3000")
    return 0 if ok else 1


# The stages ``materialize --stage`` accepts, in run order: ``runner.STAGE_NAMES`` (a test keeps
# them equal), spelled out here so that building the parser does not import Dagster.
STAGE_CHOICES = ("clean-sheets", "references", "clips", "final-cut")

DESCRIPTION = """\
Storyboards to identity-consistent video: import a project, materialize its stages (clean
sheets -> references -> clips -> final cut) into the Dagster instance the UI shows, and read
its state. Errors exit non-zero with one line (--debug shows the traceback)."""

EPILOG = """\
examples:
  vidpipe-dagster import spring/project.yaml
  vidpipe-dagster materialize spring-ad --stage clips --partition 3
  vidpipe-dagster status spring-ad            # a table; --json for one JSON object
  vidpipe-dagster choose spring-ad --scene 3 --take 2   # another take of a clip, nothing paid
  vidpipe-dagster runs clear-dead spring-ad   # after a killed run blocks the schedule

Configuration is read from the environment (VIDPIPE_HOME, VIDPIPE_DATABASE_URL, DAGSTER_HOME, ...):
see the README's Configuration table."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as the one line every other error is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vidpipe-dagster",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and run logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, **kwargs)

    def slug_argument(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "slug",
            help="the project's slug, e.g. spring-ad (an unknown one is an error naming "
            "the projects there are)",
        )

    command("init", "create or upgrade the database (Alembic) and the folders").set_defaults(
        func=cmd_init
    )
    p = command("import", "import a project from its YAML spec, or update it in place")
    p.add_argument("spec", help="path to the project's YAML file (image paths are relative to it)")
    p.set_defaults(func=cmd_import)
    p = command(
        "materialize",
        "run a project's stages in-process through its Dagster jobs (listed in the UI's history)",
    )
    slug_argument(p)
    p.add_argument(
        "--stage",
        choices=[*STAGE_CHOICES, "all"],
        default="all",
        help="which stage to run (default: all, in order: clean-sheets, references, clips, "
        "final-cut)",
    )
    p.add_argument(
        "--partition",
        action="append",
        metavar="KEY",
        help="only this partition: a scene index for references and clips, a manifest tag for "
        "clean sheets (repeatable; an unknown key is an error naming the valid ones)",
    )
    p.add_argument(
        "--tier",
        choices=["tier2", "tier3"],
        default="tier2",
        help="clean sheets: tier2 (local, free) or tier3 (Gemini image, paid; falls back to tier2)",
    )
    p.set_defaults(func=cmd_materialize)
    p = command(
        "regenerate",
        "stop reusing a scene's paid clip (broken video, download that keeps failing): "
        "the next clips run submits and pays again",
    )
    slug_argument(p)
    p.add_argument("--scene", type=int, required=True, help="the scene index to generate again")
    p.add_argument(
        "--reason",
        default="requested from the command line",
        help="why, kept in the ledger and on the clip (default: %(default)r)",
    )
    p.set_defaults(func=cmd_regenerate)
    p = command(
        "choose",
        "use another take of a scene's clip (a request for several takes stores them all): "
        "no API call, nothing paid; the scene's clip is then materialized again (cached) so "
        "Dagster shows the new take and the final cut becomes stale",
    )
    slug_argument(p)
    p.add_argument("--scene", type=int, required=True, help="the scene index")
    p.add_argument(
        "--take",
        type=int,
        required=True,
        help="the take to use, from 1 (status shows how many the clip has; an invalid one is an "
        "error naming the valid takes)",
    )
    p.add_argument(
        "--by",
        default=None,
        help="who chose it, kept with the choice (default: the system user name)",
    )
    p.set_defaults(func=cmd_choose)
    for name, text in (
        ("archive", "hide a project from the graph (its rows, files and run history stay)"),
        ("unarchive", "show an archived project again"),
    ):
        p = command(name, text)
        slug_argument(p)
        p.set_defaults(func=cmd_archive)
    p = command(
        "status",
        "show a project's scenes: clip state, backend (or preview label), cost, identity, "
        "references and failure reasons; reads the database only",
    )
    slug_argument(p)
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (scenes, references, clips, clean sheets) instead of a table",
    )
    p.set_defaults(func=cmd_status)
    p = command(
        "costs",
        "every paid request of a project with its billing labels and cost, to reconcile the "
        "cloud bill line by line",
    )
    slug_argument(p)
    form = p.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print one JSON object")
    form.add_argument("--csv", action="store_true", help="print CSV, one column per label")
    p.set_defaults(func=cmd_costs)
    p = command("runs", "look after a project's Dagster runs (clear-dead: clear killed runs)")
    actions = p.add_subparsers(dest="runs_command", required=True, metavar="ACTION")
    q = actions.add_parser(
        "clear-dead",
        help="mark the project's runs whose process is gone as failed, so its schedule resumes",
        description="A run killed while it ran (its process gone) stays STARTED in Dagster, and "
        "the nightly schedule skips its project until it ends. This marks such runs failed, "
        "with the evidence as the reason; only runs proven dead from this machine are touched, "
        "and their ledger rows stay (the next run resumes requests in flight).",
    )
    slug_argument(q)
    q.add_argument("--run", action="append", metavar="RUN_ID", help="only this run (repeatable)")
    q.add_argument(
        "--dry-run", action="store_true", help="say what would be cleared and change nothing"
    )
    q.set_defaults(func=cmd_runs_clear_dead)
    command(
        "demo", "build, import and materialize the demo projects offline (animatic previews)"
    ).set_defaults(func=cmd_demo)
    p = command(
        "emulator",
        "run the local Vertex emulator (a test double, not Google) on 127.0.0.1; "
        "`vidpipe-dagster emulator --help` lists its options",
        add_help=False,
    )
    p.add_argument("options", nargs="*", help="--port N, --latency S, ... (see emulator --help)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a reader that stops reading (``status | head -1``) ends it quietly."""
    try:
        code = _run(list(sys.argv[1:] if argv is None else argv))
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        _silence_stdout()
        return 141  # what a process killed by SIGPIPE reports, without the traceback


def _silence_stdout() -> None:
    """Point stdout at /dev/null: the interpreter's final flush must not fail on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (captured in tests)
        pass


def _run(argv: list[str]) -> int:
    if argv[:1] == ["emulator"]:  # its own options (--port, --latency, ...) pass straight through
        from vidpipe_dagster.testing.vertex_emulator import main as emulator_main

        return emulator_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args, settings))
    except (CliError, SettingsError) as exc:
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        raise
    except Exception as exc:
        if args.debug:
            raise
        known = environment_error(settings, exc)
        if known is not None:  # a setting to fix, not a bug: say which and how
            print(f"error: {one_line(known)}", file=sys.stderr)
            return 2
        print(
            f"error: {type(exc).__name__}: {one_line(str(exc))} (rerun with --debug for details)",
            file=sys.stderr,
        )
        return 1


_PG_UNREACHABLE = (
    "connection to server",
    "could not connect",
    "could not translate host name",
    "timeout expired",
    "server closed the connection",
    "connection refused",
    "no route to host",
    "network is unreachable",
)


def environment_error(settings: Settings, exc: BaseException) -> str | None:
    """One line naming the variable to fix for an error that comes from the environment (the
    database cannot be reached or opened, a media file is refused); None for anything else."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError

    from vidpipe_dagster.domain.media import MediaError

    if isinstance(exc, MediaError):
        return f"media root ({settings.media_root}): {exc}"
    if not isinstance(exc, DBAPIError):
        return None
    detail = " ".join(str(exc.orig if exc.orig is not None else exc).split())
    url = make_url(settings.database_url)
    variable = "VIDPIPE_DATABASE_URL" if settings.database_url_from_env else "VIDPIPE_HOME"
    if url.get_backend_name() == "sqlite":
        path = url.database or ":memory:"
        lowered = detail.lower()
        if "unable to open database file" in lowered:
            return (
                f"{variable}: cannot open the SQLite database {path} ({detail}); point "
                f"{variable} at a folder you can write to"
            )
        if "file is not a database" in lowered:
            return f"{variable}: {path} is not a SQLite database; point {variable} elsewhere"
        if "database is locked" in lowered:
            return (
                f"the SQLite database {path} stayed locked by another process ({detail}); "
                "let that process finish and run the command again"
            )
        return None
    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    lowered = detail.lower()
    refused_login = ("password authentication failed", "no password supplied")
    if any(m in lowered for m in refused_login) or ('role "' in lowered and "not exist" in lowered):
        return (
            f"VIDPIPE_DATABASE_URL: PostgreSQL at {where} refused user {url.username!r} "
            f"({detail}); fix the user or password in VIDPIPE_DATABASE_URL"
        )
    if 'database "' in lowered and "does not exist" in lowered:
        return (
            f"VIDPIPE_DATABASE_URL: PostgreSQL at {where} has no database {url.database!r}; "
            "create it (createdb) or fix the name in VIDPIPE_DATABASE_URL"
        )
    if exc.connection_invalidated or any(marker in lowered for marker in _PG_UNREACHABLE):
        return (
            f"VIDPIPE_DATABASE_URL: cannot connect to {where} ({detail}); start PostgreSQL "
            "there, or set VIDPIPE_DATABASE_URL=postgresql+psycopg2://USER:PASSWORD@HOST:PORT/"
            "DATABASE"
        )
    return None


def one_line(message: str) -> str:
    """Multi-line messages (a spec with several field errors) as one line, parts kept in order."""
    parts = [line.strip() for line in message.splitlines() if line.strip()]
    text = ""
    for part in parts:
        text += part if not text else (" " if text.endswith(":") else "; ") + part
    return text


if __name__ == "__main__":
    sys.exit(main())
