"""Flow features end to end on a real worker: artifacts, branches, foreach, parameters,
failures, concurrent submissions, and reading it all back through the client API."""

import re
import subprocess
import sys

import pytest

from tests.conftest import write_flow

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def run_number(result) -> int:
    match = re.search(r"Run \w+/(\d+) started", result.stderr)
    assert match, f"no run id in stderr:\n{result.stderr}"
    return int(match.group(1))


LINEAR = """
from flowsite import FlowSpec, Parameter, step


class LinearFlow(FlowSpec):
    \"\"\"Pass artifacts down a line of steps.\"\"\"

    count = Parameter("count", default=3, help="How many items to make.")
    scale = Parameter("scale", default=0.5, type=float, help="Multiplier for each item.")
    label = Parameter("label", default="plain", help="A name to carry along.")

    @step
    def start(self):
        self.items = [i * self.scale for i in range(self.count)]
        self.counter = 1
        self.next(self.middle)

    @step
    def middle(self):
        self.counter += 1
        self.total = sum(self.items)
        self.next(self.end)

    @step
    def end(self):
        self.summary = f"{self.label}:{self.counter}:{self.total}"
        print("summary", self.summary)


if __name__ == "__main__":
    LinearFlow()
"""


def test_linear_artifacts_pass(cli, sdk, flows_dir):
    path = write_flow(flows_dir, "linear_flow.py", LINEAR)
    result = cli.run(path, "run", "--count", "4", "--label", "x", "--tag", "lin",
                     user="anne", check=True)
    number = run_number(result)

    client = sdk.login("anne")
    run = client.Run(f"LinearFlow/{number}")
    assert run.successful
    assert run.finished
    assert run.data.summary == "x:2:3.0"
    assert run.data.items == [0.0, 0.5, 1.0, 1.5]
    assert run.parameters == {"count": 4, "scale": 0.5, "label": "x"}
    assert "lin" in run.tags
    assert "user:anne" in run.tags
    assert run["middle"].task.data.counter == 2
    assert run["start"].task.data.counter == 1


def test_client_iteration(cli, sdk, flows_dir):
    path = write_flow(flows_dir, "linear_flow.py", LINEAR)
    first = run_number(cli.run(path, "run", user="anne", check=True))
    second = run_number(cli.run(path, "run", user="anne", check=True))

    client = sdk.login("anne")
    flow = client.Flow("LinearFlow")
    assert flow.latest_run.id == str(second)
    numbers = [run.id for run in flow]
    assert numbers[:2] == [str(second), str(first)]
    run = client.Run(f"LinearFlow/{first}")
    assert sorted(step.id for step in run) == ["end", "middle", "start"]
    tasks = list(run["middle"])
    assert len(tasks) == 1
    assert tasks[0].successful
    assert tasks[0].pathspec.startswith(f"LinearFlow/{first}/middle/")


BRANCH = """
from flowsite import FlowSpec, step


class BranchFlow(FlowSpec):
    @step
    def start(self):
        self.shared = "from start"
        self.next(self.a, self.b)

    @step
    def a(self):
        self.x = "a"
        self.only_a = 1
        self.next(self.join)

    @step
    def b(self):
        self.x = "b"
        self.only_b = 2
        self.next(self.join)

    @step
    def join(self, inputs):
        self.from_a = inputs.a.x
        self.all_x = [branch.x for branch in inputs]
        self.merge_artifacts(inputs, exclude=["x"])
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    BranchFlow()
"""


def test_branch_join_artifacts(cli, sdk, flows_dir):
    path = write_flow(flows_dir, "branch_flow.py", BRANCH)
    number = run_number(cli.run(path, "run", user="anne", check=True))

    data = sdk.login("anne").Run(f"BranchFlow/{number}").data
    assert data.from_a == "a"
    assert data.all_x == ["a", "b"]
    assert data.shared == "from start"
    assert data.only_a == 1
    assert data.only_b == 2
    assert "x" not in data


