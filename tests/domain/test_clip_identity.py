"""Clip identity on real mp4s (``render.render_animatic``) made from real photos, scored by the
real dlib engine; and the identity matrix image."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from vidpipe_dagster.demo import _keyframe, _launch_pad
from vidpipe_dagster.domain.clip_identity import (
    CharacterIdentity,
    CharacterReference,
    reference_from_images,
    sample_frames,
    score_clip_identity,
)
from vidpipe_dagster.domain.faces import DlibFaceEngine, dlib_engine_status
from vidpipe_dagster.domain.identity import EngineMismatch, FaceEmbedding
from vidpipe_dagster.domain.identity_matrix import cell_colour, margin, render_identity_matrix
from vidpipe_dagster.domain.media import png_bytes
from vidpipe_dagster.domain.render import animatic_reference_strip_box, render_animatic

FRAMES = 6


@pytest.fixture(scope="module")
def dlib_engine() -> DlibFaceEngine:
    engine, problem = dlib_engine_status()
    assert engine is not None, problem
    return engine


def astronaut() -> Image.Image:
    return Image.fromarray(skdata.astronaut())


def astronaut_face() -> Image.Image:
    return astronaut().crop((150, 10, 310, 200))  # the demo's face crop


def camera_man() -> Image.Image:
    return Image.fromarray(skdata.camera()).convert("RGB")


def clip_of(
    person: Image.Image, references: list[tuple[str, bytes]] | None = None, seconds: float = 3
) -> bytes:
    """An animatic whose keyframes show ``person`` on the demo's launch pad (as the demo does)."""
    pad = _launch_pad()
    return render_animatic(
        start_frame=png_bytes(_keyframe(pad, person, 0.5, 0.95)),
        end_frame=png_bytes(_keyframe(pad, person, 0.45, 1.0)),
        references=references or [],
        prompt="close on her face",
        duration_seconds=seconds,
        aspect_ratio="16:9",
    )


@pytest.fixture(scope="module")
def her(dlib_engine: DlibFaceEngine) -> CharacterReference:
    reference = reference_from_images(
        dlib_engine,
        "CHAR_01",
        [("astronaut_face", png_bytes(astronaut_face())), ("astronaut", png_bytes(astronaut()))],
    )
    assert len(reference.embeddings) == 2, reference.note
    assert reference.note == "reference faces from astronaut_face, astronaut"
    return reference


def test_frames_are_sampled_evenly_across_the_clip() -> None:
    mp4 = clip_of(astronaut_face(), seconds=2)
    frames = sample_frames(mp4, 4)
    assert [f.index for f in frames] == [0, 1, 2, 3]
    times = [f.time for f in frames]
    assert times == sorted(times) and times[0] >= 0.2 and times[-1] <= 2.0
    assert frames[0].rgb.shape == (360, 640, 3)
    with pytest.raises(ValueError, match="the clip is not a readable mp4"):
        sample_frames(b"not a video", 4)


def test_a_clip_of_the_astronaut_scores_as_the_astronaut(
    dlib_engine: DlibFaceEngine, her: CharacterReference
) -> None:
    result = score_clip_identity(clip_of(astronaut_face()), [her], dlib_engine, frames=FRAMES)
    [character] = result.characters
    assert character.status == "passed" and character.passed is True
    assert (character.engine, character.metric, character.threshold) == ("dlib", "euclidean", 0.62)
    assert character.median is not None and character.median < 0.4
    assert character.best is not None and character.best <= character.median
    assert character.frames_found == character.frames_matched == character.frames_sampled == FRAMES
    crop = Image.open(io.BytesIO(character.best_frame_crop_png or b""))
    assert crop.format == "PNG" and 60 < crop.width < 400, "a crop around her face"
    assert character.describe().startswith(f"CHAR_01 recognised by dlib in {FRAMES}/{FRAMES}")
    assert result.all_passed


def test_a_clip_of_another_face_fails(dlib_engine: DlibFaceEngine, her: CharacterReference) -> None:
    result = score_clip_identity(clip_of(camera_man()), [her], dlib_engine, frames=FRAMES)
    [character] = result.characters
    assert character.status == "failed" and character.passed is False
    assert character.frames_matched > 0, "his face was found and compared"
    assert character.frames_found == 0
    assert character.median is not None and character.median > 0.62
    assert "NOT recognised by dlib" in character.describe()
    assert result.failed() == ["CHAR_01"] and not result.all_passed


def test_the_animatics_reference_strip_is_not_counted_as_the_character(
    dlib_engine: DlibFaceEngine, her: CharacterReference
) -> None:
    """An animatic burns its references in: her face crop in the strip is not her in the clip."""
    strip = [("CHAR_01", png_bytes(astronaut_face()))]
    mp4 = clip_of(camera_man(), references=strip)
    fooled = score_clip_identity(mp4, [her], dlib_engine, frames=FRAMES)
    assert fooled.characters[0].status == "passed", "without the box, the strip is 'her'"
    box = animatic_reference_strip_box("16:9", 1)
    assert box is not None
    result = score_clip_identity(mp4, [her], dlib_engine, frames=FRAMES, ignore_regions=[box])
    assert result.characters[0].status == "failed"


