"""Many people and tasks acting at once: concurrent submissions, tag writers, a 64-way
foreach whose tasks finish together, and 64 readers of one artifact."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import wait_for, write_flow

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


PARAMETER_FLOW = '''
from flowsite import FlowSpec, Parameter, step


class ManyRunsFlow(FlowSpec):
    client = Parameter("client", type=int, help="Which submitting process this is.")

    @step
    def start(self):
        self.seen = self.client
        self.next(self.end)

    @step
    def end(self):
        print(f"client {self.seen}")


if __name__ == "__main__":
    ManyRunsFlow()
'''


def test_fifty_submissions_at_once(cli, flows_dir):
    from runs import services
    from runs.models import Artifact, Run

    path = write_flow(flows_dir, "many_runs_flow.py", PARAMETER_FLOW)
    processes = [
        subprocess.Popen(
            [sys.executable, str(path), "run", "--detach", "--client", str(client)],
            cwd=str(flows_dir), env=cli.env("anne" if client % 2 else "will"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for client in range(50)
    ]
    pathspecs = {}
    for client, process in enumerate(processes):
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        pathspecs[client] = stdout.strip().splitlines()[-1]

    assert len(set(pathspecs.values())) == 50
    numbers = {int(p.split("/")[1]) for p in pathspecs.values()}
    assert numbers == set(range(1, 51))

    runs = {f"ManyRunsFlow/{r.number}": r for r in Run.objects.filter(flow__name="ManyRunsFlow")}
    for client, pathspec in pathspecs.items():
        run = runs[pathspec]
        assert run.parameters == {"client": client}
        owner = "anne" if client % 2 else "will"
        assert run.user.username == owner

    # The first ten runs execute, and their steps see only the parameter their own
    # process sent. The rest are cancelled to keep the test short on a small worker.
    executed = [run for run in runs.values() if run.number <= 10]

    def executed_done():
        return not Run.objects.filter(
            pk__in=[run.pk for run in executed], status__in=["pending", "running"]
        ).exists()

    wait_for(executed_done, timeout=180, interval=0.5, message="ten runs to finish")
    for run in runs.values():
        if run.number > 10:
            services.run_cancel(run=run)
    seen = {
        f"ManyRunsFlow/{row['task__run__number']}": row["preview"]
        for row in Artifact.objects.filter(
            task__run__in=executed, task__step_name="start", name="seen"
        ).values("task__run__number", "preview")
    }
    clients = {pathspec: client for client, pathspec in pathspecs.items()}
    assert len(seen) == 10
    for run in executed:
        run.refresh_from_db()
        assert run.status == "completed", run.error
        assert seen[run.pathspec] == str(clients[run.pathspec])


TAG_FLOW = '''
from flowsite import FlowSpec, step


class TaggedFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    TaggedFlow()
'''

CLIENTS = 20
ROUNDS = 100


def test_tag_writers_lose_nothing(cli, live_server, tokens, flows_dir):
    from runs.models import RunTag, TagCount, TagEvent
    from runs.tags import MAX_USER_TAGS

    path = write_flow(flows_dir, "tagged_flow.py", TAG_FLOW)
    out = cli.run(path, "run", "--detach", user="anne", check=True).stdout
    url = f"{live_server.url}/api/v1/runs/{out.strip().splitlines()[-1]}/tags"
    barrier = threading.Barrier(CLIENTS)
    errors: list[str] = []

    def writer(client: int) -> None:
        session = requests.Session()
        user = "anne" if client % 2 else "will"
        session.headers["Authorization"] = f"Bearer {tokens[user]}"
        barrier.wait()
        for round_ in range(ROUNDS):
            body = {"add": [f"c{client}-r{round_}"]}
            if round_:
                body["remove"] = [f"c{client}-r{round_ - 1}"]
            response = session.post(url, json=body, timeout=60)
            if response.status_code != 200:
                errors.append(f"client {client} round {round_}: {response.status_code} "
                              f"{response.text[:200]}")

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(writer, range(CLIENTS)))

    run_tags = set(RunTag.objects.filter(run__flow__name="TaggedFlow", system=False)
                   .values_list("name", flat=True))
    assert errors == []
    assert run_tags == {f"c{client}-r{ROUNDS - 1}" for client in range(CLIENTS)}
    assert TagEvent.objects.filter(run__flow__name="TaggedFlow").count() == CLIENTS * ROUNDS
    counts = dict(TagCount.objects.filter(name__startswith="c").values_list("name", "count"))
    for client in range(CLIENTS):
        assert counts[f"c{client}-r{ROUNDS - 1}"] == 1
        assert counts[f"c{client}-r0"] == 0

    # Every client now races to add three more tags: the limit must hold exactly.
    barrier = threading.Barrier(CLIENTS)
    accepted = []

    def adder(client: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {tokens['anne']}"
        barrier.wait()
        response = session.post(url, json={"add": [f"extra{client}-{n}" for n in range(3)]},
                                timeout=60)
        if response.status_code == 200:
            accepted.append(client)
        else:
            assert response.status_code == 422, response.text
            assert response.json()["code"] == "too_many_tags"

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(adder, range(CLIENTS)))

    final = RunTag.objects.filter(run__flow__name="TaggedFlow", system=False).count()
    assert final <= MAX_USER_TAGS
    assert final == CLIENTS + 3 * len(accepted)
    assert len(accepted) == (MAX_USER_TAGS - CLIENTS) // 3


FOREACH_FLOW = '''
import hashlib, os
from flowsite import FlowSpec, step


class WideFlow(FlowSpec):
    @step
    def start(self):
        self.payload = os.urandom(256 * 1024)
        self.payload_sha = hashlib.sha256(self.payload).hexdigest()
        self.items = list(range(64))
        self.next(self.read, foreach="items")

    @step
    def read(self):
        self.digest = hashlib.sha256(self.payload).hexdigest()
        self.item = self.input
        self.next(self.join)

    @step
    def join(self, inputs):
        self.digests = sorted({i.digest for i in inputs})
        self.items = sorted(i.item for i in inputs)
        self.payload_sha = inputs[0].payload_sha
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    WideFlow()
'''


def test_wide_foreach_joins_once(cli, sdk, flows_dir):
    from runs.models import Run, Task

    path = write_flow(flows_dir, "wide_flow.py", FOREACH_FLOW)
    cli.run(path, "run", user="anne", check=True, timeout=240)
    run = Run.objects.filter(flow__name="WideFlow").latest("id")

    joins = Task.objects.filter(run=run, step_name="join")
    assert run.status == "completed"
    assert Task.objects.filter(run=run, step_name="read", status="completed").count() == 64
    assert joins.count() == 1
    assert len(joins.get().input_task_ids) == 64

    client = sdk.login("anne")
    join = client.Run(run.pathspec)["join"].task
    assert join.data.items == list(range(64))
    assert join.data.digests == [join.data.payload_sha]

    # 64 clients read the same upstream artifact at once and all get the same bytes.
    start = client.Run(run.pathspec)["start"].task
    barrier = threading.Barrier(64)

    def read(_):
        barrier.wait()
        return hashlib.sha256(client.Task(start.pathspec)["payload"].data).hexdigest()

    with ThreadPoolExecutor(64) as pool:
        digests = list(pool.map(read, range(64)))
    assert set(digests) == {join.data.payload_sha}


def test_join_scheduled_once_when_all_finish_together(users):
    """64 foreach tasks complete in 64 threads released at once; one join is created."""
    from django.db import connection

    from flowsite.sdk.graph import parse_source
    from runs import services
    from runs.models import Status, Task

    # The join goes to a queue no worker consumes, so only scheduling is under test.
    source = FOREACH_FLOW.replace("    @step\n    def join", "    @resources(queue='nobody')\n"
                                  "    @step\n    def join").replace(
        "from flowsite import FlowSpec, step", "from flowsite import FlowSpec, step, resources")
    graph = parse_source(source, "wide_flow.py")
    run = services.run_create(
        user=users["anne"], flow_name="WideFlow", graph=graph, flow_file="wide_flow.py",
        package=None, parameters={}, parameter_specs=[], user_tags=[],
        identity_namespace="user:anne", start_tasks=False,
    )
    start = services.task_create(run=run, step_name="start", split_stack=[], input_task_ids=[])
    Task.objects.filter(pk=start.pk).update(status=Status.COMPLETED, foreach_count=64)
    start.refresh_from_db()
    reads = [task for task in services.successors_schedule(start) if task]
    Task.objects.filter(pk__in=[t.pk for t in reads]).update(status=Status.RUNNING)
    assert len(reads) == 64

    # Each thread holds a database connection; on PostgreSQL 32 threads finishing two
    # tasks each stay well inside a default max_connections of 100.
    threads = 64 if connection.vendor == "sqlite" else 32
    barrier = threading.Barrier(threads)
    failures: list[BaseException] = []

    def finish(chunk: list[Task]) -> None:
        from django.db import connection as thread_connection

        try:
            barrier.wait()
            for task in chunk:
                services.task_complete(task_id=task.id, foreach_count=None,
                                       next_steps=["join"])
        except BaseException as exc:  # reported below, in the test thread
            failures.append(exc)
        finally:
            thread_connection.close()

    chunks = [reads[i::threads] for i in range(threads)]
    workers = [threading.Thread(target=finish, args=(chunk,)) for chunk in chunks]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=120)

    joins = Task.objects.filter(run=run, step_name="join")
    assert failures == []
    assert Task.objects.filter(run=run, step_name="read", status="completed").count() == 64
    assert joins.count() == 1
    assert sorted(joins.get().input_task_ids) == sorted(t.id for t in reads)
