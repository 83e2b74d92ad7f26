"""The benchmark loader: consistent runs, tags, tag counts and run numbers."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.db.models import Count

from runs.models import Flow, Run, RunTag, Status, TagCount

pytestmark = pytest.mark.django_db(transaction=True)


def load(**options) -> str:
    out = io.StringIO()
    call_command("flowsite_load_bench", stdout=out, **options)
    return out.getvalue()


def test_load_bench_needs_postgres():
    if connection.vendor == "postgresql":
        pytest.skip("checks the error on other databases")
    with pytest.raises(CommandError, match="needs PostgreSQL"):
        load(runs=10)


def test_load_bench_consistent():
    if connection.vendor != "postgresql":
        pytest.skip("flowsite_load_bench writes with COPY, which needs PostgreSQL")
    load(runs=300, flows=3, batch=120, failed_newest=5)
    newest = Run.objects.filter(flow__name="BenchFlow0", identity_namespace="user:anne")
    assert {run.status for run in newest.order_by("-id")[:5]} == {Status.FAILED}
    load(runs=50, flows=3, batch=120, failed_newest=0, seed=7)

    bench_runs = Run.objects.filter(flow__name__startswith="BenchFlow")
    assert bench_runs.count() == 350

    # Every tag row is counted once in TagCount, across both loads and the wide run.
    actual = dict(RunTag.objects.values_list("name").annotate(total=Count("id")))
    counted = dict(TagCount.objects.filter(count__gt=0).values_list("name", "count"))
    assert counted == actual

    # Run numbers continue from one load to the next, without gaps or repeats.
    for flow in Flow.objects.filter(name__startswith="BenchFlow"):
        numbers = list(flow.runs.order_by("number").values_list("number", flat=True))
        assert numbers == list(range(1, len(numbers) + 1))
        assert flow.last_run_number == len(numbers)

    wide = Run.objects.filter(flow__name="WideFlow").order_by("id").first()
    assert wide.tasks.count() == 200
    assert wide.status == Status.COMPLETED
