"""Benchmark: identity scoring per clip second, and Tier 2 per image with u2netp, each against
the bare library calls on the same inputs in the same run (the ratio is the project's overhead).

- Identity: ``domain.clip_identity.score_clip_identity`` on an 8 s animatic of the astronaut
  (frame sampling, detection, descriptors, matching, the best crop) against bare dlib on the same
  sampled frames (``detector.run`` + 5-point landmarks + ``compute_face_descriptor``). Limit:
  the project's scoring costs at most 1.5x the bare calls plus the frame decoding, measured here.
- Tier 2: ``make_tier2_clean_sheet`` with the project's u2netp remover against bare
  ``rembg.remove`` on the same session, from the same PNG bytes, plus the same composite and
  PNG save. Limit 1.25x (the project adds a second decode, the flat-photo check and the
  subject-share check).

Run: ``.venv/bin/python bench/identity.py [--rounds 7]`` (after ``make models``).
"""

from __future__ import annotations

import argparse
import io

from _common import paired_ratio, timed
from PIL import Image
from skimage import data as skdata

from vidpipe_dagster.demo import _keyframe, _launch_pad
from vidpipe_dagster.domain.clean_sheets import (
    RembgRemover,
    _rembg_session,
    choose_background_remover,
    composite_on_gray,
    make_tier2_clean_sheet,
)
from vidpipe_dagster.domain.clip_identity import (
    reference_from_images,
    sample_frames,
    score_clip_identity,
)
from vidpipe_dagster.domain.faces import dlib_engine_status
from vidpipe_dagster.domain.media import png_bytes
from vidpipe_dagster.domain.render import render_animatic
from vidpipe_dagster.settings import Settings

FRAMES = 8
CLIP_SECONDS = 8.0
IDENTITY_LIMIT = 1.5
TIER2_LIMIT = 1.25


def bench_identity(rounds: int) -> bool:
    engine, problem = dlib_engine_status()
    if engine is None:
        print(f"identity: skipped, {problem}")
        return False
    photo = Image.fromarray(skdata.astronaut())
    face = photo.crop((150, 10, 310, 200))
    pad = _launch_pad()
    mp4 = render_animatic(
        start_frame=png_bytes(_keyframe(pad, face, 0.5, 0.95)),
        end_frame=png_bytes(_keyframe(pad, photo, 0.4, 1.0)),
        references=[],
        prompt="benchmark",
        duration_seconds=CLIP_SECONDS,
        aspect_ratio="16:9",
    )
    her = reference_from_images(engine, "CHAR_01", [("face", png_bytes(face))])
    frames = [f.rgb for f in sample_frames(mp4, FRAMES)]
    import dlib  # the bare library, as a caller without this project would use it

    detector = dlib.get_frontal_face_detector()
    landmarks = dlib.shape_predictor(str(engine.files["landmarks"]))
    recognizer = dlib.face_recognition_model_v1(str(engine.files["recognition"]))

    def bare() -> None:
        for rgb in frames:
            rects, _, _ = detector.run(rgb, 1, -0.2)
            for rect in rects:
                recognizer.compute_face_descriptor(rgb, landmarks(rgb, rect))

    decodes, bares, ours = timed(
        rounds,
        lambda: sample_frames(mp4, FRAMES),
        bare,
        lambda: score_clip_identity(mp4, [her], engine, frames=FRAMES),
    )
    ratio = paired_ratio(ours, [b + d for b, d in zip(bares, decodes, strict=True)])
    decode, bare_s, ours_s = min(decodes), min(bares), min(ours)
    result = score_clip_identity(mp4, [her], engine, frames=FRAMES).characters[0]
    print(
        f"identity, {CLIP_SECONDS:.0f} s clip, {FRAMES} frames ({result.describe()}):\n"
        f"  project {ours_s / CLIP_SECONDS:.3f} s per clip second; bare dlib "
        f"{bare_s / CLIP_SECONDS:.3f} + frame decoding {decode / CLIP_SECONDS:.3f} s per clip "
        f"second (best of {rounds}); median paired ratio {ratio:.2f} (limit {IDENTITY_LIMIT})"
    )
    return ratio <= IDENTITY_LIMIT


def bench_tier2(rounds: int) -> bool:
    settings = Settings.from_env()
    remover, note = choose_background_remover(
        settings.rembg_model, settings.rembg_model_path, settings.models_dir
    )
    if not isinstance(remover, RembgRemover):
        print(f"tier 2: skipped, no rembg weights ({note}); run `make models`")
        return False
    photo = Image.fromarray(skdata.astronaut())  # 512 x 512
    data = png_bytes(photo)
    session = _rembg_session(remover.model_name, remover.model_file)
    import rembg

    def bare() -> bytes:  # the same input bytes, decoded once
        image = Image.open(io.BytesIO(data)).convert("RGB")
        cutout = rembg.remove(image, session=session, putalpha=True)
        return png_bytes(composite_on_gray(cutout))

    bare()  # warm both paths once (the session is shared)
    make_tier2_clean_sheet(data, remover)
    bares, ours = timed(rounds, bare, lambda: make_tier2_clean_sheet(data, remover))
    ratio = paired_ratio(ours, bares)
    bare_s, ours_s = min(bares), min(ours)
    print(
        f"tier 2, {remover.model} on a {photo.width}x{photo.height} photo: project "
        f"{ours_s:.2f} s per image, bare rembg.remove + composite + save {bare_s:.2f} s "
        f"(best of {rounds}); median paired ratio {ratio:.2f} (limit {TIER2_LIMIT})"
    )
    return ratio <= TIER2_LIMIT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    ok = bench_identity(args.rounds)
    ok = bench_tier2(args.rounds) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
