"""The data layer: typed models, sessions and migrations."""

from vidpipe_dagster.db.models import (
    Asset,
    AssetCleanReference,
    Base,
    GenerationLedger,
    Keyframe,
    Manifest,
    Project,
    Scene,
    SceneManifest,
    VideoClip,
)
from vidpipe_dagster.db.session import get_engine, migrate, session_factory, session_scope

__all__ = [
    "Asset",
    "AssetCleanReference",
    "Base",
    "GenerationLedger",
    "Keyframe",
    "Manifest",
    "Project",
    "Scene",
    "SceneManifest",
    "VideoClip",
    "get_engine",
    "migrate",
    "session_factory",
    "session_scope",
]
