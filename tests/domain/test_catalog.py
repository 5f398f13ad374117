"""The model catalog: the packaged file says what issue 11 lists, and a bad file is refused with
the entry and field to fix."""

from __future__ import annotations

import copy
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from vidpipe_dagster.domain.catalog import (
    PACKAGED_CATALOG,
    CatalogError,
    ModelChoiceError,
    catalog_from_data,
    load_catalog,
    packaged_catalog,
)

CATALOG = packaged_catalog()
V31, FAST, LITE = "veo-3.1-generate-001", "veo-3.1-fast-generate-001", "veo-3.1-lite-generate-001"


def raw() -> dict[str, Any]:
    """The packaged file as parsed YAML (a fresh copy to spoil)."""
    path = Path(__file__).parents[2] / "vidpipe_dagster" / "domain" / PACKAGED_CATALOG
    return copy.deepcopy(yaml.safe_load(path.read_text(encoding="utf-8")))


# (model, status, retired on, takes references, 4k, last frame)
LIFECYCLES = [
    (V31, "ga", None, True, True, True),
    (FAST, "ga", None, True, True, True),
    (LITE, "preview", None, False, False, False),
    ("veo-3.1-generate-preview", "retired", date(2026, 10, 22), True, False, True),
    ("veo-3.1-fast-generate-preview", "retired", date(2026, 10, 22), True, False, True),
    ("veo-3.0-generate-001", "retired", date(2026, 6, 30), False, False, False),
    ("veo-3.0-fast-generate-001", "retired", date(2026, 6, 30), False, False, False),
    ("veo-2.0-generate-001", "retired", date(2026, 6, 30), False, False, True),
]


@pytest.mark.parametrize(("model", "status", "retired_on", "refs", "four_k", "last"), LIFECYCLES)
def test_video_lifecycles_and_capabilities(
    model: str, status: str, retired_on: date | None, refs: bool, four_k: bool, last: bool
) -> None:
    entry = CATALOG.video_models[model]
    assert (entry.lifecycle.status, entry.lifecycle.retired_on) == (status, retired_on)
    assert entry.supports_references == refs
    assert ("4k" in entry.resolutions) == four_k
    assert entry.last_frame == last
    assert entry.max_samples == 4
    assert entry.lifecycle.retired(date(2026, 12, 2)) == (status == "retired")


def test_eight_seconds_with_references_and_at_1080p_and_4k() -> None:
    for model in (V31, FAST):
        entry = CATALOG.video_models[model]
        assert entry.allowed_durations("720p", with_references=False) == (4, 6, 8)
        assert entry.allowed_durations("720p", with_references=True) == (8,)
        assert entry.allowed_durations("1080p", with_references=False) == (8,)
        assert entry.allowed_durations("4k", with_references=False) == (8,)


@pytest.mark.parametrize(
    ("model", "kwargs", "expected"),
    [
        (V31, {"resolution": "4k", "takes": 4}, []),
        (LITE, {"resolution": "4k"}, ["does not offer resolution 4k (it offers 720p, 1080p)"]),
        (V31, {"takes": 5}, ["1 to 4 takes per request, not 5"]),
        (LITE, {"resolution": "4k", "takes": 9}, ["resolution 4k", "not 9"]),
        ("veo-3.0-generate-001", {}, ["retired on 2026-06-30 (use veo-3.1-generate-001)"]),
        ("veo-9", {}, [f"unknown video model 'veo-9'; known models: {FAST}, {V31}, {LITE}"]),
        ("gemini-omni-1.1-flash", {}, ["not supported yet"]),
    ],
)
def test_why_a_choice_is_invalid(model: str, kwargs: dict[str, Any], expected: list[str]) -> None:
    """One problem per reason, each saying what is wrong (the import shows them verbatim)."""
    problems = CATALOG.video_choice_problems(model, today=date(2026, 12, 2), **kwargs)
    assert len(problems) == len(expected), problems
    for problem, words in zip(problems, expected, strict=True):
        assert words in problem
    if model.startswith("gemini-omni"):
        assert "VIDPIPE_MODEL_CATALOG" in problems[0]


def test_a_retirement_date_announced_ahead_applies_from_that_day() -> None:
    data = raw()
    data["video_models"][V31]["retired_on"] = date(2027, 3, 1)
    catalog = catalog_from_data(data)
    entry = catalog.video_models[V31]
    assert not entry.lifecycle.retired(date(2027, 2, 28))
    assert entry.lifecycle.describe(date(2027, 2, 28)) == "GA, retires on 2027-03-01"
    with pytest.raises(ModelChoiceError, match="retired on 2027-03-01"):
        catalog.video_model(V31, today=date(2027, 3, 1))


def test_retired_models_keep_a_price_for_old_ledger_rows() -> None:
    assert CATALOG.video_price_per_second("veo-3.0-generate-001", "720p", True) == 0.40
    assert CATALOG.video_price_per_second("veo-2.0-generate-001", "720p", True) == 0.50
    with pytest.raises(ModelChoiceError, match="no price for video model 'veo-9'"):
        CATALOG.video_price_per_second("veo-9", "720p", True)
    assert CATALOG.highest_video_price_per_second("720p") == 0.50
    assert CATALOG.highest_video_price_per_second("4k") == 0.60


