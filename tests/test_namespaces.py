"""Namespaces in the client API: defaults, switching, tags as namespaces, direct access."""

from __future__ import annotations

import re

import pytest

from tests.conftest import write_flow
from tests.run_factory import make_run

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def prediction_runs(users):
    """Anne's runs 1 and 2 of PredictionFlow, then will's run 3."""
    anne, will = users["anne"], users["will"]
    return {
        "anne_old": make_run(anne, "PredictionFlow", status="completed"),
        "anne_new": make_run(anne, "PredictionFlow", status="failed"),
        "will": make_run(will, "PredictionFlow", status="completed"),
    }


class RequestCounter:
    """Count the HTTP requests the SDK sends, by wrapping its requests.Session."""

    def __init__(self, monkeypatch):
        from flowsite.sdk import http

        self.paths: list[str] = []
        session = http.session()
        original = session.request

        def counting(method, url, *args, **kwargs):
            self.paths.append(f"{method} {url}")
            return original(method, url, *args, **kwargs)

        monkeypatch.setattr(session, "request", counting)

    def __len__(self) -> int:
        return len(self.paths)

    def reset(self) -> None:
        self.paths.clear()


# ---------------------------------------------------------------- namespace()


def test_default_namespace_is_user(sdk, users):
    client = sdk.login("anne")

    assert client.get_namespace() == "user:anne"
    assert client.namespace("xyz_features") == "xyz_features"
    assert client.get_namespace() == "xyz_features"
    assert client.default_namespace() == "user:anne"
    assert client.get_namespace() == "user:anne"


def test_empty_namespace_is_global(sdk, users):
    client = sdk.login("anne")

    assert client.namespace(None) is None
    assert client.get_namespace() is None
    client.namespace("user:anne")
    assert client.namespace("") is None
    assert client.get_namespace() is None


def test_namespace_rejects_non_string(sdk, users):
    client = sdk.login("anne")

    with pytest.raises(TypeError, match="namespace"):
        client.namespace(42)


# ---------------------------------------------------------------- latest_run


def test_latest_run_own_namespace(sdk, prediction_runs):
    anne = sdk.login("anne")
    assert anne.Flow("PredictionFlow").latest_run.pathspec == (
        prediction_runs["anne_new"].pathspec
    )

    will = sdk.login("will")
    assert will.Flow("PredictionFlow").latest_run.pathspec == prediction_runs["will"].pathspec


def test_latest_run_may_be_failed(sdk, prediction_runs):
    client = sdk.login("anne")

    latest = client.Flow("PredictionFlow").latest_run
    assert latest.status == "failed"
    assert not latest.successful


def test_latest_successful_run_skips_failed(sdk, prediction_runs):
    client = sdk.login("anne")

    run = client.Flow("PredictionFlow").latest_successful_run
    assert run.pathspec == prediction_runs["anne_old"].pathspec
    assert run.successful


def test_latest_run_none_without_runs(sdk, users, prediction_runs):
    client = sdk.login("admin")

    assert client.Flow("PredictionFlow").latest_run is None
    assert client.Flow("PredictionFlow").latest_successful_run is None


def test_latest_run_after_switch(sdk, prediction_runs):
    client = sdk.login("anne")

    client.namespace("user:will")
    assert client.Flow("PredictionFlow").latest_run.pathspec == prediction_runs["will"].pathspec


def test_latest_run_global(sdk, prediction_runs):
    client = sdk.login("anne")

    client.namespace(None)
    assert client.Flow("PredictionFlow").latest_run.pathspec == prediction_runs["will"].pathspec


def test_tag_is_namespace(sdk, users):
    anne_run = make_run(users["anne"], "FeatureFlow", tags=["xyz_features"])
    make_run(users["will"], "FeatureFlow")
    client = sdk.login("will")

    client.namespace("xyz_features")
    assert client.Flow("FeatureFlow").latest_run.pathspec == anne_run.pathspec


def test_flow_unknown_not_found(sdk, users):
    client = sdk.login("anne")

    with pytest.raises(client.NotFound, match="NoSuchFlow"):
        client.Flow("NoSuchFlow")


# ---------------------------------------------------------------- runs(*tags)


def test_runs_need_all_tags(sdk, users):
    anne = users["anne"]
    both = make_run(anne, "HelloFlow", tags=["crazy_test", "date:20180301"])
    make_run(anne, "HelloFlow", tags=["crazy_test"])
    make_run(anne, "HelloFlow", tags=["date:20180301"])
    client = sdk.login("anne")

    found = list(client.Flow("HelloFlow").runs("crazy_test", "date:20180301"))
    assert [run.pathspec for run in found] == [both.pathspec]


