"""Benchmark: Tier 2 per 1024x1024 image, the clean-sheet stage's path against the bare library
path plus the same save, in one run (issue 17: at most 1.10x).

- Project ("after", this tree): what ``stages.clean_sheet`` does per asset: ``read_image`` of the
  stored original (its import hash vouches for it: not decoded), then
  ``make_tier2_clean_sheet`` (one decode, the flat-photo check, the engine on the decoded
  image, the subject-share check, the composite on #808080, the PNG at
  ``CLEAN_SHEET_PNG_LEVEL``).
- Floor ("bare"): read the file, decode it, ``rembg.remove`` on the same session, the same
  composite, and the same PNG save (same compression level).
- "before" (``--before``, a git revision exported with ``git archive``, run in a fresh process
  on the same file): ``read_image_bytes`` + ``make_tier2_clean_sheet`` as they were, against
  the same bare path with Pillow's default PNG level (what that code saved with).
- The compression levels: time and size of the PNG save alone, so the chosen level is argued
  with figures from this run.

Rounds interleave the paths (load from other processes falls on both alike); each ratio is the
median over rounds of project / bare in the same round. u2netp from ``make models``.
Run: ``.venv/bin/python bench/tier2.py [--rounds 7] [--before 6e36819]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import REPO, child, export, paired_ratio, timed

BEFORE = "6e36819"  # main when this work started
LIMIT = 1.10
SIDE = 1024


def write_photo(folder: Path) -> Path:
    """A 1024x1024 photographic PNG (the astronaut, scaled), as an import stores an original."""
    from PIL import Image
    from skimage import data as skdata

    path = folder / "original.png"
    Image.fromarray(skdata.astronaut()).resize((SIDE, SIDE)).save(path, compress_level=6)
    return path


def measure(path: Path, rounds: int) -> dict[str, Any]:
    """The project's per-image path against the bare one, with the code on ``sys.path``."""
    import rembg
    from PIL import Image

    from vidpipe_dagster.domain import clean_sheets, media
    from vidpipe_dagster.settings import Settings

    settings = Settings.from_env()
    remover, note = clean_sheets.choose_background_remover(
        settings.rembg_model, settings.rembg_model_path, settings.models_dir
    )
    if not isinstance(remover, clean_sheets.RembgRemover):
        raise SystemExit(f"tier 2: no rembg weights ({note}); run `make models`")
    session = clean_sheets._rembg_session(remover.model_name, remover.model_file)
    level = getattr(clean_sheets, "CLEAN_SHEET_PNG_LEVEL", None)  # None: Pillow's default
    digest = media.sha256_bytes(path.read_bytes())  # what the import recorded

    def project() -> bytes:
        if hasattr(media, "read_image"):
            data = media.read_image(path, label="original", known_sha256=digest).data
        else:
            data = media.read_image_bytes(path, label="original")
        return clean_sheets.make_tier2_clean_sheet(data, remover, label="original").png_bytes

    def bare() -> bytes:
        image = Image.open(io.BytesIO(path.read_bytes())).convert("RGB")
        cutout = rembg.remove(image, session=session, putalpha=True)
        background = Image.new("RGBA", cutout.size, (128, 128, 128, 255))
        sheet = Image.alpha_composite(background, cutout.convert("RGBA")).convert("RGB")
        out = io.BytesIO()
        if level is None:
            sheet.save(out, format="PNG")
        else:
            sheet.save(out, format="PNG", compress_level=level)
        return out.getvalue()

    project(), bare()  # warm the session and the caches of both paths
    ours, floor = timed(rounds, project, bare)
    decoded = media.decode_image(project())
    levels = {}
    for compress in (1, 3, 6, 9):
        saves = []
        for _ in range(3):
            out = io.BytesIO()
            started = time.perf_counter()
            decoded.save(out, format="PNG", compress_level=compress)
            saves.append(time.perf_counter() - started)
        levels[compress] = (min(saves), len(out.getvalue()))
    return {
        "model": remover.model,
        "level": level,
        "ours": min(ours),
        "bare": min(floor),
        "ratio": paired_ratio(ours, floor),
        "size": len(project()),
        "levels": levels,
    }


def _before(revision: str, folder: Path, path: Path, rounds: int) -> dict[str, Any] | None:
    tree = export(revision, folder / "before")
    if tree is None:
        return None
    env = {
        **os.environ,
        # the same weights as this tree's (its default folder is relative to the checkout)
        "VIDPIPE_MODELS_DIR": os.environ.get("VIDPIPE_MODELS_DIR") or str(REPO / ".vidpipe-models"),
    }
    result = child(__file__, tree, env, "--measure", str(path), "--rounds", str(rounds))
    result["levels"] = {int(k): tuple(v) for k, v in result["levels"].items()}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--before", default=BEFORE, help="git revision ('' for none)")
    parser.add_argument("--measure", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure), args.rounds)))
        return 0
    with tempfile.TemporaryDirectory(prefix="vidpipe-bench-tier2-") as tmp:
        path = write_photo(Path(tmp))
        results = {}
        if args.before:
            old = _before(args.before, Path(tmp), path, args.rounds)
            if old is not None:
                results[f"before ({args.before})"] = old
        results["after"] = measure(path, args.rounds)
    after = results["after"]
    print(
        f"tier 2, {after['model']} on a {SIDE}x{SIDE} photo (best of {args.rounds}; ratio: "
        f"median over rounds of project / bare in the same round; limit {LIMIT:.2f}):"
    )
    for label, r in results.items():
        level = "Pillow's default (6)" if r["level"] is None else str(r["level"])
        ok = "ok" if r["ratio"] <= LIMIT else "OVER"
        print(
            f"  {label:18} project {r['ours'] * 1000:6.0f} ms, bare read + decode + "
            f"rembg.remove + composite + save {r['bare'] * 1000:6.0f} ms, ratio "
            f"{r['ratio']:.3f} [{ok}]; PNG level {level}, {r['size'] / 1e6:.2f} MB"
        )
    if len(results) == 2:
        (_, old), (_, new) = results.items()
        print(f"  after / before: {new['ours'] / old['ours']:.3f} of the time per image")
    removal = after["bare"] - after["levels"][after["level"] or 6][0]
    print(f"  the PNG save alone, on this sheet (removal and the rest: ~{removal * 1000:.0f} ms):")
    for compress, (seconds, size) in sorted(after["levels"].items()):
        print(
            f"    level {compress}: {seconds * 1000:6.0f} ms ({seconds / removal:5.2f} x the "
            f"rest), {size / 1e6:.2f} MB"
        )
    return 0 if after["ratio"] <= LIMIT else 1


if __name__ == "__main__":
    raise SystemExit(main())
