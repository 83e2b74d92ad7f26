"""The reference CurrentFlow runs on a real worker and reports its ids back."""

import re
import shutil

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def current_flow(flows_dir):
    path = flows_dir / "current_flow.py"
    shutil.copy(ROOT / "examples" / "current_flow.py", path)
    return path


def printed(stdout: str, label: str, step: str = "start") -> str:
    match = re.search(rf"^\[\d+/{step}/\d+\] {re.escape(label)}: (.*)$", stdout, re.M)
    assert match, f"{label!r} not printed by {step}:\n{stdout}"
    return match.group(1)


def test_current_flow_prints_ids(cli, current_flow):
    result = cli.run(current_flow, "run", user="anne", check=True)
    out = result.stdout

    run_id = printed(out, "run id")
    task_id = printed(out, "task id")
    assert printed(out, "flow name") == "CurrentFlow"
    assert run_id.isdigit()
    assert printed(out, "origin run id") == "None"
    assert printed(out, "step name") == "start"
    assert task_id.isdigit()
    assert printed(out, "pathspec") == f"CurrentFlow/{run_id}/start/{task_id}"
    assert printed(out, "namespace") == "user:anne"
    assert printed(out, "username") == "anne"
    assert printed(out, "flow parameters") == "[]"

    end_step = printed(out, "end has a different step name", step="end")
    end_task = printed(out, "end has a different task id", step="end")
    assert end_step == "end"
    assert end_task != task_id
    assert printed(out, "end has a different pathspec", step="end") == (
        f"CurrentFlow/{run_id}/end/{end_task}"
    )
    assert f"Run CurrentFlow/{run_id} completed successfully." in out


def test_current_flow_server_records_ids(cli, current_flow):
    from runs.models import Run, Task

    out = cli.run(current_flow, "run", user="anne", check=True).stdout
    run_id = printed(out, "run id")
    task_id = printed(out, "task id")

    run = Run.objects.get(flow__name="CurrentFlow", number=int(run_id))
    task = Task.objects.get(pk=int(task_id))
    assert run.status == "completed"
    assert task.current["pathspec"] == printed(out, "pathspec")
    assert task.current["namespace"] == "user:anne"
    assert task.current["username"] == "anne"
    assert task.current["origin_run_id"] is None
    assert task.current["parameter_names"] == []
    assert task.worker_host
    assert task.worker_pid


def test_current_flow_stdout_via_client(cli, sdk, current_flow):
    out = cli.run(current_flow, "run", user="anne", check=True).stdout
    pathspec = printed(out, "pathspec")

    client = sdk.login("anne")
    task = client.Task(pathspec)
    assert "flow name: CurrentFlow" in task.stdout
    assert task.successful