def test_runs_newest_first(sdk, users):
    created = [make_run(users["anne"], "HelloFlow", tags=["crazy_test"]) for _ in range(3)]
    client = sdk.login("anne")

    found = [run.pathspec for run in client.Flow("HelloFlow").runs("crazy_test")]
    assert found == [run.pathspec for run in reversed(created)]


def test_runs_filtered_by_namespace(sdk, users):
    make_run(users["will"], "HelloFlow", tags=["crazy_test"])
    mine = make_run(users["anne"], "HelloFlow", tags=["crazy_test"])
    client = sdk.login("anne")

    assert [run.pathspec for run in client.Flow("HelloFlow").runs("crazy_test")] == [
        mine.pathspec
    ]
    client.namespace(None)
    assert len(list(client.Flow("HelloFlow").runs("crazy_test"))) == 2


def test_runs_iterate_past_one_page(sdk, users):
    for _ in range(55):
        make_run(users["anne"], "PagedFlow")
    client = sdk.login("anne")

    numbers = [int(run.id) for run in client.Flow("PagedFlow")]
    assert len(numbers) == 55
    assert numbers == sorted(numbers, reverse=True)


def test_flows_in_namespace(sdk, users):
    make_run(users["anne"], "AnneOnlyFlow")
    make_run(users["will"], "WillOnlyFlow")
    client = sdk.login("anne")

    names = [flow.id for flow in client.Metaflow().flows]
    assert "AnneOnlyFlow" in names
    assert "WillOnlyFlow" not in names
    client.namespace(None)
    assert {"AnneOnlyFlow", "WillOnlyFlow"} <= {flow.id for flow in client.Metaflow().flows}


# ---------------------------------------------------------------- direct access


def test_run_other_namespace_mismatch(sdk, prediction_runs):
    client = sdk.login("anne")
    pathspec = prediction_runs["will"].pathspec

    with pytest.raises(client.NamespaceMismatch) as caught:
        client.Run(pathspec)
    message = str(caught.value)
    assert pathspec in message
    assert "'user:anne'" in message
    assert "namespace('user:will')" in message
    assert "namespace(None)" in message


def test_mismatch_is_not_not_found(sdk, prediction_runs):
    client = sdk.login("anne")

    with pytest.raises(client.NamespaceMismatch) as caught:
        client.Run(prediction_runs["will"].pathspec)
    assert not isinstance(caught.value, client.NotFound)


def test_run_after_switch_to_owner(sdk, prediction_runs):
    client = sdk.login("anne")
    pathspec = prediction_runs["will"].pathspec

    client.namespace("user:will")
    assert client.Run(pathspec).pathspec == pathspec


def test_run_in_global_namespace(sdk, prediction_runs):
    client = sdk.login("anne")
    pathspec = prediction_runs["will"].pathspec

    client.namespace(None)
    assert client.Run(pathspec).user == "will"


def test_step_and_task_mismatch_name_object(sdk, prediction_runs):
    client = sdk.login("anne")
    pathspec = prediction_runs["will"].pathspec

    with pytest.raises(client.NamespaceMismatch, match=f"Step {pathspec}/start"):
        client.Step(f"{pathspec}/start")
    with pytest.raises(client.NamespaceMismatch, match=f"Task {pathspec}/start/1"):
        client.Task(f"{pathspec}/start/1")


def test_namespace_checked_at_creation(sdk, prediction_runs):
    client = sdk.login("anne")
    run = client.Run(prediction_runs["anne_old"].pathspec)

    client.namespace("user:will")
    assert "user:anne" in run.tags
    run.add_tag("checked_at_creation")
    assert "checked_at_creation" in run.user_tags
    assert run.tag_history()[0]["added"] == ["checked_at_creation"]


def test_nonexistent_run_not_found(sdk, prediction_runs):
    client = sdk.login("anne")

    with pytest.raises(client.NotFound, match="PredictionFlow/99999"):
        client.Run("PredictionFlow/99999")
    with pytest.raises(client.NotFound):
        client.Run("NoSuchFlow/1")


@pytest.mark.parametrize("pathspec", ["PredictionFlow", "PredictionFlow/1/start", "/1",
                                      "PredictionFlow//", "//", ""])
def test_run_invalid_pathspec(sdk, users, pathspec):
    client = sdk.login("anne")

    with pytest.raises(client.InvalidPathspec, match="FlowName/RunId"):
        client.Run(pathspec)


