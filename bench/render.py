"""Benchmark: how fast the local animatic preview renders, as a ratio of the clip's own length.

A backfill of previews renders one clip per scene in the run process; below 1.0 the preview is
faster than real time. Run: ``.venv/bin/python bench/render.py [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import io
import time

from PIL import Image

from vidpipe_dagster.domain.render import probe_mp4, render_animatic


def _png(colour: tuple[int, int, int], size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    start, end = _png((10, 120, 200), (1280, 720)), _png((200, 120, 10), (1280, 720))
    references = [
        ("CHAR_01", _png((0, 200, 0), (512, 512))),
        ("PROP_01", _png((0, 0, 200), (512, 512))),
    ]
    for duration, height in ((8, 360), (8, 720)):
        best = float("inf")
        for _ in range(args.rounds):
            started = time.perf_counter()
            data = render_animatic(
                start_frame=start,
                end_frame=end,
                references=references,
                prompt="benchmark",
                duration_seconds=duration,
                aspect_ratio="16:9",
                height=height,
            )
            best = min(best, time.perf_counter() - started)
        info = probe_mp4(data)
        print(
            f"animatic {info.width}x{info.height}, {info.duration_seconds:.0f} s at "
            f"{info.fps:.0f} fps: {best:.2f} s to render = {best / duration:.3f} x real time"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
