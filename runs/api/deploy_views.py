"""REST API for production deployments under /api/v1/deployments.

The production token travels in the X-Production-Token header, never in a URL, so it
stays out of access logs and browser history.
"""

from __future__ import annotations

import json
import logging

from django.conf import settings as django_settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from runs import deployment_selectors, deployments, selectors, services
from runs.errors import ValidationFailed
from runs.packages import package_store, read_package

logger = logging.getLogger(__name__)

TOKEN_PARAM = OpenApiParameter(
    deployments.TOKEN_HEADER, str, location=OpenApiParameter.HEADER, required=False,
    description="The deployment's production token. Not needed by the previous deployer.",
)


def production_token(request) -> str | None:
    return request.headers.get(deployments.TOKEN_HEADER) or None


class DeploymentSerializer(serializers.Serializer):
    flow = serializers.CharField(source="flow.name")
    namespace = serializers.CharField()
    deployed_by = serializers.SerializerMethodField()
    deployed_at = serializers.DateTimeField()
    created_at = serializers.DateTimeField()
    token_issued_at = serializers.DateTimeField()
    schedule = serializers.CharField()
    paused = serializers.BooleanField()
    tags = serializers.ListField(child=serializers.CharField())
    client_namespace = serializers.CharField(allow_null=True)
    parameter_specs = serializers.ListField(child=serializers.DictField())
    code_sha256 = serializers.CharField(source="code_package.sha256")

    def get_deployed_by(self, deployment) -> str | None:
        return deployment.deployed_by.username if deployment.deployed_by else None


class DeploymentEventSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    flow = serializers.CharField(source="flow_name")
    namespace = serializers.CharField()
    action = serializers.CharField()
    actor = serializers.CharField()
    message = serializers.CharField()
    created_at = serializers.DateTimeField()


class TriggerSerializer(serializers.Serializer):
    parameters = serializers.DictField(required=False, default=dict)


def parse_deploy_request(request) -> dict:
    """Validate the multipart deploy request and return the deploy service's inputs."""
    raw_meta = request.data.get("metadata")
    upload = request.FILES.get("package")
    if not raw_meta or upload is None:
        raise ValidationFailed(
            "Send multipart fields 'metadata' (JSON) and 'package' (tar.gz).", code="invalid"
        )
    try:
        meta = json.loads(raw_meta) if isinstance(raw_meta, str) else raw_meta
    except ValueError:
        raise ValidationFailed("metadata is not valid JSON.") from None
    if not isinstance(meta, dict):
        raise ValidationFailed("metadata must be a JSON object.")
    flow_name = services.validate_name(meta.get("flow", ""), "Flow name")
    flow_file = meta.get("flow_file") or ""
    if not isinstance(flow_file, str) or not flow_file.endswith(".py") or len(flow_file) > 300:
        raise ValidationFailed("flow_file must name the flow's .py file in the package.")
    limit = django_settings.FLOWSITE_MAX_PACKAGE_BYTES
    if upload.size > limit:
        raise ValidationFailed(
            f"The code package is {upload.size} bytes; the limit is {limit} bytes. "
            "Move data files out of the flow's folder.",
            code="package_too_large",
        )
    tags = meta.get("tags") or []
    if not isinstance(tags, list):
        raise ValidationFailed("tags must be a list of strings.", code="invalid_tag")
    specs = meta.get("parameter_specs") or []
    if not isinstance(specs, list):
        raise ValidationFailed("parameter_specs must be a list.")
    client_namespace = meta.get("namespace")
    if client_namespace is not None and not isinstance(client_namespace, str):
        raise ValidationFailed("namespace must be a string.")

    data = upload.read()
    source = read_package(data, flow_file)
    graph = services.graph_from_source(source, flow_file, flow_name)
    # Checked here too, so a bad @schedule is rejected before the package is stored.
    deployments.schedule_from_graph(graph)
    return {
        "flow_name": flow_name,
        "flow_file": flow_file,
        "graph": graph,
        "data": data,
        "parameter_specs": specs,
        "tags": tags,
        "client_namespace": client_namespace,
        "generate_new_token": bool(meta.get("generate_new_token")),
    }


