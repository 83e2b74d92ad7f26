"""The namespace a page shows: from the URL (?ns=), else the user's own namespace.

The URL always wins, so a shared link reproduces what its sender saw. `ns=` with an
empty value, or `ns=global`, is the global namespace.
"""

GLOBAL = "global"


def current_namespace(request) -> str | None:
    if "ns" in request.GET:
        value = request.GET.get("ns", "")
        if value in ("", GLOBAL):
            return None
        return value[:500]
    return f"user:{request.user.username}"


def namespace_query_value(namespace: str | None) -> str:
    return GLOBAL if namespace is None else namespace
