"""Materialize ``clean_sheet`` in-process: rows, files, checks, fallbacks and the ledger."""

from __future__ import annotations

import io
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from PIL import Image, ImageDraw
from skimage import data as skdata
from sqlalchemy import select

from tests.conftest import SpecWriter
from tests.fixtures.onnx_models import build_u2net_like_model, write_face_pack
from vidpipe_dagster.db.models import (
    Asset,
    AssetCleanReference,
    CleanSheetFaceScore,
    GenerationLedger,
)
from vidpipe_dagster.db.session import session_scope
from vidpipe_dagster.domain.media import png_bytes, sha256_file
from vidpipe_dagster.runner import materialize_project
from vidpipe_dagster.settings import Settings
from vidpipe_dagster.stages.clean_sheet import gray_border_fraction
from vidpipe_dagster.stages.project_import import import_project
from vidpipe_dagster.testing.vertex_emulator import VertexEmulator

KEY = dg.AssetKey(["cast", "clean_sheet"])


def face_png(checkered: bool = False, size: int = 256) -> bytes:
    """A red 'face' square on black, the tiny face pack's detector fires on red squares."""
    image = np.zeros((size, size, 3), np.uint8)
    image[64:192, 64:192] = (255, 0, 0)
    if checkered:
        checks = (np.indices((128, 128)).sum(axis=0) // 16) % 2 == 0
        image[64:192, 64:192][checks] = (255, 255, 0)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def cast_spec(reverse_prompt: str = "a red square hero") -> dict:
    return {
        "project": {"slug": "cast", "name": "Cast"},
        "manifest": {
            "name": "cast",
            "assets": [
                {
                    "id": "hero",
                    "tag": "CHAR_01",
                    "type": "CHARACTER",
                    "image": "img/hero.png",
                    "reverse_prompt": reverse_prompt,
                    "quality_score": 8.0,
                },
                {"id": "ball", "tag": "PROP_01", "type": "PROP", "image": "img/ball.png"},
                {"id": "park", "tag": "ENV_01", "type": "ENVIRONMENT", "image": "img/park.png"},
            ],
        },
        "scenes": [
            {
                "index": 0,
                "prompt": "hero with ball in the park",
                "manifest": {
                    "composition": {"shot_type": "wide_shot"},
                    "placements": [
                        {"asset_tag": "CHAR_01", "role": "subject"},
                        {"asset_tag": "PROP_01", "role": "interaction_target"},
                        {"asset_tag": "ENV_01", "role": "background"},
                    ],
                },
            },
        ],
    }


@pytest.fixture
def cast(settings: Settings, write_spec: SpecWriter, tmp_path: Path) -> Path:
    path = write_spec(cast_spec(), images=False)
    (path.parent / "img").mkdir()
    (path.parent / "img/hero.png").write_bytes(face_png())
    ball = np.full((200, 200, 3), (30, 90, 30), np.uint8)
    yy, xx = np.mgrid[:200, :200]
    ball[(yy - 100) ** 2 + (xx - 100) ** 2 < 60**2] = (250, 250, 250)
    Image.fromarray(ball).save(path.parent / "img/ball.png")
    Image.new("RGB", (120, 80), (90, 160, 60)).save(path.parent / "img/park.png")
    with session_scope(settings.database_url) as session:
        import_project(session, path, settings.media_root)
    return path


def sheets(settings: Settings, key: str) -> list[AssetCleanReference]:
    with session_scope(settings.database_url) as session:
        asset = session.scalars(select(Asset).where(Asset.asset_key == key)).one()
        return list(asset.clean_references)


def run(settings: Settings, instance: dg.DagsterInstance, tags: list[str], **config) -> object:
    [report] = materialize_project(
        "cast",
        ["clean-sheets"],
        partitions=tags,
        instance=instance,
        settings=settings,
        asset_config={"clean_sheet": config} if config else None,
    )
    return report


def latest_metadata(instance: dg.DagsterInstance, tag: str) -> dict:
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=KEY, asset_partitions=[tag]), limit=1
    ).records[0]
    return record.asset_materialization.metadata


def check_description(instance: dg.DagsterInstance, name: str) -> str:
    check_key = dg.AssetCheckKey(KEY, name)
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key([check_key])[
        check_key
    ]
    return record.event.dagster_event.event_specific_data.description or ""