BRANCH_CONFLICT = BRANCH.replace(
    'self.merge_artifacts(inputs, exclude=["x"])', "self.merge_artifacts(inputs)"
).replace("BranchFlow", "ConflictFlow")


def test_merge_conflict_fails(cli, flows_dir):
    path = write_flow(flows_dir, "conflict_flow.py", BRANCH_CONFLICT)
    result = cli.run(path, "run", user="anne")

    assert result.returncode == 1
    assert "different values for x" in result.stderr


FOREACH = """
from flowsite import FlowSpec, step


class ForeachFlow(FlowSpec):
    @step
    def start(self):
        self.items = list(range(20))
        self.next(self.square, foreach="items")

    @step
    def square(self):
        self.value = self.input * self.input
        self.position = self.index
        self.next(self.join)

    @step
    def join(self, inputs):
        self.values = [i.value for i in inputs]
        self.positions = [i.position for i in inputs]
        self.next(self.end)

    @step
    def end(self):
        print("sum", sum(self.values))


if __name__ == "__main__":
    ForeachFlow()
"""


def test_foreach_twenty_way(cli, sdk, flows_dir):
    path = write_flow(flows_dir, "foreach_flow.py", FOREACH)
    result = cli.run(path, "run", user="anne", timeout=120, check=True)
    number = run_number(result)

    run = sdk.login("anne").Run(f"ForeachFlow/{number}")
    assert run.data.values == [i * i for i in range(20)]
    assert run.data.positions == list(range(20))
    tasks = list(run["square"])
    assert len(tasks) == 20
    assert sorted(task.index for task in tasks) == list(range(20))
    assert re.search(r"^\[\d+/end/\d+\] sum 2470$", result.stdout, re.M)


NESTED = """
from flowsite import FlowSpec, step


class NestedFlow(FlowSpec):
    @step
    def start(self):
        self.rows = ["r0", "r1"]
        self.next(self.row, foreach="rows")

    @step
    def row(self):
        self.row_name = self.input
        self.cols = [1, 2, 3]
        self.next(self.cell, foreach="cols")

    @step
    def cell(self):
        self.cell = f"{self.row_name}c{self.input}"
        self.next(self.join_cols)

    @step
    def join_cols(self, inputs):
        self.cells = [i.cell for i in inputs]
        self.next(self.join_rows)

    @step
    def join_rows(self, inputs):
        self.grid = [i.cells for i in inputs]
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    NestedFlow()
"""


def test_nested_foreach(cli, sdk, flows_dir):
    path = write_flow(flows_dir, "nested_flow.py", NESTED)
    number = run_number(cli.run(path, "run", user="anne", timeout=120, check=True))

    run = sdk.login("anne").Run(f"NestedFlow/{number}")
    assert run.data.grid == [["r0c1", "r0c2", "r0c3"], ["r1c1", "r1c2", "r1c3"]]
    assert len(list(run["join_cols"])) == 2


PARAMS = """
from flowsite import FlowSpec, Parameter, step


class ParamFlow(FlowSpec):
    alpha = Parameter("alpha", default=0.01, help="Learning rate.")
    epochs = Parameter("epochs", default=2, type=int, help="Passes over the data.")

    @step
    def start(self):
        self.next(self.end)

    @step
    def end(self):
        print("alpha", self.alpha, "epochs", self.epochs)


if __name__ == "__main__":
    ParamFlow()
"""


def test_parameters_defaults_and_values(cli, flows_dir):
    path = write_flow(flows_dir, "param_flow.py", PARAMS)

    defaults = cli.run(path, "run", user="anne", check=True)
    with_values = cli.run(path, "run", "--alpha", "0.5", "--epochs=7", user="anne", check=True)

    assert re.search(r"\] alpha 0.01 epochs 2$", defaults.stdout, re.M)
    assert re.search(r"\] alpha 0.5 epochs 7$", with_values.stdout, re.M)


