"""The real dlib engine on real photos only (scikit-image's public-domain astronaut, the camera
man, a cat, coffee), and how an engine is chosen. No synthetic "faces" here."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps
from skimage import data as skdata

from tests.fixtures.onnx_models import write_face_pack
from vidpipe_dagster.domain.faces import DlibFaceEngine, choose_face_engine, dlib_engine_status
from vidpipe_dagster.domain.identity import FaceEmbedding, choose_face, compare, thresholds_for
from vidpipe_dagster.domain.media import png_bytes
from vidpipe_dagster.generation.tier3 import generate_tier3_clean_sheet

# insightface 2.1 calls a scikit-image method that 0.26 deprecates; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:`estimate` is deprecated:FutureWarning")

STRICT = thresholds_for("dlib").for_try(1)
RELAXED = thresholds_for("dlib").for_try(3)


@pytest.fixture(scope="module")
def dlib_engine() -> DlibFaceEngine:
    engine, problem = dlib_engine_status()
    assert engine is not None, f"dlib is a dependency of this project: {problem}"
    return engine


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def astronaut() -> Image.Image:
    return Image.fromarray(skdata.astronaut())


def gray_composite(photo: Image.Image) -> Image.Image:
    """What Tier 2 makes: the subject over #808080 (here an ellipse around her)."""
    out = Image.new("RGB", photo.size, (128, 128, 128))
    mask = Image.new("L", photo.size, 0)
    ImageDraw.Draw(mask).ellipse((60, 0, 400, 512), fill=255)
    out.paste(photo, (0, 0), mask)
    return out


EDITS: dict[str, Callable[[Image.Image], bytes]] = {
    "resize-256": lambda p: encode(p.resize((256, 256))),
    "resize-1024": lambda p: encode(p.resize((1024, 1024))),
    "crop": lambda p: encode(p.crop((100, 0, 400, 300))),
    "jpeg-30": lambda p: encode(p, "JPEG", quality=30),
    "flip": lambda p: encode(ImageOps.mirror(p)),
    "gray-composite": lambda p: encode(gray_composite(p)),
}


@pytest.fixture(scope="module")
def reference(dlib_engine: DlibFaceEngine) -> FaceEmbedding:
    embedding = dlib_engine.embed_face(encode(astronaut()))
    assert embedding is not None and embedding.vector.shape == (128,)
    assert (embedding.engine, embedding.metric) == ("dlib", "euclidean")
    return embedding


def test_her_face_is_chosen_not_the_mission_patch(dlib_engine: DlibFaceEngine) -> None:
    faces = dlib_engine.detect(np.asarray(astronaut()))
    assert len(faces) >= 2, "HOG also fires on the patch: the choice is what this tests"
    chosen = choose_face(faces, 512, 512)
    assert chosen is not None
    x1, y1, x2, y2 = chosen.box
    assert 150 < (x1 + x2) / 2 < 290 and 60 < (y1 + y2) / 2 < 180, chosen.box
    widths = sorted((f.box[2] - f.box[0] for f in faces), reverse=True)
    assert widths[1] > 0.9 * widths[0], "the patch is nearly as large: size alone cannot decide"


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_mild_edits_of_the_astronaut_are_recognised(
    edit: str, dlib_engine: DlibFaceEngine, reference: FaceEmbedding
) -> None:
    candidate = dlib_engine.embed_face(EDITS[edit](astronaut()))
    assert candidate is not None, f"{edit}: her face is still found"
    score = compare(reference, candidate, STRICT)
    assert score.passed, score.describe()
    assert score.value < 0.45, f"{edit}: mild edits measure 0.0-0.44 (README)"


def test_the_camera_man_is_not_the_astronaut(
    dlib_engine: DlibFaceEngine, reference: FaceEmbedding
) -> None:
    camera_man = dlib_engine.embed_face(encode(Image.fromarray(skdata.camera()).convert("RGB")))
    assert camera_man is not None, "a real face in three-quarter view is found"
    score = compare(reference, camera_man, RELAXED)
    assert not score.passed, score.describe()
    assert score.describe().startswith("rejected by dlib (distance 0.8")


