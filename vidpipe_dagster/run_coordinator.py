"""The run queue, with every run that touches a project tagged with it, whatever launched it.

Runs of a project's jobs, its schedule and the CLI carry ``vidpipe/project``; a run launched from
the UI's Materialize button is Dagster's implicit asset job and carries no tag of ours, so the
per-project queue limit (``deploy/dagster.yaml``) would not hold for it. This coordinator adds the
tag, from the assets the run selects, before the run is queued (the limit is read at dequeue).
"""

from __future__ import annotations

import dagster as dg

from vidpipe_dagster.jobs import PROJECT_TAG

PROJECTS_TAG = "vidpipe/projects"  # every project a run touches, when it is more than one
_NOT_PROJECTS = {"invalid_projects"}


def projects_of(run: dg.DagsterRun) -> list[str]:
    """The slugs whose assets (or checks) the run selects. Asset keys start with the slug with
    ``-`` as ``_``; slugs hold no ``_``, so the prefix gives the slug back."""
    keys = set(run.asset_selection or ())
    keys |= {check.asset_key for check in run.asset_check_selection or ()}
    prefixes = {key.path[0] for key in keys if len(key.path) > 1}
    return sorted(prefix.replace("_", "-") for prefix in prefixes - _NOT_PROJECTS)


def project_tags(run: dg.DagsterRun) -> dict[str, str]:
    """The tags a run needs so the per-project limits apply to it (empty: it has them)."""
    if PROJECT_TAG in run.tags:
        return {}
    slugs = projects_of(run)
    if not slugs:
        return {}
    tags = {PROJECT_TAG: slugs[0]}
    if len(slugs) > 1:
        tags[PROJECTS_TAG] = ",".join(slugs)
    return tags


class ProjectTaggingRunCoordinator(dg.QueuedRunCoordinator):
    """``QueuedRunCoordinator`` (same configuration) that tags each run with its project."""

    def submit_run(self, context: dg.SubmitRunContext) -> dg.DagsterRun:
        run = context.dagster_run
        tags = project_tags(run)
        if tags:
            self._instance.add_run_tags(run.run_id, tags)
            updated = self._instance.get_run_by_id(run.run_id)
            if updated is not None:
                context = dg.SubmitRunContext(updated, context.workspace)
        return super().submit_run(context)
