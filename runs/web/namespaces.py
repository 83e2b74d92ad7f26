"""The namespace a page shows: from the URL (?ns=), else the user's own namespace.

The URL always wins, so a shared link reproduces what its sender saw. `ns=` with an
empty value, or `ns=global`, is the global namespace.
"""

from __future__ import annotations

from urllib.parse import urlencode

from runs.models import TagCount

GLOBAL = "global"
# How many namespaces of each kind the switcher lists; any other one can be typed in.
SWITCHER_LIMIT = 30


def current_namespace(request) -> str | None:
    if "ns" in request.GET:
        value = request.GET.get("ns", "")
        if value in ("", GLOBAL):
            return None
        return value[:500]
    return f"user:{request.user.username}"


def namespace_query_value(namespace: str | None) -> str:
    return GLOBAL if namespace is None else namespace


def namespace_query(namespace: str | None) -> str:
    """Return the `ns=...` query string that selects the namespace."""
    return urlencode({"ns": namespace_query_value(namespace)})


def namespace_choices(request) -> dict:
    """List the namespaces the switcher offers, in two indexed queries on TagCount."""
    own = f"user:{request.user.username}"
    users = list(
        TagCount.objects.filter(name__startswith="user:", count__gt=0)
        .exclude(name=own).order_by("name").values_list("name", flat=True)[:SWITCHER_LIMIT]
    )
    production = list(
        TagCount.objects.filter(name__startswith="production:", count__gt=0)
        .order_by("name").values_list("name", flat=True)[:SWITCHER_LIMIT]
    )
    return {"own": own, "users": users, "production": production}
