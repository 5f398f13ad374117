"""Whether each project can still be generated with the models it names (the catalog's
lifecycle: a model retires on a date, and a project imported before then keeps naming it)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from sqlalchemy import select

from vidpipe_dagster.db.models import Project, Scene
from vidpipe_dagster.db.session import Database
from vidpipe_dagster.domain.catalog import ModelCatalog
from vidpipe_dagster.stages.context import CheckOutcome

CHECK_MODEL_AVAILABLE = "model_available"


def model_problems(
    database: Database,
    catalog: ModelCatalog,
    slugs: Sequence[str] | None = None,
    *,
    today: date | None = None,
) -> dict[str, list[str]]:
    """Per project: why its model, resolution or takes (or a scene's own model) cannot be used
    today; an empty list when they all can. Two queries for all projects."""
    with database.session() as session:
        query = select(
            Project.id, Project.slug, Project.video_model, Project.resolution, Project.takes
        )
        if slugs is not None:
            query = query.where(Project.slug.in_(list(slugs)))
        projects = session.execute(query).all()
        overrides = session.execute(
            select(Scene.project_id, Scene.scene_index, Scene.video_model).where(
                Scene.video_model.is_not(None), Scene.project_id.in_([p.id for p in projects])
            )
        ).all()
    problems: dict[str, list[str]] = {}
    for project in projects:
        found = [
            f"project.video_model {project.video_model!r}: {reason}"
            for reason in catalog.video_choice_problems(
                project.video_model,
                resolution=project.resolution,
                takes=project.takes,
                today=today,
            )
        ]
        for project_id, index, model in overrides:
            if project_id != project.id:
                continue
            found += [
                f"scene {index} video_model {model!r}: {reason}"
                for reason in catalog.video_choice_problems(
                    model, resolution=project.resolution, takes=project.takes, today=today
                )
            ]
        problems[project.slug] = found
    return problems


def model_check(problems: list[str], slug: str) -> CheckOutcome:
    if not problems:
        return CheckOutcome(
            CHECK_MODEL_AVAILABLE, passed=True, description="every model is available"
        )
    return CheckOutcome(
        CHECK_MODEL_AVAILABLE,
        passed=False,
        description=f"{'; '.join(problems)}. Choose an available model in the spec and import it "
        f"again (vidpipe-dagster import …); {slug}'s clips cannot be generated until then.",
        metadata={"problems": problems},
    )
