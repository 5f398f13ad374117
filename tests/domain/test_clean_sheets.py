"""Clean sheets, Tier 2 through real rembg / OpenCV code and Tier 3's retry and validation rules.

rembg runs its own session classes and ``remove`` on a tiny u2net-shaped ONNX model built in
tests/fixtures; Tier 3 uses a scripted ``ImageClient`` and deterministic embedders (its HTTP
path is tested against the Vertex emulator elsewhere).
"""

from __future__ import annotations

import asyncio
import io
import random
import socket
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from tests.fixtures.onnx_models import build_u2net_like_model, write_face_pack
from vidpipe_dagster.domain import clean_sheets
from vidpipe_dagster.domain.clean_sheets import (
    TIER2_GRABCUT,
    TIER2_REMBG,
    BackgroundModelError,
    CleanSheetError,
    GrabCutRemover,
    NothingToSeparate,
    RembgRemover,
    Tier3Outcome,
    build_conditioning_prompt,
    choose_background_remover,
    composite_on_gray,
    flat_colour_share,
    make_tier2_clean_sheet,
    threshold_for_try,
)
from vidpipe_dagster.domain.faces import load_face_analyzer
from vidpipe_dagster.domain.identity import FaceEmbedding
from vidpipe_dagster.domain.media import MediaError, read_image_bytes
from vidpipe_dagster.generation.client import GenerationApiError
from vidpipe_dagster.generation.tier3 import MAY_BE_BILLED, generate_tier3_clean_sheet
from vidpipe_dagster.generation.vertex import VertexImageClient, make_genai_client
from vidpipe_dagster.settings import Settings
from vidpipe_dagster.testing.vertex_emulator import VertexEmulator

GRAY = np.array([128, 128, 128])


def encode(image: Image.Image | np.ndarray, fmt: str = "PNG", **save: object) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image.astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.mode == "RGB"
    return np.asarray(image).astype(int)


def subject_on_texture(width: int = 240, height: int = 200, seed: int = 0) -> np.ndarray:
    """A light figure (head and body) on a dark, noisy, striped background."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 50, (height, width, 3)).astype(np.uint8)
    image[::9, :] = (20, 70, 30)
    yy, xx = np.mgrid[:height, :width]
    cx, cy = width // 2, height // 2
    body = ((xx - cx) / (width * 0.18)) ** 2 + ((yy - cy - 20) / (height * 0.3)) ** 2 <= 1
    head = (xx - cx) ** 2 + (yy - cy + 50) ** 2 <= 22**2
    image[body] = (235, 200, 170)
    image[head] = (250, 225, 200)
    return image


def border(pixels: np.ndarray, width: int = 3) -> np.ndarray:
    return np.concatenate(
        [
            pixels[:width].reshape(-1, 3),
            pixels[-width:].reshape(-1, 3),
            pixels[:, :width].reshape(-1, 3),
            pixels[:, -width:].reshape(-1, 3),
        ]
    )


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def rembg_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty rembg home for this test only (rembg reads these variables on every lookup)."""
    home = tmp_path / "rembg_home"
    home.mkdir()
    monkeypatch.delenv("U2NET_HOME", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("REMBG_HOME", str(home))
    monkeypatch.setenv("HOME", str(tmp_path / "user_home"))
    return home


@pytest.fixture(scope="module")
def u2net_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_u2net_like_model(tmp_path_factory.mktemp("u2net") / "u2net_tiny.onnx")


# --- Tier 2: compositing -------------------------------------------------------------------------


def test_composite_on_gray_uses_alpha() -> None:
    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(200, 10, 10, 255), (200, 10, 10, 0), (0, 0, 0, 128)])
    out = composite_on_gray(rgba)
    assert out.mode == "RGB"
    assert [out.getpixel((x, 0)) for x in range(3)] == [
        (200, 10, 10),
        (128, 128, 128),
        (64, 64, 64),
    ]


# --- Tier 2: rembg's real code path on a tiny u2net-shaped model --------------------------------


