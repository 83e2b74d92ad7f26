"""Bulk-load synthetic runs into PostgreSQL for the query benchmarks in bench/.

Writes runs and their tags with COPY, keeps TagCount and each flow's last run
number in sync, and adds one 200-task run for the run page benchmark. Loading
1,000,000 runs takes a few minutes, so use a dedicated database, for example
DATABASE_URL=postgres://postgres@127.0.0.1:5432/flowsite_bench1m.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.utils import timezone

from flowsite import __version__
from flowsite.sdk.graph import parse_source
from runs import services
from runs.models import Artifact, ArtifactBlob, Flow, LogChunk, Run, Status, Step, Task

# Users of the synthetic runs: the two personas of the tests, then 18 more.
USERS = ["anne", "will"] + [f"user{index:02d}" for index in range(2, 20)]
TEAMS = ["alpha", "beta", "gamma", "delta", "epsilon"]
PYTHON_VERSION = "3.11.2"

LINEAR_SOURCE = '''
from flowsite import FlowSpec, step


class {name}(FlowSpec):
    @step
    def start(self):
        self.next(self.train)

    @step
    def train(self):
        self.next(self.end)

    @step
    def end(self):
        pass
'''

WIDE_SOURCE = '''
from flowsite import FlowSpec, step


class WideFlow(FlowSpec):
    @step
    def start(self):
        self.items = list(range(197))
        self.next(self.work, foreach="items")

    @step
    def work(self):
        self.value = self.input * 2
        self.next(self.join)

    @step
    def join(self, inputs):
        self.total = sum(item.value for item in inputs)
        self.next(self.end)

    @step
    def end(self):
        pass
'''


class Command(BaseCommand):
    help = (
        "Bulk-insert synthetic runs with tags into PostgreSQL for benchmarks. "
        "Appends to existing data; use a dedicated database."
    )

    def add_arguments(self, parser):
        parser.add_argument("--runs", type=int, default=1_000_000,
                            help="Number of runs to insert (default 1000000).")
        parser.add_argument("--flows", type=int, default=10,
                            help="Number of flows BenchFlow0..N-1 (default 10).")
        parser.add_argument("--batch", type=int, default=50_000,
                            help="Runs per COPY transaction (default 50000).")
        parser.add_argument("--days", type=int, default=365,
                            help="Spread creation times over this many days (default 365).")
        parser.add_argument("--failed-newest", type=int, default=100,
                            help="Mark the newest N runs of BenchFlow0 by anne failed, so "
                            "latest_successful_run must skip them (default 100).")
        parser.add_argument("--seed", type=int, default=42, help="Random seed (default 42).")

    def handle(self, *args, **options):
        if connection.vendor != "postgresql":
            raise CommandError(
                f"flowsite_load_bench needs PostgreSQL (COPY); the database is "
                f"{connection.vendor}. Set DATABASE_URL=postgres://USER@HOST:PORT/NAME."
            )
        total = options["runs"]
        if total < 1 or options["flows"] < 1 or options["batch"] < 1:
            raise CommandError("--runs, --flows and --batch must be at least 1.")
        rng = random.Random(options["seed"])
        started = time.monotonic()

        users = self.users_ensure()
        flows = self.flows_ensure(options["flows"])
        counts: Counter = Counter()
        end_time = timezone.now()
        first_time = end_time - timedelta(days=options["days"])
        step = (end_time - first_time) / total
        done = 0
        while done < total:
            size = min(options["batch"], total - done)
            self.batch_copy(
                rng=rng, users=users, flows=flows, counts=counts, size=size,
                first_time=first_time + step * done, step=step,
            )
            done += size
            self.stdout.write(f"{done} runs in {time.monotonic() - started:.0f} s")

        system = {name for name in counts if name.startswith(("user:", "runtime:",
                                                              "python_version:",
                                                              "flowsite_version:"))}
        with transaction.atomic():
            services.tag_counts_adjust(dict(counts), system_names=system)
        failed = self.newest_fail(flows[0], options["failed_newest"])
        wide = self.wide_run_create(users["anne"])
        # VACUUM sets the visibility map, so tag filters run as index-only scans
        # instead of visiting each heap row; it cannot run inside a transaction.
        with connection.cursor() as cursor:
            for table in ("runs_run", "runs_runtag", "runs_tagcount"):
                cursor.execute(f"VACUUM ANALYZE {table}")
        self.stdout.write(self.style.SUCCESS(
            f"Loaded {total} runs with {sum(counts.values())} tags in "
            f"{time.monotonic() - started:.0f} s; {failed} newest runs of "
            f"{flows[0][1]} by anne marked failed; 200-task run {wide}."
        ))

    def users_ensure(self) -> dict:
        User = get_user_model()
        found = {}
        for name in USERS:
            user, created = User.objects.get_or_create(username=name)
            if created:
                user.set_unusable_password()
                user.save(update_fields=["password"])
            found[name] = user
        return found

    def flows_ensure(self, count: int) -> list[tuple[int, str, str]]:
        """Return (id, name, graph JSON) for each bench flow."""
        flows = []
        for index in range(count):
            name = f"BenchFlow{index}"
            flow, _ = Flow.objects.get_or_create(name=name)
            graph = parse_source(LINEAR_SOURCE.format(name=name), "flow.py")
            flows.append((flow.id, name, json.dumps(graph)))
        return flows

    def batch_copy(self, *, rng, users, flows, counts, size, first_time, step) -> None:
        """Insert one batch of runs and their tags with COPY, in one transaction."""
        user_list = list(users.values())
        system_common = ["runtime:celery", f"python_version:{PYTHON_VERSION}",
                         f"flowsite_version:{__version__}"]
        with transaction.atomic(), connection.cursor() as cursor:
            # The lock keeps the id range and run numbers ours while other writers wait.
            cursor.execute("LOCK TABLE runs_run IN SHARE ROW EXCLUSIVE MODE")
            cursor.execute("SELECT COALESCE(MAX(id), 0) FROM runs_run")
            next_id = cursor.fetchone()[0] + 1
            numbers = dict(
                Flow.objects.select_for_update().filter(id__in=[f[0] for f in flows])
                .values_list("id", "last_run_number")
            )
            runs = []
            tags = []
            for offset in range(size):
                run_id = next_id + offset
                flow_id, flow_name, graph = flows[rng.randrange(len(flows))]
                numbers[flow_id] += 1
                user = user_list[rng.randrange(len(user_list))]
                created = first_time + step * offset
                roll = rng.random()
                status = (Status.COMPLETED if roll < 0.9 else
                          Status.FAILED if roll < 0.98 else Status.CANCELLED)
                namespace = f"user:{user.username}"
                runs.append((
                    run_id, flow_id, numbers[flow_id], status, user.id, namespace,
                    f"user:{user.username}", created, created, created + timedelta(seconds=30),
                    created + timedelta(seconds=30), "{}", "[]", graph, "flow.py",
                    False, "", False, "",
                ))
                user_tags = [
                    f"team:{TEAMS[rng.randrange(len(TEAMS))]}",
                    f"date:{created:%Y%m%d}",
                    f"exp_{rng.randrange(1000)}",
                ]
                if rng.random() < 0.10:
                    user_tags.append("xyz_features")
                if rng.random() < 0.05:
                    user_tags.append("crazy_test")
                for name in [namespace] + system_common:
                    tags.append((run_id, flow_id, name, True))
                for name in user_tags:
                    tags.append((run_id, flow_id, name, False))
                counts.update([namespace, *system_common, *user_tags])

            columns = ("id, flow_id, number, status, user_id, identity_namespace, "
                       "triggered_by, created_at, started_at, finished_at, heartbeat_at, "
                       "parameters, parameter_specs, graph, flow_file, is_resume, "
                       "resume_step, cancel_requested, error")
            with cursor.connection.cursor().copy(
                f"COPY runs_run ({columns}) FROM STDIN"
            ) as copy:
                for row in runs:
                    copy.write_row(row)
            with cursor.connection.cursor().copy(
                "COPY runs_runtag (run_id, flow_id, name, system) FROM STDIN"
            ) as copy:
                for row in tags:
                    copy.write_row(row)
            for flow_id, number in numbers.items():
                Flow.objects.filter(pk=flow_id).update(last_run_number=number)
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence('runs_run', 'id'), %s)",
                [next_id + size - 1],
            )

    def newest_fail(self, flow: tuple[int, str, str], count: int) -> int:
        newest = list(
            Run.objects.filter(flow_id=flow[0], identity_namespace="user:anne")
            .order_by("-id").values_list("id", flat=True)[:count]
        )
        return Run.objects.filter(id__in=newest).update(status=Status.FAILED)

    @transaction.atomic
    def wide_run_create(self, user) -> str:
        """Create a completed WideFlow run of 200 tasks: start, 197 foreach tasks, join, end."""
        graph = parse_source(WIDE_SOURCE, "flow.py")
        flow, _ = Flow.objects.get_or_create(name="WideFlow")
        run = services.run_create(
            user=user, flow_name="WideFlow", graph=graph, flow_file="flow.py",
            package=None, parameters={}, parameter_specs=[], user_tags=["wide"],
            identity_namespace=f"user:{user.username}", runtime="celery",
            python_version=PYTHON_VERSION, start_tasks=False,
        )
        steps = {step.name: step for step in run.steps.all()}
        began = timezone.now() - timedelta(minutes=10)
        blob, _ = ArtifactBlob.objects.get_or_create(
            sha256="0" * 64, defaults={"size": 5, "storage_key": "artifacts/00/bench"}
        )
        tasks = [self.task_row(run, steps["start"], "start", [], began, 0)]
        for index in range(197):
            frame = {"step": "start", "task": 0, "n": 197, "i": index, "kind": "foreach"}
            tasks.append(self.task_row(run, steps["work"], "work", [frame], began, index + 1))
        tasks.append(self.task_row(run, steps["join"], "join", [], began, 198))
        tasks.append(self.task_row(run, steps["end"], "end", [], began, 199))
        Task.objects.bulk_create(tasks)
        Artifact.objects.bulk_create(
            Artifact(task=task, name="value", blob=blob, type_name="int", preview="42")
            for task in tasks
        )
        LogChunk.objects.bulk_create(
            LogChunk(task=task, run=run, stream="stdout", seq=0,
                     text=f"task {task.key} done\n", line_count=1)
            for task in tasks
        )

        Step.objects.filter(run=run).update(status=Status.COMPLETED, started_at=began,
                                            finished_at=began + timedelta(seconds=200))
        Run.objects.filter(pk=run.pk).update(
            status=Status.COMPLETED, started_at=began, finished_at=began + timedelta(seconds=200)
        )
        return run.pathspec

    @staticmethod
    def task_row(run, step, name, stack, began, position) -> Task:
        start = began + timedelta(seconds=position)
        return Task(
            run=run, step=step, step_name=name, key=services.task_key(name, stack),
            status=Status.COMPLETED, split_stack=stack,
            foreach_index=stack[-1]["i"] if stack else None,
            started_at=start, finished_at=start + timedelta(seconds=1), worker_host="bench",
            foreach_count=197 if name == "start" else None,
        )
