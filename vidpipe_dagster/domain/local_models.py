"""Local models: rembg background removal and face engines (no downloads at run time, ever).

The set-up (``make models``) caches rembg's ``u2netp`` in ``models_dir``; dlib and its face
models are ordinary dependencies. Absent weights are reported, never fetched: Tier 2 then uses
the weight-free GrabCut engine (labelled ``tier2_grabcut``) and faces stay "not validated", each
with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from vidpipe_dagster.domain.clean_sheets import (
    DEFAULT_REMBG_MODEL,
    BackgroundRemover,
    choose_background_remover,
)
from vidpipe_dagster.domain.faces import (
    DEFAULT_FACE_MODEL_PACK,
    DEFAULT_FACE_MODEL_ROOT,
    FaceEngineStatus,
    choose_face_engine,
)
from vidpipe_dagster.domain.identity import FaceEngineChoice


@dataclass(frozen=True)
class LocalModels:
    rembg_model: str = DEFAULT_REMBG_MODEL
    rembg_model_path: str | None = None
    models_dir: str | None = None  # the set-up's weights cache (None: rembg's home only)
    face_engine_choice: FaceEngineChoice = "auto"
    face_model_root: str = DEFAULT_FACE_MODEL_ROOT
    face_model_pack: str = DEFAULT_FACE_MODEL_PACK

    def background_remover(self) -> tuple[BackgroundRemover, str]:
        """The remover (its rembg session is created once per process) and a note saying which."""
        return choose_background_remover(
            self.rembg_model, self.rembg_model_path, models_dir=self.models_dir
        )

    def face_engine(self) -> FaceEngineStatus:
        """The face engine to validate identity with (None: not validated) and why that one."""
        return choose_face_engine(
            self.face_engine_choice, root=self.face_model_root, pack=self.face_model_pack
        )