def test_rembg_puts_the_subject_on_neutral_gray(u2net_file: Path, no_network: None) -> None:
    original = subject_on_texture()
    remover = RembgRemover("u2net_custom", u2net_file)
    result = make_tier2_clean_sheet(encode(original), remover, label="img/mia.png")

    assert (result.tier_label, result.engine, result.model) == (
        TIER2_REMBG,
        "rembg",
        "u2net_custom:u2net_tiny.onnx",
    )
    out = decode(result.png_bytes)
    assert out.shape == original.shape
    assert np.abs(border(out) - GRAY).max() <= 12, "background replaced by #808080"
    centre = (slice(95, 125), slice(105, 135))
    assert np.abs(out[centre] - original[centre].astype(int)).max() <= 6, "subject kept"
    assert 0.1 < result.subject_fraction < 0.5
    assert "subject covers" in result.note


def test_rembg_session_is_created_once_per_process(u2net_file: Path) -> None:
    first = clean_sheets._rembg_session("u2net_custom", u2net_file.resolve())
    again = clean_sheets._rembg_session("u2net_custom", u2net_file.resolve())
    assert first is again
    RembgRemover("u2net_custom", u2net_file).remove(Image.fromarray(subject_on_texture()))
    assert clean_sheets._rembg_session("u2net_custom", u2net_file.resolve()) is first


def test_named_rembg_model_found_in_rembg_home_runs_without_download(
    rembg_home: Path, u2net_file: Path, no_network: None
) -> None:
    weights = rembg_home / "models" / "u2net" / "u2net.onnx"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(u2net_file.read_bytes())

    remover, note = choose_background_remover("u2net")
    assert isinstance(remover, RembgRemover)
    assert (remover.model, remover.tier_label) == ("u2net", TIER2_REMBG)
    assert str(weights) in note
    out = decode(make_tier2_clean_sheet(encode(subject_on_texture()), remover).png_bytes)
    assert np.abs(border(out) - GRAY).max() <= 12


def test_legacy_u2net_home_is_honoured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, u2net_file: Path
) -> None:
    legacy = tmp_path / "u2net_home"
    legacy.mkdir()
    (legacy / "u2netp.onnx").write_bytes(u2net_file.read_bytes())
    monkeypatch.setenv("U2NET_HOME", str(legacy))
    remover, _ = choose_background_remover("u2netp")
    assert isinstance(remover, RembgRemover) and remover.model == "u2netp"


@pytest.mark.parametrize(
    ("model", "path", "expected_in_note"),
    [
        ("u2net", None, "weights for 'u2net' are absent"),
        ("no-such-model", None, "no model named 'no-such-model'"),
        ("atlascloud", None, "remote service"),
        ("u2net_custom", None, "needs VIDPIPE_REMBG_MODEL_PATH"),
        ("u2net", "/nonexistent/u2net.onnx", "/nonexistent/u2net.onnx does not exist"),
    ],
)
def test_without_rembg_weights_the_weight_free_engine_is_chosen_and_said(
    rembg_home: Path, no_network: None, model: str, path: str | None, expected_in_note: str
) -> None:
    remover, note = choose_background_remover(model, path)
    assert isinstance(remover, GrabCutRemover)
    assert remover.tier_label == TIER2_GRABCUT
    assert expected_in_note in note
    assert "weight-free engine" in note
    assert not any(rembg_home.rglob("*")), "nothing downloaded into rembg's home"


def test_local_model_file_anywhere_is_used_from_the_environment(
    rembg_home: Path, u2net_file: Path, tmp_path: Path
) -> None:
    configured = Settings.from_env({"VIDPIPE_REMBG_MODEL_PATH": str(u2net_file)})
    remover, note = choose_background_remover(
        configured.rembg_model, configured.rembg_model_path, configured.models_dir
    )
    assert isinstance(remover, RembgRemover)
    assert remover.model == "u2net_custom:u2net_tiny.onnx"
    assert str(u2net_file) in note
    empty = Settings.from_env({"VIDPIPE_MODELS_DIR": str(tmp_path / "no-models")})
    remover, note = choose_background_remover(
        empty.rembg_model, empty.rembg_model_path, empty.models_dir
    )
    assert isinstance(remover, GrabCutRemover), "no u2netp in the models folder or rembg's home"
    assert str(tmp_path / "no-models" / "u2netp.onnx") in note


