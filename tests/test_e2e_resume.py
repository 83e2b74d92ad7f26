"""Resume end to end: the CLI, a real worker, other users' and production runs."""

from __future__ import annotations

import re
import shutil

import pytest

from tests.conftest import ROOT, wait_for, write_flow

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

BRANCH_FLOW = '''
import os
import time

from flowsite import FlowSpec, Step, current, step

FLAG = {flag!r}


class BranchFlow(FlowSpec):

    @step
    def start(self):
        self.items = [0, 1, 2]
        self.next(self.fan, foreach="items")

    @step
    def fan(self):
        self.value = self.input * 10
        print("fan ran for %s" % self.input)
        if self.input == 1 and os.path.exists(FLAG):
            # Fail only once the other branches succeeded, so the run keeps their results.
            deadline = time.time() + 60
            pathspec = "%s/%s/fan" % (current.flow_name, current.run_id)
            while time.time() < deadline:
                if len([task for task in Step(pathspec) if task.successful]) == 2:
                    break
                time.sleep(0.2)
            raise RuntimeError("branch 1 fails while the flag file exists")
        self.next(self.join)

    @step
    def join(self, inputs):
        self.total = sum(branch.value for branch in inputs)
        print("total: %s" % self.total)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    BranchFlow()
'''


NAP_FLOW = '''
import os
import time

from flowsite import FlowSpec, step

FAIL = {fail!r}
NAP = {nap!r}


class NapFlow(FlowSpec):

    @step
    def start(self):
        self.value = 1
        self.next(self.work)

    @step
    def work(self):
        if os.path.exists(FAIL):
            raise RuntimeError("work fails while the fail flag exists")
        while os.path.exists(NAP):
            time.sleep(0.2)
        print("work done")
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    NapFlow()
'''


@pytest.fixture
def current_flow(flows_dir):
    path = flows_dir / "current_flow.py"
    shutil.copy(ROOT / "examples" / "current_flow.py", path)
    return path


@pytest.fixture
def branch_flow(flows_dir, tmp_path):
    flag = tmp_path / "fail-branch-1"
    flag.touch()
    return write_flow(flows_dir, "branch_flow.py", BRANCH_FLOW.format(flag=str(flag))), flag


def printed(stdout: str, label: str, step: str = "start") -> str:
    match = re.search(rf"^\[\d+/{step}/\d+\] {re.escape(label)}: (.*)$", stdout, re.M)
    assert match, f"{label!r} not printed by {step}:\n{stdout}"
    return match.group(1)


def finished(run_id: int):
    from runs.models import Run

    def check():
        run = Run.objects.get(pk=run_id)
        return run if run.finished else None

    return check


def test_resume_prints_origin_run_id(cli, current_flow):
    first = cli.run(current_flow, "run", user="anne", check=True).stdout
    run_id = printed(first, "run id")
    resumed = cli.run(current_flow, "resume", "start", user="anne", check=True).stdout
    again = cli.run(current_flow, "resume", "start", user="anne", check=True).stdout

    assert printed(first, "origin run id") == "None"
    assert printed(resumed, "origin run id") == run_id
    assert printed(resumed, "run id") != run_id
    assert printed(resumed, "namespace") == "user:anne"
    assert printed(again, "origin run id") == run_id
    assert printed(again, "run id") not in (run_id, printed(resumed, "run id"))


def test_resume_end_clones_start(cli, current_flow):
    from runs.models import LogChunk, Run, Task

    first = cli.run(current_flow, "run", user="anne", check=True).stdout
    run_id = printed(first, "run id")
    result = cli.run(current_flow, "resume", "end", user="anne", check=True)
    new_id = printed(result.stdout, "end has a different pathspec", step="end").split("/")[1]
    run = Run.objects.get(flow__name="CurrentFlow", number=int(new_id))
    start = Task.objects.get(run=run, step_name="start")
    end = Task.objects.get(run=run, step_name="end")

    assert not re.search(r"^\[\d+/start/", result.stdout, re.M)
    assert run.status == "completed"
    assert start.origin_task.run.number == int(run_id)
    assert start.worker_pid is None
    assert not LogChunk.objects.filter(task=start).exists()
    assert start.current["origin_run_id"] == run_id
    assert end.current["origin_run_id"] == run_id
    assert end.origin_task_id is None


def test_foreach_branch_resumed_by_other_user(cli, branch_flow):
    from runs.models import Artifact, LogChunk, Run, RunTag, Task

    path, flag = branch_flow
    failed = cli.run(path, "run", "--tag", "nightly", user="will")
    origin = Run.objects.filter(flow__name="BranchFlow").get()
    flag.unlink()
    result = cli.run(path, "resume", "--origin-run-id", str(origin.number), user="anne",
                     check=True)
    run = Run.objects.get(origin_run=origin)
    tags = set(RunTag.objects.filter(run=run).values_list("name", flat=True))
    cloned = Task.objects.filter(run=run, origin_task__isnull=False)

    assert failed.returncode != 0
    assert origin.status == "failed"
    assert run.status == "completed"
    assert run.identity_namespace == "user:anne"
    assert "user:anne" in tags
    assert "user:will" not in tags
    assert "nightly" in tags
    assert "fan ran for 1" in result.stdout
    assert "fan ran for 0" not in result.stdout
    assert "fan ran for 2" not in result.stdout
    assert "total: 30" in result.stdout
    assert {task.key for task in cloned} == {"start", "fan[0]", "fan[2]"}
    assert set(
        Task.objects.filter(run=run, origin_task__isnull=True).values_list("key", flat=True)
    ) == {"fan[1]", "join", "end"}
    for task in cloned:
        assert task.worker_pid is None
        assert not LogChunk.objects.filter(task=task).exists()
        assert dict(Artifact.objects.filter(task=task).values_list("name", "blob_id")) == dict(
            Artifact.objects.filter(task=task.origin_task, attempt=task.origin_task.attempt)
            .values_list("name", "blob_id")
        )


