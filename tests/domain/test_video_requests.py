"""Request shaping, read as the plan's truths: references, 8 s, modes the model accepts, price."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

import pytest
from google.genai import types

from vidpipe_dagster.domain.catalog import Lifecycle, ModelChoiceError, packaged_catalog
from vidpipe_dagster.domain.video_requests import (
    REMEDIATION_PREFIXES,
    ImageInput,
    VideoRequest,
    billing_labels,
    build_video_request,
    estimate_cost_usd,
    expected_duration,
    image_input,
    label_problems,
    mode_problems,
    remediate,
    request_cost_usd,
    request_rule_problems,
    snap_duration,
    without_audio,
)
from vidpipe_dagster.generation.vertex import to_genai_call

V31 = "veo-3.1-generate-001"
LITE = "veo-3.1-lite-generate-001"
START = image_input(b"start-keyframe-bytes", "image/png", "start keyframe")
END = image_input(b"end-keyframe-bytes", "image/png", "end keyframe")
REFS = [
    (f"CHAR_0{i}", image_input(f"ref-{i}".encode(), "image/png", f"CHAR_0{i}")) for i in range(5)
]
CATALOG = packaged_catalog()
HYBRID_TABLE = CATALOG.with_video_model(
    replace(CATALOG.video_models[V31], id="veo-hybrid", frames_with_references=True)
)
# Veo 3.0 and Veo 2 are retired; these copies keep their rules usable for shaping cases.
OLD_RULES = CATALOG.with_video_model(
    replace(
        CATALOG.video_models["veo-3.0-generate-001"], id="veo-3.0-rules", lifecycle=Lifecycle("ga")
    )
).with_video_model(
    replace(
        CATALOG.video_models["veo-2.0-generate-001"], id="veo-2-rules", lifecycle=Lifecycle("ga")
    )
)


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
        "veo 3.0 rules: first keyframe only",
        {"model": "veo-3.0-rules", "references": [], "catalog": OLD_RULES},
        "frames",
        6,
        True,
        False,
        (),
        ("first keyframe",),
    ),
    (
        "veo 2 rules: durations 5-8, no audio, lastFrame kept",
        {"model": "veo-2-rules", "references": [], "target_duration": 5, "catalog": OLD_RULES},
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
        {"model": "veo-hybrid", "catalog": HYBRID_TABLE},
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
    assert build(model="veo-2-rules", catalog=OLD_RULES, references=[]).generate_audio is False
    assert build(references=[]).generate_audio is True


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model": "veo-9"}, "unknown video model 'veo-9'; known models: veo-3.1-fast-generate"),
        ({"model": "veo-2.0-generate-001"}, "retired on 2026-06-30 \\(use veo-3.1-generate-001\\)"),
        ({"model": "veo-3.1-fast-generate-preview"}, "retired on 2026-10-22"),
        ({"model": "gemini-omni-1.1-flash"}, "Gemini Omni video models .* not supported yet"),
        ({"model": LITE, "resolution": "4k"}, "does not offer resolution 4k"),
        ({"takes": 5}, "1 to 4 takes per request, not 5"),
        ({"takes": 0}, "not 0"),
        ({"seed": -1}, "seed must be"),
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


def test_retired_and_unknown_models_are_refused_with_the_catalog_reason() -> None:
    with pytest.raises(ModelChoiceError, match="retired on 2026-06-30"):
        build(model="veo-3.0-generate-001", references=[])
    assert isinstance(ModelChoiceError("x"), ValueError)  # callers catching ValueError still do


def test_hybrid_policy_only_where_the_table_allows_it() -> None:
    assert not any(caps.frames_with_references for caps in CATALOG.video_models.values())
    request = build(model="veo-hybrid", catalog=HYBRID_TABLE, policy="hybrid")
    assert request.conditioning_mode == "hybrid"
    no_first = build(model="veo-hybrid", catalog=HYBRID_TABLE, policy="hybrid", first_frame=None)
    assert no_first.conditioning_mode == "references"


def test_every_known_veo31_model_accepts_references_and_last_frame() -> None:
    for model in (
        "veo-3.1-generate-001",
        "veo-3.1-fast-generate-001",
        "veo-3.1-generate-preview",
        "veo-3.1-fast-generate-preview",
    ):
        caps = CATALOG.video_models[model]
        assert caps.supports_references and caps.last_frame
        assert caps.durations == (4, 6, 8) and caps.aspect_ratios == ("16:9", "9:16")
        assert caps.frames_with_references is False
    assert CATALOG.video_models[LITE].supports_references is False
    assert CATALOG.video_models["veo-2.0-generate-001"].durations == (5, 6, 7, 8)


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
        build(references=[], resolution="1080p", target_duration=8),
        build(takes=2),
        build(seed=42),
    ]
    fingerprints = {base.fingerprint, *(v.fingerprint for v in variants)}
    assert len(fingerprints) == len(variants) + 1


def test_new_fields_at_their_old_values_keep_old_fingerprints() -> None:
    """Clips made before resolution, takes and seeds existed stay reusable (no re-buy)."""
    request = build(references=[], target_duration=8)
    legacy = {
        "model": V31,
        "prompt": "Mia walks into the park",
        "mode": "frames",
        "duration": 8,
        "aspect_ratio": "16:9",
        "first_frame": START.sha256,
        "last_frame": END.sha256,
        "references": [],
        "audio": True,
    }
    blob = json.dumps(legacy, sort_keys=True, separators=(",", ":")).encode()
    assert request.fingerprint == hashlib.sha256(blob).hexdigest()
    assert build(resolution="720p", takes=1).fingerprint == build().fingerprint


def test_the_seed_and_labels_sent_are_recorded_but_not_identity() -> None:
    base = build()
    labels = billing_labels(
        project_slug="spring-ad", subject="3", ledger_row="2f1e-AB", run_id="Run 9"
    )
    sent = base.for_submission(seed=1234, labels=labels)
    assert sent.fingerprint == base.fingerprint
    assert sent.effective_seed == 1234 and dict(sent.labels) == {
        "vidpipe_ledger_row": "2f1e-ab",
        "vidpipe_project": "spring-ad",
        "vidpipe_scene": "3",
        "vidpipe_run": "run_9",
    }
    fixed = build(seed=7).for_submission(seed=1234, labels=labels)
    assert fixed.effective_seed == 7 and fixed.sent_seed is None  # the user's seed wins
    with pytest.raises(ValueError, match="invalid billing labels"):
        base.for_submission(seed=1, labels={"Project": "x"})


@pytest.mark.parametrize(
    ("labels", "ok"),
    [
        ({"vidpipe_project": "spring-ad", "vidpipe_scene": "0"}, True),
        ({"a": ""}, True),
        ({"a" * 63: "b" * 63}, True),
        ({"a" * 64: "b"}, False),
        ({"a": "b" * 64}, False),
        ({"1abc": "x"}, False),
        ({"Upper": "x"}, False),
        ({"key": "Upper"}, False),
        ({"key": "has space"}, False),
        ({f"k{i}": "v" for i in range(65)}, False),
    ],
)
def test_label_rules(labels: dict[str, str], ok: bool) -> None:
    assert (label_problems(labels) == []) == ok


def test_resolution_forces_eight_seconds_at_1080p_and_4k() -> None:
    request = build(references=[], resolution="1080p")
    assert request.duration_seconds == 8 and request.resolution == "1080p"
    assert "duration forced to 8 s (1080p output; requested 6 s)" in request.conditioning_reason
    assert build(references=[], resolution="720p").duration_seconds == 6
    four_k = build(resolution="4k")
    assert four_k.duration_seconds == 8
    assert "reference images attached and 4k output" in four_k.conditioning_reason


def test_silent_copy_changes_audio_and_fingerprint_only() -> None:
    base = build()
    silent = without_audio(base, "audio filter")
    assert silent.generate_audio is False and silent.fingerprint != base.fingerprint
    assert (
        replace(silent, generate_audio=True, conditioning_reason=base.conditioning_reason) == base
    )


def test_request_rule_problems_read_the_catalog() -> None:
    assert request_rule_problems(build()) == []
    bad = replace(build(), duration_seconds=6)  # references need 8 s
    assert [kind for kind, _ in request_rule_problems(bad)] == ["duration"]
    lite_refs = replace(build(references=[]), model=LITE, reference_images=(START,))
    assert ("legal", f"{LITE} takes no references") in request_rule_problems(lite_refs)
    assert request_rule_problems(replace(build(), model="veo-9"))[0][0] == "legal"


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
        ("veo-3.1-fast-generate-001", 8, True, None, 0.80),  # issue 11: 0.10, not 0.15
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


# (model, resolution, audio, expected USD per second): the price list, read back.
PRICES = [
    (V31, "720p", True, 0.40),
    (V31, "720p", False, 0.20),
    (V31, "1080p", True, 0.40),
    (V31, "1080p", False, 0.20),
    (V31, "4k", True, 0.60),
    (V31, "4k", False, 0.40),
    ("veo-3.1-fast-generate-001", "720p", True, 0.10),
    ("veo-3.1-fast-generate-001", "720p", False, 0.08),
    ("veo-3.1-fast-generate-001", "1080p", True, 0.12),
    ("veo-3.1-fast-generate-001", "1080p", False, 0.10),
    ("veo-3.1-fast-generate-001", "4k", True, 0.30),
    ("veo-3.1-fast-generate-001", "4k", False, 0.25),
    (LITE, "720p", True, 0.05),
    (LITE, "720p", False, 0.03),
    (LITE, "1080p", True, 0.08),
    (LITE, "1080p", False, 0.05),
]


@pytest.mark.parametrize(("model", "resolution", "audio", "per_second"), PRICES)
def test_prices_by_resolution_and_audio(
    model: str, resolution: str, audio: bool, per_second: float
) -> None:
    cost = estimate_cost_usd(model, 8, audio, resolution=resolution)
    assert cost == pytest.approx(per_second * 8)
    assert estimate_cost_usd(model, 8, audio, resolution=resolution, takes=3) == pytest.approx(
        per_second * 8 * 3
    )


def test_a_request_costs_every_take_at_its_resolution() -> None:
    request = build(resolution="4k", takes=3)
    assert request_cost_usd(request) == pytest.approx(0.60 * 8 * 3)
    assert request_cost_usd(request, takes=1) == pytest.approx(0.60 * 8)


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
    hybrid = build(model="veo-hybrid", catalog=HYBRID_TABLE)
    _, source, config = to_genai_call(hybrid, HYBRID_TABLE)
    assert source.image is not None and config.last_frame is not None
    assert len(config.reference_images or []) == 2
    _, _, veo2 = to_genai_call(
        build(model="veo-2-rules", catalog=OLD_RULES, references=[]), OLD_RULES
    )
    assert veo2.generate_audio is None  # not sent to a model without audio


def test_genai_call_sends_resolution_takes_seed_and_labels() -> None:
    request = build(resolution="1080p", takes=3).for_submission(
        seed=99, labels=billing_labels(project_slug="p", subject="0", ledger_row="row-1")
    )
    _, _, config = to_genai_call(request)
    assert config.resolution == "1080p" and config.number_of_videos == 3
    assert config.seed == 99
    assert config.labels == {
        "vidpipe_ledger_row": "row-1",
        "vidpipe_project": "p",
        "vidpipe_scene": "0",
    }


def test_image_input_hashes_content() -> None:
    image = image_input(b"abc", "image/png", "x")
    assert isinstance(image, ImageInput)
    assert image.sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.parametrize(
    ("model", "mode", "refs", "problems"),
    [
        (V31, "references", 3, []),
        (V31, "references", 4, ["4 references, veo-3.1-generate-001 takes at most 3"]),
        (LITE, "references", 1, [f"{LITE} takes no references"]),
        (V31, "hybrid", 2, [f"{V31} rejects hybrid requests"]),
        ("veo-9", "frames", 0, ["unknown video model 'veo-9'; known models:"]),
    ],
)
def test_mode_problems_of_a_stored_clip(
    model: str, mode: str, refs: int, problems: list[str]
) -> None:
    found = mode_problems(model, mode, refs)
    assert len(found) == len(problems)
    for problem, words in zip(found, problems, strict=True):
        assert words in problem


def test_expected_duration_follows_the_catalog() -> None:
    assert expected_duration(V31, 6, with_references=False) == 6
    assert expected_duration(V31, 6, with_references=True) == 8
    assert expected_duration(V31, 6, with_references=False, resolution="4k") == 8
    assert expected_duration(V31, 5, with_references=False) == 6
    with pytest.raises(ModelChoiceError, match="unknown video model"):
        expected_duration("veo-9", 6, with_references=False)
