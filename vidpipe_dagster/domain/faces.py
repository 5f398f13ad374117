"""Face engines: insightface (production) and dlib (installed by the set-up), and the choice.

A generated clean sheet or clip of a character is only trusted if its face is close to the
character's reference. Neither engine ever downloads anything: an absent insightface pack or an
absent dlib gives an explicit "not validated" with a reason instead of the plan's silent pass.

- insightface ``FaceAnalysis`` from ``<root>/models/<pack>`` (default ``buffalo_l``; the buffalo
  packs are licensed for non-commercial research only): cosine similarity, raw in [-1, 1].
- dlib's ResNet descriptor with its HOG detector and 5-point landmarks, from the
  ``face-recognition-models`` package (called directly, never through the ``face_recognition``
  wrapper): euclidean distance.

``choose_face_engine`` picks one (``auto``: an installed insightface pack first, then dlib).
Scores, thresholds and the face choice rule are in ``domain.identity``. insightface and dlib are
imported lazily: definitions load in every Dagster run worker.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ImageOps

from vidpipe_dagster.domain.identity import (
    DetectedFace,
    FaceEmbedding,
    FaceEngine,
    FaceEngineChoice,
    Metric,
    choose_face,
    raw_score,
)
from vidpipe_dagster.domain.media import decode_image

DEFAULT_FACE_MODEL_ROOT = "~/.insightface"
DEFAULT_FACE_MODEL_PACK = "buffalo_l"
CPU_PROVIDERS: tuple[str, ...] = ("CPUExecutionProvider",)
EMBEDDING_DTYPE = np.dtype("<f4")  # what Asset.face_embedding stores: little-endian float32


def embedding_to_bytes(embedding: np.ndarray) -> bytes:
    """Serialise for ``Asset.face_embedding`` (float32, so readers need not guess the dtype)."""
    return np.asarray(embedding, dtype=EMBEDDING_DTYPE).ravel().tobytes()


def embedding_from_bytes(data: bytes) -> np.ndarray:
    """Inverse of ``embedding_to_bytes``; refuses data that cannot be float32 values."""
    if not data or len(data) % EMBEDDING_DTYPE.itemsize:
        raise ValueError(f"a face embedding must be a non-empty float32 array, got {len(data)} B")
    return np.frombuffer(data, dtype=EMBEDDING_DTYPE).astype(np.float32)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Raw cosine in [-1, 1]; 0.0 when either vector is all zeros (nothing to compare)."""
    return raw_score("cosine", a, b)


def upright_rgb(image_bytes: bytes, label: str = "face image") -> np.ndarray:
    """Decoded, EXIF rotation applied, as an RGB uint8 array (what every engine's ``detect``
    takes)."""
    image = ImageOps.exif_transpose(decode_image(image_bytes, label=label)).convert("RGB")
    return np.ascontiguousarray(np.asarray(image))


class _EmbedsChosenFace:
    """``embed_face`` for engines that implement ``detect``: the face ``choose_face`` picks."""

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        raise NotImplementedError

    def embed_face(self, image_bytes: bytes) -> FaceEmbedding | None:
        rgb = upright_rgb(image_bytes)
        chosen = choose_face(self.detect(rgb), rgb.shape[1], rgb.shape[0])
        return None if chosen is None else chosen.embedding


def face_pack_dir(root: str | Path, pack: str) -> Path:
    """Where insightface keeps a pack: ``<root>/models/<pack>``."""
    return Path(root).expanduser().resolve() / "models" / pack


def face_pack_problem(root: str | Path, pack: str) -> str | None:
    """Why the pack cannot be used, checked on disk only (never triggers a download)."""
    folder = face_pack_dir(root, pack)
    if not folder.is_dir():
        return f"face model pack {pack!r} is not installed (no folder {folder})"
    if not any(p.is_file() for p in folder.glob("*.onnx")):
        return f"face model pack {pack!r} has no .onnx files in {folder}"
    return None


class FaceAnalyzer(_EmbedsChosenFace):
    """insightface ``FaceAnalysis`` (detector + recognition): cosine similarity, the production
    engine."""

    name = "insightface"
    metric: Metric = "cosine"

    def __init__(self, analysis: Any, *, pack: str, pack_dir: Path) -> None:
        self._analysis = analysis
        self.pack = pack
        self.pack_dir = pack_dir
        self._lock = threading.Lock()

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        bgr = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)[:, :, ::-1])
        with self._lock:
            found = self._analysis.get(bgr)
        faces = []
        for face in found:
            if face.normed_embedding is None:
                continue
            x1, y1, x2, y2 = (float(v) for v in face.bbox[:4])
            vector = np.asarray(face.normed_embedding, dtype=np.float32)
            faces.append(
                DetectedFace(
                    box=(x1, y1, x2, y2),
                    confidence=float(face.det_score),
                    embedding=FaceEmbedding(vector, self.name, self.metric),
                )
            )
        return faces