class DeploymentListView(APIView):
    @extend_schema(parameters=[OpenApiParameter("cursor", str),
                               OpenApiParameter("page_size", int)],
                   responses={200: DeploymentSerializer(many=True)})
    def get(self, request):
        items, next_cursor = selectors.page(
            deployment_selectors.deployments_all(), cursor=request.query_params.get("cursor"),
            page_size=request.query_params.get("page_size"),
        )
        return Response({"results": DeploymentSerializer(items, many=True).data,
                         "next_cursor": next_cursor})

    @extend_schema(parameters=[TOKEN_PARAM], request={"multipart/form-data": OpenApiTypes.OBJECT},
                   responses={201: OpenApiTypes.OBJECT, 200: OpenApiTypes.OBJECT})
    def post(self, request):
        parsed = parse_deploy_request(request)
        package = package_store(parsed.pop("data"))
        deployment, raw = deployments.deployment_deploy(
            user=request.user, package=package, token=production_token(request), **parsed
        )
        body = dict(DeploymentSerializer(deployment).data)
        body["first_deploy"] = deployment.generation == 0 and raw is not None
        # Tells the CLI whether the token it sent is worth storing: the previous deployer
        # is let in even with a stale one.
        body["token_accepted"] = deployments.token_matches(
            deployment, deployments.token_normalize(production_token(request)))
        # The token is in this response only; the server keeps its hash.
        body["token"] = raw
        code = status.HTTP_201_CREATED if raw else status.HTTP_200_OK
        return Response(body, status=code)


class DeploymentDetailView(APIView):
    @extend_schema(responses={200: DeploymentSerializer})
    def get(self, request, flow):
        deployment = deployments.deployment_get(flow)
        return Response(DeploymentSerializer(deployment).data)

    @extend_schema(parameters=[TOKEN_PARAM], request=None, responses={204: None})
    def delete(self, request, flow):
        deployment = deployments.deployment_get(flow)
        deployments.deployment_delete(deployment=deployment, user=request.user,
                                      token=production_token(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class DeploymentTriggerView(APIView):
    @extend_schema(parameters=[TOKEN_PARAM], request=TriggerSerializer,
                   responses={201: OpenApiTypes.OBJECT})
    def post(self, request, flow):
        data = TriggerSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        deployment = deployments.deployment_get(flow)
        run = deployments.deployment_trigger(
            deployment=deployment, user=request.user, token=production_token(request),
            parameters=data.validated_data["parameters"], via="api",
        )
        token_accepted = deployments.token_matches(
            deployment, deployments.token_normalize(production_token(request)))
        return Response({"pathspec": run.pathspec, "flow": flow, "id": run.number,
                         "namespace": run.identity_namespace, "status": run.status,
                         "triggered_by": run.triggered_by, "token_accepted": token_accepted},
                        status=status.HTTP_201_CREATED)


class DeploymentPauseView(APIView):
    paused = True

    @extend_schema(parameters=[TOKEN_PARAM], request=None,
                   responses={200: DeploymentSerializer})
    def post(self, request, flow):
        deployment = deployments.deployment_get(flow)
        deployment = deployments.deployment_pause(
            deployment=deployment, user=request.user, token=production_token(request),
            paused=self.paused,
        )
        return Response(DeploymentSerializer(deployment).data)


class DeploymentResumeView(DeploymentPauseView):
    paused = False


class DeploymentTokenView(APIView):
    """Staff only: issue a new production token. The response is the only place it appears."""

    @extend_schema(request=None, responses={201: OpenApiTypes.OBJECT})
    def post(self, request, flow):
        deployment = deployments.deployment_get(flow)
        raw = deployments.deployment_token_issue(deployment=deployment, user=request.user)
        return Response({"flow": flow, "namespace": deployment.namespace, "token": raw},
                        status=status.HTTP_201_CREATED)


class DeploymentResetView(APIView):
    """Staff only: move production to a fresh, empty namespace; the token stays."""

    @extend_schema(request=None, responses={200: DeploymentSerializer})
    def post(self, request, flow):
        deployment = deployments.deployment_get(flow)
        deployment = deployments.deployment_namespace_reset(deployment=deployment,
                                                            user=request.user)
        return Response(DeploymentSerializer(deployment).data)


class DeploymentEventListView(APIView):
    @extend_schema(parameters=[OpenApiParameter("flow", str), OpenApiParameter("cursor", str),
                               OpenApiParameter("page_size", int)],
                   responses={200: DeploymentEventSerializer(many=True)})
    def get(self, request, flow=None):
        events = deployment_selectors.events(flow or request.query_params.get("flow"))
        items, next_cursor = selectors.page(
            events, cursor=request.query_params.get("cursor"),
            page_size=request.query_params.get("page_size"),
        )
        return Response({"results": DeploymentEventSerializer(items, many=True).data,
                         "next_cursor": next_cursor})


class FlowDeploymentEventListView(DeploymentEventListView):
    """The audit log of one flow's deployment, including entries from before a delete."""

    @extend_schema(operation_id="deployments_flow_events_list",
                   parameters=[OpenApiParameter("cursor", str),
                               OpenApiParameter("page_size", int)],
                   responses={200: DeploymentEventSerializer(many=True)})
    def get(self, request, flow):
        return super().get(request, flow)