def test_a_clip_without_faces_says_so_instead_of_passing(
    dlib_engine: DlibFaceEngine, her: CharacterReference
) -> None:
    mp4 = render_animatic(
        start_frame=png_bytes(Image.fromarray(skdata.coffee())),
        end_frame=png_bytes(Image.fromarray(skdata.chelsea())),
        references=[],
        prompt="a cat and a coffee",
        duration_seconds=1,
        aspect_ratio="16:9",
    )
    [character] = score_clip_identity(mp4, [her], dlib_engine, frames=3).characters
    assert character.status == "not_scored" and character.passed is None
    assert character.reason == "no face found in 3 sampled frames"
    assert character.describe() == "CHAR_01 not scored: no face found in 3 sampled frames"


def test_without_an_engine_or_a_reference_face_nothing_passes(
    dlib_engine: DlibFaceEngine,
) -> None:
    mp4 = clip_of(astronaut_face(), seconds=1)
    no_engine = score_clip_identity(
        mp4, [CharacterReference("CHAR_01", ())], None, engine_problem="face engine 'none'"
    )
    [character] = no_engine.characters
    assert character.status == "not_scored"
    assert character.reason == "no face engine (face engine 'none')"
    robot = reference_from_images(
        dlib_engine, "CHAR_02", [("robot", png_bytes(Image.new("RGB", (64, 64))))]
    )
    [character] = score_clip_identity(mp4, [robot], dlib_engine, frames=2).characters
    assert character.status == "not_scored"
    assert character.reason == "no reference face (no face found in robot)"


def test_references_of_another_engine_are_refused(dlib_engine: DlibFaceEngine) -> None:
    foreign = CharacterReference(
        "CHAR_01", (FaceEmbedding(np.ones(512, np.float32), "insightface", "cosine"),)
    )
    with pytest.raises(EngineMismatch, match="cannot be scored by dlib"):
        score_clip_identity(clip_of(astronaut_face(), seconds=1), [foreign], dlib_engine)


def test_two_characters_never_claim_the_same_face(dlib_engine: DlibFaceEngine) -> None:
    him = reference_from_images(dlib_engine, "CHAR_02", [("camera", png_bytes(camera_man()))])
    her = reference_from_images(dlib_engine, "CHAR_01", [("face", png_bytes(astronaut_face()))])
    both = Image.new("RGB", (1024, 512))
    both.paste(astronaut(), (0, 0))
    both.paste(camera_man(), (512, 0))
    frame = png_bytes(both)
    mp4 = render_animatic(
        start_frame=frame,
        end_frame=frame,
        references=[],
        prompt="two-shot",
        duration_seconds=1,
        aspect_ratio="16:9",
        height=540,
    )
    result = score_clip_identity(mp4, [her, him], dlib_engine, frames=2)
    by_tag = {c.tag: c for c in result.characters}
    assert by_tag["CHAR_01"].status == "passed"
    assert by_tag["CHAR_02"].status == "passed"


# --- the identity matrix ------------------------------------------------------------------------


def cell(status: str, median: float | None, engine: str | None = "dlib") -> CharacterIdentity:
    metric = {"dlib": "euclidean", "insightface": "cosine", None: None}[engine]
    threshold = {"dlib": 0.62, "insightface": 0.5, None: None}[engine]
    return CharacterIdentity(
        tag="CHAR_01",
        status=status,  # type: ignore[arg-type]
        reason="",
        engine=engine,
        metric=metric,  # type: ignore[arg-type]
        threshold=threshold,
        best=median,
        median=median,
        frames_found=5 if status == "passed" else 0,
        frames_matched=6 if median is not None else 0,
        frames_sampled=8,
    )


def test_cells_are_coloured_against_their_own_engines_bar() -> None:
    close, borderline, far = cell("passed", 0.2), cell("passed", 0.6), cell("failed", 0.9)
    assert margin(close) == pytest.approx((0.62 - 0.2) / 0.62)
    assert margin(far) is not None and margin(far) < 0  # type: ignore[operator]
    green, pale, red = cell_colour(close), cell_colour(borderline), cell_colour(far)
    assert green[1] > green[0] and red[0] > red[1], "green passes, red fails"
    assert sum(pale) > sum(green), "just past the bar is paler than far past it"
    assert cell_colour(cell("not_scored", None, None)) == (200, 200, 200)
    assert cell_colour(None) == (246, 246, 246)
    # the same number means opposite things on the two scales
    assert (
        cell_colour(cell("passed", 0.7, "insightface"))[1]
        > cell_colour(cell("passed", 0.7, "insightface"))[0]
    )


def test_the_matrix_is_a_png_with_one_coloured_cell_per_placement() -> None:
    scenes, tags = ["scene 0", "scene 1", "scene 2"], ["CHAR_01", "CHAR_02"]
    cells = {
        ("scene 0", "CHAR_01"): cell("passed", 0.25),
        ("scene 1", "CHAR_01"): cell("failed", 0.85),
        ("scene 1", "CHAR_02"): cell("not_scored", None, None),
    }
    png = render_identity_matrix(scenes, tags, cells)
    image = Image.open(io.BytesIO(png)).convert("RGB")

    # cell centres: PAD + LABEL_W + col * CELL_W + 4, PAD + 26 + HEADER_H + row * CELL_H + 4
    def at(row: int, col: int) -> tuple[int, int, int]:
        return image.getpixel((12 + 96 + col * 112 + 6, 12 + 26 + 34 + row * 54 + 6))  # type: ignore[return-value]

    assert at(0, 0) == cell_colour(cells[("scene 0", "CHAR_01")])
    assert at(1, 0) == cell_colour(cells[("scene 1", "CHAR_01")])
    assert at(1, 1) == (200, 200, 200)
    assert at(2, 0) == (246, 246, 246), "not placed"
    assert image.height > 12 + 26 + 34 + 3 * 54, "a legend below the cells"
