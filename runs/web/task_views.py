"""The task page: identity, `current` values, paged live logs, log search and artifacts.

Logs are read in pages of LogChunk rows, never whole; artifacts are sent as the stored
bytes, never unpickled by the web process.
"""

from __future__ import annotations

from django.http import FileResponse, StreamingHttpResponse
from django.views.decorators.http import require_GET

from runs import selectors
from runs.errors import NamespaceMismatch, NotFound, ValidationFailed
from runs.models import TERMINAL, Artifact, LogChunk, TaskAttempt
from runs.packages import storage
from runs.web.auth import login_required
from runs.web.namespaces import current_namespace, namespace_query
from runs.web.views import error_page, is_partial, render_page

STREAMS = ("stdout", "stderr")
# Chunks per log page; a chunk is one flush of the worker's log writer.
LOG_PAGE_CHUNKS = 100
MAX_SEARCH_LINES = 500
# Chunks one search reads; a task's log is capped by the worker, so this bounds the scan.
SEARCH_CHUNK_LIMIT = 5000
DOWNLOAD_BATCH = 200
MAX_ARTIFACTS = 500


def _task_or_error(request, flow, run_id, step, task_id):
    namespace = current_namespace(request)
    try:
        run = selectors.run_get(flow, run_id, namespace=namespace)
        task = selectors.task_get(run, step, task_id)
    except (NamespaceMismatch, NotFound, ValidationFailed) as exc:
        return None, error_page(request, exc, 404)
    return task, None


def _int(request, name, default=None):
    value = request.GET.get(name, "")
    if value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValidationFailed(f"{name}={value[:20]!r} is not an integer.",
                               code="invalid_filter") from None


def _attempt(request, task) -> int:
    attempt = _int(request, "attempt", task.attempt)
    if attempt < 0 or attempt > task.attempt:
        raise ValidationFailed(
            f"attempt={attempt} does not exist; this task has attempts 0 to {task.attempt}.",
            code="invalid_filter")
    return attempt


def log_page(task, attempt: int, stream: str, *, after=None, before=None) -> dict:
    """Read one page of a stream: the newest chunks, or those after/before a seq."""
    chunks = LogChunk.objects.filter(task=task, attempt=attempt, stream=stream)
    if after is not None:
        rows = list(chunks.filter(seq__gt=after).order_by("seq")
                    .values_list("seq", "text")[:LOG_PAGE_CHUNKS + 1])
        more_after = len(rows) > LOG_PAGE_CHUNKS
        rows = rows[:LOG_PAGE_CHUNKS]
        more_before = after >= 0 and chunks.filter(seq__lte=after).exists()
    else:
        if before is not None:
            chunks_before = chunks.filter(seq__lt=before)
        else:
            chunks_before = chunks
        rows = list(chunks_before.order_by("-seq")
                    .values_list("seq", "text")[:LOG_PAGE_CHUNKS + 1])
        more_before = len(rows) > LOG_PAGE_CHUNKS
        rows = list(reversed(rows[:LOG_PAGE_CHUNKS]))
        more_after = before is not None
    if rows:
        first, last = rows[0][0], rows[-1][0]
    else:
        # No chunk on this page: keep the position, so a tail poll asks again from it.
        first = last = after if after is not None else -1
    finished = task.status in TERMINAL or attempt < task.attempt
    return {
        "stream": stream,
        "text": "".join(text for _seq, text in rows),
        "first_seq": first,
        "last_seq": last,
        "more_before": more_before,
        "more_after": more_after,
        # Follow the tail only while the attempt can still write and we show its end.
        "live": not finished and not more_after,
    }


def log_search(task, attempt: int, stream: str, text: str) -> dict:
    lines = []
    truncated = False
    chunks = (LogChunk.objects.filter(task=task, attempt=attempt, stream=stream,
                                      text__icontains=text)
              .order_by("seq").values_list("seq", "text")[:SEARCH_CHUNK_LIMIT])
    needle = text.lower()
    for seq, chunk in chunks:
        for line in chunk.splitlines():
            if needle in line.lower():
                if len(lines) >= MAX_SEARCH_LINES:
                    truncated = True
                    break
                lines.append({"seq": seq, "text": line})
        if truncated:
            break
    return {"matches": lines, "truncated": truncated, "limit": MAX_SEARCH_LINES}