@pytest.mark.parametrize("args, expected", [
    (["--beta", "1"], "Unknown parameter --beta"),
    (["--epochs", "many"], "Invalid value for --epochs: 'many' is not a valid int"),
    (["--alpha"], "Parameter --alpha needs a value"),
])
def test_parameter_errors(cli, flows_dir, args, expected):
    from runs.models import Run

    path = write_flow(flows_dir, "param_flow.py", PARAMS)
    result = cli.run(path, "run", *args, user="anne")

    assert result.returncode == 2
    assert expected in result.stderr
    assert "Valid parameters: --alpha (float), --epochs (int)." in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not Run.objects.filter(flow__name="ParamFlow").exists()


def test_parameters_in_show(cli, flows_dir):
    path = write_flow(flows_dir, "param_flow.py", PARAMS)
    out = cli.run(path, "show", user="anne", check=True).stdout

    assert "--alpha (float, default 0.01) Learning rate." in out
    assert "--epochs (int, default 2) Passes over the data." in out


FAILING = """
from flowsite import FlowSpec, step


class FailFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.explode)

    @step
    def explode(self):
        print("about to fail")
        raise ValueError("the data is bad")
        self.next(self.end)

    @step
    def end(self):
        print("end ran")


if __name__ == "__main__":
    FailFlow()
"""


def test_failing_step_fails_run(cli, sdk, flows_dir):
    path = write_flow(flows_dir, "fail_flow.py", FAILING)
    result = cli.run(path, "run", user="anne")
    number = run_number(result)

    assert result.returncode == 1
    assert "ValueError: the data is bad" in result.stderr
    assert "Traceback (most recent call last)" in result.stderr
    assert "end ran" not in result.stdout
    assert f"Run FailFlow/{number} failed" in result.stderr

    run = sdk.login("anne").Run(f"FailFlow/{number}")
    assert run.finished
    assert not run.successful
    task = run["explode"].task
    assert not task.successful
    assert 'fail_flow.py", line 12, in explode' in task.stderr
    assert "about to fail" in task.stdout
    assert "end" not in run


UNPICKLABLE = """
import threading

from flowsite import FlowSpec, step


class LockFlow(FlowSpec):
    @step
    def start(self):
        self.fine = 1
        self.guard = threading.Lock()
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    LockFlow()
"""


def test_unpicklable_artifact_named(cli, sdk, flows_dir):
    from runs.models import Task

    path = write_flow(flows_dir, "lock_flow.py", UNPICKLABLE)
    result = cli.run(path, "run", user="anne")
    number = run_number(result)

    assert result.returncode == 1
    assert "artifact 'guard' of type _thread.lock cannot be pickled" in result.stderr
    task = Task.objects.get(run__flow__name="LockFlow", run__number=number, step_name="start")
    assert task.status == "failed"
    assert "artifact 'guard'" in task.error
    assert not Task.objects.filter(run=task.run, step_name="end").exists()


def test_concurrent_submissions_distinct_ids(cli, flows_dir):
    from runs.models import Run

    path = write_flow(flows_dir, "param_flow.py", PARAMS)
    env = cli.env("anne")
    # Twenty separate CLI processes submit at once, and each prints the pathspec it got.
    processes = [
        subprocess.Popen([sys.executable, str(path), "run", "--detach"], cwd=str(flows_dir),
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(20)
    ]
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        outputs.append(out.strip())

    # Keep the shared worker free for the next tests.
    for run in Run.objects.filter(flow__name="ParamFlow"):
        from runs.services import run_cancel

        run_cancel(run=run)

    assert len(set(outputs)) == 20
    assert all(re.fullmatch(r"ParamFlow/\d+", out) for out in outputs)
    numbers = sorted(Run.objects.filter(flow__name="ParamFlow").values_list("number",
                                                                             flat=True))
    assert numbers == list(range(1, 21))
