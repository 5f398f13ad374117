"""Identity rules on plain values: each engine's metric and thresholds, how a score describes
itself, and which face a photo is about (real engines run in test_face_engines.py)."""

from __future__ import annotations

import numpy as np
import pytest

from vidpipe_dagster.domain.identity import (
    DLIB_RELAXED_DISTANCE,
    DetectedFace,
    EngineMismatch,
    FaceEmbedding,
    FaceScore,
    choose_face,
    compare,
    passes,
    thresholds_for,
)


@pytest.mark.parametrize(
    ("engine", "metric", "tries", "clip"),
    [
        ("insightface", "cosine", [0.6, 0.6, 0.5], 0.5),  # the plan's thresholds
        ("dlib", "euclidean", [0.6, 0.6, DLIB_RELAXED_DISTANCE], DLIB_RELAXED_DISTANCE),
    ],
)
def test_each_engine_has_its_own_metric_and_thresholds(
    engine: str, metric: str, tries: list[float], clip: float
) -> None:
    table = thresholds_for(engine)
    assert table.metric == metric
    assert [table.for_try(n) for n in (1, 2, 3)] == tries
    assert table.for_try(7) == tries[-1]
    assert table.clip == clip


def test_the_relaxed_dlib_value_relaxes_but_stays_below_measured_strangers() -> None:
    # tools/measure_face_thresholds.py: 1% of 1,144 different-person pairs lie below 0.622
    assert 0.6 < DLIB_RELAXED_DISTANCE < 0.622


@pytest.mark.parametrize(
    ("metric", "value", "threshold", "expected"),
    [
        ("cosine", 0.6, 0.6, True),
        ("cosine", 0.59, 0.6, False),
        ("euclidean", 0.6, 0.6, True),
        ("euclidean", 0.61, 0.6, False),
        ("euclidean", 0.21, 0.6, True),
        # a dlib-like cosine between different people is high: only its own engine's bar applies
        ("cosine", 0.85, 0.6, True),
        ("euclidean", 0.85, 0.6, False),
    ],
)
def test_pass_direction_follows_the_metric(
    metric: str, value: float, threshold: float, expected: bool
) -> None:
    assert passes(metric, value, threshold) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("score", "text"),
    [
        (
            FaceScore("dlib", "euclidean", 0.2149, 0.6, True),
            "validated by dlib (distance 0.21 ≤ 0.60)",
        ),
        (
            FaceScore("dlib", "euclidean", 0.71, 0.61, False),
            "rejected by dlib (distance 0.71 > 0.61)",
        ),
        (
            FaceScore("insightface", "cosine", 0.724, 0.6, True),
            "validated by insightface (similarity 0.72 ≥ 0.60)",
        ),
        (
            FaceScore("insightface", "cosine", 0.41, 0.5, False),
            "rejected by insightface (similarity 0.41 < 0.50)",
        ),
    ],
)
def test_a_score_describes_itself_with_its_engine(score: FaceScore, text: str) -> None:
    assert score.describe() == text


def test_compare_scores_on_the_engines_own_scale() -> None:
    a = FaceEmbedding(np.array([0.0, 0.0, 0.0], np.float32), "dlib", "euclidean")
    b = FaceEmbedding(np.array([0.3, 0.4, 0.0], np.float32), "dlib", "euclidean")
    score = compare(a, b, 0.6)
    assert (score.engine, score.metric, score.passed) == ("dlib", "euclidean", True)
    assert score.value == pytest.approx(0.5)
    x = FaceEmbedding(np.array([1.0, 0.0], np.float32), "insightface", "cosine")
    y = FaceEmbedding(np.array([0.55, np.sqrt(1 - 0.55**2)], np.float32), "insightface", "cosine")
    assert compare(x, y, 0.6).value == pytest.approx(0.55)
    assert not compare(x, y, 0.6).passed and compare(x, y, 0.5).passed


def test_scores_of_different_engines_are_never_compared() -> None:
    dlib = FaceEmbedding(np.ones(128, np.float32), "dlib", "euclidean")
    arcface = FaceEmbedding(np.ones(128, np.float32), "insightface", "cosine")
    with pytest.raises(
        EngineMismatch, match="from dlib cannot be compared with one from insightface"
    ):
        compare(dlib, arcface, 0.6)
    with pytest.raises(EngineMismatch, match="differ in size"):
        compare(dlib, FaceEmbedding(np.ones(64, np.float32), "dlib", "euclidean"), 0.6)


def face(box: tuple[float, float, float, float], confidence: float) -> DetectedFace:
    return DetectedFace(box, confidence, FaceEmbedding(np.zeros(2), "dlib", "euclidean"))


def test_the_confident_face_wins_over_a_face_like_patch_of_the_same_size() -> None:
    # dlib's HOG on skimage's astronaut (512 px): her face, and the mission patch on her suit
    real = face((175, 76, 266, 167), 1.16)
    patch = face((126, 335, 216, 425), 0.12)
    assert choose_face([patch, real], 512, 512) is real


def test_among_equally_confident_faces_the_central_one_wins() -> None:
    central = face((200, 200, 300, 300), 0.9)
    corner = face((0, 0, 120, 120), 0.9)  # larger, but in the corner
    assert choose_face([corner, central], 500, 500) is central


def test_position_does_not_beat_a_much_more_confident_face() -> None:
    confident_edge = face((0, 150, 100, 250), 2.0)
    weak_centre = face((200, 200, 300, 300), 0.1)
    assert choose_face([weak_centre, confident_edge], 500, 500) is confident_edge
    assert choose_face([], 500, 500) is None
