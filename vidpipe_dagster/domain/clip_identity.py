"""Clip identity: does a generated clip show the characters placed in its scene?

Frames are sampled evenly across the mp4 (PyAV), faces are detected in each, and every placed
character is scored against its reference embeddings (the face crop and the full-body sheet,
computed by the same engine). In each frame a face goes to at most one character (closest pairs
first), so two characters cannot both claim one face.

Per character: the best and median score over the frames where a face was matched to it, the
frames where that face met the engine's clip threshold, and a crop of the best-matching face.
A character **passes when its median matched score meets the threshold**: one lucky frame does
not make a clip recognisable, and the median is what drifts. A character that cannot be scored
(no face engine, no reference face, no face in any sampled frame) is ``not_scored`` and says why;
it never passes. Scoring is local and free; a low score never regenerates anything.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import numpy as np
from PIL import Image

from vidpipe_dagster.domain.identity import (
    Box,
    EngineMismatch,
    FaceEmbedding,
    FaceEngine,
    FaceScore,
    Metric,
    best_score,
    better,
    passes,
    raw_score,
    thresholds_for,
)
from vidpipe_dagster.domain.media import png_bytes
from vidpipe_dagster.domain.render import probe_mp4

DEFAULT_SAMPLE_FRAMES = 8
CROP_PADDING = 0.25  # share of the face box added on every side of the saved crop

IdentityStatus = Literal["passed", "failed", "not_scored"]


@dataclass(frozen=True)
class CharacterReference:
    """A placed character and the embeddings to recognise it by (empty: none could be made)."""

    tag: str
    embeddings: tuple[FaceEmbedding, ...]
    note: str = ""  # where the embeddings came from, or why there are none


@dataclass(frozen=True)
class SampledFrame:
    index: int
    time: float  # seconds from the clip's first frame
    rgb: np.ndarray


@dataclass(frozen=True)
class CharacterIdentity:
    """One character's identity in one clip, on one engine's scale."""

    tag: str
    status: IdentityStatus
    reason: str
    engine: str | None
    metric: Metric | None
    threshold: float | None
    best: float | None
    median: float | None
    frames_found: int  # sampled frames where its face met the threshold
    frames_matched: int  # sampled frames where a face was matched to it at all
    frames_sampled: int
    best_frame_time: float | None = None
    best_frame_crop_png: bytes | None = None

    @property
    def passed(self) -> bool | None:
        """True / False when scored; None when it could not be scored (never a pass)."""
        return None if self.status == "not_scored" else self.status == "passed"

    def median_score(self) -> FaceScore | None:
        if self.median is None or self.engine is None or self.metric is None:
            return None
        assert self.threshold is not None
        return FaceScore(
            self.engine,
            self.metric,
            self.median,
            self.threshold,
            passes(self.metric, self.median, self.threshold),
        )

    def describe(self) -> str:
        """E.g. "CHAR_01 recognised by dlib in 6/8 frames (median distance 0.31 ≤ 0.62, best
        0.22)", or why it was not scored."""
        score = self.median_score()
        if score is None:
            return f"{self.tag} not scored: {self.reason}"
        verdict = "recognised" if self.status == "passed" else "NOT recognised"
        return (
            f"{self.tag} {verdict} by {self.engine} in {self.frames_found}/{self.frames_sampled} "
            f"frames (median {score.comparison()}, best {self.best:.2f})"
        )


@dataclass(frozen=True)
class ClipIdentity:
    engine: str | None
    metric: Metric | None
    threshold: float | None
    frames_sampled: int
    characters: tuple[CharacterIdentity, ...]

    @property
    def all_passed(self) -> bool:
        return all(c.status == "passed" for c in self.characters)

    def unscored(self) -> list[str]:
        return [c.tag for c in self.characters if c.status == "not_scored"]

    def failed(self) -> list[str]:
        return [c.tag for c in self.characters if c.status == "failed"]


