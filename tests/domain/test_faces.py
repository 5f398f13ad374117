"""Face embeddings through insightface's real code (router, FaceAnalysis, ArcFaceONNX) on tiny
ONNX models built in tests/fixtures/onnx_models.py; no weights are downloaded."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from tests.fixtures.onnx_models import (
    build_arcface_like_model,
    build_scrfd_like_model,
    write_face_pack,
)
from vidpipe_dagster.domain.faces import (
    FaceAnalyzer,
    cosine_similarity,
    embed_aligned_face,
    embedding_from_bytes,
    embedding_to_bytes,
    face_analyzer_status,
    load_face_analyzer,
    load_recognition_model,
)
from vidpipe_dagster.domain.media import MediaError

# insightface 2.1 calls a scikit-image method that 0.26 deprecates; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:`estimate` is deprecated:FutureWarning")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test (a download would need one)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image.astype(np.uint8), "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def scene(*squares: tuple[int, int, int, tuple[int, int, int]], size: int = 256) -> bytes:
    """Black RGB image with filled squares (x, y, side, colour): red = large face, green = small."""
    image = np.zeros((size, size, 3), np.uint8)
    for x, y, side, colour in squares:
        image[y : y + side, x : x + side] = colour
    return png(image)


RED_FACE = (64, 64, 128, (255, 0, 0))
GREEN_FACE = (200, 200, 32, (0, 255, 0))


# --- serialisation and similarity ---------------------------------------------------------------


def test_embedding_bytes_round_trip_as_float32() -> None:
    vector = np.array([0.25, -1.5, 3.0], dtype=np.float64)
    raw = embedding_to_bytes(vector)
    assert len(raw) == 12, "float32: four bytes a value"
    back = embedding_from_bytes(raw)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, vector.astype(np.float32))


@pytest.mark.parametrize("raw", [b"", b"\x00\x01\x02"])
def test_embedding_from_bytes_refuses_non_float32_data(raw: bytes) -> None:
    with pytest.raises(ValueError, match="float32"):
        embedding_from_bytes(raw)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([1.0, 0.0], [3.0, 0.0], 1.0),  # scale does not matter
        ([1.0, 0.0], [0.0, 2.0], 0.0),
        ([1.0, 0.0], [-1.0, 0.0], -1.0),  # raw cosine: negative values are kept
        ([1.0, 0.0], [0.55, np.sqrt(1 - 0.55**2)], 0.55),
        ([0.0, 0.0], [1.0, 0.0], 0.0),  # nothing to compare
    ],
)
def test_cosine_similarity_is_the_raw_cosine(
    a: list[float], b: list[float], expected: float
) -> None:
    assert cosine_similarity(np.array(a), np.array(b)) == pytest.approx(expected, abs=1e-9)


def test_cosine_similarity_refuses_embeddings_of_different_models() -> None:
    with pytest.raises(ValueError, match="differ in size"):
        cosine_similarity(np.ones(512), np.ones(128))


# --- missing model packs: a reason, never a download ---------------------------------------------


def test_missing_pack_gives_a_reason_without_touching_the_network(
    tmp_path: Path, no_network: None
) -> None:
    root = tmp_path / "insightface"
    analyzer, reason = face_analyzer_status(root, "buffalo_l")
    assert analyzer is None
    assert reason is not None and "not installed" in reason and "buffalo_l" in reason
    assert load_face_analyzer(root, "buffalo_l") is None
    assert not root.exists(), "nothing was downloaded or created"


def test_pack_folder_without_onnx_files_gives_a_reason(tmp_path: Path, no_network: None) -> None:
    (tmp_path / "models" / "buffalo_l").mkdir(parents=True)
    (tmp_path / "models" / "buffalo_l" / "README.txt").write_text("weights go here")
    analyzer, reason = face_analyzer_status(tmp_path, "buffalo_l")
    assert analyzer is None
    assert reason is not None and "no .onnx files" in reason


def test_pack_without_a_detector_gives_a_reason(tmp_path: Path, no_network: None) -> None:
    build_arcface_like_model(tmp_path / "models" / "rec_only" / "w600k.onnx")
    analyzer, reason = face_analyzer_status(tmp_path, "rec_only")
    assert analyzer is None
    assert reason is not None and "no face detection model" in reason


def test_pack_without_a_recognition_model_gives_a_reason(tmp_path: Path, no_network: None) -> None:
    build_scrfd_like_model(tmp_path / "models" / "det_only" / "det.onnx")
    analyzer, reason = face_analyzer_status(tmp_path, "det_only")
    assert analyzer is None
    assert reason is not None and "no recognition model" in reason


# --- the full FaceAnalysis path on a tiny pack ---------------------------------------------------


@pytest.fixture(scope="module")
def analyzer(tmp_path_factory: pytest.TempPathFactory) -> FaceAnalyzer:
    root = tmp_path_factory.mktemp("insightface")
    write_face_pack(root, "tiny_pack")
    loaded, reason = face_analyzer_status(root, "tiny_pack")
    assert loaded is not None, reason
    return loaded


def test_pack_loads_once_per_process(analyzer: FaceAnalyzer) -> None:
    root = analyzer.pack_dir.parent.parent
    assert load_face_analyzer(root, "tiny_pack") is analyzer
    assert load_face_analyzer(str(root), "tiny_pack") is analyzer, "same folder, same cache entry"


def test_face_embedding_is_unit_length_deterministic_and_tagged(analyzer: FaceAnalyzer) -> None:
    first = analyzer.embed_face(scene(RED_FACE))
    second = analyzer.embed_face(scene(RED_FACE))
    assert first is not None and second is not None
    assert (first.engine, first.metric) == ("insightface", "cosine")
    assert first.vector.dtype == np.float32
    assert float(np.linalg.norm(first.vector)) == pytest.approx(1.0, abs=1e-5)
    assert cosine_similarity(first.vector, second.vector) == pytest.approx(1.0, abs=1e-6)


def test_the_confident_central_face_is_the_one_embedded(analyzer: FaceAnalyzer) -> None:
    central = analyzer.embed_face(scene(RED_FACE))
    corner = analyzer.embed_face(scene(GREEN_FACE))
    both = analyzer.embed_face(scene(RED_FACE, GREEN_FACE))
    assert central is not None and corner is not None and both is not None
    assert cosine_similarity(both.vector, central.vector) == pytest.approx(1.0, abs=1e-5)
    assert cosine_similarity(both.vector, corner.vector) < 0.95
    found = analyzer.detect(np.asarray(Image.open(io.BytesIO(scene(RED_FACE, GREEN_FACE)))))
    assert len(found) >= 2, "more than one face: the choice mattered"


def checkered_face() -> bytes:
    """The large red face with a yellow checker pattern: same box, different content."""
    image = np.zeros((256, 256, 3), np.uint8)
    image[64:192, 64:192] = (255, 0, 0)
    checks = (np.indices((128, 128)).sum(axis=0) // 16) % 2 == 0
    image[64:192, 64:192][checks] = (255, 255, 0)
    return png(image)


def test_different_faces_score_lower_than_the_same_face(analyzer: FaceAnalyzer) -> None:
    plain = analyzer.embed_face(scene(RED_FACE))
    other = analyzer.embed_face(checkered_face())
    assert plain is not None and other is not None
    assert cosine_similarity(plain.vector, other.vector) < 0.5


def test_no_face_gives_none(analyzer: FaceAnalyzer) -> None:
    assert analyzer.embed_face(scene()) is None
    assert analyzer.embed_face(scene((10, 10, 60, (0, 0, 255)))) is None


def test_corrupt_image_raises_media_error(analyzer: FaceAnalyzer) -> None:
    with pytest.raises(MediaError, match="not a decodable image"):
        analyzer.embed_face(b"\x89PNG\r\n\x1a\n broken")


# --- recognition on aligned crops ----------------------------------------------------------------


@pytest.fixture(scope="module")
def rec_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_arcface_like_model(tmp_path_factory.mktemp("rec") / "arcface_tiny.onnx", dim=64)


def astronaut_crop(x: int, y: int, side: int) -> np.ndarray:
    """A 112x112 BGR crop of scikit-image's public-domain astronaut photo."""
    rgb = Image.fromarray(skdata.astronaut()[y : y + side, x : x + side]).resize((112, 112))
    return np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])


