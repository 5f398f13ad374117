"""A code version says what it versions: it changes exactly when the code changes what is made.

Each stage's deterministic rules run on fixed inputs; their output is digested and recorded with
the stage's ``CODE_VERSION``. Changing the rules without bumping the version (which tells Dagster
the existing materializations are stale) fails here; so does bumping it without a change.
"""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from vidpipe_dagster.domain.clean_sheets import build_conditioning_prompt, composite_on_gray
from vidpipe_dagster.domain.reference_selection import select_references_for_scene
from vidpipe_dagster.domain.video_requests import build_video_request, image_input
from vidpipe_dagster.stages import clean_sheet, scene_clip, scene_references

RECORDED = {
    "scene_clip": (scene_clip.CODE_VERSION, "request-2"),
    "scene_references": (scene_references.CODE_VERSION, "selection-2"),
    "clean_sheet": (clean_sheet.CODE_VERSION, "sheet-2"),
}
DIGESTS = {
    "scene_clip": "69d3fc8627e0646c",
    "scene_references": "809a08b2c3b721fd",
    "clean_sheet": "13b6ad6413019c14",
}


def _png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 9), color).save(buffer, format="PNG")
    return buffer.getvalue()


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _requests() -> list[str]:
    start, end = (
        image_input(_png((200, 0, 0)), "image/png", "s"),
        image_input(_png((0, 200, 0)), "image/png", "e"),
    )
    face = image_input(_png((0, 0, 200)), "image/png", "r")
    made = []
    for model in ("veo-3.1-generate-001", "veo-3.1-fast-generate-001"):
        for refs in ([], [("CHAR_01", face)]):
            for policy in ("auto", "frames"):
                for target in (4, 6, 8):
                    request = build_video_request(
                        model=model,
                        prompt="a walk in the park",
                        target_duration=target,
                        aspect_ratio="16:9",
                        first_frame=start,
                        last_frame=end,
                        references=refs,
                        policy=policy,  # type: ignore[arg-type]
                    )
                    made.append(f"{request.fingerprint}:{request.conditioning_reason}")
    return made


class _Asset:
    def __init__(self, tag: str, kind: str, quality: float, face: bool) -> None:
        self.manifest_tag, self.asset_type = tag, kind
        self.quality_score, self.is_face_crop = quality, face


def _selections() -> list[list[tuple[str, bool]]]:
    assets = [
        _Asset("CHAR_01", "CHARACTER", 8.0, False),
        _Asset("CHAR_01", "CHARACTER", 8.5, True),
        _Asset("CHAR_02", "CHARACTER", 7.0, False),
        _Asset("ENV_01", "ENVIRONMENT", 7.0, False),
        _Asset("PROP_01", "PROP", 6.0, False),
    ]
    placements = [
        {"asset_tag": "CHAR_01", "role": "subject"},
        {"asset_tag": "CHAR_02", "role": "interaction_target"},
        {"asset_tag": "ENV_01", "role": "background"},
        {"asset_tag": "PROP_01", "role": "interaction_target"},
    ]
    shots = ("establishing", "wide_shot", "medium_shot", "close_up", "extreme_close_up")
    return [
        [
            (a.manifest_tag, a.is_face_crop)
            for a in select_references_for_scene(
                {"composition": {"shot_type": shot}, "placements": placements}, assets
            )
        ]
        for shot in (*shots, "two_shot", "over_the_shoulder")
    ]


def _sheet() -> list[str]:
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[2:6, 2:6] = (250, 10, 10, 255)
    composite = composite_on_gray(Image.fromarray(rgba, "RGBA"))
    prompts = [
        build_conditioning_prompt("young woman, red coat", kind, "Mia")
        for kind in ("CHARACTER", "PROP", "ENVIRONMENT")
    ]
    return [hashlib.sha256(composite.tobytes()).hexdigest(), *prompts]


OUTPUTS = {"scene_clip": _requests, "scene_references": _selections, "clean_sheet": _sheet}


@pytest.mark.parametrize("stage", sorted(RECORDED))
def test_a_code_version_changes_exactly_when_its_output_does(stage: str) -> None:
    current, recorded = RECORDED[stage]
    digest = _digest(OUTPUTS[stage]())
    assert (current, digest) == (recorded, DIGESTS[stage]), (
        f"{stage}: the rules now make {digest} under CODE_VERSION {current!r}; the record says "
        f"{DIGESTS[stage]} under {recorded!r}. If the output changed, bump {stage}.CODE_VERSION; "
        "then record the new pair here."
    )
