"""Measure dlib's distances on real photos, and derive its relaxed Tier 3 threshold.

    .venv/bin/python tools/measure_face_thresholds.py

People: scikit-image's astronaut and camera man (public domain), and the photos insightface's
package ships (Tom Hanks, and the six faces of its group photo t1.jpg), all offline. Each photo
is edited (resize, crop, JPEG, flip, grayscale, the Tier 2 gray composite, blur, posterize,
brightness, contrast, rotation, and four stylisations standing in for a redraw) and compared by
the project's own dlib engine with the original of the same person and of every other person.

The relaxed value is the largest distance (two decimals, rounded down) that still rejects 99%
of the different-person pairs with one side edited, and never below dlib's own 0.6. The script
prints the tables, the value, and exits 1 if ``domain.identity.DLIB_RELAXED_DISTANCE`` differs.
"""

from __future__ import annotations

import importlib.util
import io
import itertools
import math
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps
from skimage import data

from vidpipe_dagster.domain.faces import dlib_engine_status
from vidpipe_dagster.domain.identity import DLIB_RELAXED_DISTANCE, DLIB_STRICT_DISTANCE

FALSE_ACCEPT_BUDGET = 0.01  # of the different-person pairs


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _gray_composite(image: Image.Image) -> Image.Image:
    w, h = image.size
    out = Image.new("RGB", image.size, (128, 128, 128))
    mask = Image.new("L", image.size, 0)
    ImageDraw.Draw(mask).ellipse((w * 0.1, 0, w * 0.8, h * 0.95), fill=255)
    out.paste(image, (0, 0), mask)
    return out


def _cv(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Image.Image], Image.Image]:
    return lambda image: Image.fromarray(fn(np.ascontiguousarray(np.asarray(image))))


EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "resize 1/2": lambda i: i.resize((i.width // 2, i.height // 2)),
    "resize 2x": lambda i: i.resize((i.width * 2, i.height * 2)),
    "crop": lambda i: i.crop((i.width // 10, 0, i.width * 9 // 10, i.height * 3 // 4)),
    "jpeg q30": lambda i: _jpeg(i, 30),
    "jpeg q10": lambda i: _jpeg(i, 10),
    "flip": ImageOps.mirror,
    "grayscale": lambda i: i.convert("L").convert("RGB"),
    "gray composite": _gray_composite,
    "blur 2px": lambda i: i.filter(ImageFilter.GaussianBlur(2)),
    "posterize 3 bits": lambda i: ImageOps.posterize(i, 3),
    "brighter": lambda i: ImageEnhance.Brightness(i).enhance(1.3),
    "contrast": lambda i: ImageEnhance.Contrast(i).enhance(1.5),
    "rotate 10": lambda i: i.rotate(10, resample=Image.Resampling.BICUBIC),
    "stylization": _cv(lambda a: cv2.stylization(a, sigma_s=60, sigma_r=0.45)),
    "edge preserving": _cv(lambda a: cv2.edgePreservingFilter(a, flags=1, sigma_s=60, sigma_r=0.4)),
    "cartoon": _cv(lambda a: cv2.bilateralFilter(cv2.bilateralFilter(a, 9, 75, 75), 9, 75, 75)),
    "pencil colour": _cv(
        lambda a: cv2.pencilSketch(a, sigma_s=60, sigma_r=0.07, shade_factor=0.05)[1]
    ),
}
STYLISED = {"stylization", "edge preserving", "cartoon", "pencil colour"}


def people() -> dict[str, Image.Image]:
    found = {
        "astronaut": Image.fromarray(data.astronaut()),
        "camera": Image.fromarray(data.camera()).convert("RGB"),
    }
    spec = importlib.util.find_spec("insightface")
    if spec is None or not spec.submodule_search_locations:
        return found
    images = Path(next(iter(spec.submodule_search_locations))) / "data" / "images"
    found["tom_hanks"] = (
        Image.open(images / "Tom_Hanks_54745.png").convert("RGB").resize((224, 224))
    )
    group = Image.open(images / "t1.jpg").convert("RGB")
    engine, _ = dlib_engine_status()
    assert engine is not None
    for index, face in enumerate(sorted(engine.detect(np.asarray(group)), key=lambda f: f.box)):
        x1, y1, x2, y2 = face.box
        w, h = x2 - x1, y2 - y1
        found[f"group_{index}"] = group.crop(
            (max(0, x1 - w), max(0, y1 - h), min(group.width, x2 + w), min(group.height, y2 + h))
        )
    return found


def main() -> int:
    engine, problem = dlib_engine_status()
    if engine is None:
        print(f"error: {problem}", file=sys.stderr)
        return 1

    def embed(image: Image.Image) -> np.ndarray | None:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        found = engine.embed_face(buffer.getvalue())
        return None if found is None else found.vector

    photos = people()
    originals = {name: embed(image) for name, image in photos.items()}
    names = [n for n, e in originals.items() if e is not None]
    same: dict[str, list[float]] = {edit: [] for edit in EDITS}
    strangers: list[float] = []
    for name in names:
        for edit, fn in EDITS.items():
            edited = embed(fn(photos[name]))
            if edited is None:
                continue
            same[edit].append(float(np.linalg.norm(edited - originals[name])))
            for other in names:
                if other != name:
                    strangers.append(float(np.linalg.norm(edited - originals[other])))
    pairs = [
        float(np.linalg.norm(originals[a] - originals[b]))
        for a, b in itertools.combinations(names, 2)
    ]

    print(f"dlib euclidean distances, {len(names)} people: {', '.join(names)}\n")
    print(f"{'same person, edit':<22} {'n':>3} {'min':>6} {'max':>6}")
    for edit, values in same.items():
        if values:
            kind = " (stylised)" if edit in STYLISED else ""
            print(f"{edit + kind:<22} {len(values):>3} {min(values):6.2f} {max(values):6.2f}")
    mild = [v for e, vs in same.items() if e not in STYLISED for v in vs]
    styled = [v for e, vs in same.items() if e in STYLISED for v in vs]
    strangers.sort()
    cut = strangers[max(0, math.ceil(FALSE_ACCEPT_BUDGET * len(strangers)) - 1)]
    print(f"\nmild edits:             {min(mild):.2f}-{max(mild):.2f} ({len(mild)} pairs)")
    print(f"stylised redraws:       {min(styled):.2f}-{max(styled):.2f} ({len(styled)} pairs)")
    print(f"different people:       {min(pairs):.2f}-{max(pairs):.2f} ({len(pairs)} pairs)")
    print(
        f"different, one edited:  {strangers[0]:.3f}-{strangers[-1]:.2f} ({len(strangers)} pairs); "
        f"{FALSE_ACCEPT_BUDGET:.0%} lie below {cut:.3f}"
    )
    relaxed = max(DLIB_STRICT_DISTANCE, math.floor(cut * 100) / 100)
    accepted_styled = sum(v <= relaxed for v in styled)
    accepted_strangers = sum(v <= relaxed for v in strangers)
    print(
        f"\nrelaxed try-3 distance: {relaxed:.2f} (accepts {accepted_styled}/{len(styled)} "
        f"stylised redraws and {accepted_strangers}/{len(strangers)} different-person pairs; "
        f"0.60 accepts {sum(v <= 0.6 for v in styled)} and {sum(v <= 0.6 for v in strangers)})"
    )
    if not math.isclose(relaxed, DLIB_RELAXED_DISTANCE):
        print(
            f"error: domain.identity.DLIB_RELAXED_DISTANCE is {DLIB_RELAXED_DISTANCE}, "
            f"measured {relaxed:.2f}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
