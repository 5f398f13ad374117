"""Video request shaping for Veo: conditioning mode, duration, resolution, takes, references,
remediation, billing labels and price.

Pure: takes plain values (bytes, strings) and the model catalog (``domain.catalog``: every model
rule and price), and returns an immutable request whose ``conditioning_reason`` says, in words,
every choice made. See docs/architecture.md for why hybrid (first frame plus references) is a
per-model capability rather than the default: Veo 3.1 rejects ``referenceImages`` together with
``image`` or ``lastFrame``, so we never send that combination to a model whose catalog entry does
not allow it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal, get_args

from vidpipe_dagster.domain.catalog import (
    ModelCatalog,
    ModelChoiceError,
    VideoModel,
    packaged_catalog,
)

ConditioningMode = Literal["frames", "references", "hybrid"]
ConditioningPolicy = Literal["auto", "frames", "references", "hybrid"]

# What a request got before resolution, takes and seeds existed (the API's defaults): such fields
# enter the fingerprint only when they differ, so clips made before stay reusable after an upgrade.
DEFAULT_RESOLUTION = "720p"
MAX_SEED = 2**32 - 1  # Veo's seed is an unsigned 32-bit integer
# Lines of each output resolution name (local previews scale their frames by these).
RESOLUTION_LINES: Mapping[str, int] = {"720p": 720, "1080p": 1080, "4k": 2160}

# Index = remediation level. Each level is stronger than the last; the scene prompt follows it.
REMEDIATION_PREFIXES: tuple[str, ...] = (
    "",
    "Family-friendly, non-violent depiction. ",
    "Safe for all audiences: a gentle, family-friendly, non-violent, non-graphic depiction with no "
    "weapons, injuries, blood, nudity or distressing content. ",
)
MAX_REMEDIATION_LEVEL = len(REMEDIATION_PREFIXES) - 1


@dataclass(frozen=True)
class ImageInput:
    """An image sent to the API, identified by its content hash."""

    data: bytes
    mime_type: str
    sha256: str
    label: str  # e.g. "start keyframe", "CHAR_01 (clean sheet tier2_rembg)"


@dataclass(frozen=True)
class VideoRequest:
    """Everything that determines one generated clip. Immutable; ``fingerprint`` identifies it."""

    model: str
    prompt: str  # final prompt sent, including any remediation prefix
    conditioning_mode: ConditioningMode
    conditioning_reason: str
    duration_seconds: int
    aspect_ratio: str
    first_frame: ImageInput | None
    last_frame: ImageInput | None
    reference_images: tuple[ImageInput, ...]
    reference_tags: tuple[str, ...]
    remediation_level: int = 0
    generate_audio: bool = True
    # The scene's keyframes when the API may not take them (references mode): never sent, not in
    # the fingerprint; local previews (the animatic) draw the storyboard's motion from them.
    storyboard_frames: tuple[ImageInput, ...] = ()
    resolution: str = DEFAULT_RESOLUTION
    takes: int = 1  # sampleCount: videos made by this one request, each billed
    seed: int | None = None  # a seed the user fixed: it changes the output, so it is identity
    # Set by the engine on the copy it sends, never identity: the seed chosen when the user fixed
    # none (recorded, so a person can reproduce a take), and the billing labels.
    sent_seed: int | None = None
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def fingerprint(self) -> str:
        """Hash of everything that changes the output; images by content hash, not by path."""
        payload: dict[str, object] = {
            "model": self.model,
            "prompt": self.prompt,
            "mode": self.conditioning_mode,
            "duration": self.duration_seconds,
            "aspect_ratio": self.aspect_ratio,
            "first_frame": self.first_frame.sha256 if self.first_frame else None,
            "last_frame": self.last_frame.sha256 if self.last_frame else None,
            "references": [ref.sha256 for ref in self.reference_images],
            "audio": self.generate_audio,
        }
        if self.resolution != DEFAULT_RESOLUTION:
            payload["resolution"] = self.resolution
        if self.takes != 1:
            payload["takes"] = self.takes
        if self.seed is not None:
            payload["seed"] = self.seed
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    @property
    def effective_seed(self) -> int | None:
        """The seed sent: the user's, else the one the engine chose for this submission."""
        return self.seed if self.seed is not None else self.sent_seed

    def for_submission(self, *, seed: int | None, labels: Mapping[str, str]) -> VideoRequest:
        """The copy that is sent: with the chosen seed (when the user fixed none) and labels.
        Its fingerprint is this request's."""
        problems = label_problems(labels)
        if problems:
            raise ValueError("invalid billing labels: " + "; ".join(problems))
        return dataclasses.replace(
            self,
            sent_seed=None if self.seed is not None else seed,
            labels=tuple(sorted(labels.items())),
        )


