"""Errors raised by services and selectors; the API maps each to a status code."""


class ServiceError(Exception):
    status = 400
    code = "invalid"

    def __init__(self, message: str, *, code: str | None = None, details=None):
        super().__init__(message)
        if code:
            self.code = code
        self.details = details or {}


class ValidationFailed(ServiceError):
    status = 400
    code = "invalid"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class NamespaceMismatch(ServiceError):
    status = 404
    code = "namespace_mismatch"


class RuleViolation(ServiceError):
    status = 422
    code = "rule_violation"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"
