"""Benchmark: re-materializing a project whose clips are all done (the cost of doing nothing).

Issue 17: a cached rerun of 500 scenes must cost at most 3 SQL statements per scene and at most
10 s on this machine. One temporary VIDPIPE_HOME holds a project of ``--scenes`` scenes with
distinct ``--keyframe-size`` photographic PNG keyframes (scikit-image's astronaut, shifted per
frame), five manifest assets (a character with a face crop, another character, an environment,
a prop) with a primary Tier 2 clean sheet for the first character, references selected, and
every clip generated once through the real clip stage on the Vertex emulator (google-genai over
loopback; each video a Veo-like ``--clip-size`` 8 s 24 fps H.264 mp4, as Veo returns them).

Then, in fresh processes, the same rerun runs against two checkouts: ``--before`` (a git
revision, exported with ``git archive``; default: main when this work started) and this tree
("after"): ``runner.materialize_project(slug, ["clips"])``, the CLI's ``materialize --stage
clips``, on a Dagster instance in the temporary DAGSTER_HOME (as the CLI runs it), best of
``--rounds``. Printed: wall and CPU time per scene, SQL statements sent to the project database
per scene, images Pillow opened, and the paid API calls the emulator received (must be 0).

Floors, measured in the same run: the rows a rerun needs (the project's scenes, keyframes, clip
rows, selections and ledger rows) read in plain queries; and Dagster's own storage cost per asset
event on the same instance (each scene reports its materialization and five check results as it
finishes: on SQLite storage each event is a connection and a commit). Statements are attributed
to the code that sent them (the engine, identity scoring, the clip stage, its checks).
Run: ``.venv/bin/python bench/rerun.py [--scenes 500 --rounds 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    CAST,
    REPO,
    SHOTS,
    Counters,
    add_cast,
    add_scene,
    child,
    export,
    photo,
    stored_photo,
)

BEFORE = "6e36819"  # main when this work started
SLUG = "rerun"
LIMIT_S = 10.0  # for 500 scenes
LIMIT_STATEMENTS = 3.0  # per scene


def _size(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


# -- the fixture (this tree's code) ----------------------------------------------------------


def _clip(size: tuple[int, int]) -> bytes:
    """A Veo-like 8 s 24 fps mp4 (H.264 and AAC), as the emulator hands it back."""
    from vidpipe_dagster.testing.clips import veo_like_clip

    with tempfile.TemporaryDirectory(prefix="vidpipe-bench-clip-") as folder:
        return veo_like_clip(Path(folder, "clip.mp4"), 8.0, size).read_bytes()


def _placements(scene: int) -> dict[str, Any]:
    shot = SHOTS[scene % len(SHOTS)]
    tags = {
        "close_up": [("CHAR_01", "subject"), ("ENV_01", "background")],
        "two_shot": [
            ("CHAR_01", "subject"),
            ("CHAR_02", "interaction_target"),
            ("ENV_01", "background"),
        ],
        "wide_shot": [("CHAR_02", "subject"), ("PROP_01", "interaction_target")],
        "medium_shot": [("CHAR_01", "subject"), ("PROP_01", "interaction_target")],
        "establishing": [("ENV_01", "background")],
    }[shot]
    return {
        "composition": {"shot_type": shot},
        "placements": [{"asset_tag": tag, "role": role} for tag, role in tags],
    }


def build_fixture(settings: Any, scenes: int, keyframe: tuple[int, int]) -> None:
    """Rows and files as an import and reference selection leave them (written directly:
    importing 500 1280x720 scenes decodes every image again and takes minutes)."""
    from vidpipe_dagster.db.media import MediaStore
    from vidpipe_dagster.db.models import Project
    from vidpipe_dagster.db.session import migrate, session_scope

    settings.ensure_dirs()
    migrate(settings.database_url)
    media = MediaStore(settings.media_root)
    inputs = f"projects/{SLUG}/inputs"
    with session_scope(settings.database_url) as session:
        originals = [stored_photo(media, inputs, (1024, 1024), 100 + n) for n in range(len(CAST))]
        manifest, assets = add_cast(
            session, media, "rerun cast", originals, photo((1024, 1024), 200)
        )
        project = Project(
            slug=SLUG,
            name="Rerun bench",
            target_clip_duration=8,
            aspect_ratio="16:9",
            video_model="veo-3.1-fast-generate-001",
            manifest_id=manifest.id,
        )
        session.add(project)
        session.flush()
        for index in range(scenes):
            frames = (
                stored_photo(media, inputs, keyframe, 2 * index),
                stored_photo(media, inputs, keyframe, 2 * index + 1),
            )
            add_scene(session, project, index, frames, _placements(index), assets)


def first_run(settings: Any) -> None:
    """Every clip generated once through the real stage (the emulator answers at once)."""
    from vidpipe_dagster.runner import materialize_project

    fast = {
        "max_in_flight": 32,
        "requests_per_minute": 100_000,
        "poll_interval_seconds": 0.02,
        "backoff_base_seconds": 0.05,
    }
    [report] = materialize_project(
        SLUG, ["clips"], settings=settings, asset_config={"scene_clip": fast}
    )
    if report.failed or not report.succeeded:
        reasons = sorted(set((report.failed or {}).values())) or [report.skipped]
        raise SystemExit(f"the first run failed: {str(reasons)[:1000]}")


# -- measurements (run in a fresh process against one checkout) ------------------------------


_OWNERS = (  # where a statement comes from: the innermost frame of ours outside db/
    ("generation/", "engine (generation/)"),
    ("stages/clip_identity", "identity (stages/clip_identity)"),
    ("stages/scene_clip", "clip stage (stages/scene_clip)"),
    ("stages/clip_checks", "checks (stages/clip_checks)"),
)


def _owner(frame: Any) -> str:
    while frame is not None:
        name = frame.f_code.co_filename
        if "vidpipe_dagster/" in name and "vidpipe_dagster/db/" not in name:
            mine = name.split("vidpipe_dagster/", 1)[1]
            return next((label for prefix, label in _OWNERS if mine.startswith(prefix)), mine)
        frame = frame.f_back
    return "other"


def dagster_event_floor(instance: Any, count: int = 120) -> float:
    """Seconds Dagster's storage of this instance takes per asset event: runless
    materializations and check evaluations of a throwaway key, as many of each (wall)."""
    import dagster as dg

    key = dg.AssetKey(["bench_floor", "scene_clip"])
    token = os.urandom(4).hex()  # runless check results are unique per partition
    start = time.perf_counter()
    for i in range(count // 2):
        part = f"{token}-{i}"
        instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=part))
        instance.report_runless_asset_event(
            dg.AssetCheckEvaluation(asset_key=key, check_name="c", passed=True, partition=part)
        )
    return (time.perf_counter() - start) / (2 * (count // 2))


def postgres_event_floor(url: str) -> float:
    """``dagster_event_floor`` on a Dagster instance stored in a fresh database of the PostgreSQL
    server at ``url`` (created and dropped here), for the README's deployment figures."""
    import dagster as dg
    import sqlalchemy as sa

    server = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    name = f"vidpipe_bench_events_{os.urandom(4).hex()}"
    with server.connect() as connection:
        connection.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        with tempfile.TemporaryDirectory(prefix="vidpipe-bench-pg-") as home:
            target = url.rsplit("/", 1)[0] + f"/{name}"
            Path(home, "dagster.yaml").write_text(
                f"storage:\n  postgres:\n    postgres_url: {target}\ntelemetry:\n  enabled: false\n"
            )
            with dg.DagsterInstance.from_config(home) as instance:
                return dagster_event_floor(instance)
    finally:
        with server.connect() as connection:
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        server.dispose()