def image_input(data: bytes, mime_type: str, label: str) -> ImageInput:
    return ImageInput(
        data=data, mime_type=mime_type, sha256=hashlib.sha256(data).hexdigest(), label=label
    )


def video_model_for(
    model: str, catalog: ModelCatalog | None = None, *, today: date | None = None
) -> VideoModel:
    """The catalog entry a request may be shaped for (unknown and retired models are refused)."""
    return (catalog or packaged_catalog()).video_model(model, today=today)


def snap_duration(target: int, allowed: Sequence[int]) -> int:
    """The allowed duration nearest to ``target``; a tie goes to the longer one (a clip can be
    trimmed in the edit but not extended)."""
    if not allowed:
        raise ValueError("the model allows no durations")
    return min(allowed, key=lambda d: (abs(d - target), -d))


def build_video_request(
    *,
    model: str,
    prompt: str,
    target_duration: int,
    aspect_ratio: str,
    first_frame: ImageInput | None = None,
    last_frame: ImageInput | None = None,
    references: Sequence[tuple[str, ImageInput]] = (),
    policy: ConditioningPolicy = "auto",
    remediation_level: int = 0,
    generate_audio: bool = True,
    resolution: str | None = None,
    takes: int = 1,
    seed: int | None = None,
    catalog: ModelCatalog | None = None,
    today: date | None = None,
) -> VideoRequest:
    """Shape one scene's request: pick the conditioning mode the model accepts, cap references,
    fix the duration, and record every decision in ``conditioning_reason``.

    ``references`` are (manifest tag, image) in priority order. A scene without references (e.g. a
    project without a manifest) gets frames mode and its target duration, snapped to the model.
    ``resolution`` defaults to ``DEFAULT_RESOLUTION``; ``takes`` is the number of videos one
    request makes (each billed); ``seed`` fixes the output (else the engine picks and records one).
    Unknown, retired and not-yet-known models, and choices the catalog rules out, are refused
    with the catalog's reason (``ModelChoiceError``, a ``ValueError``).
    """
    caps = video_model_for(model, catalog, today=today)
    if policy not in get_args(ConditioningPolicy):
        raise ValueError(f"unknown conditioning policy {policy!r}")
    if not 0 <= remediation_level <= MAX_REMEDIATION_LEVEL:
        raise ValueError(f"remediation level must be 0..{MAX_REMEDIATION_LEVEL}")
    if target_duration <= 0:
        raise ValueError(f"target duration must be positive, got {target_duration}")
    if aspect_ratio not in caps.aspect_ratios:
        allowed = ", ".join(caps.aspect_ratios)
        raise ValueError(f"model {model} does not support aspect ratio {aspect_ratio} ({allowed})")
    resolution = resolution or DEFAULT_RESOLUTION
    problems = caps.choice_problems(resolution=resolution, takes=takes, today=today)
    if problems:
        raise ModelChoiceError("; ".join(problems))
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be 0..{MAX_SEED}, got {seed}")
    if not prompt.strip() and first_frame is None:
        raise ValueError("a prompt or a first frame is required")

    reasons: list[str] = []
    refs = _dedupe_references(references, reasons)
    if len(refs) > caps.max_reference_images and caps.supports_references:
        dropped = [tag for tag, _ in refs[caps.max_reference_images :]]
        refs = refs[: caps.max_reference_images]
        reasons.append(
            f"{len(dropped)} reference(s) beyond the limit of {caps.max_reference_images} "
            "dropped: " + ", ".join(dropped)
        )
    if last_frame is not None and first_frame is None:
        reasons.append("end keyframe dropped: Veo needs a first frame to use a last frame")
        last_frame = None

    mode = _choose_mode(model, caps, policy, bool(refs), first_frame is not None, reasons)
    if mode == "frames" and refs:
        reasons.append("references not sent: " + ", ".join(tag for tag, _ in refs))
        refs = []
    storyboard: tuple[ImageInput, ...] = ()
    if mode == "references" and first_frame is not None:
        reasons.append(
            "keyframes not sent: Veo rejects referenceImages together with image/lastFrame"
        )
        storyboard = tuple(frame for frame in (first_frame, last_frame) if frame is not None)
        first_frame = last_frame = None
    if last_frame is not None and not caps.last_frame:
        reasons.append(f"end keyframe dropped: {model} does not accept lastFrame")
        last_frame = None

    if mode == "frames":
        frames = "text only (no keyframes)"
        if first_frame is not None:
            frames = "first and last keyframes" if last_frame else "first keyframe"
        reasons.append(f"conditioning: {frames}")
    duration = _duration(caps, resolution, mode != "frames", target_duration, reasons)
    if resolution != DEFAULT_RESOLUTION:
        reasons.append(f"resolution {resolution}")
    if takes > 1:
        reasons.append(f"{takes} takes in one request (each billed)")

    if generate_audio and not caps.audio:
        reasons.append(f"no audio: {model} does not generate audio")
        generate_audio = False
    elif not generate_audio and caps.audio and not caps.audio_optional:
        reasons.append(f"audio on: {model} always generates audio")
        generate_audio = True

    return VideoRequest(
        model=model,
        prompt=REMEDIATION_PREFIXES[remediation_level] + prompt,
        conditioning_mode=mode,
        conditioning_reason="; ".join(reasons),
        duration_seconds=duration,
        aspect_ratio=aspect_ratio,
        first_frame=first_frame,
        last_frame=last_frame,
        reference_images=tuple(image for _, image in refs),
        reference_tags=tuple(tag for tag, _ in refs),
        remediation_level=remediation_level,
        generate_audio=generate_audio,
        storyboard_frames=storyboard,
        resolution=resolution,
        takes=takes,
        seed=seed,
    )


