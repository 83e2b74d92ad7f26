"""Workers at scale: @resources routing to named queues, cpu and memory requests in
the step process, and two workers acting as separate hosts that share only
PostgreSQL, Redis and S3 (the moto server) over 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import uuid

import pytest
from django.test import override_settings

from tests.bootstrap import VAR
from tests.conftest import Cli, Worker, wait_for, write_flow
from tests.s3_server import (
    separate_hosts_supported,
    storages_for,
    unique_prefix,
    worker_env,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def submit(cli, path, *args, user: str = "anne"):
    """Submit without waiting and return the Run row."""
    from runs.models import Run

    result = cli.run(path, "run", "--detach", *args, user=user, check=True)
    flow, number = result.stdout.strip().splitlines()[-1].split("/")
    return Run.objects.get(flow__name=flow, number=int(number))


def run_ended(run) -> bool:
    run.refresh_from_db()
    return run.status in ("completed", "failed", "cancelled")


# ---------------------------------------------------------------- queues and resources


ROUTED = """
import os
import resource

from flowsite import FlowSpec, resources, step


class RoutedFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.train)

    @resources(queue={queue!r}, cpu=2, memory=1024)
    @step
    def train(self):
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        print("cpu", os.environ.get("FLOWSITE_CPU"))
        print("memory", os.environ.get("FLOWSITE_MEMORY_MB"))
        print("rlimit", soft)
        print("queue", os.environ.get("FLOWSITE_QUEUE"))
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    RoutedFlow()
"""


@pytest.fixture
def gpu_queue():
    return f"gpu-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def gpu_worker(gpu_queue, worker):
    started = Worker(name=f"{gpu_queue}-worker", queues=gpu_queue, concurrency=1)
    yield started
    started.stop()


def test_resources_queue_routes_step(cli, flows_dir, gpu_queue, gpu_worker):
    from runs.models import Task

    path = write_flow(flows_dir, "routed_flow.py", ROUTED.format(queue=gpu_queue))
    run = submit(cli, path)
    wait_for(lambda: run_ended(run), timeout=90, message="the routed run to end")
    tasks = {task.step_name: task for task in Task.objects.filter(run=run)}

    assert run.status == "completed", run.error
    assert tasks["train"].queue == gpu_queue
    assert tasks["train"].worker_host.startswith(f"{gpu_queue}-worker@")
    assert tasks["start"].queue == "default"
    assert tasks["start"].worker_host.startswith("worker1@")
    assert tasks["end"].worker_host.startswith("worker1@")


def test_resources_reach_step_process(cli, sdk, flows_dir, gpu_queue, gpu_worker):
    path = write_flow(flows_dir, "routed_flow.py", ROUTED.format(queue=gpu_queue))
    run = submit(cli, path)
    wait_for(lambda: run_ended(run), timeout=90, message="the routed run to end")

    stdout = sdk.login("anne").Run(run.pathspec)["train"].task.stdout
    assert "cpu 2\n" in stdout
    assert "memory 1024\n" in stdout
    assert f"rlimit {1024 * 1024 * 1024}\n" in stdout
    assert f"queue {gpu_queue}\n" in stdout


HOG = """
from flowsite import FlowSpec, resources, step


class HogFlow(FlowSpec):
    @resources(memory=400)
    @step
    def start(self):
        self.big = bytearray(1024 * 1024 * 1024)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    HogFlow()
"""


def test_memory_request_caps_step(cli, flows_dir):
    from runs.models import Task

    path = write_flow(flows_dir, "hog_flow.py", HOG)
    run = submit(cli, path)
    wait_for(lambda: run_ended(run), timeout=90, message="the hog run to end")
    start = Task.objects.get(run=run, step_name="start")

    assert run.status == "failed"
    assert start.status == "failed"
    assert "MemoryError" in start.error


# ---------------------------------------------------------------- workers as separate hosts


FOREACH = """
import time

from flowsite import FlowSpec, retry, step


class WideFlow(FlowSpec):
    @step
    def start(self):
        self.items = list(range(50))
        self.next(self.work, foreach="items")

    # A lost worker fails the attempt; the retry runs it on a worker that is alive.
    @retry(times=2)
    @step
    def work(self):
        time.sleep({seconds})
        self.doubled = self.input * 2
        self.next(self.join)

    @step
    def join(self, inputs):
        self.total = sum(i.doubled for i in inputs)
        self.next(self.end)

    @step
    def end(self):
        print("total", self.total)


