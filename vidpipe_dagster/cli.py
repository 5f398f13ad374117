"""The ``vidpipe-dagster`` command: init, import, materialize, status, costs, demo, emulator.

Errors exit non-zero with one readable line; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from vidpipe_dagster.settings import Settings, SettingsError


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _init(settings: Settings) -> None:
    from vidpipe_dagster.db.session import migrate

    settings.ensure_dirs()
    migrate(settings.database_url)


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
    from vidpipe_dagster.db.ledger import Ledger
    from vidpipe_dagster.db.session import session_factory, session_scope

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
    ledger = Ledger(session_factory(settings.database_url), catalog=settings.model_catalog())
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


def _print_reports(slug: str, reports: Sequence[object]) -> bool:
    ok = True
    for report in reports:
        if report.skipped:  # type: ignore[attr-defined]
            print(f"{slug} {report.stage}: skipped ({report.skipped})")  # type: ignore[attr-defined]
            continue
        done = ", ".join(report.succeeded) or "-"  # type: ignore[attr-defined]
        print(f"{slug} {report.stage}: materialized [{done}]")  # type: ignore[attr-defined]
        for key, error in report.failed.items():  # type: ignore[attr-defined]
            ok = False
            print(f"{slug} {report.stage}: partition {key} FAILED: {error}")  # type: ignore[attr-defined]
    return ok


def cmd_materialize(args: argparse.Namespace, settings: Settings) -> int:
    from vidpipe_dagster.runner import STAGE_NAMES, RunnerError, materialize_project

    stages = STAGE_NAMES if args.stage == "all" else (args.stage,)
    try:
        reports = materialize_project(
            args.slug,
            stages,
            partitions=args.partition,
            settings=settings,
            asset_config={"clean_sheet": {"tier": args.tier}},
        )
    except RunnerError as exc:
        raise CliError(str(exc)) from exc
    return 0 if _print_reports(args.slug, reports) else 1


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from vidpipe_dagster.db.session import session_scope
    from vidpipe_dagster.stages.status import StatusError, project_status

    _init(settings)
    try:
        with session_scope(settings.database_url) as session:
            status = project_status(session, args.slug, settings.media_root)
    except StatusError as exc:
        raise CliError(str(exc)) from exc
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"{status['project']}: {status['name']} ({len(status['scenes'])} scenes)")
    for scene in status["scenes"]:
        clip = scene["clip"] or {}
        print(
            f"  scene {scene['index']}: references {scene['selected_reference_tags']}, "
            f"clip {clip.get('status', 'none')} {clip.get('path') or ''}"
        )
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
    from vidpipe_dagster.db.ledger import Ledger
    from vidpipe_dagster.db.session import session_factory, session_scope

    _init(settings)
    with session_scope(settings.database_url) as session:
        try:
            queries.project_by_slug(session, args.slug)
        except queries.NotFound as exc:
            raise CliError(str(exc)) from exc
    ledger = Ledger(session_factory(settings.database_url), catalog=settings.model_catalog())
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


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from vidpipe_dagster.demo import write_demo_projects
    from vidpipe_dagster.runner import ensure_dagster_home, materialize_project

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
    print(f"Demo inputs:   {inputs}")
    print(f"Media root:    {settings.media_root}")
    print(f"Database:      {settings.database_url}")
    for slug in DEMO_SLUGS:
        print(f"Status:        .venv/bin/vidpipe-dagster status {slug} --json")
    print("Open the UI:")
    print(f"  export DAGSTER_HOME={home} VIDPIPE_HOME={settings.home}")
    print("  .venv/bin/dagster dev -w workspace.yaml    # then open http://127.0.0.1:3000")
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    from vidpipe_dagster.runner import STAGE_NAMES

    parser = argparse.ArgumentParser(prog="vidpipe-dagster", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="create or upgrade the database and folders").set_defaults(
        func=cmd_init
    )
    p = sub.add_parser("import", help="import (or update) a project from a YAML spec")
    p.add_argument("spec", help="path to the project's YAML file (image paths are relative to it)")
    p.set_defaults(func=cmd_import)
    p = sub.add_parser("materialize", help="run a project's stages in-process")
    p.add_argument("slug")
    p.add_argument("--stage", choices=[*STAGE_NAMES, "all"], default="all")
    p.add_argument("--partition", action="append", help="only this partition (repeatable)")
    p.add_argument(
        "--tier",
        choices=["tier2", "tier3"],
        default="tier2",
        help="clean sheets: tier2 (local, free) or tier3 (Gemini image, paid; falls back to tier2)",
    )
    p.set_defaults(func=cmd_materialize)
    p = sub.add_parser(
        "regenerate",
        help="stop reusing a scene's paid clip (broken video, download that keeps failing): "
        "the next clips run submits and pays again",
    )
    p.add_argument("slug")
    p.add_argument("--scene", type=int, required=True, help="scene index")
    p.add_argument("--reason", default="requested from the command line")
    p.set_defaults(func=cmd_regenerate)
    for name, text in (
        ("archive", "hide a project from the graph (its rows, files and run history stay)"),
        ("unarchive", "show an archived project again"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("slug")
        p.set_defaults(func=cmd_archive)
    p = sub.add_parser("status", help="show a project's references, clean sheets and clips")
    p.add_argument("slug")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser(
        "costs",
        help="every paid request of a project with its billing labels and cost (to reconcile "
        "the cloud bill)",
    )
    p.add_argument("slug")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print one JSON object")
    form.add_argument("--csv", action="store_true", help="print CSV, one column per label")
    p.set_defaults(func=cmd_costs)
    sub.add_parser("demo", help="build, import and materialize the demo projects").set_defaults(
        func=cmd_demo
    )
    p = sub.add_parser(
        "emulator",
        help="run the local Vertex emulator (a test double, not Google) on 127.0.0.1",
        add_help=False,
    )
    p.add_argument("options", nargs="*", help="--port N, --latency S, ... (see emulator --help)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
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
