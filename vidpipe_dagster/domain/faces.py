"""Face embeddings for identity validation of Tier 3 clean sheets (insightface on CPU).

A generated clean sheet of a character is only trusted if its face is close to the original's.
The face model pack (default ``buffalo_l``) is never downloaded: a machine without it gets an
explicit "not validated" with a reason instead of the plan's silent pass (see DESIGN.md).

Similarity is the raw cosine of two embeddings, in [-1, 1] (the plan says 0-1; ArcFace
cosines of different people are often near or below zero, and clamping would hide nothing the
thresholds need). Thresholds (0.6 / 0.5) are compared against this raw value.

insightface is imported lazily: definitions load in every Dagster run worker.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import ImageOps

from vidpipe_dagster.domain.media import decode_image

DEFAULT_FACE_MODEL_ROOT = "~/.insightface"
DEFAULT_FACE_MODEL_PACK = "buffalo_l"
CPU_PROVIDERS: tuple[str, ...] = ("CPUExecutionProvider",)
EMBEDDING_DTYPE = np.dtype("<f4")  # what Asset.face_embedding stores: little-endian float32


class FaceEmbedder(Protocol):
    """Anything that turns an image into one face embedding (real model or a test double)."""

    def embed_largest_face(self, image_bytes: bytes) -> np.ndarray | None:
        """The L2-normalised embedding of the largest face, or None when no face is found."""
        ...


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
    va = np.asarray(a, dtype=np.float64).ravel()
    vb = np.asarray(b, dtype=np.float64).ravel()
    if va.shape != vb.shape:
        raise ValueError(f"embeddings differ in size: {va.size} vs {vb.size} values")
    norms = float(np.linalg.norm(va) * np.linalg.norm(vb))
    if norms == 0.0:
        return 0.0
    return float(np.clip(np.dot(va, vb) / norms, -1.0, 1.0))


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


def _bgr_array(image_bytes: bytes, label: str) -> np.ndarray:
    """insightface expects OpenCV's BGR uint8 layout; EXIF rotation is applied first."""
    image = ImageOps.exif_transpose(decode_image(image_bytes, label=label)).convert("RGB")
    return np.ascontiguousarray(np.asarray(image)[:, :, ::-1])


class FaceAnalyzer:
    """insightface ``FaceAnalysis`` (detector + recognition) as a ``FaceEmbedder``."""

    def __init__(self, analysis: Any, *, pack: str, pack_dir: Path) -> None:
        self._analysis = analysis
        self.pack = pack
        self.pack_dir = pack_dir

    def embed_largest_face(self, image_bytes: bytes) -> np.ndarray | None:
        """Largest box wins (ties: higher detection score), so extras in the frame are ignored."""
        faces = self._analysis.get(_bgr_array(image_bytes, "face image"))
        if not faces:
            return None

        def area(face: Any) -> tuple[float, float]:
            x1, y1, x2, y2 = (float(v) for v in face.bbox[:4])
            return (max(0.0, x2 - x1) * max(0.0, y2 - y1), float(face.det_score))

        embedding = max(faces, key=area).normed_embedding
        return None if embedding is None else np.asarray(embedding, dtype=np.float32)


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
