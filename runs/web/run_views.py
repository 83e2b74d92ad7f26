"""The run page: header, inline tags, DAG, timeline, tag history and a step's tasks."""

from __future__ import annotations

import logging

from django.contrib import messages
from django.db.models import Count, Max
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from runs import selectors, services
from runs.errors import NamespaceMismatch, NotFound, ServiceError, ValidationFailed
from runs.models import Run, TagEvent, Task
from runs.web.auth import login_required
from runs.web.graphs import GANTT_MAX_TASKS, dag_layout, gantt_layout
from runs.web.namespaces import current_namespace, namespace_query
from runs.web.views import error_page, is_partial, render_page

logger = logging.getLogger(__name__)

STEP_TASKS_PAGE = 100
TAG_EVENTS_SHOWN = 50


def _run_or_error(request, flow, run_id):
    """Return (run, None) or (None, error response) for a run in the current namespace."""
    namespace = current_namespace(request)
    try:
        run = selectors.run_get(flow, run_id, namespace=namespace)
    except NamespaceMismatch as exc:
        return None, error_page(request, exc, 404)
    except (NotFound, ValidationFailed) as exc:
        return None, error_page(request, exc, 404)
    return selectors.with_tags(Run.objects.filter(pk=run.pk)).get(), None


def _live_context(run: Run) -> dict:
    """Build the parts of the run page that change while it runs: DAG and timeline."""
    step_status = dict(run.steps.values_list("name", "status"))
    task_counts = dict(
        Task.objects.filter(run=run).values("step_name").annotate(n=Count("id"))
        .values_list("step_name", "n")
    )
    foreach_counts = dict(
        Task.objects.filter(run=run, foreach_count__isnull=False).values("step_name")
        .annotate(n=Max("foreach_count")).values_list("step_name", "n")
    )
    timeline_tasks = list(
        Task.objects.filter(run=run, started_at__isnull=False)
        .only("id", "step_name", "status", "started_at", "finished_at", "foreach_index",
              "run_id")
        .order_by("started_at", "id")[:GANTT_MAX_TASKS + 1]
    )
    return {
        "dag": dag_layout(run.graph or {}, step_status, task_counts, foreach_counts),
        "gantt": gantt_layout(timeline_tasks[:GANTT_MAX_TASKS], timezone.now()),
        "gantt_truncated": len(timeline_tasks) > GANTT_MAX_TASKS,
        "gantt_max": GANTT_MAX_TASKS,
        "task_total": sum(task_counts.values()),
    }


def _step_tasks_context(request, run: Run) -> dict:
    step = request.GET.get("step", "")
    if not step:
        return {"step": ""}
    if step not in (run.graph or {}).get("steps", {}):
        return {"step": step, "step_error": f"The flow has no step named {step[:200]!r}."}
    tasks = (
        Task.objects.filter(run=run, step_name=step)
        .only("id", "step_name", "status", "attempt", "started_at", "finished_at",
              "foreach_index", "origin_task_id", "worker_host", "run_id")
    )
    items, next_cursor = selectors.page(tasks.order_by("-id"),
                                        cursor=request.GET.get("task_cursor"),
                                        page_size=STEP_TASKS_PAGE)
    return {"step": step, "step_tasks": items, "step_next_cursor": next_cursor}


def _tags_context(run: Run) -> dict:
    events = list(TagEvent.objects.filter(run=run).select_related("user")
                  .order_by("-id")[:TAG_EVENTS_SHOWN])
    return {"tag_events": events, "tag_events_limit": TAG_EVENTS_SHOWN}


@login_required
@require_GET
def run_detail(request, flow, run_id):
    run, error = _run_or_error(request, flow, run_id)
    if error:
        return error
    part = request.GET.get("part", "") if is_partial(request) else ""
    try:
        step_context = _step_tasks_context(request, run)
    except ValidationFailed as exc:
        return error_page(request, exc, 400)
    context = {"run": run, "ns_query": namespace_query(current_namespace(request)),
               "steps": run.steps.order_by("id"), **step_context}
    if part == "step-tasks":
        return render_page(request, "runs/run_detail.html", context, partial="step-tasks")
    context.update(_live_context(run))
    if part == "live":
        return render_page(request, "runs/run_detail.html", context, partial="live")
    context.update(_tags_context(run))
    if part == "tags":
        return render_page(request, "runs/run_detail.html", context, partial="tags")
    return render_page(request, "runs/run_detail.html", context)


@login_required
@require_POST
def run_tags(request, flow, run_id):
    """Add or remove one user tag of a run through the tag service."""
    run, error = _run_or_error(request, flow, run_id)
    if error:
        return error
    add = [tag.strip() for tag in request.POST.getlist("add") if tag.strip()]
    remove = request.POST.getlist("remove")
    message = ""
    if not add and not remove:
        message = "Type a tag to add."
    else:
        try:
            services.tags_mutate(run=run, user=request.user, add=add, remove=remove)
        except ServiceError as exc:
            logger.info("tag change on run %s by %s rejected: %s", run.pk,
                        request.user.username, exc)
            message = str(exc)

    if is_partial(request):
        run = selectors.with_tags(Run.objects.filter(pk=run.pk)).get()
        context = {"run": run, "tag_error": message,
                   "ns_query": namespace_query(current_namespace(request)),
                   **_tags_context(run)}
        return render_page(request, "runs/run_detail.html", context, partial="tags")
    if message:
        messages.error(request, message)
    url = reverse("runs:run", args=[run.flow.name, run.number])
    return redirect(f"{url}?{namespace_query(current_namespace(request))}#tags")
