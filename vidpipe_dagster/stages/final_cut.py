"""The film: every scene's clip, in scene order, joined into one mp4 with its total cost.

Joining is ``domain.render.concat_mp4``; what is missing is named, with the asset to materialize.
"""

from __future__ import annotations

from dataclasses import dataclass

from vidpipe_dagster.db import queries
from vidpipe_dagster.domain.media import MediaError
from vidpipe_dagster.domain.preview import is_preview_backend
from vidpipe_dagster.domain.render import Mp4Info, concat_mp4, probe_mp4
from vidpipe_dagster.stages.context import StageContext, StageError


@dataclass(frozen=True)
class FinalCut:
    relative_path: str
    info: Mp4Info
    data: bytes
    scene_starts: dict[str, float]  # scene index -> start in seconds
    total_cost_usd: float
    contains_previews: bool
    fingerprints: list[str]

    @property
    def data_version(self) -> str:
        return "-".join(f[:8] for f in self.fingerprints)[:120] or "empty"


def make_final_cut(ctx: StageContext, slug: str, asset_prefix: str) -> FinalCut:
    with ctx.database.session() as session:
        project = queries.project_by_slug(session, slug)
        rows = queries.clips_in_scene_order(session, project.id)
        aspect = project.aspect_ratio
    missing = [
        f"scene {i} ({clip.status if clip else 'never generated'})"
        for i, clip in rows
        if clip is None or clip.status != "done" or not clip.file_url
    ]
    try:  # a clip path through a symlink is refused, not read
        paths = [ctx.media.path(clip.file_url) for _, clip in rows if clip and clip.file_url]
    except MediaError as exc:
        raise StageError(f"cannot cut {slug}: {exc}") from exc
    missing += [f"file {p} is missing" for p in paths if not p.is_file()]
    if missing:
        raise StageError(
            f"cannot cut {slug}: missing clips: {', '.join(missing)}. Materialize "
            f"{asset_prefix}/scene_clip for those scenes first."
        )
    data, starts = concat_mp4(paths, aspect_ratio=aspect)  # type: ignore[arg-type]
    rel = f"projects/{slug}/final_cut.mp4"
    try:
        ctx.media.write(rel, data)
    except MediaError as exc:
        raise StageError(f"cannot store the cut of {slug}: {exc}") from exc
    clips = [clip for _, clip in rows if clip is not None]
    info = probe_mp4(data)
    ctx.log.info(f"final cut {rel}: {info.duration_seconds:.2f} s, {len(clips)} scenes")
    return FinalCut(
        relative_path=rel,
        info=info,
        data=data,
        scene_starts={str(i): round(t, 3) for (i, _), t in zip(rows, starts, strict=True)},
        total_cost_usd=round(sum(c.cost_usd or 0.0 for c in clips), 4),
        contains_previews=any(is_preview_backend(c.backend) for c in clips),
        fingerprints=[c.fingerprint or "" for c in clips],
    )