_CacheKey = tuple[str, str, tuple[str, ...]]
_analyzers: dict[_CacheKey, FaceAnalyzer] = {}
_analyzers_lock = threading.Lock()


def face_analyzer_status(
    root: str | Path = DEFAULT_FACE_MODEL_ROOT,
    pack: str = DEFAULT_FACE_MODEL_PACK,
    *,
    providers: Sequence[str] = CPU_PROVIDERS,
) -> tuple[FaceAnalyzer | None, str | None]:
    """(analyzer, None) when the pack loads, else (None, reason).

    One analyzer per (root, pack, providers) per process: loading a pack costs seconds and
    hundreds of MB. Failures are not cached, so installing the pack later needs no restart.
    """
    folder = face_pack_dir(root, pack)
    key = (str(folder), pack, tuple(providers))
    with _analyzers_lock:
        cached = _analyzers.get(key)
        if cached is not None:
            return cached, None
        problem = face_pack_problem(root, pack)
        if problem is not None:
            return None, problem
        from insightface.app import FaceAnalysis

        try:
            # An existing folder passed as ``name`` bypasses insightface's download helper.
            analysis = FaceAnalysis(name=str(folder), providers=list(providers))
        except AssertionError:
            return None, f"face model pack {pack!r} in {folder} has no face detection model"
        except Exception as exc:  # corrupt or foreign ONNX files: report, do not crash a run
            return None, f"face model pack {pack!r} in {folder} failed to load: {exc}"
        if "recognition" not in analysis.models:
            return None, f"face model pack {pack!r} in {folder} has no recognition model"
        analysis.prepare(ctx_id=-1)
        analyzer = FaceAnalyzer(analysis, pack=pack, pack_dir=folder)
        _analyzers[key] = analyzer
        return analyzer, None


def load_face_analyzer(
    root: str | Path = DEFAULT_FACE_MODEL_ROOT,
    pack: str = DEFAULT_FACE_MODEL_PACK,
    *,
    providers: Sequence[str] = CPU_PROVIDERS,
) -> FaceAnalyzer | None:
    """The cached analyzer, or None when the pack is absent (``face_analyzer_status`` says why)."""
    return face_analyzer_status(root, pack, providers=providers)[0]


def load_recognition_model(path: str | Path, *, providers: Sequence[str] = CPU_PROVIDERS) -> Any:
    """An ArcFace-style model through insightface's own router (chosen by input shape)."""
    model_file = Path(path).expanduser().resolve()
    if not model_file.is_file():
        raise FileNotFoundError(f"recognition model {model_file} does not exist")
    from insightface.model_zoo import get_model

    model = get_model(str(model_file), providers=list(providers))
    if model is None or getattr(model, "taskname", None) != "recognition":
        task = getattr(model, "taskname", "unrecognised")
        raise ValueError(f"{model_file} is not a face recognition model (routed as {task})")
    model.prepare(ctx_id=-1)
    return model


def embed_aligned_face(rec_model: Any, crop: np.ndarray) -> np.ndarray:
    """L2-normalised embedding of an already aligned BGR crop (e.g. 112x112 for ArcFace)."""
    if crop.ndim != 3 or crop.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 BGR crop, got shape {crop.shape}")
    feat = np.asarray(rec_model.get_feat(crop), dtype=np.float32).ravel()
    norm = float(np.linalg.norm(feat))
    return feat / norm if norm > 0 else feat


# --------------------------------------------------------------------------------------------
# dlib

DLIB_MODELS_PACKAGE = "face_recognition_models"
DLIB_MODEL_FILES = {
    "landmarks": "shape_predictor_5_face_landmarks.dat",
    "recognition": "dlib_face_recognition_resnet_model_v1.dat",
}
# HOG's own score scale (dlib's default cut is 0.0). Slightly below it, so a real face in a
# three-quarter view (scikit-image's camera(): -0.11) is found; false "faces" (the astronaut's
# mission patch, 0.12) are then ranked away by ``choose_face`` or fail the distance bar.
DLIB_MIN_CONFIDENCE = -0.2
DLIB_DETECT_MAX_SIDE = 800  # detection runs on a copy at most this large (work stays bounded)