def _duration(
    caps: VideoModel,
    resolution: str,
    with_references: bool,
    target: int,
    reasons: list[str],
) -> int:
    """The duration the catalog allows for this request, nearest the target, with its reason."""
    allowed = caps.allowed_durations(resolution, with_references=with_references)
    if not allowed:
        raise ModelChoiceError(
            f"{caps.id} allows no duration at {resolution}"
            + (" with reference images" if with_references else "")
        )
    duration = snap_duration(target, allowed)
    rule = caps.duration_rule(resolution, with_references=with_references)
    if rule is not None and len(allowed) == 1:
        if duration != target:
            reasons.append(f"duration forced to {duration} s ({rule}; requested {target} s)")
        else:
            reasons.append(f"duration {duration} s (required with {rule})")
    elif duration != target:
        options = ", ".join(str(d) for d in allowed)
        reasons.append(
            f"duration {duration} s: requested {target} s is not allowed by {caps.id} ({options} s)"
        )
    return duration


def _dedupe_references(
    references: Sequence[tuple[str, ImageInput]], reasons: list[str]
) -> list[tuple[str, ImageInput]]:
    """Drop repeated images (same content) so that a duplicate never takes one of three slots."""
    seen: set[str] = set()
    kept: list[tuple[str, ImageInput]] = []
    for tag, image in references:
        if image.sha256 in seen:
            reasons.append(f"duplicate reference image for {tag} dropped")
            continue
        seen.add(image.sha256)
        kept.append((tag, image))
    return kept


