"""Local models as a Dagster resource (``domain.local_models.LocalModels`` does the work)."""

from __future__ import annotations

import dagster as dg

from vidpipe_dagster.domain.identity import FaceEngineChoice
from vidpipe_dagster.domain.local_models import LocalModels
from vidpipe_dagster.settings import (
    DEFAULT_FACE_MODEL_PACK,
    DEFAULT_FACE_MODEL_ROOT,
    DEFAULT_REMBG_MODEL,
)


class LocalModelsResource(dg.ConfigurableResource):
    """Which local models to use. Absent weights are reported, never downloaded: Tier 2 then uses
    the weight-free GrabCut engine (labelled ``tier2_grabcut``) and faces stay 'not validated'."""

    rembg_model: str = DEFAULT_REMBG_MODEL
    rembg_model_path: str | None = None
    models_dir: str | None = None
    face_engine: FaceEngineChoice = "auto"  # auto: an insightface pack, else dlib, else none
    face_model_root: str = DEFAULT_FACE_MODEL_ROOT
    face_model_pack: str = DEFAULT_FACE_MODEL_PACK

    def models(self) -> LocalModels:
        return LocalModels(
            rembg_model=self.rembg_model,
            rembg_model_path=self.rembg_model_path,
            models_dir=self.models_dir,
            face_engine_choice=self.face_engine,
            face_model_root=self.face_model_root,
            face_model_pack=self.face_model_pack,
        )