@pytest.mark.parametrize("pathspec", ["F/1/start", "F/1//7", "F/1/start/7/x"])
def test_task_invalid_pathspec(sdk, users, pathspec):
    client = sdk.login("anne")

    with pytest.raises(client.InvalidPathspec, match="FlowName/RunId/StepName/TaskId"):
        client.Task(pathspec)


def test_run_non_integer_id_invalid(sdk, users, prediction_runs):
    client = sdk.login("anne")

    with pytest.raises(client.InvalidPathspec, match="not an integer"):
        client.Run("PredictionFlow/latest")


def test_trailing_slash_same_run(sdk, prediction_runs):
    client = sdk.login("anne")
    pathspec = prediction_runs["anne_old"].pathspec

    assert client.Run(pathspec + "/") == client.Run(pathspec)
    assert client.Run(pathspec + "/").pathspec == pathspec


# ---------------------------------------------------------------- request counts


def test_latest_run_fixed_requests(sdk, users, monkeypatch):
    make_run(users["anne"], "CountedFlow", status="completed")
    client = sdk.login("anne")
    client.get_namespace()
    counter = RequestCounter(monkeypatch)
    costs = []

    for extra_runs in (0, 30):
        for _ in range(extra_runs):
            make_run(users["anne"], "CountedFlow", status="failed")
        counter.reset()
        flow = client.Flow("CountedFlow")
        flow.latest_run  # noqa: B018
        flow.latest_successful_run  # noqa: B018
        next(iter(flow.runs()))
        costs.append(len(counter))

    assert costs[0] == costs[1]
    assert costs[1] <= 4, counter.paths


# ---------------------------------------------------------------- inside a flow

NAMESPACE_FLOW = """
    from flowsite import FlowSpec, NamespaceMismatch, Run, current, get_namespace, step


    class NamespaceFlow(FlowSpec):
        @step
        def start(self):
            print("client namespace: %r" % get_namespace())
            print("identity namespace: %s" % current.namespace)
            print("current.run: %s" % current.run.pathspec)
            print("current.task: %s" % current.task.pathspec)
            try:
                Run(current.run.pathspec)
                print("direct access: allowed")
            except NamespaceMismatch:
                print("direct access: mismatch")
            self.next(self.end)

        @step
        def end(self):
            pass


    if __name__ == "__main__":
        NamespaceFlow()
"""


def printed(stdout: str, label: str) -> str:
    match = re.search(rf"^\[\d+/start/\d+\] {re.escape(label)}: (.*)$", stdout, re.M)
    assert match, f"{label!r} not printed:\n{stdout}"
    return match.group(1)


@pytest.fixture
def namespace_flow(flows_dir):
    return write_flow(flows_dir, "namespace_flow.py", NAMESPACE_FLOW)


def test_steps_see_run_namespace(cli, namespace_flow):
    out = cli.run(namespace_flow, "run", user="anne", check=True).stdout

    assert printed(out, "client namespace") == "'user:anne'"
    assert printed(out, "identity namespace") == "user:anne"
    assert printed(out, "direct access") == "allowed"


def test_run_namespace_option(cli, namespace_flow):
    from runs.models import Run

    out = cli.run(namespace_flow, "run", "--namespace", "xyz_features", user="anne",
                  check=True).stdout

    assert printed(out, "client namespace") == "'xyz_features'"
    assert printed(out, "identity namespace") == "user:anne"
    assert printed(out, "direct access") == "mismatch"
    pathspec = printed(out, "current.run")
    assert printed(out, "current.task").startswith(pathspec + "/start/")
    run = Run.objects.get(flow__name="NamespaceFlow", number=int(pathspec.split("/")[1]))
    assert not run.tag_rows.filter(name="xyz_features").exists()


def test_run_namespace_empty_is_global(cli, namespace_flow):
    out = cli.run(namespace_flow, "run", "--namespace", "", user="will", check=True).stdout

    assert printed(out, "client namespace") == "None"
    assert printed(out, "identity namespace") == "user:will"
    assert printed(out, "direct access") == "allowed"


def test_steps_and_tasks_filter_on_run_tags(cli, sdk, namespace_flow):
    out = cli.run(namespace_flow, "run", "--tag", "crazy_test", user="anne", check=True).stdout
    pathspec = printed(out, "current.run")
    client = sdk.login("anne")
    run = client.Run(pathspec)

    assert [step.id for step in run.steps("crazy_test")] == ["start", "end"]
    assert list(run.steps("crazy_test", "other_tag")) == []
    assert len(list(run["start"].tasks("crazy_test"))) == 1
    assert list(run["start"].tasks("other_tag")) == []
    assert run["start"].task.tags == run.tags
