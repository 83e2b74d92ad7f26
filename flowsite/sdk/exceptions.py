"""Errors the SDK and CLI raise. Each message says what to do next."""


class FlowsiteException(Exception):
    headline = "Flowsite error"
    exit_code = 1


class InvalidPathspec(FlowsiteException):
    headline = "Invalid pathspec"


class NotFound(FlowsiteException):
    headline = "Not found"


class NamespaceMismatch(FlowsiteException):
    headline = "Object not in the current namespace"
    # The identity namespace of the object's run, when the server reported it.
    run_namespace: str | None = None


class TaggingError(FlowsiteException):
    headline = "Tagging error"


class AuthenticationError(FlowsiteException):
    headline = "Not logged in"


class ServerUnreachable(FlowsiteException):
    headline = "Server unreachable"


class ApiError(FlowsiteException):
    headline = "Request failed"

    def __init__(self, message: str, status: int = 0, code: str = "", payload=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.payload = payload or {}


class ConflictError(ApiError):
    headline = "Conflict"


class ParameterError(FlowsiteException):
    headline = "Invalid parameter"
    exit_code = 2


class DeploymentError(FlowsiteException):
    headline = "Deployment refused"