def check_status(instance: dg.DagsterInstance, name: str) -> tuple[str, str | None]:
    check_key = dg.AssetCheckKey(KEY, name)
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key([check_key])[
        check_key
    ]
    evaluation = record.event.dagster_event.event_specific_data  # AssetCheckEvaluation
    return record.status.value, (evaluation.severity.value if not evaluation.passed else None)


def test_tier2_without_weights_uses_the_weight_free_engine_and_keeps_original(
    settings: Settings, cast: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("U2NET_HOME", str(cast.parent / "no-weights-here"))
    settings = settings.replace(models_dir=cast.parent / "no-models-here")
    with session_scope(settings.database_url) as session:
        ball = session.scalars(select(Asset).where(Asset.asset_key == "ball")).one()
        original_url, original_hash = ball.reference_image_url, ball.original_sha256
    report = run(settings, instance, ["PROP_01", "ENV_01"])
    assert report.succeeded == ["ENV_01", "PROP_01"], report.failed
    [sheet] = sheets(settings, "ball")
    assert sheet.tier == "tier2_grabcut" and sheet.is_primary and sheet.generation_cost == 0.0
    assert sheet.face_similarity_score is None
    path = settings.media_root / sheet.clean_image_url
    assert sheet.clean_image_url == f"clean_sheets/tier2_{sheet.asset_id}.png"
    img = np.asarray(Image.open(path).convert("RGB"))
    assert gray_border_fraction(path.read_bytes()) > 0.95
    assert tuple(img[100, 100]) == (250, 250, 250)  # the subject survives
    with session_scope(settings.database_url) as session:
        ball = session.scalars(select(Asset).where(Asset.asset_key == "ball")).one()
        assert ball.reference_image_url == original_url  # never overwritten
        assert sha256_file(settings.media_root / original_url) == original_hash
    assert sheets(settings, "park") == []  # environments keep their original
    meta = latest_metadata(instance, "PROP_01")
    assert "weight-free engine" in meta["background_removal"].value
    assert "data:image/jpeg;base64" in meta["before_after"].value
    assert check_status(instance, "tier2_background_is_neutral_gray") == ("SUCCEEDED", None)
    assert check_status(instance, "original_reference_untouched") == ("SUCCEEDED", None)


def test_tier2_with_a_local_rembg_model(
    settings: Settings,
    cast: Path,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    model = build_u2net_like_model(tmp_path / "tiny_u2net.onnx", gain=12.0, offset=0.5)
    settings = settings.replace(rembg_model_path=str(model))
    assert run(settings, instance, ["PROP_01"]).succeeded == ["PROP_01"]
    [sheet] = sheets(settings, "ball")
    assert sheet.tier == "tier2_rembg"
    png = (settings.media_root / sheet.clean_image_url).read_bytes()
    assert gray_border_fraction(png) > 0.95
    assert "rembg u2net_custom" in latest_metadata(instance, "PROP_01")["background_removal"].value


def test_repeated_runs_keep_exactly_one_primary(
    settings: Settings, cast: Path, instance: dg.DagsterInstance
) -> None:
    for _ in range(3):
        assert run(settings, instance, ["PROP_01"]).succeeded == ["PROP_01"]
    rows = sheets(settings, "ball")
    assert len(rows) == 1 and rows[0].is_primary  # identical output: no duplicate rows
    assert check_status(instance, "exactly_one_primary_clean_sheet") == ("SUCCEEDED", None)


def test_missing_original_fails_that_partition_only(
    settings: Settings, cast: Path, instance: dg.DagsterInstance
) -> None:
    with session_scope(settings.database_url) as session:
        ball = session.scalars(select(Asset).where(Asset.asset_key == "ball")).one()
        (settings.media_root / ball.reference_image_url).unlink()
    report = run(settings, instance, ["PROP_01", "CHAR_01"])
    assert report.succeeded == ["CHAR_01"]
    assert "asset 'ball' reference image" in report.failed["PROP_01"]
    assert "does not exist" in report.failed["PROP_01"]
    assert sheets(settings, "ball") == []
    assert not list((settings.media_root / "clean_sheets").glob("*ball*"))


def test_corrupt_original_fails_clearly_and_leaves_no_file(
    settings: Settings, cast: Path, instance: dg.DagsterInstance
) -> None:
    with session_scope(settings.database_url) as session:
        ball = session.scalars(select(Asset).where(Asset.asset_key == "ball")).one()
        (settings.media_root / ball.reference_image_url).write_bytes(b"\x89PNG broken")
        ball_id = ball.id
    report = run(settings, instance, ["PROP_01"])
    assert "not a decodable image" in report.failed["PROP_01"]
    assert not (settings.media_root / f"clean_sheets/tier2_{ball_id}.png").exists()
    leftovers = (
        list((settings.media_root / "clean_sheets").glob("*.part"))
        if (settings.media_root / "clean_sheets").exists()
        else []
    )
    assert leftovers == []


@pytest.fixture
def face_pack(tmp_path: Path) -> Path:
    """The insightface engine's path through the stage (pack loading, routing, cosine
    thresholds) on the tiny ONNX pack; real identity on real photos is tested with dlib below."""
    root = tmp_path / "insightface"
    write_face_pack(root, "tinypack")
    return root


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """The shared settings, with the tiny face pack when a test asks for ``face_pack``."""
    if "face_pack" in request.fixturenames:
        root = request.getfixturevalue("face_pack")
        return settings.replace(face_model_root=str(root), face_model_pack="tinypack")
    return settings


def ledger_rows(settings: Settings) -> list[GenerationLedger]:
    with session_scope(settings.database_url) as session:
        return list(
            session.scalars(select(GenerationLedger).where(GenerationLedger.kind == "image"))
        )


def test_tier3_passes_face_validation_on_the_first_try(
    settings: Settings,
    cast: Path,
    instance: dg.DagsterInstance,
    face_pack: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with VertexEmulator(image_responder=lambda prompt, image: face_png()) as emu:
        settings = settings.replace(vertex_emulator_host=emu.address)
        assert run(settings, instance, ["CHAR_01"], tier="tier3").succeeded == ["CHAR_01"]
        assert emu.generate_content_count == 1
        [sheet] = sheets(settings, "hero")
        assert sheet.tier == "tier3_gemini" and sheet.is_primary
        assert sheet.face_similarity_score == pytest.approx(1.0, abs=1e-4)
        assert sheet.generation_cost == pytest.approx(0.039)
        assert "#808080" in (sheet.generation_prompt or "")
        assert [r.state for r in ledger_rows(settings)] == ["done"]
        assert check_status(instance, "face_identity_validated") == ("SUCCEEDED", None)
        # a rerun reuses the paid-for sheet: no API call
        assert run(settings, instance, ["CHAR_01"], tier="tier3").succeeded == ["CHAR_01"]
        assert emu.generate_content_count == 1
        assert "reused" in str(latest_metadata(instance, "CHAR_01")["notes"].value)
    with session_scope(settings.database_url) as session:
        hero = session.scalars(select(Asset).where(Asset.asset_key == "hero")).one()
        assert hero.face_embedding is not None  # computed from the original photo


def test_tier3_three_failed_face_checks_fall_back_to_tier2(
    settings: Settings,
    cast: Path,
    instance: dg.DagsterInstance,
    face_pack: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with VertexEmulator(image_responder=lambda prompt, image: face_png(checkered=True)) as emu:
        settings = settings.replace(vertex_emulator_host=emu.address)
        assert run(settings, instance, ["CHAR_01"], tier="tier3").succeeded == ["CHAR_01"]
        assert emu.generate_content_count == 3
    [sheet] = sheets(settings, "hero")
    assert sheet.tier.startswith("tier2")
    assert sheet.generation_cost == 0.0, "the Tier 2 sheet itself is free"
    meta = latest_metadata(instance, "CHAR_01")
    tries = meta["tier3_tries"].value["hero"]
    assert [t["threshold"] for t in tries] == [0.6, 0.6, 0.5]
    assert all(t["outcome"] == "below_threshold" for t in tries)
    assert meta["total_cost_usd"].value == pytest.approx(3 * 0.039)  # the tries, still reported
    assert [r.cost_usd for r in ledger_rows(settings)] == [pytest.approx(0.039)] * 3
    assert check_status(instance, "face_identity_validated") == ("FAILED", "ERROR")


def test_tier3_blocked_by_content_policy_falls_back(
    settings: Settings,
    write_spec: SpecWriter,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    cast: Path,
) -> None:
    with VertexEmulator(blocked_prompt_substrings=["red square hero"]) as emu:
        settings = settings.replace(vertex_emulator_host=emu.address)
        assert run(settings, instance, ["CHAR_01"], tier="tier3").succeeded == ["CHAR_01"]
    [sheet] = sheets(settings, "hero")
    assert sheet.tier.startswith("tier2")
    notes = str(latest_metadata(instance, "CHAR_01")["notes"].value)
    assert "content policy" in notes or "content_policy" in notes
    assert [r.billed for r in ledger_rows(settings)] == [False]


@pytest.mark.parametrize("earlier_embedding", [False, True], ids=["never-embedded", "embedded"])
def test_tier3_without_a_face_model_is_marked_not_validated(
    settings: Settings,
    cast: Path,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    earlier_embedding: bool,
) -> None:
    """Never a silent pass: with or without an embedding from an earlier install, and on reuse."""
    settings = settings.replace(
        face_model_root=str(tmp_path / "no-face-models"), face_engine="none"
    )
    if earlier_embedding:
        with session_scope(settings.database_url) as session:
            hero = session.scalars(select(Asset).where(Asset.asset_key == "hero")).one()
            hero.face_embedding = np.ones(32, np.float32).tobytes()
            hero.face_embedding_engine, hero.face_embedding_metric = "insightface", "cosine"
    with VertexEmulator(image_responder=lambda prompt, image: face_png()) as emu:
        settings = settings.replace(vertex_emulator_host=emu.address)
        for _ in range(2):  # the second run reuses the sheet and must say the same
            assert run(settings, instance, ["CHAR_01"], tier="tier3").succeeded == ["CHAR_01"]
            assert check_status(instance, "face_identity_validated") == ("FAILED", "WARN")
            validation = latest_metadata(instance, "CHAR_01")["face_validation"].value
            assert validation["hero"] == "unavailable"
            description = check_description(instance, "face_identity_validated")
            assert "NOT validated for ['hero']" in description
            assert "face engine 'none' is configured" in description
        assert emu.generate_content_count == 1
    [sheet] = sheets(settings, "hero")
    assert sheet.tier == "tier3_gemini" and sheet.face_similarity_score is None


def test_tier3_props_are_not_face_checked_on_first_run_or_reuse(
    settings: Settings, cast: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = iter(range(100))

    def new_picture_each_call(prompt: str, image: bytes | None) -> bytes:
        return png_bytes(Image.new("RGB", (64, 64), (128, 128, next(calls))))

    with VertexEmulator(image_responder=new_picture_each_call) as emu:
        settings = settings.replace(vertex_emulator_host=emu.address)
        for _ in range(2):
            assert run(settings, instance, ["PROP_01"], tier="tier3").succeeded == ["PROP_01"]
            assert check_status(instance, "face_identity_validated") == ("SUCCEEDED", None)
        assert emu.generate_content_count == 1
        # another image model is another sheet: the reused one was made by the old model
        assert run(
            settings, instance, ["PROP_01"], tier="tier3", image_model="gemini-3-pro-image-preview"
        ).succeeded == ["PROP_01"]
        assert emu.generate_content_count == 2
    assert [r.model for r in ledger_rows(settings)] == [
        "gemini-2.5-flash-image",
        "gemini-3-pro-image-preview",
    ]
    ball = sheets(settings, "ball")
    assert len(ball) == 2 and sum(sheet.is_primary for sheet in ball) == 1


def test_tier3_without_vertex_falls_back_with_the_reason(
    settings: Settings, cast: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(settings, instance, ["PROP_01"], tier="tier3").succeeded == ["PROP_01"]
    assert sheets(settings, "ball")[0].tier.startswith("tier2")
    assert "Vertex is not configured" in str(latest_metadata(instance, "PROP_01")["notes"].value)


def test_tier3_over_budget_stops_before_any_paid_call(
    settings: Settings, cast: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings.replace(budget_per_run_usd=0.1)  # < 3 tries x 0.039
    with VertexEmulator() as emu:
        settings = settings.replace(vertex_emulator_host=emu.address)
        report = run(settings, instance, ["PROP_01"], tier="tier3")
        assert emu.generate_content_count == 0
    error = report.failed["PROP_01"]
    assert "over budget, nothing was generated" in error
    assert "estimated 0.12 USD" in error and "0.10 USD per run" in error
    assert sheets(settings, "ball") == [] and ledger_rows(settings) == []


# --- the set-up's real models: u2netp for Tier 2, dlib for faces --------------------------------


@pytest.fixture
def u2netp(settings: Settings) -> Path:
    """The set-up's u2netp weights (``make models``); their absence is a failure, not a skip."""
    assert settings.models_dir is not None
    weights = settings.models_dir / "u2netp.onnx"
    if not weights.is_file():
        pytest.fail(f"rembg's u2netp is not set up ({weights} is absent): run `make models`")
    return weights


def test_tier2_default_uses_the_real_u2netp_from_the_models_folder(
    settings: Settings, cast: Path, instance: dg.DagsterInstance, u2netp: Path
) -> None:
    assert run(settings, instance, ["PROP_01"]).succeeded == ["PROP_01"]
    [sheet] = sheets(settings, "ball")
    assert sheet.tier == "tier2_rembg"
    assert latest_metadata(instance, "PROP_01")["background_removal"].value == (
        f"rembg u2netp ({u2netp})"
    )
    png = (settings.media_root / sheet.clean_image_url).read_bytes()
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    assert gray_border_fraction(png) > 0.95
    assert np.abs(img[100, 100] - 250).max() <= 12, "the white ball survives"


def test_a_rembg_model_file_that_is_not_onnx_fails_once_naming_the_file(
    settings: Settings, cast: Path, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    """Issue 16: a configuration error, not a transient one: no Dagster retry, one line naming
    the file, nothing written (not even the character's face embedding)."""
    bad = tmp_path / "downloads" / "u2net.onnx"
    bad.parent.mkdir()
    bad.write_text("<html>this download went wrong</html>")
    settings = settings.replace(rembg_model_path=str(bad))
    report = run(settings, instance, ["PROP_01", "CHAR_01"])
    assert report.succeeded == []
    for tag in ("PROP_01", "CHAR_01"):
        message = report.failed[tag]
        assert f"rembg model file {bad.resolve()} cannot be loaded as an ONNX model" in message
        assert "\n" not in message
    runs = instance.get_runs()
    assert len(runs) == 2, "one run per tag"
    retries = [
        event
        for r in runs
        for event in instance.all_logs(r.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
    ]
    assert retries == [], "a model that cannot load is never retried"
    assert sheets(settings, "ball") == [] and sheets(settings, "hero") == []
    assert not list(settings.media_root.glob("clean_sheets/*")), "no file written"
    with session_scope(settings.database_url) as session:
        hero = session.scalars(select(Asset).where(Asset.asset_key == "hero")).one()
        assert hero.face_embedding is None


def test_a_flat_photo_keeps_its_original_without_running_grabcut(
    settings: Settings,
    cast: Path,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 16: GrabCut stalls on a single-colour photo (minutes); it must never see one."""
    import cv2

    def stalled(*args: object) -> None:
        raise AssertionError("GrabCut ran on a photo with nothing to separate")

    monkeypatch.setattr(cv2, "grabCut", stalled)
    settings = settings.replace(models_dir=cast.parent / "no-models-here")  # GrabCut engine
    with session_scope(settings.database_url) as session:
        ball = session.scalars(select(Asset).where(Asset.asset_key == "ball")).one()
        Image.new("RGB", (320, 180), (40, 120, 200)).save(
            settings.media_root / ball.reference_image_url
        )
    assert run(settings, instance, ["PROP_01"]).succeeded == ["PROP_01"]
    assert sheets(settings, "ball") == []
    [note] = latest_metadata(instance, "PROP_01")["notes"].value["ball"]
    assert "nothing to separate, 100.0% of the image is one flat colour #2878c8" in note
    assert "no engine ran; the original photo stays the reference" in note


@pytest.fixture
def astronaut_cast(settings: Settings, write_spec: SpecWriter) -> Path:
    """The cast with scikit-image's public-domain astronaut photo as the hero."""
    path = write_spec(cast_spec("astronaut, orange flight suit"), folder="astro", images=False)
    (path.parent / "img").mkdir()
    Image.fromarray(skdata.astronaut()).save(path.parent / "img/hero.png")
    Image.new("RGB", (64, 64), (30, 90, 30)).save(path.parent / "img/ball.png")
    Image.new("RGB", (64, 64), (90, 160, 60)).save(path.parent / "img/park.png")
    with session_scope(settings.database_url) as session:
        import_project(session, path, settings.media_root)
    return path


def _gray_composite_of_the_astronaut() -> bytes:
    """What a good clean sheet looks like: her, over #808080, at another size."""
    photo = Image.fromarray(skdata.astronaut()).resize((384, 384))
    gray = Image.new("RGB", photo.size, (128, 128, 128))
    mask = Image.new("L", photo.size, 0)
    ImageDraw.Draw(mask).ellipse((40, 0, 300, 384), fill=255)
    gray.paste(photo, (0, 0), mask)
    return png_bytes(gray)


@pytest.mark.slow
def test_tier3_is_validated_by_dlib_on_a_real_face(
    settings: Settings, astronaut_cast: Path, instance: dg.DagsterInstance
) -> None:
    assert settings.face_engine == "auto"  # no insightface pack here: auto picks dlib
    with VertexEmulator(
        image_responder=lambda prompt, image: _gray_composite_of_the_astronaut()
    ) as emu:
        settings = settings.replace(vertex_emulator_host=emu.address)
        assert run(settings, instance, ["CHAR_01"], tier="tier3").succeeded == ["CHAR_01"]
        assert emu.generate_content_count == 1
    with session_scope(settings.database_url) as session:
        hero = session.scalars(select(Asset).where(Asset.asset_key == "hero")).one()
        assert (hero.face_embedding_engine, hero.face_embedding_metric) == ("dlib", "euclidean")
        assert hero.face_embedding is not None and len(hero.face_embedding) == 128 * 4
        [sheet] = list(hero.clean_references)
        [score] = session.scalars(
            select(CleanSheetFaceScore).where(CleanSheetFaceScore.clean_reference_id == sheet.id)
        ).all()
    assert sheet.tier == "tier3_gemini"
    assert (score.engine, score.metric, score.threshold, score.passed) == (
        "dlib",
        "euclidean",
        0.6,
        True,
    )
    assert sheet.face_similarity_score == pytest.approx(score.score)
    assert score.score < 0.3, "the same photo over gray is very close on dlib's scale"
    assert check_status(instance, "face_identity_validated") == ("SUCCEEDED", None)
    assert f"hero validated by dlib (distance {score.score:.2f} ≤ 0.60)" in check_description(
        instance, "face_identity_validated"
    )


@pytest.mark.slow
def test_tier3_of_another_person_is_rejected_by_dlib_and_falls_back(
    settings: Settings, astronaut_cast: Path, instance: dg.DagsterInstance
) -> None:
    camera_man = png_bytes(Image.fromarray(skdata.camera()).convert("RGB"))
    with VertexEmulator(image_responder=lambda prompt, image: camera_man) as emu:
        settings = settings.replace(vertex_emulator_host=emu.address)
        assert run(settings, instance, ["CHAR_01"], tier="tier3").succeeded == ["CHAR_01"]
        assert emu.generate_content_count == 3
    [sheet] = sheets(settings, "hero")
    assert sheet.tier.startswith("tier2") and sheet.face_similarity_score is None
    tries = latest_metadata(instance, "CHAR_01")["tier3_tries"].value["hero"]
    assert [(t["engine"], t["metric"], t["threshold"]) for t in tries] == [
        ("dlib", "euclidean", 0.6),
        ("dlib", "euclidean", 0.6),
        ("dlib", "euclidean", 0.62),
    ]
    assert all(t["outcome"] == "below_threshold" and t["score"] > 0.62 for t in tries)
    assert check_status(instance, "face_identity_validated") == ("FAILED", "ERROR")
    assert "rejected by dlib (distance" in check_description(instance, "face_identity_validated")
