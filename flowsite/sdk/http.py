"""A small HTTP client for the Flowsite API that turns failures into SDK errors."""

from __future__ import annotations

import time

from flowsite.sdk import config
from flowsite.sdk.exceptions import (
    ApiError,
    AuthenticationError,
    ConflictError,
    InvalidPathspec,
    NamespaceMismatch,
    NotFound,
    ServerUnreachable,
    TaggingError,
)

TIMEOUT = (5, 60)
_session = None


def session():
    """Return the shared requests.Session.

    requests is imported here, not at module level, because every step process
    imports this module and most steps never call the API. `python -X importtime`
    measured about 70 ms for requests on the 2-CPU benchmark machine.
    """
    global _session
    if _session is None:
        import requests

        _session = requests.Session()
    return _session


def url_for(path: str) -> str:
    return f"{config.server_url()}/api/v1/{path.lstrip('/')}"


def _headers(token: str | None) -> dict:
    token = token or config.api_token()
    if not token:
        raise AuthenticationError(
            "No API token found. Run `python -m flowsite login`, or set FLOWSITE_TOKEN."
        )
    return {"Authorization": f"Bearer {token}"}


def request(method: str, path: str, *, token: str | None = None, auth: bool = True,
            retries: int = 2, **kwargs):
    url = url_for(path)
    headers = kwargs.pop("headers", {})
    if auth:
        headers.update(_headers(token))
    import requests

    for attempt in range(retries + 1):
        try:
            response = session().request(method, url, headers=headers, timeout=TIMEOUT, **kwargs)
        except requests.ConnectionError:
            if attempt < retries and method == "GET":
                time.sleep(0.5 * (attempt + 1))
                continue
            raise ServerUnreachable(
                f"Cannot reach the Flowsite server at {config.server_url()}. Start it "
                "(make run) or set FLOWSITE_URL to its address."
            ) from None
        except requests.Timeout:
            raise ServerUnreachable(
                f"The Flowsite server at {config.server_url()} did not respond in time."
            ) from None
        if response.status_code >= 500 and attempt < retries and method == "GET":
            time.sleep(0.5 * (attempt + 1))
            continue
        return _check(response)
    return _check(response)


def _check(response):
    if response.status_code < 400:
        if response.headers.get("Content-Type", "").startswith("application/json"):
            return response.json()
        return response
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text[:300] or response.reason}
    message = body.get("error") or body.get("detail") or str(body)
    code = body.get("code", "")
    status = response.status_code
    if status == 401:
        raise AuthenticationError(
            f"{message} Run `python -m flowsite login` to get a new token."
            if "login" not in message else message
        )
    if code == "namespace_mismatch":
        error = NamespaceMismatch(message)
        error.run_namespace = body.get("run_namespace")
        raise error
    if code == "invalid_pathspec":
        raise InvalidPathspec(message)
    if status == 404:
        raise NotFound(message)
    if status == 409:
        raise ConflictError(message, status, code, body)
    if code in ("system_tag", "too_many_tags", "invalid_tag") or (
        status == 422 and "tag" in message.lower()
    ):
        raise TaggingError(message)
    raise ApiError(message, status, code, body)


def get(path: str, **kwargs):
    return request("GET", path, **kwargs)


def post(path: str, **kwargs):
    return request("POST", path, retries=0, **kwargs)
