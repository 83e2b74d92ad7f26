"""Liveness and readiness endpoints for load balancers and process managers.

/healthz returns 200 while the web process can serve requests at all. /readyz returns
200 only when the database, the Celery broker and the artifact storage all respond, so
a load balancer sends no traffic to a process that would fail to start runs.
"""

from __future__ import annotations

import logging
import os

from django.conf import settings
from django.db import connection
from django.http import JsonResponse

logger = logging.getLogger(__name__)

# Seconds each dependency gets to respond, so a probe returns before its own timeout.
CHECK_TIMEOUT = 3


def liveness(request):
    return JsonResponse({"status": "ok"})


def database_check() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def broker_check() -> None:
    """Open and close one connection to the broker that the web process sends tasks to."""
    from kombu import Connection

    with Connection(
        settings.CELERY_BROKER_URL,
        transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        connect_timeout=CHECK_TIMEOUT,
    ) as broker:
        broker.ensure_connection(max_retries=1, interval_start=0, interval_step=0.5,
                                 timeout=CHECK_TIMEOUT)


def storage_check() -> None:
    """Check that the artifact storage exists and is reachable with our credentials."""
    from runs.packages import storage

    store = storage()
    bucket_name = getattr(store, "bucket_name", None)
    if bucket_name:
        # HeadBucket fails on a missing bucket and on wrong credentials, while a
        # HeadObject on a missing key could not tell those apart from "no such key".
        store.connection.meta.client.head_bucket(Bucket=bucket_name)
        return
    location = store.location
    os.makedirs(location, exist_ok=True)
    if not os.access(location, os.W_OK):
        raise PermissionError(f"{location} is not writable by this process")


CHECKS = {"database": database_check, "broker": broker_check, "storage": storage_check}


def readiness(request):
    results = {}
    ready = True
    for name, check in CHECKS.items():
        try:
            check()
        except Exception as exc:  # any failure of a dependency means not ready
            logger.warning("readiness check %s failed: %s: %s", name, type(exc).__name__, exc)
            results[name] = f"{type(exc).__name__}: {exc}"[:300]
            ready = False
        else:
            results[name] = "ok"
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", **results}, status=200 if ready else 503
    )