def test_the_models_folder_is_where_a_named_model_is_found_first(
    rembg_home: Path, u2net_file: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "u2netp.onnx").write_bytes(u2net_file.read_bytes())
    settings = Settings.from_env({"VIDPIPE_MODELS_DIR": str(folder)})
    assert (settings.rembg_model, settings.models_dir) == ("u2netp", folder.resolve())
    remover, note = choose_background_remover(
        settings.rembg_model, settings.rembg_model_path, settings.models_dir
    )
    assert isinstance(remover, RembgRemover)
    assert (remover.model, remover.model_file) == ("u2netp", (folder / "u2netp.onnx").resolve())
    assert f"rembg u2netp ({folder.resolve() / 'u2netp.onnx'})" == note


# --- Tier 2: the weight-free GrabCut engine ------------------------------------------------------


def test_grabcut_puts_a_figure_on_gray_and_keeps_it() -> None:
    original = subject_on_texture()
    result = make_tier2_clean_sheet(encode(original), GrabCutRemover(), note="rembg absent")
    assert (result.tier_label, result.engine, result.model) == (
        "tier2_grabcut",
        "grabcut",
        "opencv-grabcut",
    )
    assert len(result.tier_label) <= 20, "fits AssetCleanReference.tier"
    assert result.note.startswith("rembg absent; subject covers")
    out = decode(result.png_bytes)
    assert np.abs(border(out, 6) - GRAY).max() == 0
    centre = (slice(95, 125), slice(105, 135))
    assert np.abs(out[centre] - original[centre].astype(int)).max() == 0
    yy, xx = np.mgrid[:200, :240]
    body = ((xx - 120) / (240 * 0.18)) ** 2 + ((yy - 120) / (200 * 0.3)) ** 2 <= 1
    head = (xx - 120) ** 2 + (yy - 50) ** 2 <= 22**2
    figure_share = float((body | head).mean())
    assert result.subject_fraction == pytest.approx(figure_share, rel=0.2)


def test_grabcut_on_a_real_photo_grays_the_wall_and_keeps_the_face() -> None:
    photo = np.asarray(Image.fromarray(skdata.astronaut()).resize((256, 256)))
    result = make_tier2_clean_sheet(encode(photo), GrabCutRemover(max_side=256))
    out = decode(result.png_bytes)
    assert np.abs(out[2:20, 2:40] - GRAY).max() == 0, "top-left corner is background"
    face = (slice(40, 70), slice(95, 120))
    assert np.abs(out[face] - photo[face].astype(int)).mean() < 2
    assert 0.2 < result.subject_fraction < 0.6


def test_grabcut_work_is_bounded_on_large_images(monkeypatch: pytest.MonkeyPatch) -> None:
    import cv2

    seen: list[tuple[int, ...]] = []
    real_grabcut = cv2.grabCut

    def recording_grabcut(image: np.ndarray, *args: object) -> object:
        seen.append(image.shape)
        return real_grabcut(image, *args)

    monkeypatch.setattr(cv2, "grabCut", recording_grabcut)
    big = np.asarray(Image.fromarray(subject_on_texture()).resize((2400, 2000)))
    result = make_tier2_clean_sheet(encode(big, "JPEG", quality=90), GrabCutRemover(max_side=256))
    assert seen and all(max(shape[:2]) <= 256 for shape in seen), seen
    out = decode(result.png_bytes)
    assert out.shape == big.shape, "full resolution kept, only the mask was computed small"
    assert np.abs(border(out, 20) - GRAY).max() == 0


def flat_photos() -> dict[str, bytes]:
    """Single-colour photos as a careless user would supply them (issue 16's 320x180 case)."""
    colour = (40, 120, 200)
    flat = np.full((180, 320, 3), colour, np.uint8)
    noise = np.random.default_rng(3).integers(-2, 3, flat.shape)
    return {
        "png": encode(flat),
        "jpeg": encode(flat, "JPEG", quality=80),
        "sensor-noise": encode(np.clip(flat.astype(int) + noise, 0, 255)),
    }


