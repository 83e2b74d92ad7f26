"""Dashboard pages. Each view checks access, builds a context and renders."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from runs import selectors
from runs.errors import NamespaceMismatch, NotFound, ValidationFailed
from runs.models import Artifact, LogChunk, Task
from runs.web.namespaces import current_namespace, namespace_query_value


def _error(request, exc, status):
    return render(request, "runs/error.html", {"message": str(exc), "error": exc}, status=status)


@login_required
def run_list(request):
    namespace = current_namespace(request)
    try:
        runs = selectors.runs_in_namespace(
            namespace=namespace,
            tags=request.GET.getlist("tag"),
            tag_mode=request.GET.get("tag_mode", "all"),
            flow=request.GET.get("flow") or None,
            status=request.GET.get("status") or None,
            user=request.GET.get("user") or None,
        )
        items, next_cursor = selectors.page(
            selectors.with_tags(runs), cursor=request.GET.get("cursor"),
            page_size=request.GET.get("page_size"),
        )
    except ValidationFailed as exc:
        return _error(request, exc, 400)
    return render(request, "runs/run_list.html", {
        "runs": items,
        "next_cursor": next_cursor,
        "namespace": namespace,
        "ns_value": namespace_query_value(namespace),
    })


@login_required
def flow_detail(request, flow):
    namespace = current_namespace(request)
    runs = selectors.with_tags(selectors.runs_in_namespace(namespace=namespace, flow=flow))
    items, next_cursor = selectors.page(runs, cursor=request.GET.get("cursor"), page_size=50)
    return render(request, "runs/flow_detail.html", {
        "flow": flow,
        "runs": items,
        "next_cursor": next_cursor,
        "latest": selectors.latest_run(flow, namespace),
        "latest_successful": selectors.latest_run(flow, namespace, successful=True),
        "namespace": namespace,
    })


@login_required
def run_detail(request, flow, run_id):
    namespace = current_namespace(request)
    try:
        run = selectors.run_get(flow, run_id, namespace=namespace)
    except NamespaceMismatch as exc:
        return _error(request, exc, 404)
    except (NotFound, ValidationFailed) as exc:
        return _error(request, exc, 404)
    run = selectors.with_tags(type(run).objects.filter(pk=run.pk)).get()
    tasks = (
        Task.objects.filter(run=run).order_by("id")
        .only("id", "step_name", "status", "attempt", "started_at", "finished_at",
              "foreach_index", "origin_task_id", "run_id")[:1000]
    )
    return render(request, "runs/run_detail.html", {
        "run": run,
        "tasks": tasks,
        "steps": run.steps.order_by("id"),
        "namespace": namespace,
    })


@login_required
def task_detail(request, flow, run_id, step, task_id):
    namespace = current_namespace(request)
    try:
        run = selectors.run_get(flow, run_id, namespace=namespace)
        task = selectors.task_get(run, step, task_id)
    except (NamespaceMismatch, NotFound, ValidationFailed) as exc:
        return _error(request, exc, 404)
    logs = {
        stream: "".join(
            LogChunk.objects.filter(task=task, attempt=task.attempt, stream=stream)
            .order_by("seq").values_list("text", flat=True)[:200]
        )
        for stream in ("stdout", "stderr")
    }
    artifacts = Artifact.objects.filter(task=task, attempt=task.attempt).select_related(
        "blob").order_by("name")
    return render(request, "runs/task_detail.html", {
        "run": run, "task": task, "logs": logs, "artifacts": artifacts,
        "namespace": namespace,
    })
