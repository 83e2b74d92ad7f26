"""Flowsite: run flows on Celery workers and keep every result organized.

Importing this package loads the SDK only; Django is never imported from here.
"""

__version__ = "0.1.0"

from flowsite.sdk.current import current  # noqa: E402
from flowsite.sdk.flowspec import (  # noqa: E402
    FlowSpec,
    JSONType,
    Parameter,
    catch,
    resources,
    retry,
    schedule,
    step,
    timeout,
)


_CLIENT_NAMES = {
    "Flow", "Run", "Step", "Task", "DataArtifact", "Metaflow", "Flowsite", "namespace",
    "get_namespace", "default_namespace", "NamespaceMismatch", "NotFound",
    "InvalidPathspec", "TaggingError",
}


def __getattr__(name):
    # The client API imports requests; load it only when a script asks for it.
    if name not in _CLIENT_NAMES:
        raise AttributeError(f"module 'flowsite' has no attribute {name!r}")
    from flowsite.sdk import client

    return getattr(client, name)


__all__ = [
    "FlowSpec",
    "JSONType",
    "Parameter",
    "catch",
    "current",
    "resources",
    "retry",
    "schedule",
    "step",
    "timeout",
    "Flow",
    "Run",
    "Step",
    "Task",
    "DataArtifact",
    "Metaflow",
    "Flowsite",
    "namespace",
    "get_namespace",
    "default_namespace",
    "NamespaceMismatch",
    "NotFound",
    "InvalidPathspec",
    "TaggingError",
]
