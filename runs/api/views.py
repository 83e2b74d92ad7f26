"""REST API views: validate, call one service or selector, serialize."""

from __future__ import annotations

import logging
import platform

from django.contrib.auth import authenticate
from django.db import transaction
from django.db.models import Count
from django.http import HttpResponse
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from runs import selectors, services
from runs.api import serializers as s
from runs.api.submissions import read_submission
from runs.errors import ValidationFailed
from runs.models import Artifact, LogChunk, RunTag, TagCount, TagEvent, Task
from runs.packages import package_store, storage
from tokens.models import ApiToken

logger = logging.getLogger(__name__)

NAMESPACE_PARAM = OpenApiParameter(
    "namespace", str, description="Check that the object is in this namespace "
    "(a tag, such as user:anne). Empty means the global namespace."
)


def namespace_param(request) -> tuple[bool, str | None]:
    """Return (given, namespace): the namespace query parameter, if the client sent one."""
    if "namespace" not in request.query_params:
        return False, None
    return True, selectors.normalize_namespace(request.query_params.get("namespace"))


def run_from_path(request, flow: str, run_id: str):
    given, namespace = namespace_param(request)
    return selectors.run_get(flow, run_id, namespace=namespace, check=given)


def parse_time(value: str | None, name: str):
    if not value:
        return None
    parsed = parse_datetime(value)
    if parsed is None:
        raise ValidationFailed(
            f"{name}={value!r} is not an ISO 8601 date-time, e.g. 2026-01-31T12:00:00Z.",
            code="invalid_filter",
        )
    return parsed


def user_namespace(user) -> str:
    return f"user:{user.username}"


class LoginView(APIView):
    """Exchange a username and password for a new API token (shown once)."""

    permission_classes = [AllowAny]
    authentication_classes = []
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "login"

    @extend_schema(request=s.LoginSerializer, responses={201: OpenApiTypes.OBJECT})
    def post(self, request):
        data = s.LoginSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = authenticate(
            request, username=data.validated_data["username"],
            password=data.validated_data["password"],
        )
        if user is None:
            logger.warning("failed API login for username %r", data.validated_data["username"])
            return Response(
                {"error": "Invalid username or password.", "code": "invalid_credentials"},
                status=status.HTTP_401_UNAUTHORIZED,
            )
        token, raw = ApiToken.issue(user=user, name=data.validated_data["name"])
        logger.info("API token %s issued to %s", token.prefix, user.username)
        return Response(
            {"token": raw, "username": user.username, "namespace": user_namespace(user)},
            status=status.HTTP_201_CREATED,
        )


class WhoAmIView(APIView):
    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        user = request.user
        return Response({
            "username": user.username,
            "namespace": user_namespace(user),
            "is_staff": user.is_staff,
        })


