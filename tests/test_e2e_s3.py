"""Runs, artifacts, logs, downloads and resume with artifacts in S3-compatible storage.

A moto server on 127.0.0.1 replaces S3. The web process (the live server in
this process) and a worker of its own both use it, and the worker takes only the
queue this module sends to, so the session's local-storage worker never sees these
runs.
"""

import hashlib
import importlib.util
import re
import time

import pytest
from django.test import override_settings

from tests.conftest import Cli, Worker, write_flow
from tests.s3_server import (
    storages_for,
    unique_prefix,
    worker_env,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

QUEUE = "s3-tests"


@pytest.fixture(scope="module")
def prefix():
    return unique_prefix("e2e")


@pytest.fixture(scope="module")
def s3_worker(s3_server, prefix, django_db_setup, django_db_blocker):
    from django.conf import settings

    # The embedded broker is a folder in var/, so only a real broker allows a var/ of its own.
    own_disk = not settings.CELERY_BROKER_URL.startswith("filesystem://")
    env = worker_env(storage_env=s3_server.env(prefix), queue=QUEUE, name="s3",
                     own_disk=own_disk)
    started = Worker(name="s3worker", queues=QUEUE, extra_env=env)
    yield started
    started.stop()


@pytest.fixture
def s3_cli(live_server, tokens, s3_server, s3_worker, prefix, tmp_path):
    """A CLI against a web process whose artifact storage is the S3 bucket."""
    with override_settings(
        STORAGES=storages_for(s3_server.env(prefix)), FLOWSITE_DEFAULT_QUEUE=QUEUE
    ):
        yield Cli(live_server.url, tokens, tmp_path / "homes", s3_worker)


FANOUT = """
import os

from flowsite import FlowSpec, Parameter, step


class FanoutFlow(FlowSpec):
    \"\"\"Square some numbers in parallel and add them up.\"\"\"

    marker = Parameter("marker", default="", help="A file that must exist for add to pass.")

    @step
    def start(self):
        self.numbers = [1, 2, 3]
        self.blob = b"x" * 200_000
        print("starting on", len(self.numbers), "numbers")
        self.next(self.square, foreach="numbers")

    @step
    def square(self):
        self.squared = self.input ** 2
        print("squared", self.input, "to", self.squared)
        self.next(self.add)

    @step
    def add(self, inputs):
        self.total = sum(i.squared for i in inputs)
        if self.marker and not os.path.exists(self.marker):
            raise RuntimeError("marker file missing; create it and resume")
        self.next(self.end)

    @step
    def end(self):
        print("total is", self.total)


if __name__ == "__main__":
    FanoutFlow()
"""


def run_number(result) -> int:
    match = re.search(r"Run \w+/(\d+) (started|resumes)", result.stderr)
    assert match, f"no run id in stderr:\n{result.stderr}"
    return int(match.group(1))


def test_s3_run_completes(s3_cli, flows_dir):
    from runs.models import Run

    path = write_flow(flows_dir, "fanout_flow.py", FANOUT)
    result = s3_cli.run(path, "run", user="anne", check=True)

    run = Run.objects.get(flow__name="FanoutFlow", number=run_number(result))
    assert run.status == "completed"
    assert "total is 14" in result.stdout


def test_s3_holds_artifacts_and_package(s3_cli, s3_server, prefix, flows_dir):
    from runs.models import Artifact, Run

    path = write_flow(flows_dir, "fanout_flow.py", FANOUT)
    run = Run.objects.select_related("code_package").get(
        flow__name="FanoutFlow", number=run_number(s3_cli.run(path, "run", check=True))
    )
    keys = set(s3_server.keys(f"{prefix}/"))
    blobs = Artifact.objects.filter(task__run=run).select_related("blob")

    assert f"{prefix}/{run.code_package.storage_key}" in keys
    assert blobs.count() > 0
    for artifact in blobs:
        assert f"{prefix}/{artifact.blob.storage_key}" in keys, artifact.name


def test_s3_artifacts_not_on_local_disk(s3_cli, flows_dir):
    from runs.models import Artifact, Run
    from tests.bootstrap import VAR

    path = write_flow(flows_dir, "fanout_flow.py", FANOUT)
    local = VAR / "storage"
    # Earlier tests on local storage may have stored blobs with the same content, and
    # so the same key: only files written during this run count.
    started = time.time() - 1
    run = Run.objects.get(
        flow__name="FanoutFlow", number=run_number(s3_cli.run(path, "run", check=True))
    )

    written = {
        str(file.relative_to(local))
        for file in local.rglob("*")
        if file.is_file() and file.stat().st_mtime >= started
    }
    for artifact in Artifact.objects.filter(task__run=run).select_related("blob"):
        assert artifact.blob.storage_key not in written, artifact.name


def test_s3_client_reads_data(s3_cli, sdk, flows_dir):
    path = write_flow(flows_dir, "fanout_flow.py", FANOUT)
    number = run_number(s3_cli.run(path, "run", user="anne", check=True))

    client = sdk.login("anne")
    run = client.Run(f"FanoutFlow/{number}")
    assert run.data.total == 14
    assert run["start"].task.data.blob == b"x" * 200_000
    assert sorted(t.data.squared for t in run["square"]) == [1, 4, 9]


def test_s3_logs_readable(s3_cli, sdk, flows_dir):
    path = write_flow(flows_dir, "fanout_flow.py", FANOUT)
    number = run_number(s3_cli.run(path, "run", user="anne", check=True))

    client = sdk.login("anne")
    run = client.Run(f"FanoutFlow/{number}")
    assert "starting on 3 numbers" in run["start"].task.stdout
    assert "total is 14" in run["end"].task.stdout


def test_s3_artifact_bytes_download(s3_cli, live_server, tokens, flows_dir):
    import pickle

    import requests

    from runs.models import Artifact, Run

    path = write_flow(flows_dir, "fanout_flow.py", FANOUT)
    number = run_number(s3_cli.run(path, "run", user="anne", check=True))
    run = Run.objects.get(flow__name="FanoutFlow", number=number)
    row = Artifact.objects.select_related("blob", "task").get(
        task__run=run, task__step_name="end", name="total"
    )
    url = (f"{live_server.url}/api/v1/tasks/FanoutFlow/{number}/end/{row.task_id}"
           "/artifacts/total/bytes")

    response = requests.get(url, headers={"Authorization": f"Bearer {tokens['anne']}"},
                            timeout=30)
    assert response.status_code == 200, response.text
    assert hashlib.sha256(response.content).hexdigest() == row.blob.sha256
    assert response.headers["X-Content-SHA256"] == row.blob.sha256
    assert pickle.loads(response.content) == 14


@pytest.mark.skipif(
    importlib.util.find_spec("flowsite.sdk.cli_resume") is None,
    reason="the resume command (flowsite.sdk.cli_resume) is not in this tree yet",
)
def test_s3_resume_reuses_artifacts(s3_cli, sdk, flows_dir, tmp_path):
    from runs.models import Run

    marker = tmp_path / "marker"
    path = write_flow(flows_dir, "fanout_flow.py", FANOUT)
    # The step checks the marker on the worker, which runs on this machine too.
    failed = s3_cli.run(path, "run", "--marker", str(marker), user="anne")
    assert failed.returncode != 0
    marker.touch()

    resumed = s3_cli.run(path, "resume", user="anne", check=True)

    run = Run.objects.get(flow__name="FanoutFlow", number=run_number(resumed))
    assert run.status == "completed"
    assert run.origin_run_id is not None
    assert "total is 14" in resumed.stdout
    client = sdk.login("anne")
    assert client.Run(f"FanoutFlow/{run.number}")["start"].task.data.blob == b"x" * 200_000