def _choose_mode(
    model: str,
    caps: VideoModel,
    policy: ConditioningPolicy,
    has_refs: bool,
    has_first: bool,
    reasons: list[str],
) -> ConditioningMode:
    """The conditioning mode for this policy and model, with its reason appended."""
    if policy == "references" and not caps.supports_references:
        raise ValueError(f"policy 'references' but model {model} does not accept reference images")
    if policy == "hybrid" and not caps.frames_with_references:
        raise ValueError(
            f"policy 'hybrid' but model {model} does not accept keyframes together with "
            "reference images"
        )
    if policy == "frames":
        reasons.append("mode frames (policy)")
        return "frames"
    if not has_refs:
        reasons.append("mode frames: no reference images for this scene")
        return "frames"
    if not caps.supports_references:
        reasons.append(f"mode frames: {model} does not accept reference images")
        return "frames"
    if policy in ("auto", "hybrid") and caps.frames_with_references and has_first:
        reasons.append(f"mode hybrid ({policy}): {model} accepts keyframes with references")
        return "hybrid"
    if policy == "hybrid":
        reasons.append("mode references: policy hybrid but the scene has no first keyframe")
        return "references"
    reasons.append(f"mode references ({policy}): identity from reference images")
    return "references"


def remediate(request: VideoRequest, level: int) -> VideoRequest:
    """The same request with the safety prefix of ``level``; references and frames are kept (they
    carry identity, not the policy problem). The fingerprint changes with the prompt."""
    if not 0 <= level <= MAX_REMEDIATION_LEVEL:
        raise ValueError(f"remediation level must be 0..{MAX_REMEDIATION_LEVEL}, got {level}")
    return dataclasses.replace(
        request, prompt=REMEDIATION_PREFIXES[level] + base_prompt(request), remediation_level=level
    )


def base_prompt(request: VideoRequest) -> str:
    """The scene prompt without the remediation prefix of the request's level."""
    prefix = REMEDIATION_PREFIXES[request.remediation_level]
    return request.prompt.removeprefix(prefix)


def without_references(request: VideoRequest, why: str) -> VideoRequest:
    """A frames-mode copy that keeps the keyframes and duration; for when the API rejects a
    references combination that the capability table allowed."""
    return dataclasses.replace(
        request,
        conditioning_mode="frames",
        conditioning_reason=f"{request.conditioning_reason}; mode frames (fallback: {why})",
        reference_images=(),
        reference_tags=(),
    )


def without_audio(request: VideoRequest, why: str) -> VideoRequest:
    """A silent copy (for the audio filter's false positives, where the model may go silent)."""
    return dataclasses.replace(
        request,
        generate_audio=False,
        conditioning_reason=f"{request.conditioning_reason}; no audio ({why})",
    )


PriceTable = Mapping[str, float | tuple[float, float]]
"""A run's per-model override of the catalog's per-second price, whatever the resolution: a
number whatever the audio, or (with audio, without audio)."""


def estimate_cost_usd(
    model: str,
    duration_seconds: float,
    generate_audio: bool = True,
    price_table: PriceTable | None = None,
    *,
    resolution: str | None = None,
    takes: int = 1,
    catalog: ModelCatalog | None = None,
) -> float:
    """List price of one request: per-second price (catalog, by resolution and audio) x duration x
    takes. ``price_table`` entries override the catalog for their model. An unknown model is an
    error: spend we cannot price is spend we cannot report. Retired models keep their last price
    (old ledger rows are still counted)."""
    overrides = price_table or {}
    if model in overrides:
        price = overrides[model]
        if isinstance(price, tuple):
            price = price[0] if generate_audio else price[1]
        per_second = float(price)
    else:
        per_second = (catalog or packaged_catalog()).video_price_per_second(
            model, resolution or DEFAULT_RESOLUTION, generate_audio
        )
    return round(float(per_second) * duration_seconds * max(1, takes), 4)


def request_cost_usd(
    request: VideoRequest,
    price_table: PriceTable | None = None,
    catalog: ModelCatalog | None = None,
    *,
    takes: int | None = None,
) -> float:
    """What ``request`` costs at list price: every take (or ``takes`` delivered ones)."""
    return estimate_cost_usd(
        request.model,
        request.duration_seconds,
        request.generate_audio,
        price_table,
        resolution=request.resolution,
        takes=request.takes if takes is None else takes,
        catalog=catalog,
    )


# Google's label rules: keys and values lowercase letters, digits, "_" and "-", at most 63
# characters; keys start with a letter; at most 64 labels per request.
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
MAX_LABELS = 64


def label_value(text: str) -> str:
    """``text`` as a label value: lowercased, other characters as ``_``, cut to 63."""
    return re.sub(r"[^a-z0-9_-]", "_", text.lower())[:63]