if __name__ == "__main__":
    WideFlow()
"""

HEARTBEAT_TIMEOUT = 5  # the smallest value settings accept


@pytest.fixture
def hosts(s3_server, live_server, tokens, tmp_path):
    """Two workers, each with its own var/ and work folder, and a CLI whose web process
    stores artifacts in the same bucket. Yields (cli, [host_a, host_b])."""
    reason = separate_hosts_supported()
    if reason:
        pytest.skip(f"workers cannot act as separate hosts: {reason}")
    queue = f"hosts-{uuid.uuid4().hex[:8]}"
    storage_env = s3_server.env(unique_prefix("hosts"))
    started = []
    try:
        for name in ("hosta", "hostb"):
            env = worker_env(storage_env=storage_env, queue=queue, own_disk=True,
                             name=f"{name}-{queue}")
            env["FLOWSITE_HEARTBEAT_TIMEOUT"] = str(HEARTBEAT_TIMEOUT)
            started.append(Worker(name=f"{name}-{queue}", queues=queue, extra_env=env))
        with override_settings(
            STORAGES=storages_for(storage_env), FLOWSITE_DEFAULT_QUEUE=queue,
            FLOWSITE_HEARTBEAT_TIMEOUT=HEARTBEAT_TIMEOUT,
        ):
            yield Cli(live_server.url, tokens, tmp_path / "homes", started[0]), started
    finally:
        for host in started:
            host.stop(signal.SIGKILL)


def hosts_of(run) -> dict[str, int]:
    from django.db.models import Count

    from runs.models import Task

    rows = (Task.objects.filter(run=run, step_name="work", status="completed")
            .values("worker_host").annotate(n=Count("id")))
    return {row["worker_host"].split("@")[0]: row["n"] for row in rows}


def test_two_hosts_share_foreach(hosts, flows_dir):
    from runs.models import Task

    cli, (host_a, host_b) = hosts
    path = write_flow(flows_dir, "wide_flow.py", FOREACH.format(seconds=0.2))
    run = submit(cli, path)
    wait_for(lambda: run_ended(run), timeout=120, message="the wide run to end")
    ran = hosts_of(run)

    assert run.status == "completed", run.error
    assert Task.objects.filter(run=run, step_name="work", status="completed").count() == 50
    assert ran.get(host_a.name, 0) > 0, ran
    assert ran.get(host_b.name, 0) > 0, ran
    for host in (host_a, host_b):
        # Each host has its own var/, and it contains no artifacts.
        assert not (VAR / f"host-{host.name}" / "var" / "storage").exists()
    end = Task.objects.get(run=run, step_name="end")
    assert end.status == "completed"


def test_killed_host_run_completes(hosts, flows_dir):
    from runs.execution import sweep
    from runs.models import Task, TaskAttempt

    cli, (host_a, host_b) = hosts
    path = write_flow(flows_dir, "wide_flow.py", FOREACH.format(seconds=0.5))
    run = submit(cli, path)

    def b_is_busy() -> bool:
        return Task.objects.filter(
            run=run, step_name="work", status="running",
            worker_host__startswith=f"{host_b.name}@",
        ).exists() and hosts_of(run).get(host_b.name, 0) >= 2

    wait_for(b_is_busy, timeout=90, message="host b to be running work tasks")
    os.killpg(host_b.process.pid, signal.SIGKILL)
    host_b.process.wait()

    # The test plays Celery beat: the sweep fails the attempts host b left behind.
    def swept_and_ended() -> bool:
        sweep()
        return run_ended(run)

    wait_for(swept_and_ended, timeout=120, interval=1, message="the run to end after the kill")
    lost = TaskAttempt.objects.filter(task__run=run, worker_host__startswith=f"{host_b.name}@",
                                      error__contains="no heartbeat")

    assert run.status == "completed", run.error
    assert Task.objects.filter(run=run, step_name="work", status="completed").count() == 50
    assert lost.exists()
    for attempt in lost:
        task = Task.objects.get(pk=attempt.task_id)
        assert task.worker_host.startswith(f"{host_a.name}@"), task.worker_host
