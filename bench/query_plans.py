"""Print EXPLAIN ANALYZE for the queries behind the 1,000,000-run benchmark.

Usage: DATABASE_URL=postgres://postgres@127.0.0.1:5432/flowsite_bench1m \
    .venv/bin/python bench/query_plans.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flowsite.settings")

import django  # noqa: E402

django.setup()

from runs import selectors  # noqa: E402
from runs.models import Run, Status, TagCount  # noqa: E402


def show(title: str, queryset) -> None:
    # Run once first, so the plan shows a warm cache as the timed requests see it.
    list(queryset)
    plan = queryset.explain(analyze=True, buffers=True, costs=False)
    print(f"#### {title}\n\n```\n{plan}\n```\n")


def main() -> int:
    runs = selectors.runs_in_namespace
    # The same day as bench/query_bench.py: the middle of anne's runs.
    anne_runs = Run.objects.filter(identity_namespace="user:anne")
    middle = anne_runs.order_by("id")[anne_runs.count() // 2]
    day = f"date:{middle.created_at:%Y%m%d}"
    show("Runs list: namespace user:anne + tags xyz_features, team:alpha (first page)",
         runs(namespace="user:anne", tags=["xyz_features", "team:alpha"])[:51])
    show(f"Runs list: namespace user:anne + tags crazy_test, {day} (rare)",
         runs(namespace="user:anne", tags=["crazy_test", day])[:51])
    show("latest_run: BenchFlow1 in user:anne",
         runs(namespace="user:anne", flow="BenchFlow1")[:2])
    show("latest_successful_run: BenchFlow0 in user:anne, newest 100 runs failed",
         runs(namespace="user:anne", flow="BenchFlow0", status=Status.COMPLETED)[:2])
    show("Tag autocomplete: prefix 'te'",
         TagCount.objects.filter(name__startswith="te", count__gt=0)
         .order_by("-count", "name")[:20])
    return 0


if __name__ == "__main__":
    sys.exit(main())
