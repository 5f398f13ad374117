"""Request shaping, read as the plan's truths: references, 8 s, modes the model accepts, price."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from google.genai import types

from vidpipe_dagster.domain.video_requests import (
    MODEL_CAPABILITIES,
    REMEDIATION_PREFIXES,
    ImageInput,
    ModelCapabilities,
    VideoRequest,
    build_video_request,
    estimate_cost_usd,
    image_input,
    remediate,
    snap_duration,
)
from vidpipe_dagster.generation.vertex import to_genai_call

V31 = "veo-3.1-generate-001"
LITE = "veo-3.1-lite-generate-001"
START = image_input(b"start-keyframe-bytes", "image/png", "start keyframe")
END = image_input(b"end-keyframe-bytes", "image/png", "end keyframe")
REFS = [
    (f"CHAR_0{i}", image_input(f"ref-{i}".encode(), "image/png", f"CHAR_0{i}")) for i in range(5)
]
HYBRID_TABLE = {"veo-hybrid": replace(MODEL_CAPABILITIES[V31], supports_hybrid=True)}


def build(**overrides: Any) -> VideoRequest:
    args: dict[str, Any] = {
        "model": V31,
        "prompt": "Mia walks into the park",
        "target_duration": 6,
        "aspect_ratio": "16:9",
        "first_frame": START,
        "last_frame": END,
        "references": REFS[:2],
    }
    args.update(overrides)
    return build_video_request(**args)


# (case, overrides, mode, duration, first, last, reference tags, words the reason must contain)
CASES: list[tuple[str, dict[str, Any], str, int, bool, bool, tuple[str, ...], tuple[str, ...]]] = [
    (
        "no manifest: frames, target duration, both keyframes",
        {"references": []},
        "frames",
        6,
        True,
        True,
        (),
        ("no reference images", "first and last keyframes"),
    ),
    (
        "no manifest, target snapped to the model",
        {"references": [], "target_duration": 7},
        "frames",
        8,
        True,
        True,
        (),
        ("requested 7 s is not allowed",),
    ),
    (
        "auto with references: references mode, keyframes not sent, 8 s forced",
        {},
        "references",
        8,
        False,
        False,
        ("CHAR_00", "CHAR_01"),
        ("keyframes not sent", "forced to 8 s", "requested 6 s"),
    ),
    (
        "references with an 8 s target still says why 8",
        {"target_duration": 8},
        "references",
        8,
        False,
        False,
        ("CHAR_00", "CHAR_01"),
        ("required with reference images",),
    ),
    (
        "more than three references: extra dropped and named",
        {"references": REFS},
        "references",
        8,
        False,
        False,
        ("CHAR_00", "CHAR_01", "CHAR_02"),
        ("2 reference(s) beyond the limit of 3 dropped: CHAR_03, CHAR_04",),
    ),
    (
        "policy frames forces frames and drops references",
        {"policy": "frames"},
        "frames",
        6,
        True,
        True,
        (),
        ("policy", "references not sent: CHAR_00, CHAR_01"),
    ),
    (
        "lite model refuses references: frames with reason",
        {"model": LITE},
        "frames",
        6,
        True,
        False,
        (),
        (f"{LITE} does not accept reference images", "does not accept lastFrame"),
    ),
    (
        "veo 3.0: first keyframe only",
        {"model": "veo-3.0-generate-001", "references": []},
        "frames",
        6,
        True,
        False,
        (),
        ("first keyframe",),
    ),
    (
        "veo 2: durations 5-8, no audio, lastFrame kept",
        {"model": "veo-2.0-generate-001", "references": [], "target_duration": 5},
        "frames",
        5,
        True,
        True,
        (),
        ("no audio",),
    ),
    (
        "end keyframe without a start keyframe is dropped",
        {"references": [], "first_frame": None},
        "frames",
        6,
        False,
        False,
        (),
        ("needs a first frame", "text only"),
    ),
    (
        "policy references without references falls back to frames",
        {"policy": "references", "references": []},
        "frames",
        6,
        True,
        True,
        (),
        ("no reference images",),
    ),
    (
        "hybrid-capable table: auto sends keyframes with references",
        {"model": "veo-hybrid", "capabilities": HYBRID_TABLE},
        "hybrid",
        8,
        True,
        True,
        ("CHAR_00", "CHAR_01"),
        ("mode hybrid",),
    ),
    (
        "duplicate reference images take one slot",
        {"references": [REFS[0], ("CHAR_00_again", REFS[0][1]), REFS[1]]},
        "references",
        8,
        False,
        False,
        ("CHAR_00", "CHAR_01"),
        ("duplicate reference image for CHAR_00_again",),
    ),
]


@pytest.mark.parametrize(
    ("overrides", "mode", "duration", "first", "last", "tags", "words"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_request_shaping(
    overrides: dict[str, Any],
    mode: str,
    duration: int,
    first: bool,
    last: bool,
    tags: tuple[str, ...],
    words: tuple[str, ...],
) -> None:
    request = build(**overrides)
    assert request.conditioning_mode == mode
    assert request.duration_seconds == duration
    assert (request.first_frame is not None) == first
    assert (request.last_frame is not None) == last
    assert request.reference_tags == tags
    assert len(request.reference_images) == len(tags)
    for word in words:
        assert word in request.conditioning_reason, request.conditioning_reason
    if mode == "references":  # Veo 3.1 rejects referenceImages with image or lastFrame
        assert request.first_frame is None and request.last_frame is None


def test_no_manifest_request_is_exactly_the_old_behaviour() -> None:
    request = build(references=[], target_duration=8)
    assert request == VideoRequest(
        model=V31,
        prompt="Mia walks into the park",
        conditioning_mode="frames",
        conditioning_reason=request.conditioning_reason,
        duration_seconds=8,
        aspect_ratio="16:9",
        first_frame=START,
        last_frame=END,
        reference_images=(),
        reference_tags=(),
        remediation_level=0,
        generate_audio=True,
    )


def test_veo2_never_asks_for_audio() -> None:
    assert build(model="veo-2.0-generate-001", references=[]).generate_audio is False
    assert build(references=[]).generate_audio is True


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model": "veo-9"}, "known models: veo-2.0-generate-001"),
        ({"model": LITE, "policy": "references"}, "does not accept reference images"),
        ({"policy": "hybrid"}, "policy 'hybrid'"),
        ({"aspect_ratio": "1:1"}, "aspect ratio 1:1"),
        ({"remediation_level": 3}, "remediation level"),
        ({"target_duration": 0}, "positive"),
        ({"prompt": " ", "first_frame": None, "last_frame": None, "references": []}, "prompt"),
    ],
)
def test_invalid_requests_are_refused_before_any_spend(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build(**overrides)


def test_hybrid_policy_only_where_the_table_allows_it() -> None:
    assert not any(caps.supports_hybrid for caps in MODEL_CAPABILITIES.values())
    request = build(model="veo-hybrid", capabilities=HYBRID_TABLE, policy="hybrid")
    assert request.conditioning_mode == "hybrid"
    no_first = build(
        model="veo-hybrid", capabilities=HYBRID_TABLE, policy="hybrid", first_frame=None
    )
    assert no_first.conditioning_mode == "references"


def test_every_known_veo31_model_accepts_references_and_last_frame() -> None:
    for model in (
        "veo-3.1-generate-001",
        "veo-3.1-fast-generate-001",
        "veo-3.1-generate-preview",
        "veo-3.1-fast-generate-preview",
    ):
        caps = MODEL_CAPABILITIES[model]
        assert caps.supports_references and caps.supports_last_frame
        assert caps.durations == (4, 6, 8) and caps.aspect_ratios == ("16:9", "9:16")
        assert caps.supports_hybrid is False
    assert MODEL_CAPABILITIES[LITE].supports_references is False
    assert MODEL_CAPABILITIES["veo-2.0-generate-001"].durations == (5, 6, 7, 8)


@pytest.mark.parametrize(
    ("target", "allowed", "expected"),
    [
        (6, (4, 6, 8), 6),
        (5, (4, 6, 8), 6),
        (7, (4, 6, 8), 8),
        (1, (4, 6, 8), 4),
        (30, (4, 6, 8), 8),
    ],
)
def test_snap_duration(target: int, allowed: tuple[int, ...], expected: int) -> None:
    assert snap_duration(target, allowed) == expected


def test_fingerprint_is_stable_and_sensitive_to_every_input() -> None:
    base = build()
    assert build().fingerprint == base.fingerprint
    assert build(references=[]).fingerprint == build(references=[]).fingerprint
    flipped = REFS[1][1].data[:-1] + bytes([REFS[1][1].data[-1] ^ 1])
    changed_ref = [REFS[0], ("CHAR_01", image_input(flipped, "image/png", "CHAR_01"))]
    changed_start = image_input(START.data + b"\x00", "image/png", "start keyframe")
    variants = [
        build(prompt="Mia runs into the park"),
        build(references=changed_ref),
        build(references=[], target_duration=4),
        build(references=[], first_frame=changed_start),
        build(references=[], last_frame=image_input(b"other", "image/png", "end")),
        build(model="veo-3.1-fast-generate-001"),
        build(aspect_ratio="9:16"),
        build(remediation_level=1),
        build(generate_audio=False),
    ]
    fingerprints = {base.fingerprint, *(v.fingerprint for v in variants)}
    assert len(fingerprints) == len(variants) + 1


def test_labels_do_not_change_the_fingerprint() -> None:
    relabelled = [(tag, replace(img, label="renamed")) for tag, img in REFS[:2]]
    assert build(references=relabelled).fingerprint == build().fingerprint


def test_remediation_keeps_references_and_changes_only_prompt_and_level() -> None:
    base = build()
    one = remediate(base, 1)
    two = remediate(one, 2)
    assert one.prompt == REMEDIATION_PREFIXES[1] + base.prompt
    assert two.prompt == REMEDIATION_PREFIXES[2] + base.prompt  # prefixes replace, not stack
    assert remediate(two, 0).prompt == base.prompt
    for request, level in ((one, 1), (two, 2)):
        assert request.remediation_level == level
        assert request.reference_images == base.reference_images
        assert request.reference_tags == base.reference_tags
        assert replace(request, prompt=base.prompt, remediation_level=0) == base
    assert len({base.fingerprint, one.fingerprint, two.fingerprint}) == 3
    assert build(remediation_level=2).prompt == two.prompt
    assert REMEDIATION_PREFIXES[0] == "" and len(REMEDIATION_PREFIXES[2]) > len(
        REMEDIATION_PREFIXES[1]
    )
    with pytest.raises(ValueError):
        remediate(base, 3)


@pytest.mark.parametrize(
    ("model", "seconds", "audio", "table", "expected"),
    [
        (V31, 8, True, None, 3.20),
        (V31, 8, False, None, 1.60),
        ("veo-3.1-fast-generate-001", 8, True, None, 1.20),
        ("veo-3.1-fast-generate-preview", 6, False, None, 0.60),
        ("veo-2.0-generate-001", 5, False, None, 2.50),
        (V31, 8, True, {V31: 0.30}, 2.40),
        (V31, 4, False, {V31: (0.5, 0.25)}, 1.00),
        ("my-tuned-veo", 8, True, {"my-tuned-veo": 0.1}, 0.80),
    ],
)
def test_price_table(
    model: str, seconds: int, audio: bool, table: dict[str, Any] | None, expected: float
) -> None:
    assert estimate_cost_usd(model, seconds, audio, table) == pytest.approx(expected)


def test_lite_is_cheaper_than_fast_and_unknown_models_are_not_priced() -> None:
    assert estimate_cost_usd(LITE, 8) < estimate_cost_usd("veo-3.1-fast-generate-001", 8)
    with pytest.raises(ValueError, match="no price for video model 'veo-9'"):
        estimate_cost_usd("veo-9", 8)
    assert estimate_cost_usd(V31, 8, price_table={V31: 0.0}) == 0.0


def _image_bytes(image: types.Image | None) -> tuple[bytes | None, str | None]:
    assert image is not None
    return image.image_bytes, image.mime_type


def test_genai_call_for_references() -> None:
    request = build(references=REFS[:3])
    model, source, config = to_genai_call(request)
    assert model == V31
    assert isinstance(source, types.GenerateVideosSource)
    assert source.prompt == request.prompt and source.image is None
    assert isinstance(config, types.GenerateVideosConfig)
    assert config.number_of_videos == 1
    assert config.duration_seconds == 8
    assert config.aspect_ratio == "16:9"
    assert config.generate_audio is True
    assert config.last_frame is None
    refs = config.reference_images or []
    assert [type(ref) for ref in refs] == [types.VideoGenerationReferenceImage] * 3
    assert all(ref.reference_type == types.VideoGenerationReferenceType.ASSET for ref in refs)
    assert [_image_bytes(ref.image) for ref in refs] == [
        (img.data, "image/png") for _, img in REFS[:3]
    ]
    wire = config.model_dump(mode="json", exclude_none=True)
    assert all(ref["reference_type"] == "ASSET" for ref in wire["reference_images"])


def test_genai_call_for_frames() -> None:
    request = build(references=[])
    _, source, config = to_genai_call(request)
    assert _image_bytes(source.image) == (START.data, "image/png")
    assert _image_bytes(config.last_frame) == (END.data, "image/png")
    assert config.reference_images is None
    assert config.duration_seconds == 6


def test_genai_call_for_hybrid_and_audio_free_models() -> None:
    hybrid = build(model="veo-hybrid", capabilities=HYBRID_TABLE)
    _, source, config = to_genai_call(hybrid, HYBRID_TABLE)
    assert source.image is not None and config.last_frame is not None
    assert len(config.reference_images or []) == 2
    _, _, veo2 = to_genai_call(build(model="veo-2.0-generate-001", references=[]))
    assert veo2.generate_audio is None  # not sent to a model without audio


def test_image_input_hashes_content() -> None:
    image = image_input(b"abc", "image/png", "x")
    assert isinstance(image, ImageInput)
    assert image.sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert ModelCapabilities(durations=(8,), supports_references=False, supports_last_frame=False)