def test_recognition_model_is_routed_as_arcface(rec_path: Path) -> None:
    model = load_recognition_model(rec_path)
    assert type(model).__name__ == "ArcFaceONNX"
    assert model.taskname == "recognition"
    assert model.input_size == (112, 112)
    assert (model.input_mean, model.input_std) == (127.5, 127.5)


def test_aligned_face_embeddings_separate_faces(rec_path: Path) -> None:
    model = load_recognition_model(rec_path)
    face = astronaut_crop(150, 40, 160)  # the astronaut's face
    noisy = np.clip(
        face.astype(np.int16) + np.random.default_rng(1).integers(-3, 4, face.shape), 0, 255
    ).astype(np.uint8)
    elsewhere = astronaut_crop(300, 330, 160)  # the helmet on the table

    e_face = embed_aligned_face(model, face)
    assert e_face.shape == (64,)
    assert float(np.linalg.norm(e_face)) == pytest.approx(1.0, abs=1e-5)
    assert cosine_similarity(e_face, embed_aligned_face(model, face)) == pytest.approx(1.0)
    reloaded = load_recognition_model(rec_path)
    np.testing.assert_allclose(embed_aligned_face(reloaded, face), e_face, atol=1e-6)
    near = cosine_similarity(e_face, embed_aligned_face(model, noisy))
    far = cosine_similarity(e_face, embed_aligned_face(model, elsewhere))
    assert near > 0.99
    assert far < near - 0.05


def test_recognition_loader_refuses_other_models(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_recognition_model(tmp_path / "absent.onnx")
    det = build_scrfd_like_model(tmp_path / "det.onnx")
    with pytest.raises(ValueError, match="routed as detection"):
        load_recognition_model(det)
    model = load_recognition_model(build_arcface_like_model(tmp_path / "rec.onnx"))
    with pytest.raises(ValueError, match="HxWx3"):
        embed_aligned_face(model, np.zeros((112, 112), np.uint8))
