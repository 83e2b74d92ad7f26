"""drf-spectacular postprocessing hooks that make the served OpenAPI schema match what
the API sends: keyset pages for lists, and the shared error body for failures."""

from __future__ import annotations

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "What went wrong and what to do next."},
        "code": {"type": "string", "description": "A stable machine-readable error code."},
        "fields": {"type": "object", "description": "Per-field messages, when a field "
                   "failed validation.", "additionalProperties": True},
    },
    "required": ["error", "code"],
    "additionalProperties": True,
}

# Statuses any operation can return: bad input, missing or bad token, namespace or
# permission refusal, unknown object, a conflict, a service rule, throttling.
ERROR_STATUSES = {
    "400": "The request is invalid.",
    "401": "Authentication is missing or the token is invalid.",
    "403": "The user may not do this.",
    "404": "The object does not exist.",
    "405": "The method is not allowed on this path.",
    "409": "The request lost a race with another update or conflicts with the object.",
    "413": "The request body is too large.",
    "415": "The content type is not supported.",
    "422": "The request breaks a rule, such as the tag limit.",
    "429": "Too many requests; retry after the time in the Retry-After header.",
}


def _page_of(items_schema: dict) -> dict:
    return {
        "type": "object",
        "properties": {
            "results": items_schema,
            "next_cursor": {"type": "string", "nullable": True,
                            "description": "Pass as ?cursor= for the next page; null "
                            "on the last page."},
        },
        "required": ["results", "next_cursor"],
    }


def document_pages_and_errors(result, generator, request, public):
    """Wrap list responses in {results, next_cursor} and add the error responses.

    Every list endpoint is paginated by keyset, so a 200 response that the views
    declare as an array is sent as a page object.
    """
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    error_ref = {"$ref": "#/components/schemas/Error"}
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            ok = responses.get("200", {}).get("content", {}).get("application/json", {})
            if ok.get("schema", {}).get("type") == "array":
                ok["schema"] = _page_of(ok["schema"])
            for code, description in ERROR_STATUSES.items():
                responses.setdefault(code, {
                    "description": description,
                    "content": {"application/json": {"schema": error_ref}},
                })
    return result
