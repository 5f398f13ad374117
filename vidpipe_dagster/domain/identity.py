"""Face identity, engine by engine: which face a photo is about, how two faces compare, and what
counts as "the same person" for each engine.

Two engines exist and their scores live on different scales, so a score always carries its engine
and metric and is only ever compared with a threshold of the same engine:

- ``insightface`` (production; an ArcFace pack such as ``buffalo_l``): cosine similarity of
  L2-normalised embeddings, higher is closer. Tier 3 thresholds are the plan's 0.6, 0.6, 0.5.
- ``dlib`` (installed by the set-up; ResNet descriptor of ``face-recognition-models``): euclidean
  distance of 128-d descriptors, lower is closer. Its authors call two faces the same person below
  0.6; Tier 3 uses 0.6 on tries 1-2 and ``DLIB_RELAXED_DISTANCE`` on try 3, measured by
  ``tools/measure_face_thresholds.py`` (README, "Face engines and thresholds").

dlib cosines between *different* people are 0.75-0.91, above the plan's cosine thresholds: this is
why a threshold belongs to its engine and ``compare`` refuses to mix engines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

import numpy as np

FaceEngineName = Literal["insightface", "dlib"]
FaceEngineChoice = Literal["auto", "insightface", "dlib", "none"]
FACE_ENGINE_CHOICES: tuple[str, ...] = get_args(FaceEngineChoice)
Metric = Literal["cosine", "euclidean"]

# Measured by tools/measure_face_thresholds.py (README, "Face engines and thresholds"): the
# largest distance that still rejects 99% of 1,144 different-person pairs of real photos with one
# side edited. It accepts 25 of 33 stylised redraws of the same person (0.60: 24) and 11 of the
# 1,144 stranger pairs (0.60: 2); stylised redraws reach 0.78, so relaxing further would trade
# identity for style.
DLIB_STRICT_DISTANCE = 0.6
DLIB_RELAXED_DISTANCE = 0.62


class EngineMismatch(ValueError):
    """Two embeddings (or a score and a threshold) come from different engines or metrics."""


@dataclass(frozen=True)
class EngineThresholds:
    """One engine's bar for "the same person": per Tier 3 try, and for generated clips."""

    engine: str
    metric: Metric
    tries: tuple[float, ...]  # Tier 3 tries 1, 2, 3 (the last value holds for later tries)
    clip: float  # a generated clip is a redraw: held to the relaxed bar of the last try

    def for_try(self, number: int) -> float:
        if number < 1:
            raise ValueError(f"tries are numbered from 1, got {number}")
        return self.tries[min(number, len(self.tries)) - 1]

    def passes(self, value: float, threshold: float) -> bool:
        return passes(self.metric, value, threshold)


THRESHOLDS: dict[str, EngineThresholds] = {
    "insightface": EngineThresholds("insightface", "cosine", (0.6, 0.6, 0.5), clip=0.5),
    "dlib": EngineThresholds(
        "dlib",
        "euclidean",
        (DLIB_STRICT_DISTANCE, DLIB_STRICT_DISTANCE, DLIB_RELAXED_DISTANCE),
        clip=DLIB_RELAXED_DISTANCE,
    ),
}


def thresholds_for(engine: str) -> EngineThresholds:
    try:
        return THRESHOLDS[engine]
    except KeyError:
        raise ValueError(f"no thresholds for face engine {engine!r}") from None


def passes(metric: Metric, value: float, threshold: float) -> bool:
    """Cosine similarity passes at or above its threshold, a distance at or below it."""
    return value >= threshold if metric == "cosine" else value <= threshold


def better(metric: Metric, a: float, b: float) -> bool:
    """Whether score ``a`` is a closer match than ``b`` on this metric."""
    return a > b if metric == "cosine" else a < b


def best_score(metric: Metric, values: Sequence[float]) -> float:
    return max(values) if metric == "cosine" else min(values)


@dataclass(frozen=True)
class FaceEmbedding:
    """An embedding and the engine that made it; only same-engine embeddings compare."""

    vector: np.ndarray
    engine: str
    metric: Metric