@pytest.mark.parametrize("kind", ["png", "jpeg", "sensor-noise"])
def test_a_flat_photo_is_refused_before_grabcut_runs(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: GrabCut stalls for minutes on one colour; it must not even be called."""
    import cv2

    def stalled(*args: object) -> None:
        raise AssertionError("cv2.grabCut was called on a photo with nothing to separate")

    monkeypatch.setattr(cv2, "grabCut", stalled)
    data = flat_photos()[kind]
    with pytest.raises(NothingToSeparate, match=r"img/wall\.png: nothing to separate, 100\.0%"):
        make_tier2_clean_sheet(data, GrabCutRemover(), label="img/wall.png")
    with pytest.raises(NothingToSeparate):  # the engine guards itself too
        GrabCutRemover().mask(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


def test_a_small_subject_on_a_flat_background_still_reaches_the_engine() -> None:
    image = np.full((180, 320, 3), (40, 120, 200), np.uint8)
    image[70:110, 140:180] = (250, 240, 220)  # about 3% of the photo
    result = make_tier2_clean_sheet(encode(image), GrabCutRemover())
    assert 0.01 < result.subject_fraction < 0.08
    assert flat_colour_share(image)[0] == pytest.approx(1 - 1600 / (180 * 320), abs=0.01)


def test_grabcut_work_is_bounded_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16: the default engine's input size and rounds are bounded, whatever the photo."""
    import cv2

    calls: list[tuple[tuple[int, ...], int]] = []
    real_grabcut = cv2.grabCut

    def recording_grabcut(image: np.ndarray, *args: object) -> object:
        rounds = args[4]  # mask, rect, bgd_model, fgd_model, iterCount, mode
        assert isinstance(rounds, int)
        calls.append((image.shape, rounds))
        return real_grabcut(image, *args)

    monkeypatch.setattr(cv2, "grabCut", recording_grabcut)
    big = np.asarray(Image.fromarray(subject_on_texture()).resize((1920, 1600)))
    make_tier2_clean_sheet(encode(big, "JPEG", quality=90), GrabCutRemover())
    [(shape, rounds)] = calls
    assert max(shape[:2]) <= 384 and rounds <= 4


def test_a_model_file_that_is_not_onnx_is_a_configuration_error(tmp_path: Path) -> None:
    """Issue 16: a distinct error naming the file, raised when the model is loaded (the stage
    turns it into a failure Dagster does not retry)."""
    bad = tmp_path / "u2net.onnx"
    bad.write_text("<html>not a model</html>")
    remover, note = choose_background_remover("u2net", bad)
    assert isinstance(remover, RembgRemover) and str(bad) in note
    with pytest.raises(BackgroundModelError) as error:
        remover.load()
    message = str(error.value)
    assert f"rembg model file {bad.resolve()} cannot be loaded as an ONNX model" in message
    assert "\n" not in message
    assert not isinstance(error.value, CleanSheetError), "never mistaken for a bad photo"
    with pytest.raises(BackgroundModelError):
        make_tier2_clean_sheet(encode(subject_on_texture()), remover)


def test_exif_rotation_is_applied_before_removal() -> None:
    original = Image.fromarray(subject_on_texture())  # 240 x 200
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    result = make_tier2_clean_sheet(encode(original, "JPEG", exif=exif), GrabCutRemover())
    assert Image.open(io.BytesIO(result.png_bytes)).size == (200, 240)


class TransparentRemover:
    """An engine that keeps nothing (what a model does when it sees no subject)."""

    name, model, tier_label = "rembg", "none", TIER2_REMBG

    def load(self) -> None:
        pass

    def remove(self, image: Image.Image) -> Image.Image:
        return Image.new("RGBA", image.size, (0, 0, 0, 0))


def test_a_blank_result_is_refused_not_stored() -> None:
    with pytest.raises(CleanSheetError, match=r"img/mia\.png: rembg separated no subject"):
        make_tier2_clean_sheet(
            encode(subject_on_texture()), TransparentRemover(), label="img/mia.png"
        )
    checkers = (np.indices((4, 4)).sum(axis=0) % 2 * 200)[:, :, None].repeat(3, axis=2)
    with pytest.raises(CleanSheetError, match="too small"):
        make_tier2_clean_sheet(encode(checkers), GrabCutRemover())


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image at all", encode(subject_on_texture())[:300]],
    ids=["empty", "text", "truncated-png"],
)
def test_corrupt_input_raises_media_error_naming_the_file(data: bytes, u2net_file: Path) -> None:
    for remover in (GrabCutRemover(), RembgRemover("u2net_custom", u2net_file)):
        with pytest.raises(MediaError, match=r"img/mia\.png"):
            make_tier2_clean_sheet(data, remover, label="img/mia.png")


