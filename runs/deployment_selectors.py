"""Selectors that read deployments, their recent runs and the deployment audit log."""

from __future__ import annotations

from django.db.models import F, Window
from django.db.models.functions import RowNumber

from runs.models import Deployment, DeploymentEvent, Run

RECENT_RUNS = 5


def deployments_all():
    """Select every deployment, newest first, joined with what a list row shows."""
    return Deployment.objects.select_related(
        "flow", "deployed_by", "code_package", "periodic_task"
    ).order_by("-id")


def deployment_of_flow(flow_name: str) -> Deployment | None:
    return deployments_all().filter(flow__name=flow_name).first()


def recent_runs(deployment_ids: list[int], per_deployment: int = RECENT_RUNS) -> dict:
    """Return {deployment id: its newest runs}, in one query for the whole page."""
    if not deployment_ids:
        return {}
    ranked = (
        Run.objects.filter(deployment_id__in=deployment_ids)
        .select_related("flow")
        .annotate(rank=Window(RowNumber(), partition_by=[F("deployment_id")],
                              order_by=F("id").desc()))
        .filter(rank__lte=per_deployment)
        .order_by("deployment_id", "-id")
    )
    grouped: dict[int, list[Run]] = {pk: [] for pk in deployment_ids}
    for run in ranked:
        grouped[run.deployment_id].append(run)
    return grouped


def events(flow_name: str | None = None):
    """Audit log entries, newest first; the (flow_name, -id) index serves the filter."""
    rows = DeploymentEvent.objects.select_related("user").order_by("-id")
    if flow_name:
        rows = rows.filter(flow_name=flow_name)
    return rows