def _time_event_storage(instance: Any) -> dict[str, Any]:
    """Wall time Dagster's event storage spends storing the events of whatever runs next in this
    process (its ``store_event``, timed on this instance's storage object)."""
    storage = instance.event_log_storage
    spent: dict[str, Any] = {"seconds": 0.0, "events": 0, "by_type": {}}
    real = storage.store_event

    def store_event(event: Any) -> None:
        start = time.perf_counter()
        try:
            real(event)
        finally:
            took = time.perf_counter() - start
            spent["seconds"] += took
            spent["events"] += 1
            kind = event.dagster_event_type.value if event.dagster_event_type else "log"
            count, seconds = spent["by_type"].get(kind, (0, 0.0))
            spent["by_type"][kind] = (count + 1, seconds + took)

    storage.store_event = store_event
    return spent


def measure_rerun() -> dict[str, Any]:
    import dagster as dg

    import vidpipe_dagster
    from vidpipe_dagster.runner import materialize_project
    from vidpipe_dagster.settings import Settings

    settings = Settings.from_env()
    counters = Counters(settings.database_url, _owner)
    with dg.DagsterInstance.get() as instance:
        before = {r.dagster_run.run_id for r in instance.get_run_records()}
        storing = _time_event_storage(instance)
        with counters.counting():
            wall, cpu = time.perf_counter(), time.process_time()
            [report] = materialize_project(SLUG, ["clips"], settings=settings, instance=instance)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        storage = instance.event_log_storage
        del storage.store_event  # the floor below is not the run's
        runs = [r for r in instance.get_run_records() if r.dagster_run.run_id not in before]
        events = sum(len(instance.all_logs(r.dagster_run.run_id)) for r in runs)
        per_event = dagster_event_floor(instance)
    return {
        "code": str(Path(vidpipe_dagster.__file__).parent),
        "wall": wall,
        "cpu": cpu,
        "statements": counters.statements,
        "by_owner": counters.by_owner,
        "opens": counters.opens,
        "events": events,
        "per_event": per_event,
        "storing": storing["seconds"],
        "stored": storing["events"],
        "stored_by_type": storing["by_type"],
        "succeeded": len(report.succeeded),
        "failed": report.failed,
    }


