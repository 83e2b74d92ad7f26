"""Template helpers for the dashboard: namespace switcher, query strings, durations."""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import urlencode

from django import template

from runs.web.namespaces import namespace_choices as _namespace_choices

register = template.Library()


@register.simple_tag(takes_context=True)
def namespace_choices(context):
    return _namespace_choices(context["request"])


@register.simple_tag
def filters_without_tag(filters, tag):
    """Return the filter query string minus one tag."""
    return replace(filters, tags=[value for value in filters.tags if value != tag]).query_string()


@register.simple_tag
def filters_with_tag(filters, tag):
    """Return the filter query string plus one tag (a chip click filters by it)."""
    tags = filters.tags if tag in filters.tags else [*filters.tags, tag]
    return replace(filters, tags=tags).query_string()


@register.simple_tag
def ns_query(namespace):
    return urlencode({"ns": namespace or "global"})


@register.filter
def duration(seconds):
    """Format seconds as 4.2 s, 3 min 5 s or 2 h 10 min."""
    if seconds is None:
        return ""
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


@register.filter
def filesize(size):
    if size is None:
        return ""
    size = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


@register.filter
def elapsed(obj):
    """Seconds from started_at to finished_at, or None while either is missing."""
    if not getattr(obj, "started_at", None) or not getattr(obj, "finished_at", None):
        return None
    return (obj.finished_at - obj.started_at).total_seconds()


@register.filter
def item(mapping, key):
    """Look up a key of a dict in a template; missing keys give None."""
    if not isinstance(mapping, dict):
        return None
    return mapping.get(key)
