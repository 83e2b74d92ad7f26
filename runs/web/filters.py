"""The runs page filters, read from the URL so a link reproduces what its sender saw."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode

from runs import selectors
from runs.errors import ValidationFailed
from runs.models import Status
from runs.web.namespaces import current_namespace, namespace_query_value

# Tags a filter may combine; more makes the query slow and the URL unreadable.
MAX_FILTER_TAGS = 10
TIME_FORMATS = ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d")


def _parse_time(value: str, name: str) -> datetime | None:
    """Parse a datetime-local or date input value, read as UTC."""
    if not value:
        return None
    for fmt in TIME_FORMATS:
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise ValidationFailed(
        f"{name}={value[:40]!r} is not a date or time; use the form 2026-01-31T12:00 (UTC).",
        code="invalid_filter",
    )


@dataclass
class RunFilters:
    namespace: str | None
    tags: list[str] = field(default_factory=list)
    tag_mode: str = "all"
    flow: str = ""
    status: str = ""
    user: str = ""
    after: str = ""
    before: str = ""

    @classmethod
    def from_request(cls, request) -> RunFilters:
        get = request.GET
        tags = [tag.strip() for tag in get.getlist("tag") if tag.strip()]
        tags = list(dict.fromkeys(tags))
        tag_mode = get.get("tag_mode", "all") or "all"
        if tag_mode not in ("all", "any"):
            raise ValidationFailed(
                f"tag_mode={tag_mode[:20]!r} is invalid; use 'all' (every tag) or 'any'.",
                code="invalid_filter",
            )
        if len(tags) > MAX_FILTER_TAGS:
            raise ValidationFailed(
                f"{len(tags)} tags given; filter by at most {MAX_FILTER_TAGS} tags at once.",
                code="invalid_filter",
            )
        status = get.get("status", "")
        if status and status not in Status.values:
            raise ValidationFailed(
                f"Unknown status {status[:40]!r}. Use one of: {', '.join(Status.values)}.",
                code="invalid_filter",
            )
        return cls(
            namespace=current_namespace(request),
            tags=tags,
            tag_mode=tag_mode,
            flow=get.get("flow", "").strip()[:200],
            status=status,
            user=get.get("user", "").strip()[:150],
            after=get.get("after", "").strip()[:40],
            before=get.get("before", "").strip()[:40],
        )

    def queryset(self):
        return selectors.runs_in_namespace(
            namespace=self.namespace,
            tags=self.tags,
            tag_mode=self.tag_mode,
            flow=self.flow or None,
            status=self.status or None,
            user=self.user or None,
            created_after=_parse_time(self.after, "after"),
            created_before=_parse_time(self.before, "before"),
        )

    def query_string(self) -> str:
        """Return the canonical URL query of these filters, without paging keys."""
        pairs = [("ns", namespace_query_value(self.namespace))]
        pairs += [("tag", tag) for tag in self.tags]
        if self.tag_mode != "all":
            pairs.append(("tag_mode", self.tag_mode))
        for key in ("flow", "status", "user", "after", "before"):
            value = getattr(self, key)
            if value:
                pairs.append((key, value))
        return urlencode(pairs)

    @property
    def active(self) -> bool:
        return bool(self.tags or self.flow or self.status or self.user or self.after
                    or self.before)