@pytest.mark.parametrize("name", ["chelsea", "coffee"])
def test_a_cat_and_a_coffee_have_no_face(name: str, dlib_engine: DlibFaceEngine) -> None:
    photo = Image.fromarray(getattr(skdata, name)())
    assert dlib_engine.detect(np.asarray(photo)) == []
    assert dlib_engine.embed_face(encode(photo)) is None


def test_large_photos_are_searched_on_a_bounded_copy(dlib_engine: DlibFaceEngine) -> None:
    big = np.asarray(astronaut().resize((1600, 1600)))
    faces = dlib_engine.detect(big)
    chosen = choose_face(faces, 1600, 1600)
    assert chosen is not None
    x1, y1, x2, _ = chosen.box
    assert 450 < (x1 + x2) / 2 < 900 and y1 > 150, "boxes come back in full-size pixels"


class ScriptedImages:
    """An image model that returns these images in turn (the loop under test pays nothing)."""

    backend = "scripted"

    def __init__(self, images: list[bytes]) -> None:
        self.images = images

    async def generate_image(
        self, *, model: str, prompt: str, image: bytes, mime_type: str
    ) -> bytes:
        return self.images.pop(0)


def test_tier3_validates_with_dlib_thresholds(
    dlib_engine: DlibFaceEngine, reference: FaceEmbedding
) -> None:
    camera_man = encode(Image.fromarray(skdata.camera()).convert("RGB"))
    good = EDITS["gray-composite"](astronaut())
    outcome = asyncio.run(
        generate_tier3_clean_sheet(
            image_client=ScriptedImages([camera_man, good]),
            model="m",
            prompt="p",
            image_bytes=encode(astronaut()),
            mime_type="image/png",
            stored_embedding=reference,
            face_engine=dlib_engine,
            price_per_image=0.039,  # model "m" is not in the catalog
        )
    )
    assert outcome.accepted and outcome.validation == "passed"
    first, second = outcome.tries
    assert (first.outcome, first.engine, first.metric, first.threshold) == (
        "below_threshold",
        "dlib",
        "euclidean",
        0.6,
    )
    assert first.score is not None and first.score > 0.6
    assert second.outcome == "accepted" and second.score is not None and second.score < 0.3
    assert outcome.face_score is not None
    assert outcome.reason == f"{outcome.face_score.describe()} on try 2"
    assert outcome.reason.startswith("validated by dlib (distance 0.")


# --- choosing an engine ---------------------------------------------------------------------


def test_auto_prefers_an_installed_insightface_pack(tmp_path: Path) -> None:
    write_face_pack(tmp_path, "tiny_pack")
    chosen = choose_face_engine("auto", root=tmp_path, pack="tiny_pack")
    assert chosen.engine is not None and chosen.engine.name == "insightface"
    assert chosen.problem is None and "insightface (pack 'tiny_pack'" in chosen.note


def test_auto_falls_back_to_dlib_and_says_why(tmp_path: Path) -> None:
    chosen = choose_face_engine("auto", root=tmp_path, pack="buffalo_l")
    assert chosen.engine is not None and chosen.engine.name == "dlib"
    assert chosen.note.startswith("dlib (ResNet descriptor, HOG detector); insightface unavailable")
    assert "'buffalo_l' is not installed" in chosen.note


def test_an_explicit_choice_never_falls_back(tmp_path: Path) -> None:
    insightface = choose_face_engine("insightface", root=tmp_path, pack="buffalo_l")
    assert insightface.engine is None
    assert insightface.problem is not None and insightface.problem.startswith(
        "insightface unavailable: face model pack 'buffalo_l' is not installed"
    )
    none = choose_face_engine("none", root=tmp_path, pack="buffalo_l")
    assert none.engine is None and none.problem == (
        "face engine 'none' is configured: faces are not validated"
    )
    dlib = choose_face_engine("dlib", root=tmp_path, pack="tiny_pack")
    assert dlib.engine is not None and dlib.engine.name == "dlib"


def test_the_reference_photo_round_trips_through_png(
    dlib_engine: DlibFaceEngine, reference: FaceEmbedding
) -> None:
    again = dlib_engine.embed_face(png_bytes(astronaut()))
    assert again is not None and compare(reference, again, STRICT).value == pytest.approx(
        0, abs=1e-5
    )
