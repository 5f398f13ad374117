"""Benchmark: the nightly tick of up-to-date projects, and ``status`` of a 500-scene project.

Issues 15 and 17: an up-to-date project's tick must decode no image and run a fixed number of
queries, and ``status --json`` must run a fixed number of queries and start without Dagster.

One database (a temporary VIDPIPE_HOME) holds ``--projects`` projects of ``--scenes`` scenes with
1280x720 photographic keyframes (scikit-image's astronaut, shifted per frame), five manifest assets
each (a character with a face crop, another character, an environment, a prop), references
selected, a primary clean sheet for the first character, and every clip done from the request it
would send now; plus one project of ``--status-scenes`` scenes. Then, in fresh processes, the same
measurements run against two checkouts: ``--before`` (a git revision, exported with ``git
archive``; default: the main commit this work started from) and this tree ("after"):

- tick: every project's ``automation.backfill_tick`` once (after one warm-up tick), wall time, SQL
  statements sent to the project database, and images opened by Pillow (``Image.open``: a
  verify, a decode or a format probe; the old path made three per image); each tick must answer
  "every scene clip is up to date" in both checkouts (so both compare the same fingerprints);
- status in-process: ``stages.status.project_status`` of the big project (best of 3, warm);
- status from the command line: ``python -m vidpipe_dagster.cli status SLUG --json`` in a fresh
  interpreter (best of 3 wall times), its statements, and whether Dagster was imported.

Floors, measured in the same run: the rows all ticks need, read in two plain queries; the big
project's scenes and clips in one query; a bare ``python -c "import sqlalchemy"``.
Run: ``.venv/bin/python bench/tick_status.py [--projects 50 --scenes 32 --status-scenes 500]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import REPO, SHOTS, Counters, add_cast, add_scene, child, export, photo, stored_photo

BEFORE = "eb27925"  # main when this bench was written (before the batched tick and status)
TICK_PREFIX = "tick-"
BIG = "status-big"


# -- the fixture (this tree's code) ----------------------------------------------------------


def _placements(scene: int) -> dict[str, Any]:
    shot = SHOTS[scene % len(SHOTS)]
    tags = {
        "close_up": [("CHAR_01", "subject"), ("ENV_01", "background")],
        "two_shot": [
            ("CHAR_01", "subject"),
            ("CHAR_02", "interaction_target"),
            ("ENV_01", "background"),
        ],
        "establishing": [("ENV_01", "background"), ("PROP_01", "subject")],
    }.get(
        shot, [("CHAR_02", "subject"), ("PROP_01", "interaction_target"), ("ENV_01", "background")]
    )
    return {
        "composition": {"shot_type": shot},
        "placements": [{"asset_tag": tag, "role": role} for tag, role in tags],
    }


def build_fixture(settings: Any, projects: int, scenes: int, big_scenes: int) -> None:
    """Rows and files as an import, reference selection and clip run leave them (written
    directly: the bench measures reading, and importing 1,600 1280x720 scenes takes minutes)."""
    from vidpipe_dagster.db.media import MediaStore
    from vidpipe_dagster.db.models import (
        Project,
        Scene,
        VideoClip,
    )
    from vidpipe_dagster.db.session import migrate, session_scope
    from vidpipe_dagster.stages.context import StageContext
    from vidpipe_dagster.stages.scene_clip import ClipOptions
    from vidpipe_dagster.stages.schedule import stored_jobs

    settings.ensure_dirs()
    migrate(settings.database_url)
    media = MediaStore(settings.media_root)
    # 64 distinct 1280x720 keyframes, shared by the projects' scenes
    frames = [stored_photo(media, "inputs/frames", (1280, 720), n) for n in range(64)]
    originals = [stored_photo(media, "inputs/assets", (1024, 1024), 100 + n) for n in range(5)]
    sheet = photo((1024, 1024), 200)

    slugs = [(f"{TICK_PREFIX}{p:03d}", scenes) for p in range(projects)] + [(BIG, big_scenes)]
    for slug, count in slugs:
        with session_scope(settings.database_url) as session:
            manifest, assets = add_cast(session, media, f"cast of {slug}", originals, sheet)
            project = Project(
                slug=slug,
                name=slug,
                target_clip_duration=8,
                aspect_ratio="16:9",
                video_model="veo-3.1-generate-001",
                manifest_id=manifest.id,
            )
            session.add(project)
            session.flush()
            for index in range(count):
                pair = (frames[(2 * index) % 64], frames[(2 * index + 1) % 64])
                add_scene(session, project, index, pair, _placements(index), assets)
        ctx = StageContext(database=_database(settings), media=media)
        jobs = stored_jobs(ctx, slug, ClipOptions())
        with session_scope(settings.database_url) as session:
            by_index = {
                str(s.scene_index): s
                for s in session.query(Scene).join(Project).filter(Project.slug == slug)
            }
            for key, job in jobs.items():
                assert job is not None, (slug, key)
                session.add(
                    VideoClip(
                        scene_id=by_index[key].id,
                        status="done",
                        backend="animatic",
                        file_url=f"projects/{slug}/clips/{key}.mp4",
                        duration_seconds=float(job.request.duration_seconds),
                        conditioning_mode=job.request.conditioning_mode,
                        fingerprint=job.request.fingerprint,
                        reference_tags=list(job.request.reference_tags),
                    )
                )


def _database(settings: Any) -> Any:
    from vidpipe_dagster.db.session import Database

    return Database(settings.database_url)


# -- measurements (run in a fresh process against one checkout) ------------------------------


def measure_tick() -> dict[str, Any]:
    import dagster as dg

    import vidpipe_dagster
    from vidpipe_dagster.automation import backfill_tick
    from vidpipe_dagster.db.project_graphs import load_project_graphs
    from vidpipe_dagster.definitions import default_resources
    from vidpipe_dagster.settings import Settings

    settings = Settings.from_env()
    resources = default_resources(settings)
    parts = (
        resources["database"].database(),
        resources["media"].store(),
        resources["vertex"].backends(),
        resources["budget"].budget(),
    )
    graphs = [
        g for g in load_project_graphs(settings.database_url) if g.slug.startswith(TICK_PREFIX)
    ]
    counters = Counters(settings.database_url)
    with dg.DagsterInstance.ephemeral() as instance:
        backfill_tick(graphs[-1], *parts, instance)  # warm-up: imports, connections
        answers = set()
        with counters.counting():
            start = time.perf_counter()
            for graph in graphs:
                result = backfill_tick(graph, *parts, instance)
                answers.add(getattr(result, "skip_message", None) or "a run request")
            seconds = time.perf_counter() - start
    expected = {f"{g.slug}: every scene clip is up to date" for g in graphs}
    return {
        "code": str(Path(vidpipe_dagster.__file__).parent),
        "projects": len(graphs),
        "seconds": seconds,
        "statements_per_tick": counters.statements / len(graphs),
        "opens_per_tick": counters.opens / len(graphs),
        "all_up_to_date": answers == expected,
        "answers": sorted(answers - expected)[:3],
    }


def measure_status_in_process() -> dict[str, Any]:
    from vidpipe_dagster.db.session import session_scope
    from vidpipe_dagster.settings import Settings
    from vidpipe_dagster.stages.status import project_status

    settings = Settings.from_env()
    counters = Counters(settings.database_url)
    times = []
    for attempt in range(4):  # the first warms imports and the connection
        with counters.counting() if attempt == 3 else contextlib.nullcontext():
            start = time.perf_counter()
            with session_scope(settings.database_url) as session:
                status = project_status(session, BIG, settings.media_root)
            times.append(time.perf_counter() - start)
    return {
        "seconds": min(times[1:]),
        "statements": counters.statements,
        "scenes": len(status["scenes"]),
    }


def measure_status_cli() -> dict[str, Any]:
    """Run in a fresh interpreter: the command as a user starts it, imports included."""
    start = time.perf_counter()
    from vidpipe_dagster import cli
    from vidpipe_dagster.settings import Settings

    counters = Counters(Settings.from_env().database_url)
    with counters.counting(), contextlib.redirect_stdout(io.StringIO()) as out:
        code = cli.main(["status", BIG, "--json"])
    seconds = time.perf_counter() - start
    return {
        "code": code,
        "seconds": seconds,
        "statements": counters.statements,
        "dagster_imported": "dagster" in sys.modules,
        "scenes": len(json.loads(out.getvalue())["scenes"]) if code == 0 else None,
    }


# -- orchestration ---------------------------------------------------------------------------


def _wall(args: list[str], tree: Path, env: dict[str, str], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(
            args,
            cwd=tree,
            env={**env, "PYTHONPATH": str(tree)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
        )
        best = min(best, time.perf_counter() - start)
    return best


def floors(settings: Any, env: dict[str, str]) -> dict[str, float]:
    """What the work cannot go below: the rows read in a few plain queries, a bare interpreter."""
    from sqlalchemy import text

    from vidpipe_dagster.db.session import get_engine

    engine = get_engine(settings.database_url)
    tick_rows = text(
        "SELECT p.slug, s.scene_index, s.prompt, c.status, c.fingerprint, k.position, "
        "k.content_sha256 FROM projects p JOIN scenes s ON s.project_id = p.id "
        "LEFT JOIN video_clips c ON c.scene_id = s.id JOIN keyframes k ON k.scene_id = s.id "
        "WHERE p.slug LIKE :prefix"
    )
    tick_assets = text(
        "SELECT a.id, a.manifest_tag, a.original_sha256, r.clean_image_url FROM assets a "
        "LEFT JOIN asset_clean_references r ON r.asset_id = a.id AND r.is_primary"
    )
    status_rows = text(
        "SELECT s.scene_index, s.prompt, c.* FROM projects p JOIN scenes s ON s.project_id = p.id "
        "LEFT JOIN video_clips c ON c.scene_id = s.id WHERE p.slug = :slug"
    )

    def best(fn: Any) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    with engine.connect() as connection:
        tick = best(
            lambda: (
                connection.execute(tick_rows, {"prefix": f"{TICK_PREFIX}%"}).all(),
                connection.execute(tick_assets).all(),
            )
        )
        status = best(lambda: connection.execute(status_rows, {"slug": BIG}).all())
    bare = _wall([sys.executable, "-c", "import sqlalchemy"], REPO, env)
    return {"tick": tick, "status": status, "python": bare}


def run(projects: int, scenes: int, big_scenes: int, before: str | None) -> None:
    from vidpipe_dagster.settings import Settings

    with tempfile.TemporaryDirectory(prefix="vidpipe-bench-tick-") as tmp:
        root = Path(tmp)
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("VIDPIPE_", "GOOGLE_", "DAGSTER_"))
        }
        env.update(
            VIDPIPE_HOME=str(root / "home"),
            DAGSTER_HOME=str(root / "dagster"),
            VIDPIPE_VIDEO_BACKEND="animatic",
            VIDPIPE_DAGSTER_WEBSERVER="http://127.0.0.1:9",
        )
        (root / "dagster").mkdir()
        settings = Settings.from_env(env)
        start = time.perf_counter()
        build_fixture(settings, projects, scenes, big_scenes)
        print(
            f"fixture: {projects} projects x {scenes} scenes + 1 x {big_scenes} scenes, "
            f"1280x720 keyframes, built in {time.perf_counter() - start:.1f} s"
        )
        trees = {"after": REPO}
        if before:
            exported = export(before, root / "before")
            if exported is not None:
                trees = {f"before ({before})": exported, **trees}
        results: dict[str, dict[str, Any]] = {}
        for label, tree in trees.items():
            results[label] = {
                "tick": child(__file__, tree, env, "--measure=tick"),
                "status": child(__file__, tree, env, "--measure=status"),
                "cli": child(__file__, tree, env, "--measure=cli"),
                "cli_wall": _wall(
                    [sys.executable, "-m", "vidpipe_dagster.cli", "status", BIG, "--json"],
                    tree,
                    env,
                ),
            }
        floor = floors(settings, env)
        report(results, floor, projects, scenes, big_scenes)


def report(
    results: dict[str, dict[str, Any]],
    floor: dict[str, float],
    projects: int,
    scenes: int,
    big: int,
) -> None:
    print(f"\ntick of {projects} up-to-date projects x {scenes} scenes (all ticks, one each):")
    print(f"  floor: the rows they need, 2 plain queries: {floor['tick'] * 1000:.1f} ms")
    for label, r in results.items():
        t = r["tick"]
        ok = "all 'up to date'" if t["all_up_to_date"] else f"NOT all up to date: {t['answers']}"
        print(
            f"  {label:22} {t['seconds']:8.3f} s = {t['seconds'] / floor['tick']:7.0f} x floor; "
            f"{t['statements_per_tick']:6.1f} statements/tick, {t['opens_per_tick']:6.1f} "
            f"Pillow image opens/tick; {ok}"
        )
    print(f"\nstatus --json of a {big}-scene project:")
    print(
        f"  floor: scenes and clips in 1 query {floor['status'] * 1000:.1f} ms; bare python + "
        f"sqlalchemy {floor['python']:.2f} s"
    )
    for label, r in results.items():
        s, c = r["status"], r["cli"]
        print(
            f"  {label:22} in-process {s['seconds'] * 1000:8.1f} ms = "
            f"{s['seconds'] / floor['status']:5.0f} x floor, {s['statements']:5d} statements; "
            f"command line {r['cli_wall']:.2f} s = {r['cli_wall'] / floor['python']:.1f} x floor, "
            f"{c['statements']} statements, dagster imported: "
            f"{'yes' if c['dagster_imported'] else 'no'}"
        )
    if len(results) == 2:
        (_, old), (_, new) = results.items()
        print(
            f"\nafter / before: tick {new['tick']['seconds'] / old['tick']['seconds']:.3f}, "
            f"status in-process {new['status']['seconds'] / old['status']['seconds']:.3f}, "
            f"status command {new['cli_wall'] / old['cli_wall']:.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=50)
    parser.add_argument("--scenes", type=int, default=32)
    parser.add_argument("--status-scenes", type=int, default=500)
    parser.add_argument("--before", default=BEFORE, help="git revision to compare ('' for none)")
    parser.add_argument("--measure", choices=["tick", "status", "cli"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure = {
            "tick": measure_tick,
            "status": measure_status_in_process,
            "cli": measure_status_cli,
        }
        print(json.dumps(measure[args.measure]()))
        return
    run(args.projects, args.scenes, args.status_scenes, args.before or None)


if __name__ == "__main__":
    main()