class FlowListView(APIView):
    @extend_schema(parameters=[NAMESPACE_PARAM], responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        _, namespace = namespace_param(request)
        flows = selectors.flows_in_namespace(namespace)
        items, next_cursor = selectors.page(
            flows.order_by("-id"), cursor=request.query_params.get("cursor"),
            page_size=request.query_params.get("page_size"),
        )
        return Response({
            "results": [{"name": flow.name, "created_at": flow.created_at} for flow in items],
            "next_cursor": next_cursor,
        })


class FlowDetailView(APIView):
    @extend_schema(operation_id="flow_detail", parameters=[NAMESPACE_PARAM],
                   responses={200: OpenApiTypes.OBJECT})
    def get(self, request, flow):
        from runs.models import Flow

        if not Flow.objects.filter(name=flow).exists():
            raise selectors.NotFound(f"Flow {flow} does not exist.")
        _, namespace = namespace_param(request)
        latest = selectors.latest_run(flow, namespace)
        latest_ok = selectors.latest_run(flow, namespace, successful=True)
        return Response({
            "name": flow,
            "latest_run": latest.number if latest else None,
            "latest_successful_run": latest_ok.number if latest_ok else None,
        })


RUN_FILTERS = [
    NAMESPACE_PARAM,
    OpenApiParameter("tag", str, many=True, description="Repeat for several tags."),
    OpenApiParameter("tag_mode", str, enum=["all", "any"]),
    OpenApiParameter("flow", str),
    OpenApiParameter("status", str, enum=["pending", "running", "completed", "failed",
                                          "cancelled"]),
    OpenApiParameter("user", str),
    OpenApiParameter("created_after", OpenApiTypes.DATETIME),
    OpenApiParameter("created_before", OpenApiTypes.DATETIME),
    OpenApiParameter("cursor", str),
    OpenApiParameter("page_size", int),
]


def runs_filtered(request):
    params = request.query_params
    tag_mode = params.get("tag_mode", "all")
    if tag_mode not in ("all", "any"):
        raise ValidationFailed("tag_mode must be 'all' or 'any'.", code="invalid_filter")
    _, namespace = namespace_param(request)
    return selectors.runs_in_namespace(
        namespace=namespace,
        tags=params.getlist("tag"),
        tag_mode=tag_mode,
        flow=params.get("flow"),
        status=params.get("status"),
        user=params.get("user"),
        created_after=parse_time(params.get("created_after"), "created_after"),
        created_before=parse_time(params.get("created_before"), "created_before"),
    )


class RunListView(APIView):
    @extend_schema(parameters=RUN_FILTERS, responses={200: s.RunSerializer(many=True)})
    def get(self, request):
        runs = runs_filtered(request)
        items, next_cursor = selectors.page(
            selectors.with_tags(runs), cursor=request.query_params.get("cursor"),
            page_size=request.query_params.get("page_size"),
        )
        return Response({
            "results": s.RunSerializer(items, many=True).data,
            "next_cursor": next_cursor,
        })

    @extend_schema(request={"multipart/form-data": s.RunCreateSerializer},
                   responses={201: s.RunSerializer})
    def post(self, request):
        sub = read_submission(request)
        meta = sub.meta
        # One transaction: a run rejected by run_create leaves no package row behind.
        with transaction.atomic():
            package = package_store(sub.data)
            run = services.run_create(
                user=request.user,
                flow_name=sub.flow_name,
                graph=sub.graph,
                flow_file=sub.flow_file,
                package=package,
                parameters=meta.get("parameters") or {},
                parameter_specs=sub.parameter_specs,
                user_tags=sub.tags,
                identity_namespace=user_namespace(request.user),
                runtime=str(meta.get("runtime") or "local")[:100],
                python_version=str(
                    meta.get("python_version") or platform.python_version()
                )[:40],
                client_namespace=sub.client_namespace,
                triggered_by=f"user:{request.user.username}",
            )
        run = selectors.with_tags(type(run).objects.filter(pk=run.pk)).get()
        return Response(s.RunSerializer(run).data, status=status.HTTP_201_CREATED)


class RunDetailView(APIView):
    @extend_schema(parameters=[NAMESPACE_PARAM], responses={200: s.RunDetailSerializer})
    def get(self, request, flow, run_id):
        run = run_from_path(request, flow, run_id)
        run = selectors.with_tags(type(run).objects.filter(pk=run.pk)).get()
        return Response(s.RunDetailSerializer(run).data)


class RunCancelView(APIView):
    @extend_schema(request=None, responses={200: s.RunSerializer})
    def post(self, request, flow, run_id):
        run = selectors.run_get(flow, run_id, check=False)
        services.run_cancel(run=run, user=request.user)
        run = selectors.with_tags(type(run).objects.filter(pk=run.pk)).get()
        return Response(s.RunSerializer(run).data)


class RunTagsView(APIView):
    @extend_schema(parameters=[NAMESPACE_PARAM], request=s.TagMutationSerializer,
                   responses={200: s.RunSerializer})
    def post(self, request, flow, run_id):
        run = run_from_path(request, flow, run_id)
        data = s.TagMutationSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.tags_mutate(
            run=run, user=request.user,
            add=data.validated_data["add"], remove=data.validated_data["remove"],
        )
        run = selectors.with_tags(type(run).objects.filter(pk=run.pk)).get()
        return Response(s.RunSerializer(run).data)


class RunTagEventsView(APIView):
    @extend_schema(parameters=[NAMESPACE_PARAM], responses={200: s.TagEventSerializer(many=True)})
    def get(self, request, flow, run_id):
        run = run_from_path(request, flow, run_id)
        events = TagEvent.objects.filter(run=run).select_related("user").order_by("-id")
        items, next_cursor = selectors.page(
            events, cursor=request.query_params.get("cursor"),
            page_size=request.query_params.get("page_size"),
        )
        return Response({"results": s.TagEventSerializer(items, many=True).data,
                         "next_cursor": next_cursor})


class StepListView(APIView):
    @extend_schema(parameters=[NAMESPACE_PARAM], responses={200: s.StepSerializer(many=True)})
    def get(self, request, flow, run_id):
        run = run_from_path(request, flow, run_id)
        steps = run.steps.annotate(task_count=Count("tasks")).order_by("id")
        results = [
            {"name": step.name, "status": step.status, "started_at": step.started_at,
             "finished_at": step.finished_at, "pathspec": f"{run.pathspec}/{step.name}",
             "task_count": step.task_count}
            for step in steps if step.task_count
        ]
        return Response({"results": s.StepSerializer(results, many=True).data,
                         "next_cursor": None})


class StepDetailView(APIView):
    @extend_schema(parameters=[NAMESPACE_PARAM], responses={200: s.StepSerializer})
    def get(self, request, flow, run_id, step):
        run = run_from_path(request, flow, run_id)
        found = selectors.step_get(run, step)
        count = found.tasks.count()
        if not count:
            raise selectors.NotFound(f"Step {run.pathspec}/{step} has not run.")
        return Response(s.StepSerializer({
            "name": found.name, "status": found.status, "started_at": found.started_at,
            "finished_at": found.finished_at, "pathspec": f"{run.pathspec}/{found.name}",
            "task_count": count,
        }).data)


def task_queryset():
    return Task.objects.select_related("run", "run__flow", "origin_task", "origin_task__run",
                                       "origin_task__run__flow")


class TaskListView(APIView):
    @extend_schema(parameters=[NAMESPACE_PARAM], responses={200: s.TaskSerializer(many=True)})
    def get(self, request, flow, run_id, step):
        run = run_from_path(request, flow, run_id)
        selectors.step_get(run, step)
        tasks = task_queryset().filter(run=run, step_name=step).order_by("-id")
        items, next_cursor = selectors.page(
            tasks, cursor=request.query_params.get("cursor"),
            page_size=request.query_params.get("page_size"),
        )
        return Response({"results": s.TaskSerializer(items, many=True).data,
                         "next_cursor": next_cursor})


def task_from_path(request, flow, run_id, step, task_id):
    run = run_from_path(request, flow, run_id)
    return selectors.task_get(run, step, task_id)


def attempt_param(request, task) -> int:
    raw = request.query_params.get("attempt")
    if raw in (None, ""):
        return task.attempt
    try:
        return int(raw)
    except ValueError:
        raise ValidationFailed("attempt must be an integer.", code="invalid_filter") from None


class TaskDetailView(APIView):
    @extend_schema(parameters=[NAMESPACE_PARAM], responses={200: s.TaskSerializer})
    def get(self, request, flow, run_id, step, task_id):
        task = task_from_path(request, flow, run_id, step, task_id)
        data = s.TaskSerializer(task).data
        data["attempts"] = [
            {"number": a.number, "status": a.status, "worker_host": a.worker_host,
             "started_at": a.started_at, "finished_at": a.finished_at, "error": a.error}
            for a in task.attempts.order_by("number")
        ]
        return Response(data)


class TaskLogsView(APIView):
    @extend_schema(
        parameters=[NAMESPACE_PARAM,
                    OpenApiParameter("stream", str, enum=["stdout", "stderr"]),
                    OpenApiParameter("attempt", int),
                    OpenApiParameter("after", int, description="Return chunks after this seq."),
                    OpenApiParameter("limit", int)],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request, flow, run_id, step, task_id):
        task = task_from_path(request, flow, run_id, step, task_id)
        stream = request.query_params.get("stream", "stdout")
        if stream not in ("stdout", "stderr"):
            raise ValidationFailed("stream must be stdout or stderr.", code="invalid_filter")
        attempt = attempt_param(request, task)
        try:
            after = int(request.query_params.get("after", -1))
            limit = max(1, min(int(request.query_params.get("limit", 500)), 2000))
        except ValueError:
            raise ValidationFailed("after and limit must be integers.",
                                   code="invalid_filter") from None
        chunks = list(
            LogChunk.objects.filter(task=task, attempt=attempt, stream=stream, seq__gt=after)
            .order_by("seq").values("seq", "text")[: limit + 1]
        )
        more = len(chunks) > limit
        chunks = chunks[:limit]
        return Response({
            "stream": stream,
            "attempt": attempt,
            "chunks": chunks,
            "last_seq": chunks[-1]["seq"] if chunks else after,
            "more": more,
            "finished": task.status in ("completed", "failed", "cancelled")
            or attempt < task.attempt,
        })


class TaskArtifactsView(APIView):
    @extend_schema(parameters=[NAMESPACE_PARAM, OpenApiParameter("attempt", int)],
                   responses={200: s.ArtifactSerializer(many=True)})
    def get(self, request, flow, run_id, step, task_id):
        task = task_from_path(request, flow, run_id, step, task_id)
        attempt = attempt_param(request, task)
        rows = Artifact.objects.filter(task=task, attempt=attempt).select_related("blob")
        return Response({"results": s.ArtifactSerializer(rows.order_by("name"), many=True).data,
                         "next_cursor": None})


def artifact_row(request, flow, run_id, step, task_id, name):
    task = task_from_path(request, flow, run_id, step, task_id)
    attempt = attempt_param(request, task)
    row = Artifact.objects.select_related("blob").filter(
        task=task, attempt=attempt, name=name
    ).first()
    if row is None:
        raise selectors.NotFound(
            f"Artifact {name!r} of {flow}/{run_id}/{step}/{task_id} (attempt {attempt}) "
            "does not exist."
        )
    return row


class ArtifactDetailView(APIView):
    @extend_schema(parameters=[NAMESPACE_PARAM, OpenApiParameter("attempt", int)],
                   responses={200: s.ArtifactSerializer})
    def get(self, request, flow, run_id, step, task_id, name):
        row = artifact_row(request, flow, run_id, step, task_id, name)
        return Response(s.ArtifactSerializer(row).data)


class ArtifactBytesView(APIView):
    """The pickled bytes of an artifact. The server sends them without unpickling."""

    @extend_schema(parameters=[NAMESPACE_PARAM, OpenApiParameter("attempt", int)],
                   responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
    def get(self, request, flow, run_id, step, task_id, name):
        row = artifact_row(request, flow, run_id, step, task_id, name)
        with storage().open(row.blob.storage_key, "rb") as handle:
            data = handle.read()
        response = HttpResponse(data, content_type="application/octet-stream")
        response["Content-Disposition"] = f'attachment; filename="{name}.pkl"'
        response["X-Content-SHA256"] = row.blob.sha256
        return response


class NamespaceListView(APIView):
    """Namespaces that exist: user namespaces, production namespaces and popular tags."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        def names(prefix, limit=200):
            return [
                {"name": row.name, "runs": row.count}
                for row in TagCount.objects.filter(name__startswith=prefix, count__gt=0)
                .order_by("name")[:limit]
            ]

        popular = [
            {"name": row.name, "runs": row.count}
            for row in TagCount.objects.filter(system=False, count__gt=0).order_by("-count")[:50]
        ]
        return Response({
            "current_user": user_namespace(request.user),
            "users": names("user:"),
            "production": names("production:"),
            "tags": popular,
        })


class TagSuggestView(APIView):
    @extend_schema(parameters=[OpenApiParameter("q", str)], responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        prefix = request.query_params.get("q", "")[:500]
        rows = TagCount.objects.filter(name__startswith=prefix, count__gt=0).order_by(
            "-count", "name")[:20]
        return Response({"results": [
            {"name": row.name, "system": row.system, "runs": row.count} for row in rows
        ]})


class TokenListView(APIView):
    def get_throttles(self):
        # Issuing tokens is throttled per user, like login; listing them is not.
        if self.request.method == "POST":
            self.throttle_scope = "token_create"
            return [ScopedRateThrottle()]
        return super().get_throttles()

    @extend_schema(parameters=[OpenApiParameter("cursor", str),
                               OpenApiParameter("page_size", int)],
                   responses={200: s.TokenSerializer(many=True)})
    def get(self, request):
        tokens, next_cursor = selectors.page(
            ApiToken.objects.filter(user=request.user).order_by("-id"),
            cursor=request.query_params.get("cursor"),
            page_size=request.query_params.get("page_size"),
        )
        return Response({"results": s.TokenSerializer(tokens, many=True).data,
                         "next_cursor": next_cursor})

    @extend_schema(request=s.TokenCreateSerializer, responses={201: OpenApiTypes.OBJECT})
    def post(self, request):
        data = s.TokenCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        token, raw = ApiToken.issue(user=request.user, name=data.validated_data["name"])
        payload = dict(s.TokenSerializer(token).data)
        payload["token"] = raw
        return Response(payload, status=status.HTTP_201_CREATED)


class TokenDetailView(APIView):
    @extend_schema(request=None, responses={204: None})
    def delete(self, request, token_id):
        from django.utils import timezone

        updated = ApiToken.objects.filter(
            pk=token_id, user=request.user, revoked_at__isnull=True
        ).update(revoked_at=timezone.now())
        if not updated:
            raise selectors.NotFound(f"Token {token_id} does not exist or is already revoked.")
        return Response(status=status.HTTP_204_NO_CONTENT)


__all__ = ["RunTag"]


class RunLogsView(APIView):
    """Log chunks of every task of a run in the order they were written, for the CLI."""

    @extend_schema(parameters=[NAMESPACE_PARAM, OpenApiParameter("after", int),
                               OpenApiParameter("limit", int)],
                   responses={200: OpenApiTypes.OBJECT})
    def get(self, request, flow, run_id):
        run = run_from_path(request, flow, run_id)
        try:
            after = int(request.query_params.get("after", 0))
            limit = max(1, min(int(request.query_params.get("limit", 500)), 2000))
        except ValueError:
            raise ValidationFailed("after and limit must be integers.",
                                   code="invalid_filter") from None
        chunks = list(
            LogChunk.objects.filter(run=run, id__gt=after).order_by("id")
            .values("id", "task_id", "task__step_name", "attempt", "stream", "text")[:limit]
        )
        return Response({
            "status": run.status,
            "error": run.error,
            "chunks": [
                {"id": c["id"], "task_id": c["task_id"], "step": c["task__step_name"],
                 "attempt": c["attempt"], "stream": c["stream"], "text": c["text"]}
                for c in chunks
            ],
            "last_id": chunks[-1]["id"] if chunks else after,
        })
