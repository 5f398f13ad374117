"""Benchmark: how long the code location takes to load with 50 imported projects.

Definitions load in the webserver's code server, on every reload, and in every run worker, so the
goal is under 3 s for a studio-sized database. This imports N generated projects (~6 scenes, ~5
manifest assets each, tiny images) into a temporary VIDPIPE_HOME, then times
``defs()`` + ``resolve_asset_graph()`` in-process (best of 3, imports already warm) and a cold
``python -c "from vidpipe_dagster.definitions import defs; defs()"`` subprocess (wall time, best of
3, bytecode already compiled), and prints each against the goal.
Run: ``.venv/bin/python bench/definitions_load.py [--projects 50 --scenes 6 --assets 5]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

GOAL_S = 3.0
SHOTS = ("close_up", "wide_shot", "medium_shot", "establishing", "two_shot", "over_the_shoulder")
TYPES = ("CHARACTER", "CHARACTER", "ENVIRONMENT", "PROP", "VEHICLE")


def _spec(index: int, scenes: int, assets: int) -> dict[str, Any]:
    """A project whose scenes place two or three of its manifest tags each."""
    tags = [f"{TYPES[a % len(TYPES)][:4]}_{a:02d}" for a in range(assets)]
    manifest = [
        {
            "id": f"asset{a}",
            "tag": tags[a],
            "type": TYPES[a % len(TYPES)],
            "image": f"img/{a}.png",
            "quality_score": 5.0 + a,
        }
        for a in range(assets)
    ]
    scene_list = []
    for s in range(scenes):
        placed = [tags[s % assets], tags[(s + 1) % assets], tags[(s + 2) % assets]][: 2 + s % 2]
        roles = ["subject", "interaction_target", "background"]
        scene_list.append(
            {
                "index": s,
                "prompt": f"project {index} scene {s}",
                "start_frame": f"frames/{s}_start.png",
                "end_frame": f"frames/{s}_end.png",
                "manifest": {
                    "composition": {"shot_type": SHOTS[s % len(SHOTS)]},
                    "placements": [
                        {"asset_tag": tag, "role": roles[i]} for i, tag in enumerate(placed)
                    ],
                },
            }
        )
    return {
        "project": {"slug": f"bench-{index:03d}", "name": f"Bench {index}"},
        "manifest": {"name": f"cast {index}", "assets": manifest},
        "scenes": scene_list,
    }


def _write(spec: dict[str, Any], folder: Path, seed: int) -> Path:
    folder.mkdir(parents=True)
    paths = [a["image"] for a in spec["manifest"]["assets"]]
    for scene in spec["scenes"]:
        paths += [scene["start_frame"], scene["end_frame"]]
    for n, rel in enumerate(paths):  # distinct tiny images (content-addressed media store)
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), ((seed * 7) % 256, (n * 13) % 256, 90)).save(target, "PNG")
    path = folder / "project.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def _import_projects(workdir: Path, projects: int, scenes: int, assets: int) -> float:
    from vidpipe_dagster.db.session import migrate, session_scope
    from vidpipe_dagster.settings import Settings
    from vidpipe_dagster.stages.project_import import import_project

    settings = Settings.from_env()
    settings.ensure_dirs()
    migrate(settings.database_url)
    started = time.perf_counter()
    for index in range(projects):
        path = _write(_spec(index, scenes, assets), workdir / "specs" / str(index), index)
        with session_scope(settings.database_url) as session:
            import_project(session, path, settings.media_root)
    return time.perf_counter() - started


def _hot(rounds: int) -> tuple[float, int, int]:
    """Best wall time of defs() resolved to a repository with all its jobs, in a warm process.

    That is what a code server or run worker builds before it can answer (asset graph, the
    per-project jobs and the implicit asset jobs, schedules).
    """
    from vidpipe_dagster.definitions import defs

    best = float("inf")
    keys = checks = 0
    for _ in range(rounds):
        started = time.perf_counter()
        repository = defs().get_repository_def()
        repository.get_all_jobs()
        graph = repository.asset_graph
        best = min(best, time.perf_counter() - started)
        keys = len(list(graph.get_all_asset_keys()))
        checks = len(list(graph.asset_check_keys))
    return best, keys, checks


def _cold(rounds: int) -> float:
    """Best wall time of a fresh interpreter importing and building the definitions."""
    code = (
        "from vidpipe_dagster.definitions import defs; defs().get_repository_def().get_all_jobs()"
    )
    return _best_subprocess(code, rounds)


def _best_subprocess(code: str, rounds: int) -> float:
    """Best wall time of ``python -c code`` over ``rounds`` fresh interpreters."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        _quiet([sys.executable, "-c", code])
        best = min(best, time.perf_counter() - started)
    return best


def _quiet(args: list[str]) -> None:
    """Run, keeping stderr (Dagster's per-asset beta warnings) unless the command fails."""
    proc = subprocess.run(args, env=os.environ.copy(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{proc.stderr[-3000:]}")


def _import_only(rounds: int) -> float:
    """The part of the cold time that is Python importing dagster and this package, not our code."""
    return _best_subprocess("import vidpipe_dagster.definitions", rounds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=50)
    parser.add_argument("--scenes", type=int, default=6)
    parser.add_argument("--assets", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="vidpipe-bench-") as tmp:
        workdir = Path(tmp)
        os.environ["VIDPIPE_HOME"] = str(workdir / "home")
        for name in ("VIDPIPE_DATABASE_URL", "VIDPIPE_MEDIA_ROOT"):
            os.environ.pop(name, None)
        import_s = _import_projects(workdir, args.projects, args.scenes, args.assets)
        with warnings.catch_warnings():  # one beta warning per asset definition: noise here
            warnings.simplefilter("ignore")
            _hot(1)  # warm imports and caches once, untimed
            hot_s, keys, checks = _hot(args.rounds)
        cold_s = _cold(args.rounds)
        imports_s = _import_only(args.rounds)

    print(
        f"{args.projects} projects x {args.scenes} scenes x {args.assets} manifest assets: "
        f"{keys} asset keys, {checks} asset checks (import took {import_s:.1f} s)"
    )
    rows = [
        ("hot: defs() resolved with all jobs", hot_s),
        ("cold: python -c '...defs() + jobs' (wall)", cold_s),
        ("  of which importing dagster + package", imports_s),
    ]
    for label, seconds in rows:
        ratio = f"{seconds / GOAL_S:5.2f} x the {GOAL_S:.0f} s goal"
        print(f"{label:<42} {seconds:6.2f} s  {ratio}{'' if seconds <= GOAL_S else '  OVER'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