# -- orchestration ---------------------------------------------------------------------------


def floor(settings: Any) -> float:
    """The rows a rerun needs, read in plain queries (best of 3, CPU time)."""
    from sqlalchemy import text

    from vidpipe_dagster.db.session import get_engine

    queries = [
        text(
            "SELECT s.id, s.scene_index, s.prompt, s.video_model, k.position, k.image_url, "
            "k.content_sha256, m.selected_reference_tags, c.* FROM projects p "
            "JOIN scenes s ON s.project_id = p.id JOIN keyframes k ON k.scene_id = s.id "
            "LEFT JOIN scene_manifests m ON m.project_id = p.id AND m.scene_index = s.scene_index "
            "LEFT JOIN video_clips c ON c.scene_id = s.id WHERE p.slug = :slug"
        ),
        text("SELECT * FROM generation_ledger WHERE project_slug = :slug"),
    ]
    best = float("inf")
    with get_engine(settings.database_url).connect() as connection:
        for _ in range(3):
            start = time.process_time()
            for query in queries:
                connection.execute(query, {"slug": SLUG}).all()
            best = min(best, time.process_time() - start)
    return best


def run(args: argparse.Namespace) -> None:
    from vidpipe_dagster.settings import Settings
    from vidpipe_dagster.testing.vertex_emulator import VertexEmulator

    clip = _clip(_size(args.clip_size))
    with (
        tempfile.TemporaryDirectory(prefix="vidpipe-bench-rerun-") as tmp,
        VertexEmulator(video_responder=lambda _instance, _parameters: clip) as emulator,
    ):
        root = Path(args.keep or tmp)
        reuse = bool(args.keep) and (root / "home").is_dir()
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("VIDPIPE_", "GOOGLE_", "DAGSTER_"))
        }
        env.update(
            VIDPIPE_HOME=str(root / "home"),
            DAGSTER_HOME=str(root / "dagster"),
            VIDPIPE_VERTEX_EMULATOR_HOST=emulator.address,
            VIDPIPE_DAGSTER_WEBSERVER="http://127.0.0.1:9",
            VIDPIPE_FACE_ENGINE="none",
            # the fixture's first run buys every clip (from the emulator): allow it
            VIDPIPE_BUDGET_PER_RUN_USD="100000",
            VIDPIPE_BUDGET_PER_DAY_USD="100000",
        )
        (root / "dagster").mkdir(parents=True, exist_ok=True)
        os.environ.update(env)
        settings = Settings.from_env(env)
        if reuse:
            print(f"fixture: reused from {root} (built by an earlier run with --keep)")
        else:
            start = time.perf_counter()
            build_fixture(settings, args.scenes, _size(args.keyframe_size))
            built = time.perf_counter() - start
            first_run(settings)
            print(
                f"fixture: {args.scenes} scenes, {args.keyframe_size} PNG keyframes, "
                f"{args.clip_size} clips of {len(clip) / 1e6:.1f} MB; rows and files in "
                f"{built:.0f} s, first clip run (emulator) in "
                f"{time.perf_counter() - start - built:.0f} s; {emulator.submit_count} paid submits"
            )
        trees = {"after": REPO}
        if args.before:
            exported = export(args.before, Path(tmp) / "before")
            if exported is not None:
                trees = {f"before ({args.before})": exported, **trees}
        results: dict[str, dict[str, Any]] = {}
        for label, tree in trees.items():
            rounds = []
            for _ in range(args.rounds):
                submits = emulator.submit_attempts
                result = child(__file__, tree, env, "--measure")
                result["api_calls"] = emulator.submit_attempts - submits
                rounds.append(result)
            results[label] = min(rounds, key=lambda r: r["wall"])
        report(results, floor(settings), args.scenes)
        if args.dagster_postgres:
            per_event = postgres_event_floor(args.dagster_postgres)
            print(
                f"Dagster storage on PostgreSQL ({args.dagster_postgres.split('@')[-1]}): "
                f"{per_event * 1000:.1f} ms per asset event (runless events, fresh database)"
            )


