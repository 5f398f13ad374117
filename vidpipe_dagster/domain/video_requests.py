"""Video request shaping for Veo 3.1: conditioning mode, duration, references, fingerprint.

Pure: takes plain values (bytes, strings) and returns an immutable request. See DESIGN.md for
why hybrid (first frame + references) is a per-model capability rather than the default.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Literal

ConditioningMode = Literal["frames", "references", "hybrid"]


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