def test_missing_input_file_raises_media_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match=r"mia\.png does not exist"):
        read_image_bytes(tmp_path / "img" / "mia.png", label="CHAR_01 reference")


# --- Tier 3: prompt and thresholds ---------------------------------------------------------------


def test_threshold_table_belongs_to_the_engine() -> None:
    assert [threshold_for_try(n) for n in (1, 2, 3)] == [0.6, 0.6, 0.5]
    assert [threshold_for_try(n, "insightface") for n in (1, 2, 3, 4)] == [0.6, 0.6, 0.5, 0.5]
    assert [threshold_for_try(n, "dlib") for n in (1, 2, 3)] == [0.6, 0.6, 0.62]
    with pytest.raises(ValueError):
        threshold_for_try(0)
    with pytest.raises(ValueError, match="no thresholds"):
        threshold_for_try(1, "arcface-somewhere")


def test_conditioning_prompt_carries_the_plan_directives() -> None:
    prompt = build_conditioning_prompt("young woman, red coat, freckles", "CHARACTER", "Mia")
    for directive in (
        "young woman, red coat, freckles",
        "'Mia'",
        "#808080",
        "studio lighting",
        "No occlusion",
        "front-facing",
        "full-body",
        "distinguishing feature",
    ):
        assert directive in prompt
    prop = build_conditioning_prompt(None, "PROP", None)
    assert "#808080" in prop and "front-facing" not in prop and "Description" not in prop
    env = build_conditioning_prompt("a park at dusk", "ENVIRONMENT", "Park")
    assert "#808080" not in env and "unobstructed" in env


# --- Tier 3: retries and validation --------------------------------------------------------------


def solid(colour: tuple[int, int, int], mode: str = "RGB") -> bytes:
    return encode(Image.new(mode, (16, 16), colour if mode == "RGB" else (*colour, 128)))


def unit(score: float) -> np.ndarray:
    """A vector whose cosine with STORED is exactly ``score``."""
    return np.array([score, np.sqrt(1.0 - score**2)], dtype=np.float32)


STORED = FaceEmbedding(np.array([1.0, 0.0], dtype=np.float32), "insightface", "cosine")
INPUT = solid((10, 20, 30))


class ColourEmbedder:
    """Deterministic stand-in for an insightface engine: the image's colour decides the 'face'
    (the loop's rules are under test here; real engines run in test_identity.py)."""

    name = "insightface"
    metric = "cosine"

    def __init__(self, faces: dict[tuple[int, int, int], float | None]) -> None:
        self.faces = faces
        self.seen: list[tuple[int, int, int]] = []

    def detect(self, rgb: np.ndarray) -> list:
        raise AssertionError("the Tier 3 loop embeds whole images")

    def embed_face(self, image_bytes: bytes) -> FaceEmbedding | None:
        image = Image.open(io.BytesIO(image_bytes))
        assert image.format == "PNG" and image.mode == "RGB", "validated on the re-encoded PNG"
        colour = image.getpixel((0, 0))
        self.seen.append(colour)
        score = self.faces[colour]
        return None if score is None else FaceEmbedding(unit(score), "insightface", "cosine")


class ScriptedImageClient:
    """An ``ImageClient`` replaying a script of images and errors; records every request."""

    backend = "scripted"

    def __init__(self, script: Sequence[bytes | GenerationApiError]) -> None:
        self.script = list(script)
        self.requests: list[dict[str, object]] = []

    async def generate_image(
        self, *, model: str, prompt: str, image: bytes, mime_type: str
    ) -> bytes:
        self.requests.append(
            {"model": model, "prompt": prompt, "image": image, "mime_type": mime_type}
        )
        step = self.script.pop(0)
        if isinstance(step, GenerationApiError):
            raise step
        return step


RED, GREEN, BLUE, NOFACE = (200, 0, 0), (0, 200, 0), (0, 0, 200), (90, 90, 90)