def sample_frames(
    mp4: bytes | Path | str, count: int = DEFAULT_SAMPLE_FRAMES
) -> list[SampledFrame]:
    """``count`` frames spread evenly across the clip (at (i + 0.5) / count of its duration).

    ValueError for anything that is not a decodable mp4, like ``render.probe_mp4``.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    try:
        info = probe_mp4(mp4)
    except ValueError as exc:  # some of PyAV's errors are ValueErrors too: one message for all
        raise ValueError(f"the clip is not a readable mp4: {exc}") from exc
    targets = [(i + 0.5) * info.duration_seconds / count for i in range(count)]
    picked: list[SampledFrame] = []
    last: tuple[float, av.VideoFrame] | None = None
    try:
        with av.open(io.BytesIO(mp4) if isinstance(mp4, bytes) else str(mp4)) as container:
            first_time: float | None = None
            for frame in container.decode(container.streams.video[0]):
                time = frame.time or 0.0
                first_time = time if first_time is None else first_time
                elapsed = time - first_time
                last = (elapsed, frame)
                while len(picked) < count and elapsed >= targets[len(picked)] - 1e-6:
                    rgb = frame.to_ndarray(format="rgb24")
                    picked.append(SampledFrame(len(picked), elapsed, rgb))
                if len(picked) == count:
                    break
    except (av.FFmpegError, OSError) as exc:
        raise ValueError(f"cannot decode the clip's frames: {exc}") from exc
    if last is None:
        raise ValueError("the clip has no decodable video frames")
    while len(picked) < count:  # a clip shorter than its header says: repeat its last frame
        elapsed, frame = last
        picked.append(SampledFrame(len(picked), elapsed, frame.to_ndarray(format="rgb24")))
    return picked


def reference_from_images(
    engine: FaceEngine, tag: str, images: Sequence[tuple[str, bytes]]
) -> CharacterReference:
    """Embeddings of the faces in a character's reference images (``(label, bytes)``, the face
    crop first); the note names the images used and those without a face."""
    embeddings: list[FaceEmbedding] = []
    used: list[str] = []
    faceless: list[str] = []
    for label, data in images:
        embedding = engine.embed_face(data)
        if embedding is None:
            faceless.append(label)
        else:
            embeddings.append(embedding)
            used.append(label)
    parts = []
    if used:
        parts.append(f"reference faces from {', '.join(used)}")
    if faceless:
        parts.append(f"no face found in {', '.join(faceless)}")
    if not images:
        parts.append("no reference image")
    return CharacterReference(tag, tuple(embeddings), "; ".join(parts))


def _in_ignored(box: Box, width: int, height: int, ignore: Sequence[Box]) -> bool:
    cx = (box[0] + box[2]) / 2 / width
    cy = (box[1] + box[3]) / 2 / height
    return any(x1 <= cx <= x2 and y1 <= cy <= y2 for x1, y1, x2, y2 in ignore)


def _crop_png(rgb: np.ndarray, box: Box) -> bytes:
    height, width = rgb.shape[:2]
    x1, y1, x2, y2 = box
    pad_x, pad_y = (x2 - x1) * CROP_PADDING, (y2 - y1) * CROP_PADDING
    left, top = max(0, round(x1 - pad_x)), max(0, round(y1 - pad_y))
    right, bottom = min(width, round(x2 + pad_x)), min(height, round(y2 + pad_y))
    if right <= left or bottom <= top:
        left, top, right, bottom = 0, 0, width, height
    return png_bytes(Image.fromarray(np.ascontiguousarray(rgb[top:bottom, left:right])))


def _not_scored(
    tag: str, reason: str, sampled: int, engine: FaceEngine | None
) -> CharacterIdentity:
    threshold = thresholds_for(engine.name).clip if engine is not None else None
    return CharacterIdentity(
        tag=tag,
        status="not_scored",
        reason=reason,
        engine=engine.name if engine is not None else None,
        metric=engine.metric if engine is not None else None,
        threshold=threshold,
        best=None,
        median=None,
        frames_found=0,
        frames_matched=0,
        frames_sampled=sampled,
    )


def score_clip_identity(
    mp4: bytes | Path | str,
    characters: Sequence[CharacterReference],
    engine: FaceEngine | None,
    *,
    engine_problem: str | None = None,
    frames: int = DEFAULT_SAMPLE_FRAMES,
    threshold: float | None = None,
    ignore_regions: Sequence[Box] = (),
) -> ClipIdentity:
    """Score each placed character in the clip; see the module docstring for the rules.

    ``threshold``: the engine's clip threshold unless given. ``ignore_regions``: boxes in 0-1
    frame coordinates where a face is not counted (e.g. an animatic's burned-in reference strip,
    which shows the references themselves).
    """
    if engine is None:
        why = f"no face engine ({engine_problem})" if engine_problem else "no face engine"
        return ClipIdentity(
            None,
            None,
            None,
            0,
            tuple(_not_scored(c.tag, why, 0, None) for c in characters),
        )
    bar = thresholds_for(engine.name).clip if threshold is None else threshold
    metric = engine.metric
    sampled = sample_frames(mp4, frames) if characters else []
    results: dict[str, CharacterIdentity] = {}
    scorable: list[CharacterReference] = []
    for character in characters:
        foreign = [e.engine for e in character.embeddings if e.engine != engine.name]
        if foreign:
            raise EngineMismatch(
                f"{character.tag}: reference embeddings from {sorted(set(foreign))} cannot be "
                f"scored by {engine.name}; compute them with the same engine"
            )
        if not character.embeddings:
            reason = f"no reference face ({character.note})" if character.note else "no reference"
            results[character.tag] = _not_scored(character.tag, reason, len(sampled), engine)
        else:
            scorable.append(character)

    matches: dict[str, list[tuple[float, SampledFrame, Box]]] = {c.tag: [] for c in scorable}
    for frame in sampled:
        if not scorable:
            break
        height, width = frame.rgb.shape[:2]
        faces = [
            f
            for f in engine.detect(frame.rgb)
            if not _in_ignored(f.box, width, height, ignore_regions)
        ]
        pairs = []
        for character in scorable:
            for index, face in enumerate(faces):
                values = [
                    raw_score(metric, ref.vector, face.embedding.vector)
                    for ref in character.embeddings
                ]
                pairs.append((best_score(metric, values), character.tag, index))
        pairs.sort(key=lambda p: -p[0] if metric == "cosine" else p[0])
        taken_tags: set[str] = set()
        taken_faces: set[int] = set()
        for value, tag, index in pairs:
            if tag in taken_tags or index in taken_faces:
                continue
            taken_tags.add(tag)
            taken_faces.add(index)
            matches[tag].append((value, frame, faces[index].box))

    for character in scorable:
        found = matches[character.tag]
        if not found:
            results[character.tag] = _not_scored(
                character.tag,
                f"no face found in {len(sampled)} sampled frames",
                len(sampled),
                engine,
            )
            continue
        values = [v for v, _, _ in found]
        best_value, best_frame, best_box = found[0]
        for value, frame, box in found[1:]:
            if better(metric, value, best_value):
                best_value, best_frame, best_box = value, frame, box
        median = float(np.median(values))
        ok = passes(metric, median, bar)
        results[character.tag] = CharacterIdentity(
            tag=character.tag,
            status="passed" if ok else "failed",
            reason=(
                "median matched face meets the threshold"
                if ok
                else "median matched face misses the threshold"
            ),
            engine=engine.name,
            metric=metric,
            threshold=bar,
            best=best_value,
            median=median,
            frames_found=sum(passes(metric, v, bar) for v in values),
            frames_matched=len(values),
            frames_sampled=len(sampled),
            best_frame_time=best_frame.time,
            best_frame_crop_png=_crop_png(best_frame.rgb, best_box),
        )
    return ClipIdentity(
        engine.name,
        metric,
        bar,
        len(sampled),
        tuple(results[c.tag] for c in characters),
    )
