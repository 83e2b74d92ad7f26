"""Dashboard pages: the runs list, bulk tagging, tag suggestions, the flow page and "go to".

Each view checks access, builds a context and renders one template. An HTMX request
renders only the partial it needs; a plain request renders the whole page, so every
page also works without JavaScript.
"""

from __future__ import annotations

import logging

from django.contrib import messages
from django.db import transaction
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from runs import deployment_selectors, selectors, services
from runs.errors import NamespaceMismatch, NotFound, ServiceError, ValidationFailed
from runs.models import Run, TagCount
from runs.web.auth import login_required
from runs.web.filters import RunFilters
from runs.web.namespaces import current_namespace, namespace_query

logger = logging.getLogger(__name__)

PAGE_SIZE = 50
# The live refresh re-reads every row between the newest and the oldest one shown;
# past this many rows the page stops refreshing older rows.
MAX_LIVE_ROWS = 1000
# Runs one bulk action may tag, so a click cannot lock thousands of rows at once.
MAX_BULK_RUNS = 200
NEW_RUNS_CAP = 100
SUGGESTIONS = 12


def is_partial(request) -> bool:
    """True for an HTMX request that swaps a part of the page.

    A history restore (back button after the cache dropped the page) needs the whole page.
    """
    return bool(request.htmx) and not request.htmx.history_restore_request


def render_page(request, template, context, *, partial=None, status=200):
    """Render the whole page, or only `partial` for an HTMX request."""
    name = f"{template}#{partial}" if partial and is_partial(request) else template
    response = render(request, name, context, status=status)
    # The same URL returns a partial or a page depending on this header, so caches
    # (the browser's back/forward cache included) must keep them apart.
    patch_vary_headers(response, ["HX-Request"])
    return response


def error_page(request, exc, status):
    context = {"message": str(exc), "error": exc}
    if isinstance(exc, NamespaceMismatch):
        context["run_namespace"] = exc.details.get("run_namespace")
        context["switch_query"] = namespace_query(exc.details.get("run_namespace"))
        context["global_query"] = namespace_query(None)
    return render_page(request, "runs/error.html", context, partial="message", status=status)


def _live_rows(runs, *, top: int, bottom: int):
    """Re-read the rows a page shows, ids bottom..top, so status and tag changes appear
    and runs that no longer match the filter disappear."""
    limit = MAX_LIVE_ROWS if bottom else PAGE_SIZE
    items = list(selectors.with_tags(runs.filter(id__lte=top, id__gte=bottom))[:limit + 1])
    if len(items) > limit:
        items = items[:limit]
        return items, str(items[-1].id)
    if bottom and runs.filter(id__lt=bottom).exists():
        return items, str(bottom)
    return items, None


def _int_param(request, name):
    value = request.GET.get(name, "")
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValidationFailed(f"{name}={value[:20]!r} is not an integer.",
                               code="invalid_filter") from None


@login_required
@require_GET
def run_list(request):
    """Render the runs table, or one HTMX part of it: results (filter change), more
    (load more) or live (the refresh poll)."""
    try:
        filters = RunFilters.from_request(request)
        runs = filters.queryset()
        top = _int_param(request, "top")
        bottom = _int_param(request, "bottom")
        part = request.GET.get("part", "results") if is_partial(request) else None

        if part == "live" and top is not None and bottom is not None:
            items, next_cursor = _live_rows(runs, top=top, bottom=bottom)
        else:
            if top is not None:
                runs_below_top = runs.filter(id__lte=top)
            else:
                runs_below_top = runs
            items, next_cursor = selectors.page(
                selectors.with_tags(runs_below_top), cursor=request.GET.get("cursor"),
                page_size=PAGE_SIZE,
            )
            if top is None and request.GET.get("cursor") and items:
                top = items[0].id
            elif top is None:
                # Runs created after this id count as new, whether or not any matched.
                top = Run.objects.order_by("-id").values_list("id", flat=True).first() or 0
            # Refresh down to the oldest row shown. When nothing older is left to load,
            # refresh all older runs too, so an old run that starts to match shows up.
            bottom = items[-1].id if next_cursor and items else 0
        new_runs = runs.filter(id__gt=top).values_list("id", flat=True)[:NEW_RUNS_CAP]
        new_count = len(new_runs)
    except ValidationFailed as exc:
        return error_page(request, exc, 400)

    context = {
        "runs": items,
        "next_cursor": next_cursor,
        "filters": filters,
        "filter_query": filters.query_string(),
        "top": top,
        "bottom": bottom,
        "new_count": new_count,
        "new_count_capped": new_count >= NEW_RUNS_CAP,
        "live_limited": part == "live" and len(items) >= MAX_LIVE_ROWS,
        "cursor": request.GET.get("cursor", ""),
        "statuses": [value for value, _label in Run._meta.get_field("status").choices],
        "empty_namespace": not items and not filters.active and not request.GET.get("cursor"),
        "server_url": request.build_absolute_uri("/").rstrip("/"),
    }
    partial = {"results": "results", "more": "more", "live": "live"}.get(part, "results")
    response = render_page(request, "runs/run_list.html", context, partial=partial)
    if partial == "results" and is_partial(request):
        # Put the canonical filter URL in the history instead of the raw form fields,
        # empty ones included, that hx-push-url would push.
        response["HX-Push-Url"] = f"{reverse('runs:list')}?{context['filter_query']}"
    return response


@login_required
@require_GET
def tag_suggest(request):
    """Tags starting with what was typed, most used first, from the TagCount table."""
    # The filter bar's text box is named "tag" so that, without JavaScript, submitting
    # it adds the typed tag to the filter.
    typed = request.GET.getlist("tag")
    prefix = (typed[-1] if typed else "").strip()[:500]
    rows = []
    if prefix:
        rows = list(
            TagCount.objects.filter(name__startswith=prefix, count__gt=0)
            .order_by("-count", "name")[:SUGGESTIONS]
        )
    return render_page(request, "runs/tag_suggest.html", {"suggestions": rows,
                                                         "prefix": prefix})


