"""Deployment pages: every deployment, one deployment's runs and audit log, and the
staff actions (new token, namespace reset, pause, resume, trigger, delete)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from runs import deployment_selectors, deployments, selectors
from runs.errors import ServiceError

ACTIONS = ("trigger", "pause", "resume", "token", "reset", "delete")
ISSUED_TOKEN_KEY = "deployment_issued_token"


@login_required
def deployment_list(request):
    items, next_cursor = selectors.page(
        deployment_selectors.deployments_all(), cursor=request.GET.get("cursor"), page_size=50
    )
    recent = deployment_selectors.recent_runs([d.pk for d in items])
    events, events_cursor = selectors.page(
        deployment_selectors.events(), cursor=request.GET.get("events_cursor"), page_size=50
    )
    return render(request, "runs/deployments.html", {
        "rows": [(deployment, recent.get(deployment.pk, [])) for deployment in items],
        "next_cursor": next_cursor,
        "events": events,
        "events_cursor": events_cursor,
    })


def _detail_context(request, deployment, **extra) -> dict:
    events, events_cursor = selectors.page(
        deployment_selectors.events(deployment.flow.name),
        cursor=request.GET.get("events_cursor"), page_size=50,
    )
    context = {
        "deployment": deployment,
        "runs": deployment_selectors.recent_runs([deployment.pk], per_deployment=20).get(
            deployment.pk, []),
        "events": events,
        "events_cursor": events_cursor,
    }
    context.update(extra)
    return context


@login_required
def deployment_detail(request, flow):
    try:
        deployment = deployments.deployment_get(flow)
    except ServiceError as exc:
        return render(request, "runs/error.html", {"message": str(exc), "error": exc},
                      status=exc.status)
    # A token issued by the redirecting POST is in the session until this first view.
    issued = request.session.pop(ISSUED_TOKEN_KEY, None)
    if issued and issued["flow"] != flow:
        issued = None
    return render(request, "runs/deployment_detail.html", _detail_context(
        request, deployment, issued_token=issued["token"] if issued else None))


@login_required
@require_POST
def deployment_action(request, flow, action):
    """Run one action from the deployment page, then redirect, so a reload never repeats
    it. A new token travels to the next page in the session, never in a URL or a flash
    message, and that page removes it, so it is shown exactly once."""
    if action not in ACTIONS:
        return render(request, "runs/error.html", {
            "message": f"Unknown deployment action {action!r}. Use one of {', '.join(ACTIONS)}."
        }, status=404)
    token = request.POST.get("production_token") or None
    try:
        deployment = deployments.deployment_get(flow)
        if action == "trigger":
            raw = {key[len("param_"):]: value for key, value in request.POST.items()
                   if key.startswith("param_")}
            parameters = deployments.parameters_from_text(deployment.parameter_specs, raw)
            run = deployments.deployment_trigger(deployment=deployment, user=request.user,
                                                 token=token, parameters=parameters, via="user")
            messages.success(request, f"Run {run.pathspec} started in {run.identity_namespace}.")
        elif action in ("pause", "resume"):
            deployments.deployment_pause(deployment=deployment, user=request.user, token=token,
                                         paused=action == "pause")
            messages.success(request, f"Schedule of {flow} {action}d.")
        elif action == "token":
            issued = deployments.deployment_token_issue(deployment=deployment, user=request.user)
            request.session[ISSUED_TOKEN_KEY] = {"flow": flow, "token": issued}
        elif action == "reset":
            deployment = deployments.deployment_namespace_reset(deployment=deployment,
                                                                user=request.user)
            messages.success(request, f"{flow} now runs in {deployment.namespace}.")
        else:
            deployments.deployment_delete(deployment=deployment, user=request.user, token=token)
            messages.success(request, f"Deployment of {flow} deleted.")
            return redirect("runs:deployments")
    except ServiceError as exc:
        messages.error(request, str(exc))
    return redirect("runs:deployment", flow=flow)
