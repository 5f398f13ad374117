"""Local models: rembg background removal and face embeddings (no downloads, ever).

Absent weights are reported, never fetched: Tier 2 then uses the weight-free GrabCut engine
(labelled ``tier2_grabcut``) and faces stay "not validated", each with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from vidpipe_dagster.domain.clean_sheets import BackgroundRemover, choose_background_remover
from vidpipe_dagster.domain.faces import (
    DEFAULT_FACE_MODEL_PACK,
    DEFAULT_FACE_MODEL_ROOT,
    FaceEmbedder,
    face_analyzer_status,
)


@dataclass(frozen=True)
class LocalModels:
    rembg_model: str = "u2net"
    rembg_model_path: str | None = None
    face_model_root: str = DEFAULT_FACE_MODEL_ROOT
    face_model_pack: str = DEFAULT_FACE_MODEL_PACK

    def background_remover(self) -> tuple[BackgroundRemover, str]:
        """The remover (its rembg session is created once per process) and a note saying which."""
        return choose_background_remover(self.rembg_model, self.rembg_model_path)

    def face_embedder(self) -> tuple[FaceEmbedder | None, str | None]:
        """(embedder, None), or (None, why not) when the face pack is not installed."""
        return face_analyzer_status(self.face_model_root, self.face_model_pack)