@pytest.mark.parametrize(
    ("model", "inputs", "size", "price"),
    [
        ("gemini-2.5-flash-image", 3, None, 0.039),
        ("gemini-3.1-flash-image", 14, "512", 0.045),
        ("gemini-3.1-flash-image", 14, "4K", 0.151),
        ("gemini-3-pro-image", 14, "1K", 0.134),
        ("gemini-3-pro-image", 14, "2K", 0.134),
    ],
)
def test_image_models(model: str, inputs: int, size: str | None, price: float) -> None:
    entry = CATALOG.image_model(model)
    assert entry.max_input_images == inputs
    assert entry.price(size) == price
    with pytest.raises(ModelChoiceError, match="no price for"):
        entry.price("8K")
    with pytest.raises(ModelChoiceError, match="unknown image model 'imagen-4'"):
        CATALOG.image_model("imagen-4")


CATEGORY_CASES = [
    ("58061214", "child", False),
    ("17301594", "child", False),
    ("29310472", "celebrity", False),
    ("15236754", "celebrity", False),
    ("64151117", "video_safety", True),
    ("62263041", "dangerous", True),
    ("57734940", "hate", True),
    ("74803281", "other", True),
    ("89371032", "prohibited", False),
    ("60599140", "prohibited", False),
    ("35561574", "third_party", False),
    ("90789179", "sexual", True),
    ("78610348", "toxic", True),
    ("61493863", "violence", True),
    ("32635315", "vulgar", True),
    ("11111111", "other", True),  # a code the page does not list
]


@pytest.mark.parametrize(("code", "category", "fixable"), CATEGORY_CASES)
def test_support_codes_map_to_categories(code: str, category: str, fixable: bool) -> None:
    verdict = CATALOG.classify_filter("blocked", [code])
    assert [c.key for c in verdict.categories] == [category]
    assert (not verdict.unfixable) == fixable
    assert not verdict.audio_only
    assert code in verdict.describe()
    if not fixable:
        assert verdict.advice()


def test_the_twelve_categories_of_the_issue() -> None:
    names = sorted(c.name for c in CATALOG.categories.values())
    assert names == sorted(
        [
            "Child",
            "Celebrity",
            "Video safety violation",
            "Dangerous content",
            "Hate",
            "Prohibited content",
            "Third-party content",
            "Sexual",
            "Toxic",
            "Violence",
            "Vulgar",
            "Other",
        ]
    )
    unfixable = sorted(k for k, c in CATALOG.categories.items() if not c.prompt_rewrite_fixes)
    assert unfixable == ["celebrity", "child", "prohibited", "third_party"]


def test_the_audio_filter_has_no_code_and_a_reason_about_audio() -> None:
    assert CATALOG.classify_filter("Veo could not generate audio for this video", []).audio_only
    assert not CATALOG.classify_filter(
        "audio blocked. Support codes: 62263041", ["62263041"]
    ).audio_only
    assert not CATALOG.classify_filter("the prompt was blocked", []).audio_only
    assert CATALOG.classify_filter("the prompt was blocked", []).describe() == "no category given"


def spoil(path: list[Any], value: Any) -> dict[str, Any]:
    data = raw()
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["catalog_version"], 2, "catalog_version: expected 1, got 2"),
        (["video_models", V31, "durations"], [], f"video_models.{V31}.durations: expected"),
        (["video_models", V31, "status"], "beta", f"video_models.{V31}.status: expected one of"),
        (["video_models", V31, "max_samples"], 0, f"video_models.{V31}.max_samples: expected"),
        (["video_models", V31, "price_per_second", "4k"], KeyError, "4k: every resolution needs"),
        (
            ["video_models", V31, "price_per_second", "720p", "audio"],
            -1,
            "720p.audio: expected a price in USD >= 0",
        ),
        (["video_models", V31, "audio"], "yes", f"video_models.{V31}.audio: expected true"),
        (["video_models", V31, "speed"], "fast", f"video_models.{V31}.speed: unknown field"),
        (
            ["video_models", V31, "fixed_duration", "reference_images"],
            7,
            "not one of the durations",
        ),
        (["video_models", "veo-3.0-generate-001", "retired_on"], KeyError, "needs its retirement"),
        (["image_models", "gemini-3-pro-image", "default_size"], "8K", "'8K' has no price"),
        (["safety_categories", "child", "what_to_change"], KeyError, "required when a rewrite"),
        (["safety_categories", "hate", "codes"], ["58061214"], "also listed in child"),
        (["safety_categories", "other"], KeyError, "safety_categories.other: required"),
        (["audio_filter", "reason_patterns"], ["("], "not a regular expression"),
    ],
)
def test_a_bad_catalog_names_the_entry_and_field(path: list[Any], value: Any, message: str) -> None:
    with pytest.raises(CatalogError) as caught:
        catalog_from_data(spoil(path, value), source="my-catalog.yaml")
    assert "model catalog my-catalog.yaml is invalid" in str(caught.value)
    assert message in str(caught.value)


def test_a_user_catalog_file_replaces_the_packaged_one(tmp_path: Path) -> None:
    data = raw()
    data["video_models"]["veo-3.1-fast-generate-001"]["price_per_second"]["720p"]["audio"] = 0.15
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    mine = load_catalog(path)
    assert mine.source == str(path)
    assert mine.video_price_per_second(FAST, "720p", True) == 0.15
    assert CATALOG.video_price_per_second(FAST, "720p", True) == 0.10
    (tmp_path / "broken.yaml").write_text("video_models: [", encoding="utf-8")
    with pytest.raises(CatalogError, match=r"broken\.yaml is not valid YAML"):
        load_catalog(tmp_path / "broken.yaml")
    with pytest.raises(CatalogError, match="cannot read the model catalog"):
        load_catalog(tmp_path / "missing.yaml")
