"""Every selection rule of the plan, as a table of cases (plus the plan's own mock example)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from vidpipe_dagster.domain.reference_selection import select_references_for_scene


@dataclass
class A:
    """A stand-in asset with the attributes selection reads (the plan's MockAsset)."""

    manifest_tag: str
    asset_type: str
    quality_score: float | None = 5.0
    is_face_crop: bool = False
    name: str = ""

    def __repr__(self) -> str:
        return self.name or f"{self.manifest_tag}{'/face' if self.is_face_crop else ''}"


MIA = A("CHAR_01", "CHARACTER", 8.0, name="mia")
MIA_FACE = A("CHAR_01", "CHARACTER", 8.5, True, name="mia/face")
BEN = A("CHAR_02", "CHARACTER", 7.0, name="ben")
BEN_FACE = A("CHAR_02", "CHARACTER", 6.0, True, name="ben/face")
ZOE = A("CHAR_03", "CHARACTER", 9.0, name="zoe")
PARK = A("ENV_01", "ENVIRONMENT", 6.0, name="park")
CITY = A("ENV_02", "ENVIRONMENT", 7.5, name="city")
BALL = A("PROP_01", "PROP", 5.0, name="ball")
CAR = A("VEH_01", "VEHICLE", 4.0, name="car")
POOL = [MIA, MIA_FACE, BEN, BEN_FACE, ZOE, PARK, CITY, BALL, CAR]


def scene(shot: str | None, *placements: tuple[str, str]) -> dict:
    manifest: dict = {"placements": [{"asset_tag": t, "role": r} for t, r in placements]}
    if shot:
        manifest["composition"] = {"shot_type": shot}
    return manifest


CASES = [
    # close-up: subject face crops, then the same subject's full body, then environments
    (
        "close-up prefers face crop then body then env",
        scene("close_up", ("CHAR_01", "subject"), ("ENV_01", "background")),
        ["mia/face", "mia", "park"],
    ),
    (
        "close-up: subject without face crop uses its body, env next",
        scene(
            "close_up", ("CHAR_03", "subject"), ("ENV_02", "background"), ("PROP_01", "background")
        ),
        ["zoe", "city", "ball"],
    ),
    (
        "close-up: two subjects' faces by quality, capped at 3",
        scene("close_up", ("CHAR_02", "subject"), ("CHAR_01", "subject"), ("ENV_01", "background")),
        ["mia/face", "ben/face", "mia"],
    ),
    (
        "extreme close-up follows the close-up rule",
        scene("extreme_close_up", ("CHAR_01", "subject")),
        ["mia/face", "mia"],
    ),
    # two-shot: two distinct characters (face crops preferred), then one environment
    (
        "two-shot: two characters then one env",
        scene(
            "two_shot",
            ("CHAR_01", "subject"),
            ("CHAR_02", "interaction_target"),
            ("ENV_01", "background"),
            ("ENV_02", "background"),
        ),
        ["mia/face", "ben/face", "city"],
    ),
    (
        "two-shot: only two characters from subject/target roles, background ones excluded",
        scene(
            "two_shot",
            ("CHAR_03", "background"),
            ("CHAR_01", "subject"),
            ("CHAR_02", "interaction_target"),
        ),
        ["mia/face", "ben/face", "zoe"],
    ),
    (
        "two-shot: one character, env, then leftovers",
        scene(
            "two_shot",
            ("CHAR_01", "subject"),
            ("PROP_01", "interaction_target"),
            ("ENV_01", "background"),
        ),
        ["mia/face", "park", "ball"],
    ),
    # establishing: environments, then props/vehicles, characters last (full body)
    (
        "establishing: env, prop/vehicle, character last",
        scene(
            "establishing",
            ("CHAR_01", "subject"),
            ("VEH_01", "interaction_target"),
            ("ENV_01", "background"),
        ),
        ["park", "car", "mia"],
    ),
    (
        "establishing: two envs by quality, then prop",
        scene(
            "establishing",
            ("ENV_01", "background"),
            ("PROP_01", "subject"),
            ("ENV_02", "background"),
            ("CHAR_02", "subject"),
        ),
        ["city", "park", "ball"],
    ),
    # default (medium, wide, others): subject, interaction target, background; full body
    (
        "medium: role order, full body for characters",
        scene(
            "medium_shot",
            ("ENV_01", "background"),
            ("PROP_01", "interaction_target"),
            ("CHAR_01", "subject"),
        ),
        ["mia", "ball", "park"],
    ),
    (
        "wide: full body preferred even when a face crop exists",
        scene("wide_shot", ("CHAR_02", "subject"), ("ENV_02", "background")),
        ["ben", "city"],
    ),
    (
        "default: quality order within a role",
        scene(
            "wide_shot",
            ("CHAR_02", "subject"),
            ("CHAR_03", "subject"),
            ("CHAR_01", "subject"),
            ("ENV_01", "background"),
        ),
        ["zoe", "mia", "ben"],
    ),
    (
        "over-the-shoulder falls back to default order",
        scene("over_the_shoulder", ("ENV_01", "background"), ("CHAR_02", "subject")),
        ["ben", "park"],
    ),
    (
        "no composition means medium shot (default order)",
        scene(None, ("ENV_01", "background"), ("CHAR_01", "subject")),
        ["mia", "park"],
    ),
    # dedupe, unknown tags, empty
    (
        "a tag placed twice occupies one slot",
        scene("medium_shot", ("CHAR_01", "subject"), ("CHAR_01", "interaction_target")),
        ["mia"],
    ),
    (
        "unknown tags (new-asset declarations) are skipped",
        scene("medium_shot", ("CHAR_77", "subject"), ("ENV_01", "background")),
        ["park"],
    ),
    ("only unknown tags: empty", scene("close_up", ("CHAR_77", "subject")), []),
    ("no placements: empty", scene("close_up"), []),
    (
        "at most three",
        scene(
            "medium_shot",
            ("CHAR_01", "subject"),
            ("CHAR_02", "subject"),
            ("CHAR_03", "subject"),
            ("ENV_01", "background"),
            ("PROP_01", "interaction_target"),
        ),
        ["zoe", "mia", "ben"],
    ),
]


@pytest.mark.parametrize(("name", "manifest", "expected"), CASES, ids=[c[0] for c in CASES])
def test_selection_rules(name: str, manifest: dict, expected: list[str]) -> None:
    picked = select_references_for_scene(manifest, POOL)
    assert [repr(a) for a in picked] == expected
    assert len(picked) <= 3


def test_empty_manifest_json_and_none() -> None:
    assert select_references_for_scene({}, POOL) == []
    assert select_references_for_scene(None, POOL) == []


def test_missing_quality_scores_sort_last() -> None:
    unknown = A("CHAR_05", "CHARACTER", None, name="noscore")
    manifest = scene("medium_shot", ("CHAR_05", "subject"), ("CHAR_02", "subject"))
    assert [repr(a) for a in select_references_for_scene(manifest, [unknown, BEN])] == [
        "ben",
        "noscore",
    ]


def test_invalid_shot_type_is_rejected_with_field_name() -> None:
    with pytest.raises(ValueError, match="shot_type"):
        select_references_for_scene(scene("dutch_angle", ("CHAR_01", "subject")), POOL)


def test_plan_mock_example() -> None:
    """The plan's verification snippet, verbatim in spirit: close-up of CHAR_01 over ENV_01."""

    class MockAsset:
        def __init__(self, tag, asset_type, role_hint, quality=5.0, is_face=False):
            self.manifest_tag = tag
            self.asset_type = asset_type
            self.quality_score = quality
            self.is_face_crop = is_face
            self.source_asset_id = None

    assets = [
        MockAsset("CHAR_01", "CHARACTER", "subject", 8.0, True),
        MockAsset("CHAR_02", "CHARACTER", "subject", 7.0),
        MockAsset("ENV_01", "ENVIRONMENT", "background", 6.0),
        MockAsset("PROP_01", "PROP", "interaction_target", 5.0),
    ]
    manifest_json = {
        "scene_index": 0,
        "composition": {
            "shot_type": "close_up",
            "camera_movement": "static",
            "focal_point": "CHAR_01",
        },
        "placements": [
            {"asset_tag": "CHAR_01", "role": "subject", "position": "center"},
            {"asset_tag": "ENV_01", "role": "background", "position": "background"},
        ],
    }
    result = select_references_for_scene(manifest_json, assets)
    assert [a.manifest_tag for a in result] == ["CHAR_01", "ENV_01"]
    assert result[0].is_face_crop is True