def report(results: dict[str, dict[str, Any]], floor_s: float, scenes: int) -> None:
    limit = LIMIT_S * scenes / 500
    print(
        f"\ncached rerun of {scenes} scenes (materialize --stage clips; every clip done): "
        f"limit {limit:.1f} s ({LIMIT_S:.0f} s per 500 scenes) and {LIMIT_STATEMENTS:.0f} "
        f"statements per scene; floor: the rows it needs, in plain queries, "
        f"{floor_s * 1000:.1f} ms CPU"
    )
    for label, r in results.items():
        ok = "ok" if r["wall"] <= limit and r["statements"] <= LIMIT_STATEMENTS * scenes else "OVER"
        print(
            f"  {label:20} wall {r['wall']:7.2f} s ({r['wall'] / scenes * 1000:6.1f} ms/scene, "
            f"{r['wall'] / limit:5.2f} x limit), CPU {r['cpu']:7.2f} s "
            f"({r['cpu'] / floor_s:6.0f} x floor); {r['statements']:6d} statements "
            f"({r['statements'] / scenes:5.2f}/scene); {r['opens']:5d} Pillow opens; "
            f"{r['api_calls']} paid API calls; {r['succeeded']} done, {len(r['failed'])} failed "
            f"[{ok}]"
        )
        owners = ", ".join(
            f"{owner} {n / scenes:.2f}"
            for owner, n in sorted(r["by_owner"].items(), key=lambda item: -item[1])
        )
        print(f"  {'':20} statements per scene by sender: {owners}")
        ours = r["wall"] - r["storing"]
        print(
            f"  {'':20} Dagster: {r['events']} events in the run's log; storing "
            f"{r['stored']} events took {r['storing']:.2f} s of the wall "
            f"({r['storing'] / max(r['stored'], 1) * 1000:.1f} ms each, "
            f"{r['storing'] / limit:.2f} x limit; runless events on the same instance afterwards: "
            f"{r['per_event'] * 1000:.1f} ms each); the rest: {ours:.2f} s "
            f"({ours / limit:.2f} x limit)"
        )
        kinds = sorted(r["stored_by_type"].items(), key=lambda item: -item[1][1])
        print(
            f"  {'':20} Dagster's storage by event: "
            + ", ".join(f"{kind} {n} x {s / n * 1000:.1f} ms" for kind, (n, s) in kinds[:4])
        )
    if len(results) == 2:
        (_, old), (_, new) = results.items()
        print(
            f"\nafter / before: wall {new['wall'] / old['wall']:.3f}, CPU "
            f"{new['cpu'] / old['cpu']:.3f}, statements "
            f"{new['statements'] / max(old['statements'], 1):.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=500)
    parser.add_argument("--keyframe-size", default="1280x720")
    parser.add_argument("--clip-size", default="1280x720")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--before", default=BEFORE, help="git revision to compare ('' for none)")
    parser.add_argument(
        "--keep",
        default="",
        help="folder to build the fixture in and keep (reused when it holds one already)",
    )
    parser.add_argument(
        "--dagster-postgres",
        default="",
        help="also measure Dagster's per-event floor on this PostgreSQL server (SQLAlchemy URL "
        "of a role that may create databases, e.g. postgresql+psycopg2://u:p@127.0.0.1/postgres)",
    )
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure_rerun()))
        return
    run(args)


if __name__ == "__main__":
    main()
