"""Server time and SQL query count of one resume, by the size of the origin run.

Usage, from the repository root:

    .venv/bin/python bench/resume_bench.py [--branches 10 100 1000 5000]
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/flowsite_resume_bench \\
        .venv/bin/python bench/resume_bench.py

Without DATABASE_URL the script uses SQLite in a fresh temporary folder. With it, the
database must exist (createdb) and is migrated, then filled with new runs. For each
size the origin is a failed FanFlow run: start, a foreach of N branches of which the
last failed, each completed task with two artifacts. The script times run_resume,
which clones N - 1 branches and schedules the failed one, and counts its queries.
Nothing is sent to a broker, because the script replaces the on-commit enqueue with
a no-op.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flowsite.settings")
if not os.environ.get("DATABASE_URL"):
    os.environ["FLOWSITE_VAR_DIR"] = tempfile.mkdtemp(prefix="flowsite-resume-bench-")

FAN_SOURCE = '''
from flowsite import FlowSpec, step


class FanFlow(FlowSpec):
    @step
    def start(self):
        self.items = []
        self.next(self.fan, foreach="items")

    @step
    def fan(self):
        self.next(self.join)

    @step
    def join(self, inputs):
        self.next(self.end)

    @step
    def end(self):
        pass
'''


def origin_build(user, branches: int):
    """Create a failed FanFlow run with `branches` foreach tasks, the last one failed."""
    from django.utils import timezone

    from runs import services
    from runs.models import Artifact, ArtifactBlob, CodePackage, Run, Status, Task

    package, _ = CodePackage.objects.get_or_create(
        sha256="b" * 64, defaults={"size": 1, "storage_key": "packages/bench.tar.gz"}
    )
    blob, _ = ArtifactBlob.objects.get_or_create(
        sha256="c" * 64, defaults={"size": 1, "storage_key": "artifacts/bench"}
    )
    run = services.run_create(
        user=user, flow_name="FanFlow",
        graph=services.graph_from_source(FAN_SOURCE, "fan_flow.py", "FanFlow"),
        flow_file="fan_flow.py", package=package, parameters={}, parameter_specs=[],
        user_tags=[], identity_namespace=f"user:{user.username}", start_tasks=False,
    )
    steps = {step.name: step for step in run.steps.all()}
    now = timezone.now()
    start = Task.objects.create(
        run=run, step=steps["start"], step_name="start", key="start",
        status=Status.COMPLETED, foreach_count=branches, started_at=now, finished_at=now,
    )
    fans = [
        Task(
            run=run, step=steps["fan"], step_name="fan", key=f"fan[{index}]",
            status=Status.FAILED if index == branches - 1 else Status.COMPLETED,
            split_stack=[{"step": "start", "task": start.id, "n": branches, "i": index,
                          "kind": "foreach"}],
            foreach_index=index, input_task_ids=[start.id], started_at=now, finished_at=now,
        )
        for index in range(branches)
    ]
    Task.objects.bulk_create(fans, batch_size=500)
    done = [start] + [task for task in fans if task.status == Status.COMPLETED]
    Artifact.objects.bulk_create(
        [Artifact(task=task, name=name, blob=blob) for task in done for name in ("a", "b")],
        batch_size=500,
    )
    Run.objects.filter(pk=run.pk).update(status=Status.FAILED, finished_at=now)
    run.refresh_from_db()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--branches", type=int, nargs="+", default=[10, 100, 1000, 5000])
    args = parser.parse_args()

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from runs import resume, services

    call_command("migrate", verbosity=0)
    user, _ = get_user_model().objects.get_or_create(username="anne")
    # Keep the bench away from any broker: the frontier tasks are created, not sent.
    services.enqueue_on_commit = lambda tasks: None

    print(f"database: {connection.vendor}")
    print(f"{'branches':>8} {'cloned':>7} {'queries':>7} {'seconds':>8}")
    for branches in args.branches:
        origin = origin_build(user, branches)
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            run = resume.run_resume(user=user, origin=origin, step=None, tags=[])
            elapsed = time.perf_counter() - started
        cloned = run.tasks.filter(origin_task__isnull=False).count()
        print(f"{branches:>8} {cloned:>7} {len(queries):>7} {elapsed:>8.3f}")


if __name__ == "__main__":
    main()
