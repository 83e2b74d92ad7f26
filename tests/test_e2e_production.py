"""Production deployments end to end: the CLI, real workers and a real beat process.

The three benefits of isolated production namespaces, as anne and will live them:
experiments never change what production sees, production results stay apart, and
a new namespace gives production flows a clean slate.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys

import pytest

from runs.models import TERMINAL, Deployment, Run
from tests.conftest import _VAR, ROOT, database_url_for_worker, wait_for, write_flow

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TRAIN = """
from flowsite import FlowSpec, Parameter, step


class TrainFlow(FlowSpec):
    version = Parameter("version", default="v1")

    @step
    def start(self):
        self.model = "model-" + self.version
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    TrainFlow()
"""

PREDICT = """
from flowsite import Flow, FlowSpec, NotFound, current, step


class PredictFlow(FlowSpec):
    @step
    def start(self):
        try:
            run = Flow("TrainFlow").latest_successful_run
        except NotFound:
            run = None
        self.model = run.data.model if run else None
        self.seen_namespace = current.namespace
        self.production = current.is_production
        print("model:", self.model)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    PredictFlow()
"""

HELLO = """
from flowsite import FlowSpec, step{imports}

{decorator}
class HelloFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    HelloFlow()
"""


def deployed_namespace(stdout: str) -> str:
    match = re.search(r"deployed to production namespace (production:\S+)\.", stdout)
    assert match, stdout
    return match.group(1)


def printed_token(stdout: str) -> str | None:
    match = re.search(r"Production token \(shown once[^\n]*\n\s+(\S+)", stdout)
    return match.group(1) if match else None


def finished_run(flow: str, number: int) -> Run:
    def done():
        run = Run.objects.get(flow__name=flow, number=number)
        return run if run.status in TERMINAL else None

    return wait_for(done, timeout=90, message=f"{flow}/{number} to finish")


def trigger(cli, path, *args, user="anne") -> Run:
    result = cli.run(path, "deploy", "trigger", *args, user=user, check=True)
    flow, number = result.stdout.strip().splitlines()[-1].split("/")
    run = finished_run(flow, int(number))
    assert run.status == "completed", run.error
    return run


def artifact(sdk, namespace: str, pathspec: str, name: str):
    client = sdk.login("anne")
    client.namespace(namespace)
    return getattr(client.Run(pathspec).data, name)


def test_production_namespaces_three_benefits(cli, sdk, flows_dir):
    train = write_flow(flows_dir, "train.py", TRAIN)
    predict = write_flow(flows_dir, "predict.py", PREDICT)

    # anne deploys both flows; prediction reads what training produced in production.
    out = cli.run(train, "deploy", "create", "--tag", "team:ml", user="anne", check=True).stdout
    train_ns = deployed_namespace(out)
    out = cli.run(predict, "deploy", "create", "--namespace", train_ns, user="anne",
                  check=True).stdout
    predict_ns = deployed_namespace(out)
    assert re.fullmatch(r"production:trainflow-0-[a-z0-9]{4}", train_ns)
    assert predict_ns != train_ns

    train_run = trigger(cli, train, "--version", "v1")
    tags = set(train_run.tag_rows.values_list("name", flat=True))
    user_tags = set(train_run.tag_rows.filter(system=False).values_list("name", flat=True))
    start = train_run.tasks.get(step_name="start")
    assert train_run.identity_namespace == train_ns
    assert train_ns in tags
    assert not any(tag.startswith("user:") for tag in tags)
    assert user_tags == {"team:ml"}
    assert train_run.triggered_by == "api:anne"
    assert start.current["namespace"] == train_ns
    assert start.current["is_production"] is True

    predict_run = trigger(cli, predict)
    assert artifact(sdk, predict_ns, predict_run.pathspec, "model") == "model-v1"
    assert artifact(sdk, predict_ns, predict_run.pathspec, "seen_namespace") == predict_ns
    assert artifact(sdk, predict_ns, predict_run.pathspec, "production") is True

    # Benefit 1: will experiments with the same flow; production does not change.
    cli.run(train, "run", "--version", "experimental", user="will", check=True)
    refused = cli.run(train, "deploy", "create", user="will")
    assert refused.returncode != 0
    assert "anne" in refused.stderr
    assert "--authorize TOKEN" in refused.stderr
    predict_again = trigger(cli, predict)
    assert artifact(sdk, predict_ns, predict_again.pathspec, "model") == "model-v1"

    # Benefit 2: the production namespace contains production runs only, and anne's
    # own namespace contains none of them.
    client = sdk.login("anne")
    client.namespace(train_ns)
    assert [run.pathspec for run in client.Flow("TrainFlow").runs()] == [train_run.pathspec]
    client.namespace("user:will")
    assert client.Flow("TrainFlow").latest_run.data.model == "model-experimental"
    client.namespace("user:anne")
    assert list(client.Flow("PredictFlow").runs()) == []

    # Benefit 3: a fresh namespace starts empty, so prediction no longer sees the old model.
    out = cli.run(train, "deploy", "create", "--generate-new-token", user="anne",
                  check=True).stdout
    new_train_ns = deployed_namespace(out)
    assert new_train_ns != train_ns
    assert printed_token(out)
    client.namespace(new_train_ns)
    assert list(client.Flow("TrainFlow").runs()) == []
    cli.run(predict, "deploy", "create", "--namespace", new_train_ns, user="anne", check=True)
    fresh = trigger(cli, predict)
    assert artifact(sdk, predict_ns, fresh.pathspec, "model") is None
    assert Run.objects.filter(identity_namespace=train_ns).count() == 1


def test_cli_tokens_authorize_and_store(cli, flows_dir):
    hello = write_flow(flows_dir, "hello.py", HELLO.format(imports="", decorator=""))

    first = cli.run(hello, "deploy", "create", user="anne", check=True).stdout
    token = printed_token(first)
    namespace = deployed_namespace(first)
    anne_tokens = cli.home / "anne" / "production_tokens.json"
    assert token
    assert f"namespace({namespace!r})" in first
    assert json.loads(anne_tokens.read_text()) == {"HelloFlow": token}
    assert stat.S_IMODE(os.stat(anne_tokens).st_mode) == 0o600

    refused = cli.run(hello, "deploy", "create", user="will")
    assert refused.returncode != 0
    assert "Ask anne (or an admin) for the token" in refused.stderr
    assert Deployment.objects.get().deployed_by.username == "anne"

    authorized = cli.run(hello, "deploy", "create", "--authorize", f"production:{token}",
                         user="will", check=True).stdout
    will_tokens = cli.home / "will" / "production_tokens.json"
    assert deployed_namespace(authorized) == namespace
    assert printed_token(authorized) is None
    assert json.loads(will_tokens.read_text()) == {"HelloFlow": token}
    assert stat.S_IMODE(os.stat(will_tokens).st_mode) == 0o600

    # will needs no --authorize again, and a stale token he passes is not stored.
    stale = cli.run(hello, "deploy", "create", "--authorize", "stale-token", user="will",
                    check=True)
    assert "was not stored" in stale.stderr
    assert json.loads(will_tokens.read_text()) == {"HelloFlow": token}

    # anne is no longer the last deployer, but has the token stored from her first deploy.
    cli.run(hello, "deploy", "create", user="will", check=True)
    cli.run(hello, "deploy", "create", user="anne", check=True)
    assert Deployment.objects.get().deployed_by.username == "anne"

    listed = cli.run(hello, "deploy", "list", user="will", check=True).stdout
    assert "HelloFlow" in listed
    assert namespace in listed

    cli.run(hello, "deploy", "delete", user="will", check=True)
    assert not Deployment.objects.exists()


def test_schedule_fires_on_beat(cli, flows_dir, settings, worker):
    settings.FLOWSITE_SCHEDULE_EVERY_SECONDS = 2
    hello = write_flow(flows_dir, "hello.py", HELLO.format(
        imports=", schedule", decorator="@schedule(cron='* * * * *')"))
    out = cli.run(hello, "deploy", "create", user="anne", check=True).stdout
    namespace = deployed_namespace(out)
    assert "Schedule: * * * * *" in out

    env = dict(os.environ)
    env["DATABASE_URL"] = database_url_for_worker()
    log_path = _VAR / "beat.log"
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "flowsite.celery_app", "beat", "-l", "info",
         "-S", "django_celery_beat.schedulers:DatabaseScheduler", "--max-interval", "1"],
        cwd=str(ROOT), env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        scheduled = wait_for(
            lambda: Run.objects.filter(triggered_by="schedule").first(), timeout=60,
            message=f"a scheduled run; beat log:\n{log_path.read_text()[-2000:]}",
        )
        run = finished_run("HelloFlow", scheduled.number)
    finally:
        os.killpg(beat.pid, 15)
        beat.wait(timeout=20)

    assert run.status == "completed"
    assert run.identity_namespace == namespace
    assert run.user is None
    assert "runs.deployment_trigger_scheduled" in log_path.read_text()
