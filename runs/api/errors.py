"""Map errors to JSON: {"error": message, "code": code, "fields": {...}}."""

from __future__ import annotations

import logging

from django.db import DataError, OperationalError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_handler

from runs.errors import ServiceError

logger = logging.getLogger(__name__)


def _flatten(detail) -> str:
    if isinstance(detail, dict):
        return "; ".join(f"{key}: {_flatten(value)}" for key, value in detail.items())
    if isinstance(detail, list):
        return " ".join(_flatten(item) for item in detail)
    return str(detail)


def exception_handler(exc, context):
    if isinstance(exc, ServiceError):
        body = {"error": str(exc), "code": exc.code}
        body.update(exc.details)
        return Response(body, status=exc.status)
    if isinstance(exc, DataError):
        logger.info("database rejected a value: %s", exc)
        return Response(
            {"error": "A value cannot be stored by the database (it may contain "
             "characters it does not accept). Remove them and try again.",
             "code": "invalid_value"},
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, OperationalError) and "lock" in str(exc).lower():
        logger.warning("database busy: %s", exc)
        return Response(
            {"error": "The request lost a race with another update; retry it.",
             "code": "conflict"},
            status=status.HTTP_409_CONFLICT,
        )
    response = drf_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    code = getattr(exc, "default_code", "error")
    if isinstance(exc, exceptions.ValidationError):
        response.data = {"error": _flatten(detail), "code": "invalid", "fields": detail}
    elif isinstance(exc, exceptions.NotAuthenticated):
        response.data = {
            "error": "Authentication required. Send 'Authorization: Bearer <token>'; "
            "run `python -m flowsite login` to get one.",
            "code": "not_authenticated",
        }
    else:
        message = detail.get("detail", detail) if isinstance(detail, dict) else detail
        response.data = {"error": _flatten(message), "code": code}
    return response
