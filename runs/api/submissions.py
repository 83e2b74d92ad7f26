"""Read a multipart flow submission (run or deploy): metadata JSON plus a code package."""

from __future__ import annotations

import json
from dataclasses import dataclass

from django.conf import settings

from runs import services
from runs.errors import ValidationFailed
from runs.packages import read_package


@dataclass
class Submission:
    meta: dict
    flow_name: str
    flow_file: str
    data: bytes
    graph: dict
    tags: list
    parameter_specs: list
    client_namespace: str | None


def read_submission(request) -> Submission:
    """Validate the metadata and the package, and parse the graph from the package."""
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
    limit = settings.FLOWSITE_MAX_PACKAGE_BYTES
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
    return Submission(
        meta=meta, flow_name=flow_name, flow_file=flow_file, data=data, graph=graph,
        tags=tags, parameter_specs=specs, client_namespace=client_namespace,
    )
