"""REST API for production deployments under /api/v1/deployments.

The production token travels in the X-Production-Token header, never in a URL, so it
stays out of access logs and browser history.
"""

from __future__ import annotations

import logging

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from runs import deployment_selectors, deployments, selectors
from runs.api.submissions import read_submission
from runs.packages import package_store

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
    sub = read_submission(request)
    graph = sub.graph
    # Checked here too, so a bad @schedule is rejected before the package is stored.
    deployments.schedule_from_graph(graph)
    return {
        "flow_name": sub.flow_name,
        "flow_file": sub.flow_file,
        "graph": graph,
        "data": sub.data,
        "parameter_specs": sub.parameter_specs,
        "tags": sub.tags,
        "client_namespace": sub.client_namespace,
        "generate_new_token": bool(sub.meta.get("generate_new_token")),
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
