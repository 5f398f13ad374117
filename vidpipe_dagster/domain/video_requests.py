"""Video request shaping for Veo: conditioning mode, duration, references, remediation, price.

Pure: takes plain values (bytes, strings) and returns an immutable request whose
``conditioning_reason`` says, in words, every choice made. See DESIGN.md for why hybrid (first frame
plus references) is a per-model capability rather than the default: Veo 3.1 rejects
``referenceImages`` together with ``image`` or ``lastFrame``, so we never send that combination to a
model whose table entry does not allow it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

ConditioningMode = Literal["frames", "references", "hybrid"]
ConditioningPolicy = Literal["auto", "frames", "references", "hybrid"]

MAX_REFERENCES = 3
REFERENCE_DURATION_SECONDS = 8

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

    @property
    def fingerprint(self) -> str:
        """Hash of everything that changes the output; images by content hash, not by path."""
        payload = {
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
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


def image_input(data: bytes, mime_type: str, label: str) -> ImageInput:
    return ImageInput(
        data=data, mime_type=mime_type, sha256=hashlib.sha256(data).hexdigest(), label=label
    )


@dataclass(frozen=True)
class ModelCapabilities:
    """What one video model accepts, so that we never send a request it is known to reject."""

    durations: tuple[int, ...]
    supports_references: bool
    supports_last_frame: bool
    supports_hybrid: bool = False  # first frame and/or lastFrame together with referenceImages
    supports_audio: bool = True
    aspect_ratios: tuple[str, ...] = ("16:9", "9:16")
    max_references: int = MAX_REFERENCES
    reference_duration: int = REFERENCE_DURATION_SECONDS


_VEO_31 = ModelCapabilities(durations=(4, 6, 8), supports_references=True, supports_last_frame=True)
_VEO_30 = ModelCapabilities(
    durations=(4, 6, 8), supports_references=False, supports_last_frame=False
)
MODEL_CAPABILITIES: dict[str, ModelCapabilities] = {
    "veo-3.1-generate-001": _VEO_31,
    "veo-3.1-fast-generate-001": _VEO_31,
    "veo-3.1-generate-preview": _VEO_31,
    "veo-3.1-fast-generate-preview": _VEO_31,
    # Lite: model id and lastFrame support unverified offline; what matters is that it never
    # receives reference images (and we do not risk a lastFrame rejection either).
    "veo-3.1-lite-generate-001": ModelCapabilities(
        durations=(4, 6, 8), supports_references=False, supports_last_frame=False
    ),
    "veo-3.0-generate-001": _VEO_30,
    "veo-3.0-fast-generate-001": _VEO_30,
    "veo-2.0-generate-001": ModelCapabilities(
        durations=(5, 6, 7, 8),
        supports_references=False,
        supports_last_frame=True,
        supports_audio=False,
    ),
}

# USD per generated second: (with audio, without audio). Vertex list prices as of the plan; the
# lite figures are placeholders below fast. Override per deployment with ``price_table``.
DEFAULT_PRICES_USD_PER_SECOND: dict[str, tuple[float, float]] = {
    "veo-3.1-generate-001": (0.40, 0.20),
    "veo-3.1-generate-preview": (0.40, 0.20),
    "veo-3.1-fast-generate-001": (0.15, 0.10),
    "veo-3.1-fast-generate-preview": (0.15, 0.10),
    "veo-3.1-lite-generate-001": (0.08, 0.05),
    "veo-3.0-generate-001": (0.40, 0.20),
    "veo-3.0-fast-generate-001": (0.15, 0.10),
    "veo-2.0-generate-001": (0.50, 0.50),
}

PriceTable = Mapping[str, float | tuple[float, float]]


def model_capabilities(
    model: str, capabilities: Mapping[str, ModelCapabilities] | None = None
) -> ModelCapabilities:
    """The table entry for ``model``; an unknown model is an error that lists the known ones."""
    table = MODEL_CAPABILITIES if capabilities is None else capabilities
    try:
        return table[model]
    except KeyError:
        known = ", ".join(sorted(table))
        raise ValueError(f"unknown video model {model!r}; known models: {known}") from None


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
    capabilities: Mapping[str, ModelCapabilities] | None = None,
) -> VideoRequest:
    """Shape one scene's request: pick the conditioning mode the model accepts, cap references,
    fix the duration, and record every decision in ``conditioning_reason``.

    ``references`` are (manifest tag, image) in priority order. A scene without references (e.g. a
    project without a manifest) gets frames mode and its target duration, snapped to the model.
    """
    caps = model_capabilities(model, capabilities)
    if policy not in get_args(ConditioningPolicy):
        raise ValueError(f"unknown conditioning policy {policy!r}")
    if not 0 <= remediation_level <= MAX_REMEDIATION_LEVEL:
        raise ValueError(f"remediation level must be 0..{MAX_REMEDIATION_LEVEL}")
    if target_duration <= 0:
        raise ValueError(f"target duration must be positive, got {target_duration}")
    if aspect_ratio not in caps.aspect_ratios:
        allowed = ", ".join(caps.aspect_ratios)
        raise ValueError(f"model {model} does not support aspect ratio {aspect_ratio} ({allowed})")
    if not prompt.strip() and first_frame is None:
        raise ValueError("a prompt or a first frame is required")

    reasons: list[str] = []
    refs = _dedupe_references(references, reasons)
    if len(refs) > caps.max_references:
        dropped = [tag for tag, _ in refs[caps.max_references :]]
        refs = refs[: caps.max_references]
        reasons.append(
            f"{len(dropped)} reference(s) beyond the limit of {caps.max_references} dropped: "
            + ", ".join(dropped)
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
    if last_frame is not None and not caps.supports_last_frame:
        reasons.append(f"end keyframe dropped: {model} does not accept lastFrame")
        last_frame = None

    if mode == "frames":
        frames = "text only (no keyframes)"
        if first_frame is not None:
            frames = "first and last keyframes" if last_frame else "first keyframe"
        reasons.append(f"conditioning: {frames}")
        duration = snap_duration(target_duration, caps.durations)
        if duration != target_duration:
            allowed = ", ".join(str(d) for d in caps.durations)
            reasons.append(
                f"duration {duration} s: requested {target_duration} s is not allowed by "
                f"{model} ({allowed} s)"
            )
    else:
        duration = caps.reference_duration
        if duration != target_duration:
            reasons.append(
                f"duration forced to {duration} s (reference images attached; requested "
                f"{target_duration} s)"
            )
        else:
            reasons.append(f"duration {duration} s (required with reference images)")

    if generate_audio and not caps.supports_audio:
        reasons.append(f"no audio: {model} does not generate audio")
        generate_audio = False

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
    )


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
    caps: ModelCapabilities,
    policy: ConditioningPolicy,
    has_refs: bool,
    has_first: bool,
    reasons: list[str],
) -> ConditioningMode:
    """The conditioning mode for this policy and model, with its reason appended."""
    if policy == "references" and not caps.supports_references:
        raise ValueError(f"policy 'references' but model {model} does not accept reference images")
    if policy == "hybrid" and not caps.supports_hybrid:
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
    if policy in ("auto", "hybrid") and caps.supports_hybrid and has_first:
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


def estimate_cost_usd(
    model: str,
    duration_seconds: float,
    generate_audio: bool = True,
    price_table: PriceTable | None = None,
) -> float:
    """List-price estimate of one generated clip. ``price_table`` entries override the defaults:
    a number is the per-second price whatever the audio, a pair is (with audio, without audio).
    An unknown model is an error: spend we cannot price is spend we cannot report."""
    overrides = price_table or {}
    price = overrides[model] if model in overrides else DEFAULT_PRICES_USD_PER_SECOND.get(model)
    if price is None:
        known = ", ".join(sorted({*DEFAULT_PRICES_USD_PER_SECOND, *overrides}))
        raise ValueError(f"no price for video model {model!r}; priced models: {known}")
    if isinstance(price, tuple):
        per_second = price[0] if generate_audio else price[1]
    else:
        per_second = float(price)
    return round(per_second * duration_seconds, 4)
