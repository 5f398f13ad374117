"""Score every scene's clip of a project and write its identity matrix as a PNG.

    .venv/bin/python tools/identity_matrix.py launch-day docs/screenshots/identity_matrix.png

Uses the settings of the environment (``VIDPIPE_HOME`` etc.), like the CLI; clips must have been
materialized (e.g. by ``make demo``). Scores are stored, so a second run reuses them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vidpipe_dagster.db import queries
from vidpipe_dagster.db.session import session_scope
from vidpipe_dagster.definitions import stage_context
from vidpipe_dagster.settings import Settings
from vidpipe_dagster.stages.clip_identity import project_identity_matrix, score_scene_identity


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slug")
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    ctx = stage_context(settings)
    with session_scope(settings.database_url) as session:
        scenes = [s.scene_index for s in queries.project_by_slug(session, args.slug).scenes]
    for index in scenes:
        result = score_scene_identity(ctx, args.slug, index)
        lines = [c.describe() for c in result.characters] or [result.note]
        print(f"scene {index}: " + "; ".join(lines))
    png = project_identity_matrix(ctx, args.slug)
    if png is None:
        print("error: no clip identities to show", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(png)
    print(f"identity matrix: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