def run_tier3(
    script: Sequence[bytes | GenerationApiError],
    *,
    embedder: ColourEmbedder | None = None,
    stored: FaceEmbedding | None = STORED,
    sleeps: list[float] | None = None,
    **kwargs: object,
) -> tuple[Tier3Outcome, ScriptedImageClient]:
    client = ScriptedImageClient(script)

    async def record_sleep(seconds: float) -> None:
        if sleeps is not None:
            sleeps.append(seconds)

    outcome = asyncio.run(
        generate_tier3_clean_sheet(
            image_client=client,
            model="gemini-image-test",
            prompt="clean sheet please",
            image_bytes=INPUT,
            mime_type="image/png",
            stored_embedding=stored,
            face_engine=embedder,
            sleep=record_sleep,
            rng=random.Random(7),
            **{"price_per_image": 0.039, **kwargs},  # type: ignore[arg-type]  # not in the catalog
        )
    )
    return outcome, client


def test_passes_on_the_first_try() -> None:
    outcome, client = run_tier3([solid(RED)], embedder=ColourEmbedder({RED: 0.9}))
    assert outcome.accepted and outcome.validated and outcome.validation == "passed"
    assert outcome.score == pytest.approx(0.9, abs=1e-6)
    assert [(t.number, t.outcome, t.threshold) for t in outcome.tries] == [(1, "accepted", 0.6)]
    assert outcome.total_cost_usd == pytest.approx(0.039)
    assert decode(outcome.image_png or b"")[0, 0].tolist() == list(RED)
    assert (outcome.prompt, outcome.model) == ("clean sheet please", "gemini-image-test")
    assert client.requests == [
        {
            "model": "gemini-image-test",
            "prompt": "clean sheet please",
            "image": INPUT,
            "mime_type": "image/png",
        }
    ]


def test_passes_on_the_third_try_at_the_loosened_threshold() -> None:
    embedder = ColourEmbedder({RED: 0.3, GREEN: 0.58, BLUE: 0.55})
    outcome, _ = run_tier3([solid(RED), solid(GREEN), solid(BLUE)], embedder=embedder)
    assert outcome.accepted and outcome.validated
    assert outcome.score == pytest.approx(0.55, abs=1e-6)
    assert [(t.outcome, t.threshold) for t in outcome.tries] == [
        ("below_threshold", 0.6),
        ("below_threshold", 0.6),  # 0.58 fails at 0.6 ...
        ("accepted", 0.5),  # ... and 0.55 passes at 0.5
    ]
    assert [t.score for t in outcome.tries] == pytest.approx([0.3, 0.58, 0.55], abs=1e-6)
    assert outcome.total_cost_usd == pytest.approx(3 * 0.039)
    assert decode(outcome.image_png or b"")[0, 0].tolist() == list(BLUE)


def test_three_failures_are_not_accepted_and_no_face_has_no_score() -> None:
    embedder = ColourEmbedder({RED: 0.2, NOFACE: None, BLUE: 0.45})
    outcome, client = run_tier3(
        [solid(RED), solid(NOFACE), solid(BLUE), solid(GREEN)], embedder=embedder
    )
    assert not outcome.accepted and outcome.image_png is None
    assert outcome.validation == "failed" and not outcome.validated
    assert [t.outcome for t in outcome.tries] == ["below_threshold", "no_face", "below_threshold"]
    assert outcome.tries[1].score is None, "no face: no score on any engine's scale"
    assert outcome.score == pytest.approx(0.45, abs=1e-6), "best score seen, for the record"
    assert len(client.requests) == 3, "never a fourth paid request"
    assert outcome.total_cost_usd == pytest.approx(3 * 0.039)
    assert "3 tries" in outcome.reason


def test_content_policy_block_stops_without_resending_the_prompt() -> None:
    blocked = GenerationApiError("content_policy", "image blocked (IMAGE_SAFETY)")
    outcome, client = run_tier3([blocked, solid(RED)], embedder=ColourEmbedder({RED: 0.9}))
    assert not outcome.accepted and outcome.blocked and outcome.stopped_by == "content_policy"
    assert len(client.requests) == 1
    assert [(t.number, t.outcome, t.cost_usd) for t in outcome.tries] == [
        (1, "content_policy", 0.0)
    ]
    assert "IMAGE_SAFETY" in outcome.reason and "blocked by content policy" in outcome.reason
    assert outcome.validation == "not_run"