@dataclass(frozen=True)
class FaceScore:
    """How close a face is to a reference, on one engine's scale, against that engine's bar."""

    engine: str
    metric: Metric
    value: float
    threshold: float
    passed: bool

    @property
    def label(self) -> str:
        return "similarity" if self.metric == "cosine" else "distance"

    def comparison(self) -> str:
        """E.g. "distance 0.21 ≤ 0.60" (the sign says which way the bar was met or missed)."""
        if self.metric == "cosine":
            sign = "≥" if self.passed else "<"
        else:
            sign = "≤" if self.passed else ">"
        return f"{self.label} {self.value:.2f} {sign} {self.threshold:.2f}"

    def describe(self) -> str:
        """E.g. "validated by dlib (distance 0.21 ≤ 0.60)"."""
        verdict = "validated" if self.passed else "rejected"
        return f"{verdict} by {self.engine} ({self.comparison()})"


def raw_score(metric: Metric, a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity in [-1, 1] (0.0 if a vector is all zeros), or euclidean distance."""
    va = np.asarray(a, dtype=np.float64).ravel()
    vb = np.asarray(b, dtype=np.float64).ravel()
    if va.shape != vb.shape:
        raise EngineMismatch(f"embeddings differ in size: {va.size} vs {vb.size} values")
    if metric == "euclidean":
        return float(np.linalg.norm(va - vb))
    norms = float(np.linalg.norm(va) * np.linalg.norm(vb))
    if norms == 0.0:
        return 0.0
    return float(np.clip(np.dot(va, vb) / norms, -1.0, 1.0))


def compare(reference: FaceEmbedding, candidate: FaceEmbedding, threshold: float) -> FaceScore:
    """Score ``candidate`` against ``reference``; raises ``EngineMismatch`` across engines."""
    if (reference.engine, reference.metric) != (candidate.engine, candidate.metric):
        raise EngineMismatch(
            f"an embedding from {reference.engine} cannot be compared with one from "
            f"{candidate.engine}"
        )
    value = raw_score(reference.metric, reference.vector, candidate.vector)
    return FaceScore(
        engine=reference.engine,
        metric=reference.metric,
        value=value,
        threshold=threshold,
        passed=passes(reference.metric, value, threshold),
    )


Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels


@dataclass(frozen=True)
class DetectedFace:
    """One face a detector found: its box, the detector's confidence (engine's own scale) and
    its embedding."""

    box: Box
    confidence: float
    embedding: FaceEmbedding


def choose_face(faces: Sequence[DetectedFace], width: int, height: int) -> DetectedFace | None:
    """The face a photo is about: the most confident, unless another is nearly as confident and
    clearly more central; size only breaks ties.

    "Largest box wins" is unsafe: dlib's HOG finds the astronaut's mission patch as a second
    "face" nearly as large as her real one (but far less confident). Confidences are rescaled to
    0-1 within the photo, since each detector has its own scale.
    """
    if not faces:
        return None
    confidences = [f.confidence for f in faces]
    low, high = min(confidences), max(confidences)
    spread = high - low
    half_diagonal = max(1.0, float(np.hypot(width, height)) / 2)

    def key(face: DetectedFace) -> tuple[float, float]:
        x1, y1, x2, y2 = face.box
        confidence = (face.confidence - low) / spread if spread > 0 else 1.0
        offcentre = float(np.hypot((x1 + x2) / 2 - width / 2, (y1 + y2) / 2 - height / 2))
        area = max(0.0, x2 - x1) * max(0.0, y2 - y1)
        return confidence - 0.5 * offcentre / half_diagonal, area

    return max(faces, key=key)


class FaceEngine(Protocol):
    """A face detector + recogniser. ``detect`` takes an upright RGB uint8 array."""

    name: str
    metric: Metric

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]: ...

    def embed_face(self, image_bytes: bytes) -> FaceEmbedding | None:
        """The embedding of the face the image is about (``choose_face``), or None."""
        ...
