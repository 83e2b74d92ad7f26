"""REST API for resume: rerun a run from a step in the caller's namespace."""

from __future__ import annotations

import json

from django.conf import settings as django_settings
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from runs import selectors, services
from runs.api import serializers as s
from runs.errors import ValidationFailed
from runs.models import Run
from runs.packages import package_store, read_package
from runs.resume import origin_run_latest, run_resume


class ResumeRequestSerializer(serializers.Serializer):
    step = serializers.CharField(
        required=False, allow_null=True, default=None,
        help_text="Run this step and everything after it again. Empty: resume at the "
        "first task that did not succeed.",
    )
    tags = serializers.ListField(child=serializers.CharField(), required=False, default=list,
                                 help_text="User tags added to the origin run's user tags.")
    flow_file = serializers.CharField(required=False, help_text="The flow's .py file in the "
                                      "package; only with a package.")
    python_version = serializers.CharField(required=False, default="", allow_blank=True)


class ResumeUploadSerializer(serializers.Serializer):
    metadata = serializers.JSONField(help_text="step, tags, flow_file, python_version")
    package = serializers.FileField(required=False, help_text="The flow's folder as a "
                                    "tar.gz archive. Without it, the origin's code is used.")


def resume_request(request) -> tuple[dict, bytes | None]:
    """Return the request's fields and package bytes, from JSON or a multipart upload."""
    raw = request.data.get("metadata")
    if raw is not None:
        try:
            body = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            raise ValidationFailed(
                "metadata is not valid JSON. Send an object such as {\"step\": \"train\"}."
            ) from None
    else:
        body = request.data
    if not isinstance(body, dict):
        raise ValidationFailed("Send the resume request as a JSON object.")
    # The CLI sends an empty parameters object with every upload, so only values are an error.
    if body.get("parameters"):
        raise ValidationFailed(
            "A resumed run keeps the parameters of its origin run, so they cannot be "
            "passed to resume. Start a new run with `run` to change parameters.",
            code="parameters_not_allowed",
        )
    fields = ResumeRequestSerializer(data=body)
    fields.is_valid(raise_exception=True)

    upload = request.FILES.get("package")
    if upload is None:
        return fields.validated_data, None
    limit = django_settings.FLOWSITE_MAX_PACKAGE_BYTES
    if upload.size > limit:
        raise ValidationFailed(
            f"The code package is {upload.size} bytes; the limit is {limit} bytes. "
            "Move data files out of the flow's folder.",
            code="package_too_large",
        )
    return fields.validated_data, upload.read()


def resume_with(request, origin: Run) -> Response:
    """Resume `origin` as the request's user, with the uploaded code if any."""
    fields, data = resume_request(request)
    code = {}
    if data is not None:
        flow_file = fields.get("flow_file") or ""
        if not flow_file.endswith(".py") or len(flow_file) > 300:
            raise ValidationFailed(
                "flow_file must name the flow's .py file in the package.", code="invalid"
            )
        source = read_package(data, flow_file)
        code = {
            "graph": services.graph_from_source(source, flow_file, origin.flow.name),
            "flow_file": flow_file,
            "package": package_store(data),
        }
    run = run_resume(
        user=request.user,
        origin=origin,
        step=fields["step"] or None,
        tags=fields["tags"],
        python_version=fields["python_version"][:40],
        **code,
    )
    run = selectors.with_tags(Run.objects.filter(pk=run.pk)).get()
    return Response(s.RunSerializer(run).data, status=status.HTTP_201_CREATED)


class RunResumeView(APIView):
    """Resume a run from any namespace. The new run is in the caller's namespace."""

    @extend_schema(request={"application/json": ResumeRequestSerializer,
                            "multipart/form-data": ResumeUploadSerializer},
                   responses={201: s.RunSerializer})
    def post(self, request, flow, run_id):
        origin = selectors.run_get(flow, run_id, check=False)
        return resume_with(request, origin)


class FlowResumeView(APIView):
    """Resume your newest run of this flow that was started with `run`."""

    @extend_schema(request={"application/json": ResumeRequestSerializer,
                            "multipart/form-data": ResumeUploadSerializer},
                   responses={201: s.RunSerializer})
    def post(self, request, flow):
        origin = origin_run_latest(flow_name=flow, user=request.user)
        return resume_with(request, origin)