def test_without_a_face_model_the_first_image_is_accepted_but_not_validated() -> None:
    outcome, _ = run_tier3(
        [solid(RED)], embedder=None, no_engine_reason="face model pack 'buffalo_l' is absent"
    )
    assert outcome.accepted and not outcome.validated
    assert outcome.validation == "unavailable" and outcome.score is None
    assert outcome.reason == "not validated: face model pack 'buffalo_l' is absent"
    assert outcome.tries[0].outcome == "accepted_unvalidated"
    assert outcome.tries[0].score is None and outcome.tries[0].threshold is None


def test_assets_without_a_stored_embedding_are_not_validated() -> None:
    embedder = ColourEmbedder({RED: 0.1})
    outcome, _ = run_tier3([solid(RED)], embedder=embedder, stored=None)
    assert outcome.accepted and outcome.validation == "not_applicable"
    assert embedder.seen == [], "no face model work for props and environments"


@pytest.mark.parametrize(
    "stored",
    [
        FaceEmbedding(np.ones(128, np.float32), "dlib", "euclidean"),
        FaceEmbedding(np.ones(512, np.float32), "insightface", "cosine"),  # another pack's size
    ],
    ids=["another-engine", "another-pack"],
)
def test_an_embedding_from_another_face_model_is_reported_not_silently_passed(
    stored: FaceEmbedding,
) -> None:
    outcome, _ = run_tier3([solid(RED)], embedder=ColourEmbedder({RED: 0.9}), stored=stored)
    assert outcome.accepted and outcome.validation == "unavailable"
    assert outcome.reason.startswith("not validated: ")
    assert ("cannot be compared" in outcome.reason) or ("differ in size" in outcome.reason)
    assert outcome.face_score is None and outcome.score is None


def test_transient_errors_back_off_without_using_a_try() -> None:
    busy = GenerationApiError("transient", "429 RESOURCE_EXHAUSTED", status_code=429)
    sleeps: list[float] = []
    outcome, client = run_tier3(
        [busy, busy, solid(RED)],
        embedder=ColourEmbedder({RED: 0.7}),
        sleeps=sleeps,
        backoff_base_s=2.0,
    )
    assert outcome.accepted and len(client.requests) == 3
    assert [(t.number, t.transient_retries) for t in outcome.tries] == [(1, 2)]
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 2.0 and 0 <= sleeps[1] <= 4.0
    assert outcome.total_cost_usd == pytest.approx(0.039), "429s are not billed"


def test_transient_errors_that_persist_stop_for_a_later_retry() -> None:
    down = GenerationApiError("transient", "503 UNAVAILABLE", status_code=503)
    sleeps: list[float] = []
    outcome, client = run_tier3([down] * 3, embedder=None, sleeps=sleeps, transient_retries=2)
    assert not outcome.accepted and outcome.stopped_by == "transient"
    assert len(client.requests) == 3 and len(sleeps) == 2
    assert "after 2 transient retries" in outcome.reason


@pytest.mark.parametrize(
    ("error", "cost"),
    [
        (GenerationApiError("rejected", "400 INVALID_ARGUMENT"), 0.0),
        (GenerationApiError("failed", "generation failed", billed=True), 0.039),
    ],
)
def test_rejected_and_failed_stop_with_their_reason(error: GenerationApiError, cost: float) -> None:
    outcome, client = run_tier3([error, solid(RED)], embedder=ColourEmbedder({RED: 0.9}))
    assert not outcome.accepted and outcome.stopped_by == error.kind
    assert len(client.requests) == 1
    assert outcome.total_cost_usd == pytest.approx(cost)
    assert error.message in outcome.reason


def test_a_non_image_response_uses_up_a_paid_try() -> None:
    outcome, _ = run_tier3(
        [b"<html>oops</html>", solid(RED, "RGBA")], embedder=ColourEmbedder({(164, 64, 64): 0.8})
    )
    assert [t.outcome for t in outcome.tries] == ["invalid_image", "accepted"]
    assert "try 1" in outcome.tries[0].reason
    assert outcome.total_cost_usd == pytest.approx(2 * 0.039)
    # the half-transparent red came back flattened over #808080, as RGB
    assert decode(outcome.image_png or b"")[0, 0].tolist() == [164, 64, 64]


def test_a_broken_input_image_is_refused_before_paying() -> None:
    client = ScriptedImageClient([solid(RED)])
    with pytest.raises(MediaError, match="CHAR_01 reference"):
        asyncio.run(
            generate_tier3_clean_sheet(
                image_client=client,
                model="m",
                prompt="p",
                image_bytes=b"garbage",
                mime_type="image/png",
                stored_embedding=None,
                face_engine=None,
                label="CHAR_01 reference",
            )
        )
    assert client.requests == []


