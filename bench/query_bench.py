"""Server time of API requests and dashboard pages on the 1,000,000-run dataset.

Usage, from the repository root, after loading the data once:

    export DATABASE_URL=postgres://postgres@127.0.0.1:5432/flowsite_bench1m
    .venv/bin/python manage.py migrate
    .venv/bin/python manage.py flowsite_load_bench
    .venv/bin/python bench/query_bench.py [--repeat 50] [--plans]

Each request goes through Django's full middleware and view stack in this process
(django.test.Client, no network), as user anne with an API token for /api/v1/ and a
session for the pages. The script times --repeat requests after 5 warm-up requests
and stops a case early after --budget seconds. Besides wall time it reports the CPU
time of this process (Django, DRF and templates, without PostgreSQL's own work), which
other load on the machine disturbs less. With --plans it prints EXPLAIN ANALYZE for
the slowest SQL query of each case.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flowsite.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.urls import NoReverseMatch, reverse  # noqa: E402

from runs.models import Run, RunTag  # noqa: E402
from tokens.models import ApiToken  # noqa: E402

WARMUP = 5


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def machine_line() -> str:
    model = "unknown"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as handle:
        mem_gb = int(handle.readline().split()[1]) / 1024 / 1024
    return f"{os.cpu_count()} CPUs ({model}), {mem_gb:.1f} GB RAM"


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


class Case:
    """One request to time: a name, a target in ms, and a function that sends it."""

    def __init__(self, name: str, target_ms: float, send, note: str = ""):
        self.name = name
        self.target_ms = target_ms
        self.send = send
        self.note = note


def measure(case: Case, repeat: int, budget: float) -> dict:
    for _ in range(WARMUP):
        response = case.send()
        if response.status_code >= 400:
            return {"error": f"HTTP {response.status_code}: {response.content[:300]!r}"}
    times = []
    cpu_times = []
    began = time.monotonic()
    for _ in range(repeat):
        start = time.perf_counter()
        cpu_start = time.process_time()
        case.send()
        cpu_times.append((time.process_time() - cpu_start) * 1000)
        times.append((time.perf_counter() - start) * 1000)
        if time.monotonic() - began > budget:
            break
    with CaptureQueriesContext(connection) as queries:
        response = case.send()
    return {
        "n": len(times),
        "p50": percentile(times, 0.50),
        "p95": percentile(times, 0.95),
        "cpu_p50": percentile(cpu_times, 0.50),
        "queries": list(queries.captured_queries),
        "bytes": len(response.content),
    }


def explain(sql: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql)
        return "\n".join(row[0] for row in cursor.fetchall())


def url_or_none(name: str, **kwargs) -> str | None:
    try:
        return reverse(name, kwargs=kwargs or None)
    except NoReverseMatch:
        return None


def build_cases(api: Client, web: Client, htmx: Client) -> list[Case]:
    anne_runs = Run.objects.filter(identity_namespace="user:anne")
    # A day with data in the middle of the range, for the rare tag combination.
    middle = anne_runs.order_by("id")[anne_runs.count() // 2]
    day = f"date:{middle.created_at:%Y%m%d}"
    mutated = anne_runs.filter(flow__name="BenchFlow2").order_by("-id").first()
    wide = Run.objects.filter(flow__name="WideFlow").order_by("-id").first()
    state = {"add": True}

    def mutate():
        body = {"add": ["bench_mutation"]} if state["add"] else {"remove": ["bench_mutation"]}
        state["add"] = not state["add"]
        return api.post(
            f"/api/v1/runs/BenchFlow2/{mutated.number}/tags?namespace=user:anne",
            data=json.dumps(body), content_type="application/json",
        )

    common = "namespace=user:anne&tag=xyz_features&tag=team:alpha"
    rare = f"namespace=user:anne&tag=crazy_test&tag={day}"
    cases = [
        Case("API runs, namespace + 2 tags (common: 0.1% of runs match)", 50,
             lambda: api.get(f"/api/v1/runs?{common}")),
        Case(f"API runs, namespace + 2 tags (rare: crazy_test + {day})", 50,
             lambda: api.get(f"/api/v1/runs?{rare}")),
        Case("API latest_run (flow + namespace, page_size=1)", 50,
             lambda: api.get("/api/v1/runs?flow=BenchFlow1&namespace=user:anne&page_size=1")),
        Case("API latest_successful_run, newest 100 runs failed", 50,
             lambda: api.get("/api/v1/runs?flow=BenchFlow0&namespace=user:anne"
                             "&status=completed&page_size=1")),
        Case("API tag mutation (add or remove one tag)", 50, mutate),
        Case("API tag autocomplete /api/v1/tags/suggest?q=te", 30,
             lambda: api.get("/api/v1/tags/suggest?q=te")),
    ]
    runs_page = url_or_none("runs:list")
    if runs_page:
        page_common = common.replace("namespace=", "ns=")
        cases += [
            Case("Runs page, namespace + 2 tags, full", 150,
                 lambda: web.get(f"{runs_page}?{page_common}")),
            Case("Runs page, namespace + 2 tags, HTMX partial", 150,
                 lambda: htmx.get(f"{runs_page}?{page_common}")),
        ]
    run_page = url_or_none("runs:run", flow="WideFlow", run_id=str(wide.number)) if wide else None
    if run_page:
        cases.append(Case(f"Run page of a 200-task run ({wide.pathspec})", 150,
                          lambda: web.get(f"{run_page}?ns=user:anne")))
    suggest_page = url_or_none("runs:tag-suggest")
    if suggest_page:
        cases.append(Case("Page tag autocomplete (typed 'te')", 30,
                          lambda: htmx.get(f"{suggest_page}?tag=te")))
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=50,
                        help="Timed requests per case (default 50).")
    parser.add_argument("--budget", type=float, default=20.0,
                        help="Seconds of timed requests per case at most (default 20).")
    parser.add_argument("--plans", action="store_true",
                        help="Print EXPLAIN ANALYZE of the slowest query of each case.")
    parser.add_argument("--only", default="",
                        help="Run only cases whose name contains this text.")
    args = parser.parse_args()

    if connection.vendor != "postgresql":
        print("Error: set DATABASE_URL to the PostgreSQL database loaded by "
              "`manage.py flowsite_load_bench`.", file=sys.stderr)
        return 1
    anne = get_user_model().objects.filter(username="anne").first()
    run_count = Run.objects.count()
    if anne is None or run_count < 1000:
        print("Error: no benchmark data. Run `manage.py flowsite_load_bench` first.",
              file=sys.stderr)
        return 1
    _, token = ApiToken.issue(user=anne, name="query bench")
    api = Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {token}")
    web = Client(HTTP_HOST="127.0.0.1")
    web.force_login(anne)
    htmx = Client(HTTP_HOST="127.0.0.1", HTTP_HX_REQUEST="true")
    htmx.force_login(anne)

    tag_rows = RunTag.objects.count()
    print(f"Dataset: {run_count} runs, {tag_rows} run tags. Machine: {machine_line()}. "
          f"Load average before: {load_average()}.")
    print("\n| Request | n | p50 ms | p95 ms | target p95 | Django CPU p50 ms | SQL queries |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    plans = []
    for case in build_cases(api, web, htmx):
        if args.only and args.only not in case.name:
            continue
        result = measure(case, args.repeat, args.budget)
        if "error" in result:
            print(f"| {case.name} | - | - | - | {case.target_ms:.0f} ms | - | "
                  f"{result['error']} |")
            continue
        verdict = "" if result["p95"] <= case.target_ms else " (missed)"
        print(f"| {case.name} | {result['n']} | {result['p50']:.1f} | {result['p95']:.1f} | "
              f"{case.target_ms:.0f} ms{verdict} | {result['cpu_p50']:.1f} | "
              f"{len(result['queries'])} |", flush=True)
        if args.plans and result["queries"]:
            slowest = max(result["queries"], key=lambda query: float(query["time"]))
            if slowest["sql"].lstrip().upper().startswith("SELECT"):
                plans.append((case.name, slowest["sql"], explain(slowest["sql"])))
    print(f"\nLoad average after: {load_average()}.")
    for name, sql, plan in plans:
        print(f"\n### {name}\n\n```sql\n{sql}\n```\n\n```\n{plan}\n```")
    ApiToken.objects.filter(name="query bench").delete()
    return 0


if __name__ == "__main__":
    sys.exit(main())
