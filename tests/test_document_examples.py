"""Every code example of Metaflow's "Organizing Results" page, with only its import changed.

The snippets live in examples/organizing_results/. The run numbers of the page's story
(PredictionFlow/5 and /8, FeatureFlow/34, HelloFlow/2) are reproduced exactly. Only the
task id of CurrentFlow/1/start/550539 is replaced by the real one, because task ids are
global and cannot be chosen.
"""

from __future__ import annotations

import re
import runpy
import shutil

import pytest

from tests.conftest import ROOT
from tests.run_factory import make_run

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

EXAMPLES = ROOT / "examples" / "organizing_results"


def run_snippet(name: str, path=None) -> dict:
    """Execute one example file in this process and return its globals."""
    return runpy.run_path(str(path or EXAMPLES / name))


@pytest.fixture
def prediction_story(users):
    """PredictionFlow runs 1 to 8: will's newest is 5 and anne's newest is 8."""
    owners = ["anne", "will", "anne", "admin", "will", "anne", "admin", "anne"]
    runs = [make_run(users[owner], "PredictionFlow", status="completed") for owner in owners]
    assert [run.number for run in runs] == list(range(1, 9))
    return runs


@pytest.fixture
def feature_story(users):
    """FeatureFlow runs 1 to 34; will's 30 and anne's 34 carry xyz_features."""
    runs = []
    for number in range(1, 35):
        owner = "anne" if number % 2 == 0 else "will"
        tags = ["xyz_features"] if number in (30, 34) else []
        if number == 30:
            owner = "will"
        runs.append(make_run(users[owner], "FeatureFlow", tags=tags, status="completed"))
    assert runs[-1].pathspec == "FeatureFlow/34"
    return runs


@pytest.fixture
def hello(flows_dir):
    path = flows_dir / "helloworld.py"
    shutil.copy(EXAMPLES / "helloworld.py", path)
    return path


# ---------------------------------------------------------------- namespaces


def test_latest_run_for_anne(sdk, prediction_story):
    sdk.login("anne")

    assert str(run_snippet("latest_run.py")["run"]) == "Run('PredictionFlow/8')"


def test_latest_run_for_will(sdk, prediction_story):
    sdk.login("will")

    assert run_snippet("latest_run.py")["run"].pathspec == "PredictionFlow/5"


def test_anne_reads_will_latest(sdk, prediction_story):
    sdk.login("anne")

    assert run_snippet("latest_run_of_will.py")["run"].pathspec == "PredictionFlow/5"


def test_run_by_id_fails_for_anne(sdk, prediction_story):
    client = sdk.login("anne")

    with pytest.raises(client.NamespaceMismatch, match="PredictionFlow/5"):
        run_snippet("run_by_id.py")


def test_run_by_id_after_switch(sdk, prediction_story):
    sdk.login("anne")

    run = run_snippet("run_by_id_of_will.py")["run"]
    assert run.pathspec == "PredictionFlow/5"
    assert run.user == "will"


def test_run_by_id_global(sdk, prediction_story):
    sdk.login("anne")

    assert run_snippet("run_by_id_global.py")["run"].pathspec == "PredictionFlow/5"


def test_tag_as_namespace(sdk, users, feature_story):
    sdk.login("will")
    assert run_snippet("tag_as_namespace.py")["run"].pathspec == "FeatureFlow/34"

    make_run(users["will"], "FeatureFlow", tags=["xyz_features"])
    sdk.login("anne")
    assert run_snippet("tag_as_namespace.py")["run"].pathspec == "FeatureFlow/35"


# ---------------------------------------------------------------- tagging


def test_tagging_examples(cli, sdk, hello):
    first = cli.run(hello, "run", "--tag", "crazy_test", user="anne", check=True)
    assert "Run HelloFlow/1 completed successfully." in first.stdout
    cli.run(hello, "run", user="anne", check=True)

    added = cli.run(hello, "tag", "add", "--run-id", "2", "crazy_test", user="anne")
    assert added.returncode == 0, added.stderr
    sdk.login("anne")
    assert run_snippet("runs_with_tag.py")["run"].pathspec == "HelloFlow/2"

    removed = cli.run(hello, "tag", "remove", "--run-id", "2", "crazy_test", user="anne")
    assert removed.returncode == 0, removed.stderr
    assert run_snippet("runs_with_tag.py")["run"].pathspec == "HelloFlow/1"

    listed = cli.run(hello, "tag", "list", user="anne", check=True).stdout
    assert re.search(r"^HelloFlow/1:\n    crazy_test\n", listed, re.M), listed
    assert "user:anne  (system tag, cannot be modified)" in listed

    cli.run(hello, "tag", "add", "--run-id", "1", "date:20180301", user="anne", check=True)
    cli.run(hello, "tag", "add", "--run-id", "2", "crazy_test", user="anne", check=True)
    run = run_snippet("runs_with_two_tags.py")["run"]
    assert run.pathspec == "HelloFlow/1"
    assert {"crazy_test", "date:20180301", "user:anne"} <= run.tags


# ---------------------------------------------------------------- current


def test_task_stdout_example(cli, sdk, flows_dir, capsys):
    flow = flows_dir / "current_flow.py"
    shutil.copy(ROOT / "examples" / "current_flow.py", flow)
    out = cli.run(flow, "run", user="anne", check=True).stdout
    pathspec = re.search(r"pathspec: (CurrentFlow/1/start/\d+)", out).group(1)
    snippet = flows_dir / "task_stdout.py"
    snippet.write_text(
        (EXAMPLES / "task_stdout.py").read_text().replace("CurrentFlow/1/start/550539", pathspec)
    )
    sdk.login("anne")

    run_snippet("task_stdout.py", snippet)
    printed = capsys.readouterr().out
    assert f"pathspec: {pathspec}" in printed
    assert "namespace: user:anne" in printed


# ---------------------------------------------------------------- make demo


def test_demo_replays_story(worker, live_server, users, monkeypatch):
    from io import StringIO

    from django.core.management import call_command

    from flowsite.sdk import client

    # The demo points this process's client at the server; restore it afterwards.
    for name in ("FLOWSITE_URL", "FLOWSITE_TOKEN", "FLOWSITE_HOME"):
        monkeypatch.setenv(name, "")
    monkeypatch.setattr(client, "_namespace", client._UNSET)
    monkeypatch.setattr(client, "_login_namespace", None)
    out = StringIO()
    call_command("flowsite_demo", stdout=out)
    text = out.getvalue()

    answers = dict(re.findall(r"^  (.+?) -> (.+)$", text, re.M))
    assert answers["anne: Flow('PredictionFlow').latest_run"] == "Run('PredictionFlow/3')"
    assert answers["will: Flow('PredictionFlow').latest_run"] == "Run('PredictionFlow/2')"
    assert answers["anne: Run('PredictionFlow/2')"].startswith("NamespaceMismatch")
    assert answers["anne, namespace('user:will'): Run('PredictionFlow/2')"] == (
        "Run('PredictionFlow/2')"
    )
    assert answers["anne, namespace(None): Run('PredictionFlow/2')"] == "Run('PredictionFlow/2')"
    assert answers["will, namespace('xyz_features'): Flow('FeatureFlow').latest_run"] == (
        "Run('FeatureFlow/2')"
    )
    assert answers["anne: Flow('HelloFlow').runs('crazy_test', 'date:20180301')"] == (
        "[Run('HelloFlow/1')]"
    )