@pytest.mark.filterwarnings("ignore:`estimate` is deprecated:FutureWarning")
def test_tier3_with_the_real_face_analyzer(tmp_path: Path) -> None:
    """insightface's loading and FaceAnalysis code on the tiny pack (no real pack exists
    offline): wrong 'face', then right. Real photos: test_face_engines.py (dlib)."""
    write_face_pack(tmp_path, "tiny_pack")
    analyzer = load_face_analyzer(tmp_path, "tiny_pack")
    assert analyzer is not None
    face = np.zeros((256, 256, 3), np.uint8)
    face[64:192, 64:192] = (255, 0, 0)
    other = face.copy()
    other[64:192, 64:192][(np.indices((128, 128)).sum(axis=0) // 16) % 2 == 0] = (255, 255, 0)
    stored = analyzer.embed_face(encode(face))
    assert stored is not None

    client = ScriptedImageClient([encode(other), encode(face)])
    outcome = asyncio.run(
        generate_tier3_clean_sheet(
            image_client=client,
            model="m",
            prompt="p",
            image_bytes=encode(face),
            mime_type="image/png",
            stored_embedding=stored,
            face_engine=analyzer,
            price_per_image=0.039,  # model "m" is not in the catalog
        )
    )
    assert outcome.accepted and outcome.validated
    assert [t.outcome for t in outcome.tries] == ["below_threshold", "accepted"]
    assert outcome.score == pytest.approx(1.0, abs=1e-5)


def test_passes_on_the_third_try_at_0_5_through_the_real_client_and_emulator() -> None:
    """google-genai in Vertex mode against the loopback emulator: 0.55 fails twice, then passes."""
    colours = iter([RED, BLUE, GREEN])
    with VertexEmulator(image_responder=lambda prompt, image: solid(next(colours))) as emu:

        async def main() -> Tier3Outcome:
            client = make_genai_client(
                project="demo", location="us-central1", emulator_host=emu.address
            )
            try:
                return await generate_tier3_clean_sheet(
                    image_client=VertexImageClient(client),
                    model="gemini-2.5-flash-image",
                    prompt="clean sheet please",
                    image_bytes=INPUT,
                    mime_type="image/png",
                    stored_embedding=STORED,
                    face_engine=ColourEmbedder({RED: 0.55, BLUE: 0.59, GREEN: 0.55}),
                )
            finally:
                await client.aio.aclose()

        outcome = asyncio.run(main())
        assert emu.generate_content_count == 3
    assert outcome.accepted and outcome.validation == "passed"
    assert [(t.outcome, t.threshold) for t in outcome.tries] == [
        ("below_threshold", 0.6),
        ("below_threshold", 0.6),
        ("accepted", 0.5),
    ]
    assert outcome.score == pytest.approx(0.55, abs=1e-6)
    assert outcome.total_cost_usd == pytest.approx(3 * 0.039)
    assert decode(outcome.image_png or b"")[0, 0].tolist() == list(GREEN)


def test_a_character_without_a_face_model_is_not_validated_even_without_an_embedding() -> None:
    outcome, _ = run_tier3([solid(RED)], embedder=None, stored=None, is_character=True)
    assert outcome.accepted and outcome.validation == "unavailable" and outcome.score is None


def test_a_timeout_after_sending_is_never_resent_without_a_person() -> None:
    """No answer after the request left: it may have been billed, so Tier 3 stops at once (no
    backoff retry, no Dagster retry) and says why; a request that provably never left is retried."""
    lost = GenerationApiError("transient", "read timed out after sending")
    outcome, client = run_tier3([lost, solid(RED)], embedder=ColourEmbedder({RED: 0.9}))
    assert not outcome.accepted and outcome.stopped_by == MAY_BE_BILLED
    assert len(client.requests) == 1, "not resent"
    assert "may have been billed" in outcome.reason

    refused = GenerationApiError("transient", "connection refused", not_sent=True)
    outcome, client = run_tier3([refused, solid(RED)], embedder=ColourEmbedder({RED: 0.9}))
    assert outcome.accepted and len(client.requests) == 2, "never sent: retried"
