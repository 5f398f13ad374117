"""The clip-identity stage on a real database and media root: rows, crops, reuse, the check and
the matrix. Clips are animatics rendered from real photos; faces are scored by real dlib."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata
from sqlalchemy import select

from tests.conftest import SpecWriter, stage_context
from vidpipe_dagster.db import queries
from vidpipe_dagster.db.models import Asset, ClipIdentityScore, Scene, VideoClip
from vidpipe_dagster.db.session import session_scope
from vidpipe_dagster.demo import _keyframe, _launch_pad
from vidpipe_dagster.domain.clip_identity import CharacterIdentity
from vidpipe_dagster.domain.faces import choose_face_engine
from vidpipe_dagster.domain.identity import DetectedFace, FaceEmbedding
from vidpipe_dagster.domain.media import png_bytes
from vidpipe_dagster.domain.render import render_animatic
from vidpipe_dagster.settings import Settings
from vidpipe_dagster.stages.clip_identity import (
    RememberedFaces,
    identity_check,
    identity_problems,
    placed_characters,
    project_identity_matrix,
    score_scene_identity,
    score_scene_identity_or_say_why,
    stored_identities,
    verdict,
)
from vidpipe_dagster.stages.context import StageError
from vidpipe_dagster.stages.project_import import import_project

SLUG = "crew"


def astronaut() -> Image.Image:
    return Image.fromarray(skdata.astronaut())


def spec() -> dict:
    def scene(index: int, placements: list[dict]) -> dict:
        return {
            "index": index,
            "prompt": f"scene {index}",
            "start_frame": "frames/start.png",
            "end_frame": "frames/end.png",
            "manifest": {"composition": {"shot_type": "close_up"}, "placements": placements},
        }

    return {
        "project": {"slug": SLUG, "name": "Crew"},
        "manifest": {
            "name": "crew",
            "assets": [
                {"id": "commander", "tag": "CHAR_01", "type": "CHARACTER", "image": "img/a.png"},
                {
                    "id": "commander_face",
                    "tag": "CHAR_01",
                    "type": "CHARACTER",
                    "image": "img/a_face.png",
                    "face_crop_of": "commander",
                },
                {"id": "pad", "tag": "ENV_01", "type": "ENVIRONMENT", "image": "img/pad.png"},
            ],
        },
        "scenes": [
            scene(0, [{"asset_tag": "CHAR_01", "role": "subject"}]),
            scene(1, [{"asset_tag": "ENV_01", "role": "background"}]),
            scene(2, [{"asset_tag": "CHAR_01", "role": "subject"}]),
        ],
    }


@pytest.fixture
def crew(settings: Settings, write_spec: SpecWriter) -> Settings:
    path = write_spec(spec(), folder="crew", images=False)
    for rel, image in {
        "img/a.png": astronaut(),
        "img/a_face.png": astronaut().crop((150, 10, 310, 200)),
        "img/pad.png": _launch_pad(),
        "frames/start.png": _launch_pad(),
        "frames/end.png": _launch_pad(),
    }.items():
        (path.parent / rel).parent.mkdir(parents=True, exist_ok=True)
        image.save(path.parent / rel)
    with session_scope(settings.database_url) as session:
        import_project(session, path, settings.media_root)
    return settings


def store_clip(settings: Settings, index: int, person: Image.Image, fingerprint: str) -> None:
    """A finished animatic clip for the scene, as the clip stage stores one."""
    pad = _launch_pad()
    mp4 = render_animatic(
        start_frame=png_bytes(_keyframe(pad, person, 0.5, 0.95)),
        end_frame=png_bytes(_keyframe(pad, person, 0.45, 1.0)),
        references=[("CHAR_01", png_bytes(astronaut().crop((150, 10, 310, 200))))],
        prompt="close on her face",
        duration_seconds=2,
        aspect_ratio="16:9",
    )
    rel = f"clips/{SLUG}/scene_{index}.mp4"
    (settings.media_root / rel).parent.mkdir(parents=True, exist_ok=True)
    (settings.media_root / rel).write_bytes(mp4)
    with session_scope(settings.database_url) as session:
        scene = session.scalars(select(Scene).where(Scene.scene_index == index)).one()
        clip = scene.clip or VideoClip(scene_id=scene.id)
        session.add(clip)
        clip.status, clip.file_url, clip.fingerprint = "done", rel, fingerprint
        clip.backend, clip.reference_tags, clip.duration_seconds = "animatic", ["CHAR_01"], 2.0


def rows(settings: Settings) -> list[ClipIdentityScore]:
    with session_scope(settings.database_url) as session:
        return list(session.scalars(select(ClipIdentityScore)))


def test_only_placed_characters_are_scored(crew: Settings) -> None:
    ctx = stage_context(crew)
    assert placed_characters(ctx, SLUG, 0) == ["CHAR_01"]
    assert placed_characters(ctx, SLUG, 1) == []
    store_clip(crew, 1, astronaut(), "fp-env")
    result = score_scene_identity(ctx, SLUG, 1)
    assert result.characters == () and result.note == "no CHARACTER is placed in this scene"
    assert identity_check(result).passed
    no_clip = score_scene_identity(ctx, SLUG, 2)
    assert no_clip.note == "the scene has no finished clip" and rows(crew) == []


@pytest.mark.slow
def test_a_clip_of_the_character_is_recorded_reused_and_shown(crew: Settings) -> None:
    ctx = stage_context(crew)
    store_clip(crew, 0, astronaut().crop((150, 10, 310, 200)), "fp-1")
    result = score_scene_identity(ctx, SLUG, 0, frames=4)
    [her] = result.characters
    assert her.status == "passed" and not result.cached
    assert result.engine_note.startswith("dlib")
    [row] = rows(crew)
    assert (row.character_tag, row.engine, row.metric, row.passed) == (
        "CHAR_01",
        "dlib",
        "euclidean",
        True,
    )
    assert row.clip_fingerprint == "fp-1" and row.frames_sampled == 4
    assert row.threshold == 0.62 and row.median_score is not None and row.median_score < 0.4
    assert row.best_frame_url == f"identity/{SLUG}/scene_0_CHAR_01.png"
    crop = Image.open(io.BytesIO((crew.media_root / row.best_frame_url).read_bytes()))
    assert crop.format == "PNG"
    with session_scope(crew.database_url) as session:
        face = session.scalars(select(Asset).where(Asset.asset_key == "commander_face")).one()
        assert result.references["CHAR_01"] == face.reference_image_url, "the face crop first"
    outcome = identity_check(result)
    assert outcome.passed and outcome.severity == "warn"
    assert outcome.description is not None
    assert outcome.description.startswith("CHAR_01 recognised by dlib in ")

    again = score_scene_identity(ctx, SLUG, 0, frames=4)
    assert again.cached and again.characters[0].median == pytest.approx(row.median_score)
    assert identity_check(again, blocking=True).severity == "error"

    png = project_identity_matrix(ctx, SLUG)
    assert png is not None and Image.open(io.BytesIO(png)).format == "PNG"


@pytest.mark.slow
def test_a_new_clip_of_another_face_fails_the_check(crew: Settings) -> None:
    ctx = stage_context(crew)
    store_clip(crew, 0, astronaut().crop((150, 10, 310, 200)), "fp-1")
    assert score_scene_identity(ctx, SLUG, 0, frames=4).characters[0].status == "passed"
    store_clip(crew, 0, Image.fromarray(skdata.camera()).convert("RGB"), "fp-2")
    result = score_scene_identity(ctx, SLUG, 0, frames=4)
    assert not result.cached, "a new fingerprint is scored again"
    [character] = result.characters
    assert character.status == "failed"
    outcome = identity_check(result, blocking=True)
    assert not outcome.passed and outcome.severity == "error"
    assert outcome.description is not None
    assert outcome.description.startswith("NOT recognised: ['CHAR_01']")
    [row] = rows(crew)
    assert row.clip_fingerprint == "fp-2" and row.passed is False


def test_without_a_face_engine_the_check_says_not_scored(crew: Settings) -> None:
    ctx = stage_context(crew.replace(face_engine="none"))
    store_clip(crew, 0, astronaut(), "fp-1")
    result = score_scene_identity(ctx, SLUG, 0, frames=2)
    [character] = result.characters
    assert character.status == "not_scored" and character.passed is None
    assert "face engine 'none' is configured" in character.reason
    outcome = identity_check(result)
    assert not outcome.passed and outcome.severity == "warn"
    assert outcome.description is not None and "not scored: ['CHAR_01']" in outcome.description
    [row] = rows(crew)
    assert (row.status, row.engine, row.passed) == ("not_scored", None, None)


def test_identity_rows_go_with_their_clip(crew: Settings) -> None:
    ctx = stage_context(crew.replace(face_engine="none"))
    store_clip(crew, 0, astronaut(), "fp-1")
    score_scene_identity(ctx, SLUG, 0, frames=1)
    assert len(rows(crew)) == 1
    with session_scope(crew.database_url) as session:
        session.delete(session.scalars(select(VideoClip)).one())
    assert rows(crew) == []


def test_a_missing_clip_file_is_named(crew: Settings) -> None:
    store_clip(crew, 0, astronaut(), "fp-1")
    (crew.media_root / f"clips/{SLUG}/scene_0.mp4").unlink()
    with pytest.raises(StageError, match=rf"clip file clips/{SLUG}/scene_0.mp4 is missing"):
        score_scene_identity(stage_context(crew), SLUG, 0)


def test_matrix_without_scores_is_none(crew: Settings) -> None:
    assert project_identity_matrix(stage_context(crew), SLUG) is None


def test_a_scoring_failure_is_not_scored_and_fails_the_check(crew: Settings) -> None:
    """The clip step goes on (the clip may have been paid for); the check says why, never passes."""
    store_clip(crew, 0, astronaut(), "fp-1")
    (crew.media_root / f"clips/{SLUG}/scene_0.mp4").write_bytes(b"not an mp4")
    result = score_scene_identity_or_say_why(stage_context(crew), SLUG, 0)
    assert result.problem is not None and "is not readable" in result.problem
    [character] = result.characters
    assert (character.tag, character.status) == ("CHAR_01", "not_scored")
    assert verdict(character).startswith("not scored: scene 0: clip ")
    outcome = identity_check(result, blocking=True)
    assert not outcome.passed and outcome.severity == "error"
    assert outcome.description is not None and outcome.description.startswith("not scored: ")


def test_stored_identities_never_show_a_score_of_another_clip(crew: Settings) -> None:
    ctx = stage_context(crew.replace(face_engine="none"))
    store_clip(crew, 0, astronaut(), "fp-1")
    store_clip(crew, 2, astronaut(), "fp-2")
    score_scene_identity(ctx, SLUG, 0, frames=1)
    store_clip(crew, 0, astronaut(), "fp-1b")  # a new clip, not scored yet
    with session_scope(crew.database_url) as session:
        project = queries.project_by_slug(session, SLUG)
        found = stored_identities(session, project, "crew")
    assert sorted(found) == [0, 2], "scene 1 places no character"
    [older], [never] = found[0], found[2]
    assert older.status == "not_scored" and older.reason.startswith("scored on an older clip")
    assert never.status == "not_scored" and never.reason.startswith("not scored yet")
    assert "crew/scene_clip" in never.reason
    assert identity_problems(found) == [
        f"scene 0: {older.describe()}",
        f"scene 2: {never.describe()}",
    ]
    png = project_identity_matrix(ctx, SLUG)
    assert png is not None, "unscored placed characters are shown gray, not left out"


def test_verdicts_read_like_the_rest_of_the_identity_ui() -> None:
    passed = CharacterIdentity(
        "CHAR_01", "passed", "", "dlib", "euclidean", 0.62, 0.18, 0.24, 6, 7, 8
    )
    failed = CharacterIdentity(
        "CHAR_01", "failed", "", "insightface", "cosine", 0.5, 0.44, 0.31, 0, 5, 8
    )
    unscored = CharacterIdentity(
        "CHAR_02", "not_scored", "no face found in 8 sampled frames", "dlib", "euclidean",
        0.62, None, None, 0, 0, 8,
    )  # fmt: skip
    assert verdict(passed) == "validated by dlib (distance 0.24 ≤ 0.62)"
    assert verdict(failed) == "rejected by insightface (similarity 0.31 < 0.50)"
    assert verdict(unscored) == "not scored: no face found in 8 sampled frames"


def test_reference_faces_are_embedded_once_per_process() -> None:
    """A character's references are the same images in every scene: embedded once."""
    engine = choose_face_engine("dlib").engine
    assert engine is not None, "dlib is a dependency (make models)"
    calls: list[int] = []

    class Counting:
        name, metric = engine.name, engine.metric

        def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
            return engine.detect(rgb)

        def embed_face(self, data: bytes) -> FaceEmbedding | None:
            calls.append(len(data))
            return engine.embed_face(data)

    face = png_bytes(astronaut().crop((151, 11, 309, 199)))  # bytes no other test embeds
    first = RememberedFaces(Counting()).embed_face(face)
    again = RememberedFaces(Counting()).embed_face(face)
    assert first is not None and again is first and len(calls) == 1
    other = RememberedFaces(Counting()).embed_face(png_bytes(_launch_pad()))
    assert other is None and len(calls) == 2, "no face is remembered as no face"