def dlib_model_files() -> tuple[dict[str, Path] | None, str | None]:
    """(files, None) when dlib and its models are installed, else (None, why not).

    The models package is located without importing it: its ``__init__`` needs
    ``pkg_resources``, which new environments no longer have.
    """
    if importlib.util.find_spec("dlib") is None:
        return None, "dlib is not installed (pip install dlib-bin)"
    spec = importlib.util.find_spec(DLIB_MODELS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None, "dlib's face models are not installed (pip install face-recognition-models)"
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    files = {role: folder / name for role, name in DLIB_MODEL_FILES.items()}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        return None, f"dlib model files are missing: {', '.join(missing)}"
    return files, None


class DlibFaceEngine(_EmbedsChosenFace):
    """dlib: HOG detector, 5-point landmarks, 128-d ResNet descriptor; euclidean distance."""

    name = "dlib"
    metric: Metric = "euclidean"

    def __init__(
        self,
        files: dict[str, Path],
        *,
        upsample: int = 1,
        min_confidence: float = DLIB_MIN_CONFIDENCE,
        detect_max_side: int = DLIB_DETECT_MAX_SIDE,
    ) -> None:
        import dlib

        self.files = files
        self.upsample = upsample
        self.min_confidence = min_confidence
        self.detect_max_side = detect_max_side
        self._detector = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(str(files["landmarks"]))
        self._recognizer = dlib.face_recognition_model_v1(str(files["recognition"]))
        self._rectangle = dlib.rectangle
        self._lock = threading.Lock()  # dlib's objects are not documented as thread-safe

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        """Faces found on a copy at most ``detect_max_side`` large; landmarks and descriptors
        are computed at full resolution."""
        image = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
        height, width = image.shape[:2]
        scale = min(1.0, self.detect_max_side / max(height, width))
        small = image
        if scale < 1.0:
            import cv2

            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = np.ascontiguousarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
        faces = []
        with self._lock:
            rects, scores, _ = self._detector.run(small, self.upsample, self.min_confidence)
            for rect, score in zip(rects, scores, strict=True):
                box = (
                    rect.left() / scale,
                    rect.top() / scale,
                    rect.right() / scale,
                    rect.bottom() / scale,
                )
                full = self._rectangle(*(round(v) for v in box))
                shape = self._landmarks(image, full)
                vector = np.asarray(
                    self._recognizer.compute_face_descriptor(image, shape), dtype=np.float32
                )
                faces.append(
                    DetectedFace(
                        box=box,
                        confidence=float(score),
                        embedding=FaceEmbedding(vector, self.name, self.metric),
                    )
                )
        return faces


_dlib_engine: DlibFaceEngine | None = None
_dlib_lock = threading.Lock()


def dlib_engine_status() -> tuple[DlibFaceEngine | None, str | None]:
    """(engine, None), or (None, why not); loaded once per process (about 30 MB of models)."""
    global _dlib_engine
    with _dlib_lock:
        if _dlib_engine is not None:
            return _dlib_engine, None
        files, problem = dlib_model_files()
        if files is None:
            return None, problem
        try:
            _dlib_engine = DlibFaceEngine(files)
        except (ImportError, RuntimeError) as exc:  # a broken install or a corrupt .dat file
            return None, f"dlib failed to load its models: {exc}"
        return _dlib_engine, None


# --------------------------------------------------------------------------------------------
# the choice


@dataclass(frozen=True)
class FaceEngineStatus:
    """The engine to use (None: faces are not validated) and a sentence saying which and why."""

    engine: FaceEngine | None
    note: str

    @property
    def problem(self) -> str | None:
        """Why faces cannot be validated, or None when an engine is available."""
        return None if self.engine is not None else self.note


def choose_face_engine(
    choice: FaceEngineChoice = "auto",
    *,
    root: str | Path = DEFAULT_FACE_MODEL_ROOT,
    pack: str = DEFAULT_FACE_MODEL_PACK,
) -> FaceEngineStatus:
    """``auto``: an installed insightface pack, else dlib, else none (with both reasons).
    An explicit choice never falls back to another engine."""
    if choice == "none":
        return FaceEngineStatus(None, "face engine 'none' is configured: faces are not validated")
    if choice in ("auto", "insightface"):
        analyzer, insightface_problem = face_analyzer_status(root, pack)
        if analyzer is not None:
            return FaceEngineStatus(analyzer, f"insightface (pack {pack!r} in {analyzer.pack_dir})")
        if choice == "insightface":
            return FaceEngineStatus(None, f"insightface unavailable: {insightface_problem}")
    else:
        insightface_problem = None
    engine, dlib_problem = dlib_engine_status()
    if engine is not None:
        why = f"; insightface unavailable: {insightface_problem}" if insightface_problem else ""
        return FaceEngineStatus(engine, f"dlib (ResNet descriptor, HOG detector){why}")
    if choice == "dlib":
        return FaceEngineStatus(None, f"dlib unavailable: {dlib_problem}")
    return FaceEngineStatus(
        None, f"no face engine: insightface: {insightface_problem}; dlib: {dlib_problem}"
    )