def _artifacts(task, attempt: int):
    return (Artifact.objects.filter(task=task, attempt=attempt).select_related("blob")
            .order_by("name")[:MAX_ARTIFACTS])


@login_required
@require_GET
def task_detail(request, flow, run_id, step, task_id):
    task, error = _task_or_error(request, flow, run_id, step, task_id)
    if error:
        return error
    try:
        attempt = _attempt(request, task)
        stream = request.GET.get("stream", "")
        part = request.GET.get("part", "") if is_partial(request) else ""
        search = request.GET.get("q", "").strip()[:200]
        context = {"task": task, "run": task.run, "attempt": attempt, "search": search,
                   "ns_query": namespace_query(current_namespace(request))}

        if part == "log" and stream in STREAMS:
            context["log"] = log_page(task, attempt, stream, after=_int(request, "after"),
                                      before=_int(request, "before"))
            context["tail"] = True
            return render_page(request, "runs/task_detail.html", context, partial="log")
        if part == "status":
            if task.status in TERMINAL:
                # The last poll also brings the artifacts, stored as the step finished.
                context["finished_now"] = True
                context["artifacts"] = _artifacts(task, attempt)
            return render_page(request, "runs/task_detail.html", context, partial="status")

        logs = []
        for name in STREAMS:
            kwargs = {}
            if stream == name:
                kwargs = {"after": _int(request, "after"), "before": _int(request, "before")}
            logs.append(log_page(task, attempt, name, **kwargs))
        if search:
            search_stream = stream if stream in STREAMS else "stdout"
            context["search_stream"] = search_stream
            context["search_result"] = log_search(task, attempt, search_stream, search)
    except ValidationFailed as exc:
        return error_page(request, exc, 400)
    if part == "search":
        return render_page(request, "runs/task_detail.html", context, partial="search")

    context.update({
        "logs": logs,
        "attempts": TaskAttempt.objects.filter(task=task).order_by("number")[:50],
        "artifacts": _artifacts(task, attempt),
        "current_keys": ("flow_name", "run_id", "origin_run_id", "step_name", "task_id",
                         "pathspec", "namespace", "username", "parameter_names"),
    })
    return render_page(request, "runs/task_detail.html", context)


@login_required
@require_GET
def task_log_download(request, flow, run_id, step, task_id, stream):
    task, error = _task_or_error(request, flow, run_id, step, task_id)
    if error:
        return error
    try:
        attempt = _attempt(request, task)
    except ValidationFailed as exc:
        return error_page(request, exc, 400)
    if stream not in STREAMS:
        return error_page(request, NotFound(f"No log stream {stream[:20]!r}; use stdout or "
                                            "stderr."), 404)
    texts = (LogChunk.objects.filter(task=task, attempt=attempt, stream=stream)
             .order_by("seq").values_list("text", flat=True)
             .iterator(chunk_size=DOWNLOAD_BATCH))
    response = StreamingHttpResponse(texts, content_type="text/plain; charset=utf-8")
    name = f"{task.run.flow.name}-{task.run.number}-{task.step_name}-{task.id}-{stream}.txt"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@login_required
@require_GET
def artifact_download(request, flow, run_id, step, task_id, name):
    """Send the pickled bytes as stored; unpickle them with the SDK, never here."""
    task, error = _task_or_error(request, flow, run_id, step, task_id)
    if error:
        return error
    try:
        attempt = _attempt(request, task)
    except ValidationFailed as exc:
        return error_page(request, exc, 400)
    artifact = (Artifact.objects.filter(task=task, attempt=attempt, name=name)
                .select_related("blob").first())
    if artifact is None:
        return error_page(request, NotFound(
            f"Task {task.pathspec} has no artifact named {name[:200]!r} in attempt "
            f"{attempt}."), 404)
    response = FileResponse(storage().open(artifact.blob.storage_key, "rb"),
                            content_type="application/octet-stream", as_attachment=True,
                            filename=f"{name}.pkl")
    response["X-Content-SHA256"] = artifact.blob.sha256
    return response