def _safe_next(request, fallback: str) -> str:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return fallback


@login_required
@require_POST
def runs_bulk_tag(request):
    """Add or remove one tag on every selected run, all or nothing."""
    back = _safe_next(request, reverse("runs:list"))
    tag = request.POST.get("tag", "").strip()
    action = request.POST.get("action", "add")
    raw_ids = request.POST.getlist("run")
    error = ""
    if action not in ("add", "remove"):
        error = f"Unknown action {action[:20]!r}; use add or remove."
    elif not tag:
        error = "Type the tag to add or remove."
    elif not raw_ids:
        error = "Select at least one run with the checkboxes first."
    elif len(raw_ids) > MAX_BULK_RUNS:
        error = (f"{len(raw_ids)} runs selected; tag at most {MAX_BULK_RUNS} runs in one "
                 "action.")
    run_ids = []
    if not error:
        try:
            run_ids = sorted({int(value) for value in raw_ids})
        except ValueError:
            error = "The selection contains a run id that is not a number; reload the page."

    changed = 0
    if not error:
        runs = list(Run.objects.filter(pk__in=run_ids).order_by("id"))
        missing = len(run_ids) - len(runs)
        try:
            with transaction.atomic():
                for run in runs:
                    services.tags_mutate(
                        run=run, user=request.user,
                        add=[tag] if action == "add" else [],
                        remove=[tag] if action == "remove" else [],
                    )
                    changed += 1
        except ServiceError as exc:
            logger.info("bulk %s of tag %r on runs %s by %s rejected: %s", action, tag,
                        run_ids, request.user.username, exc)
            error = str(exc)
            changed = 0
        else:
            logger.info("bulk %s of tag %r on %d runs by %s", action, tag, changed,
                        request.user.username)
            if missing:
                error = f"{missing} selected runs no longer exist."

    verb = "Added" if action == "add" else "Removed"
    notice = "" if error and not changed else (
        f"{verb} tag “{tag}” {'to' if action == 'add' else 'from'} {changed} runs."
    )
    if is_partial(request):
        # Errors come back with status 200 too, because htmx swaps no 4xx response
        # in by default and the message belongs next to the form.
        response = render(request, "runs/run_list.html#bulk-result",
                          {"notice": notice, "error": error})
        # Tell the runs table to refresh so the new tags show at once.
        response["HX-Trigger"] = "runs-changed"
        return response
    if error:
        messages.error(request, error)
    if notice:
        messages.success(request, notice)
    return redirect(back)


@login_required
@require_GET
def flow_detail(request, flow):
    namespace = current_namespace(request)
    try:
        runs = selectors.with_tags(selectors.runs_in_namespace(namespace=namespace, flow=flow))
        items, next_cursor = selectors.page(runs, cursor=request.GET.get("cursor"),
                                            page_size=PAGE_SIZE)
    except ValidationFailed as exc:
        return error_page(request, exc, 400)
    flow_exists = items or selectors.flows_in_namespace(None).filter(name=flow).exists()
    if not flow_exists:
        return error_page(request, NotFound(
            f"Flow {flow[:200]} does not exist. Check the spelling: flow names are "
            "Python class names and case-sensitive."), 404)
    context = {
        "flow": flow,
        "runs": items,
        "next_cursor": next_cursor,
        "latest": selectors.latest_run(flow, namespace),
        "latest_successful": selectors.latest_run(flow, namespace, successful=True),
        "namespace": namespace,
        "deployment": deployment_selectors.deployment_of_flow(flow),
    }
    return render_page(request, "runs/flow_detail.html", context, partial="runs")


def _pathspec_target(parts: list[str]):
    """Return (flow, run number, step, task) from a split pathspec, or raise."""
    if not 1 <= len(parts) <= 4 or any(not part for part in parts):
        raise ValidationFailed(
            "A pathspec is Flow, Flow/run, Flow/run/step or Flow/run/step/task, "
            "e.g. HelloFlow/546.", code="invalid_pathspec")
    return parts + [None] * (4 - len(parts))


@login_required
@require_GET
def go(request):
    """Redirect to the page of a pathspec. A run outside the namespace gets an error page
    that offers the switch, as the SDK's NamespaceMismatch does."""
    raw = request.GET.get("path", "").strip().strip("/")[:1000]
    namespace = current_namespace(request)
    ns = namespace_query(namespace)
    if not raw:
        return redirect(f"{reverse('runs:list')}?{ns}")
    try:
        flow, number, step, task_id = _pathspec_target(raw.split("/"))
        if number is None:
            if not selectors.flows_in_namespace(None).filter(name=flow).exists():
                raise NotFound(f"Flow {flow} does not exist.")
            return redirect(f"{reverse('runs:flow', args=[flow])}?{ns}")
        run = selectors.run_get(flow, number, namespace=namespace)
        if step is None:
            return redirect(f"{reverse('runs:run', args=[flow, run.number])}?{ns}")
        if task_id is None:
            selectors.step_get(run, step)
            url = reverse("runs:run", args=[flow, run.number])
            return redirect(f"{url}?{ns}&step={step}#step-tasks")
        task = selectors.task_get(run, step, task_id)
        return redirect(
            f"{reverse('runs:task', args=[flow, run.number, step, task.id])}?{ns}")
    except NamespaceMismatch as exc:
        return error_page(request, exc, 404)
    except (NotFound, ValidationFailed) as exc:
        return error_page(request, exc, 404 if isinstance(exc, NotFound) else 400)