def label_problems(labels: Mapping[str, str]) -> list[str]:
    """Where ``labels`` break Google's rules (empty: they are valid)."""
    problems = []
    if len(labels) > MAX_LABELS:
        problems.append(f"{len(labels)} labels, at most {MAX_LABELS}")
    for key, value in labels.items():
        if not _LABEL_KEY.match(key):
            problems.append(f"key {key!r}: lowercase letters, digits, _ or -, starting a-z, <= 63")
        if not isinstance(value, str) or not _LABEL_VALUE.match(value):
            problems.append(f"value of {key!r}: lowercase letters, digits, _ or -, <= 63")
    return problems


def billing_labels(
    *,
    project_slug: str | None,
    subject: str | None,
    ledger_row: str,
    run_id: str | None = None,
    subject_key: str = "vidpipe_scene",
) -> dict[str, str]:
    """The labels every paid request carries, so a cloud bill reconciles with the ledger line by
    line: the project, the scene (or asset), the ledger row and the run."""
    labels = {"vidpipe_ledger_row": label_value(ledger_row)}
    if project_slug:
        labels["vidpipe_project"] = label_value(project_slug)
    if subject:
        labels[subject_key] = label_value(subject)
    if run_id:
        labels["vidpipe_run"] = label_value(run_id)
    return labels


def mode_problems(
    model: str, mode: str | None, reference_count: int, catalog: ModelCatalog | None = None
) -> list[str]:
    """What ``model`` would refuse in a request with this mode and number of references (for
    checks that read a stored clip back): too many references, references it does not take,
    hybrid without the capability, or a model the catalog does not list."""
    table = catalog or packaged_catalog()
    caps = table.find_video_model(model)
    if caps is None:
        return [table.unknown_video_reason(model)]
    problems = []
    if reference_count and not caps.supports_references:
        problems.append(f"{model} takes no references")
    elif reference_count > caps.max_reference_images:
        problems.append(
            f"{reference_count} references, {model} takes at most {caps.max_reference_images}"
        )
    if mode == "hybrid" and not caps.frames_with_references:
        problems.append(f"{model} rejects hybrid requests")
    return problems


def expected_duration(
    model: str,
    target: int,
    *,
    with_references: bool,
    resolution: str | None = None,
    catalog: ModelCatalog | None = None,
) -> int:
    """The duration a request for ``target`` seconds gets from ``model`` (8 s with references and
    at 1080p/4k where the catalog says so); ``ModelChoiceError`` for a model it does not list."""
    caps = (catalog or packaged_catalog()).find_video_model(model)
    if caps is None:
        raise ModelChoiceError((catalog or packaged_catalog()).unknown_video_reason(model))
    allowed = caps.allowed_durations(
        resolution or DEFAULT_RESOLUTION, with_references=with_references
    )
    return snap_duration(target, allowed)


def request_rule_problems(
    request: VideoRequest, catalog: ModelCatalog | None = None
) -> list[tuple[Literal["duration", "legal"], str]]:
    """Where a request breaks its model's catalog rules (the asset checks read this): a duration
    the model does not allow for it, references the model refuses or too many of them, hybrid
    without the capability, a resolution or take count it lacks, an unknown model."""
    caps = (catalog or packaged_catalog()).find_video_model(request.model)
    if caps is None:
        return [("legal", f"{request.model} is not in the model catalog")]
    problems: list[tuple[Literal["duration", "legal"], str]] = []
    with_refs = bool(request.reference_images)
    allowed = caps.allowed_durations(request.resolution, with_references=with_refs)
    if request.duration_seconds not in allowed:
        rule = caps.duration_rule(request.resolution, with_references=with_refs)
        problems.append(
            (
                "duration",
                f"{request.duration_seconds} s requested, {caps.id} allows "
                f"{', '.join(map(str, allowed)) or 'none'} s" + (f" ({rule})" if rule else ""),
            )
        )
    for problem in mode_problems(
        request.model, request.conditioning_mode, len(request.reference_images), catalog
    ):
        problems.append(("legal", problem))
    for problem in caps.choice_problems(resolution=request.resolution, takes=request.takes):
        problems.append(("legal", problem))
    return problems