def test_resume_completed_run_clones_all(cli, current_flow):
    from runs.models import Run

    cli.run(current_flow, "run", user="anne", check=True)
    result = cli.run(current_flow, "resume", user="anne", check=True)
    run = Run.objects.get(is_resume=True)

    assert "nothing ran again" in result.stderr
    assert "completed successfully" in result.stdout
    assert not re.search(r"^\[\d+/(start|end)/", result.stdout, re.M)
    assert run.status == "completed"
    assert run.tasks.filter(origin_task__isnull=True).count() == 0


def test_resume_without_own_run(cli, branch_flow):
    from runs.models import Run

    path, _ = branch_flow
    result = cli.run(path, "resume", user="anne")

    assert result.returncode == 1
    assert "--origin-run-id" in result.stderr
    assert not Run.objects.exists()


def test_resume_rejects_parameters(cli, current_flow):
    result = cli.run(current_flow, "resume", "start", "--alpha", "3", user="anne")

    assert result.returncode == 2
    assert "keeps the parameters of its origin run" in result.stderr


def test_production_run_resumed_in_own_namespace(sdk, users, current_flow):
    from flowsite.sdk import package as code
    from runs import selectors, services
    from runs.models import Run, RunTag, Task
    from runs.packages import package_store

    production = "production:x-1-abcd"
    origin = services.run_create(
        user=None, flow_name="CurrentFlow",
        graph=services.graph_from_source(current_flow.read_text(), "current_flow.py",
                                         "CurrentFlow"),
        flow_file="current_flow.py", package=package_store(code.build(str(current_flow.parent))),
        parameters={}, parameter_specs=[], user_tags=[], identity_namespace=production,
        runtime="celery", triggered_by="deployment",
    )
    assert wait_for(finished(origin.pk), timeout=60).status == "completed"
    client = sdk.login("anne")
    # Reading a run of another namespace needs a switch; resuming it does not.
    client.namespace(None)
    resumed = client.Run(origin.pathspec).resume(step="end", tags=["rerun"])
    run = wait_for(finished(Run.objects.get(origin_run=origin).pk), timeout=60)
    tags = set(RunTag.objects.filter(run=run).values_list("name", flat=True))
    end = Task.objects.get(run=run, step_name="end")
    start = Task.objects.get(run=run, step_name="start")

    assert resumed.pathspec == run.pathspec
    assert run.status == "completed"
    assert "rerun" in tags
    assert run.identity_namespace == "user:anne"
    assert production not in tags
    assert list(selectors.runs_in_namespace(namespace=production)) == [origin]
    assert end.current["origin_run_id"] == str(origin.number)
    assert end.current["namespace"] == "user:anne"
    assert start.origin_task.run_id == origin.pk
    assert resumed.origin_pathspec == origin.pathspec
    assert client.Run(run.pathspec).origin_pathspec == origin.pathspec


def test_interrupted_resume_keeps_origin(cli, flows_dir, tmp_path):
    import signal
    import subprocess
    import sys

    from runs.models import Run, Task

    fail, nap = tmp_path / "fail", tmp_path / "nap"
    fail.touch()
    path = write_flow(flows_dir, "nap_flow.py", NAP_FLOW.format(fail=str(fail), nap=str(nap)))
    assert cli.run(path, "run", user="anne").returncode == 1
    origin = Run.objects.get(flow__name="NapFlow")
    fail.unlink()
    nap.touch()
    process = subprocess.Popen([sys.executable, str(path), "resume"], cwd=str(flows_dir),
                               env=cli.env("anne"), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        # Ctrl-C once the rerun step is running, as a user who gives up waiting would.
        wait_for(lambda: Task.objects.filter(run__is_resume=True, step_name="work",
                                             status="running").exists(),
                 timeout=60, message="the resumed work task to run")
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    interrupted = Run.objects.get(is_resume=True)
    nap.unlink()
    result = cli.run(path, "resume", user="anne", check=True)
    second = Run.objects.filter(is_resume=True).exclude(pk=interrupted.pk).get()
    start = Task.objects.get(run=second, step_name="start")

    assert process.returncode == 130, err
    assert interrupted.status == "cancelled"
    assert interrupted.origin_run_id == origin.pk
    assert second.origin_run_id == origin.pk
    assert second.status == "completed"
    assert start.origin_task.run_id == origin.pk
    assert "work done" in result.stdout
