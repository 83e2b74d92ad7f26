"""Deployments through the API and the dashboard: production tokens, namespaces,
schedules, triggers and the audit log. Runs are created but no worker executes them."""

from __future__ import annotations

import json
import re

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from flowsite.sdk import package
from runs.models import Deployment, DeploymentEvent, Flow, Run
from tests.conftest import PASSWORD, write_flow

pytestmark = pytest.mark.django_db

HEADER = "HTTP_X_PRODUCTION_TOKEN"

FLOW_SOURCE = '''
from flowsite import FlowSpec, Parameter, step{imports}

{decorator}
class {name}(FlowSpec):
    limit = Parameter("limit", default=3, type=int)

    @step
    def start(self):
        self.next(self.end)

    @step
    def end(self):
        pass
'''


@pytest.fixture(autouse=True)
def clear_throttle():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def api(tokens):
    def client_for(user: str) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens[user]}")
        return client

    return client_for


@pytest.fixture
def deploy(api, tmp_path):
    """POST a deploy of a small flow as a persona; returns the response."""

    def send(user: str, name: str = "PredictionFlow", *, token: str | None = None,
             schedule: str = "", tags=(), namespace=None, generate_new_token=False):
        folder = tmp_path / f"{name}-{user}-{abs(hash(schedule))}"
        folder.mkdir(exist_ok=True)
        imports = ", schedule" if schedule else ""
        write_flow(folder, "flow.py", FLOW_SOURCE.format(
            name=name, decorator=schedule, imports=imports))
        meta = {
            "flow": name, "flow_file": "flow.py", "tags": list(tags), "namespace": namespace,
            "parameter_specs": [{"name": "limit", "type": "int", "default": 3, "help": "",
                                 "required": False}],
            "generate_new_token": generate_new_token,
        }
        extra = {HEADER: token} if token else {}
        from django.core.files.uploadedfile import SimpleUploadedFile

        upload = SimpleUploadedFile("package.tar.gz", package.build(str(folder)),
                                    content_type="application/gzip")
        return api(user).post("/api/v1/deployments",
                              {"metadata": json.dumps(meta), "package": upload},
                              format="multipart", **extra)

    return send


def test_first_deploy_issues_namespace_and_token(deploy):
    response = deploy("anne")
    body = response.json()
    deployment = Deployment.objects.get(flow__name="PredictionFlow")

    assert response.status_code == 201
    assert re.fullmatch(r"production:predictionflow-0-[a-z0-9]{4}", body["namespace"])
    assert body["token"]
    assert body["deployed_by"] == "anne"
    assert deployment.namespace == body["namespace"]
    assert body["token"] not in deployment.token_hash
    assert body["token"] not in deployment.namespace
    assert DeploymentEvent.objects.filter(action="deploy", flow_name="PredictionFlow").count() == 1


def test_token_never_in_later_responses(deploy, api):
    token = deploy("anne").json()["token"]

    again = deploy("anne")
    listed = api("anne").get("/api/v1/deployments")
    detail = api("will").get("/api/v1/deployments/PredictionFlow")
    events = api("will").get("/api/v1/deployments/events")

    assert again.status_code == 200
    assert again.json()["token"] is None
    for response in (again, listed, detail, events):
        assert token not in response.content.decode()


def test_refusal_without_token(deploy):
    first = deploy("anne").json()
    before = Deployment.objects.get(flow__name="PredictionFlow")

    response = deploy("will", generate_new_token=True)
    body = response.json()
    after = Deployment.objects.get(flow__name="PredictionFlow")

    assert response.status_code == 403
    assert body["code"] == "production_token_required"
    assert "anne" in body["error"]
    assert "--authorize TOKEN" in body["error"]
    assert "No production token was given" in body["error"]
    assert body["deployed_by"] == "anne"
    assert after.namespace == first["namespace"]
    assert after.deployed_by.username == "anne"
    assert after.deployed_at == before.deployed_at
    assert after.token_hash == before.token_hash
    assert DeploymentEvent.objects.filter(action="refuse", user__username="will").count() == 1


def test_wrong_token_refused(deploy):
    deploy("anne")

    response = deploy("will", token="not-the-token")

    assert response.status_code == 403
    assert "not the current one" in response.json()["error"]
    assert Deployment.objects.get(flow__name="PredictionFlow").deployed_by.username == "anne"


def test_token_holder_deploys(deploy):
    token = deploy("anne").json()["token"]

    response = deploy("will", token=f"production:{token}", tags=["nightly"])

    assert response.status_code == 200
    assert response.json()["deployed_by"] == "will"
    assert response.json()["tags"] == ["nightly"]


def test_previous_deployer_redeploys_without_token(deploy):
    token = deploy("anne").json()["token"]
    assert deploy("will", token=token).status_code == 200

    by_will = deploy("will")
    by_anne = deploy("anne")

    assert by_will.status_code == 200
    assert by_anne.status_code == 403
    assert "will" in by_anne.json()["error"]


def test_wrong_tokens_throttled(deploy, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "production_token": "3/min"
        },
    }
    token = deploy("anne").json()["token"]

    codes = [deploy("will", token=f"guess-{i}").status_code for i in range(3)]
    blocked = deploy("will", token=token)
    anne = deploy("anne")

    assert codes == [403, 403, 403]
    assert blocked.status_code == 429
    assert "Too many wrong production tokens" in blocked.json()["error"]
    assert anne.status_code == 200


def test_admin_rotate_invalidates_old_token(deploy, api):
    old = deploy("anne").json()["token"]
    namespace = Deployment.objects.get(flow__name="PredictionFlow").namespace

    refused = api("will").post("/api/v1/deployments/PredictionFlow/token")
    issued = api("admin").post("/api/v1/deployments/PredictionFlow/token")
    new = issued.json()["token"]

    assert refused.status_code == 403
    assert issued.status_code == 201
    assert new != old
    assert deploy("will", token=old).status_code == 403
    assert deploy("will", token=new).status_code == 200
    assert Deployment.objects.get(flow__name="PredictionFlow").namespace == namespace
    assert DeploymentEvent.objects.filter(action="token_issue").count() == 1


def test_similar_names_get_unrelated_tokens(deploy):
    first = deploy("anne", "PredictionFlow").json()
    second = deploy("anne", "Prediction_Flow").json()

    assert first["token"] != second["token"]
    assert first["namespace"] != second["namespace"]
    assert deploy("will", "Prediction_Flow", token=first["token"]).status_code == 403
    assert deploy("will", "PredictionFlow", token=second["token"]).status_code == 403


def test_generate_new_token_moves_namespace(deploy):
    first = deploy("anne").json()

    response = deploy("anne", generate_new_token=True)
    second = response.json()

    assert response.status_code == 201
    assert second["token"] and second["token"] != first["token"]
    assert re.fullmatch(r"production:predictionflow-1-[a-z0-9]{4}", second["namespace"])
    assert deploy("will", token=first["token"]).status_code == 403
    assert deploy("will", token=second["token"]).status_code == 200


def test_failed_deploy_leaves_nothing(deploy):
    from django_celery_beat.models import PeriodicTask

    response = deploy("anne", schedule="@schedule(cron='61 * * * *')")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_schedule"
    assert not Deployment.objects.exists()
    assert not Flow.objects.filter(name="PredictionFlow").exists()
    assert not PeriodicTask.objects.filter(name__startswith="flowsite-deployment:").exists()
    assert not DeploymentEvent.objects.exists()


@pytest.mark.parametrize("decorator, cron", [
    ("@schedule(cron='*/5 * * * *')", "*/5 * * * *"),
    ("@schedule(hourly=True)", "0 * * * *"),
    ("@schedule(daily=True)", "0 0 * * *"),
])
def test_schedule_creates_beat_entry(deploy, decorator, cron):
    from django_celery_beat.models import PeriodicTask

    assert deploy("anne", schedule=decorator).status_code == 201
    task = PeriodicTask.objects.get(name="flowsite-deployment:PredictionFlow")

    assert task.task == "runs.deployment_trigger_scheduled"
    assert task.enabled
    assert (f"{task.crontab.minute} {task.crontab.hour} {task.crontab.day_of_month} "
            f"{task.crontab.month_of_year} {task.crontab.day_of_week}") == cron
    assert json.loads(task.args) == [Deployment.objects.get().pk]


def test_schedule_needs_parameter_defaults(deploy, api, tmp_path):
    from django.core.files.uploadedfile import SimpleUploadedFile

    folder = tmp_path / "required"
    folder.mkdir()
    write_flow(folder, "flow.py", FLOW_SOURCE.format(
        name="PredictionFlow", imports=", schedule", decorator="@schedule(daily=True)"))
    meta = {"flow": "PredictionFlow", "flow_file": "flow.py", "parameter_specs": [
        {"name": "limit", "type": "int", "default": None, "required": True, "help": ""}]}
    upload = SimpleUploadedFile("package.tar.gz", package.build(str(folder)))

    response = api("anne").post("/api/v1/deployments",
                                {"metadata": json.dumps(meta), "package": upload},
                                format="multipart")

    assert response.status_code == 400
    assert "required parameters limit" in response.json()["error"]
    assert not Deployment.objects.exists()


def test_schedule_with_two_options_rejected(deploy):
    response = deploy("anne", schedule="@schedule(hourly=True, daily=True)")

    assert response.status_code == 400
    assert "exactly one" in response.json()["error"]


def test_schedule_follows_pause_redeploy_delete(deploy, api):
    from django_celery_beat.models import PeriodicTask

    name = "flowsite-deployment:PredictionFlow"
    deploy("anne", schedule="@schedule(hourly=True)")

    paused = api("anne").post("/api/v1/deployments/PredictionFlow/pause")
    assert paused.status_code == 200
    assert not PeriodicTask.objects.get(name=name).enabled
    assert api("will").post("/api/v1/deployments/PredictionFlow/resume").status_code == 403
    assert api("admin").post("/api/v1/deployments/PredictionFlow/resume").status_code == 200
    assert PeriodicTask.objects.get(name=name).enabled

    deploy("anne")  # the new version has no @schedule
    assert not PeriodicTask.objects.filter(name=name).exists()

    deploy("anne", schedule="@schedule(daily=True)")
    assert api("will").delete("/api/v1/deployments/PredictionFlow").status_code == 403
    assert api("anne").delete("/api/v1/deployments/PredictionFlow").status_code == 204
    assert not PeriodicTask.objects.filter(name=name).exists()
    assert not Deployment.objects.exists()
    assert DeploymentEvent.objects.filter(action="delete", flow_name="PredictionFlow").exists()


def test_trigger_needs_token(deploy, api):
    token = deploy("anne", tags=["team:ml"], namespace="user:anne").json()["token"]

    refused = api("will").post("/api/v1/deployments/PredictionFlow/trigger",
                               {"parameters": {"limit": 7}}, format="json")
    created = api("will").post("/api/v1/deployments/PredictionFlow/trigger",
                               {"parameters": {"limit": 7}}, format="json",
                               **{HEADER: token})
    run = Run.objects.get(flow__name="PredictionFlow", number=created.json()["id"])
    tags = set(run.tag_rows.values_list("name", flat=True))
    user_tags = set(run.tag_rows.filter(system=False).values_list("name", flat=True))

    assert refused.status_code == 403
    assert created.status_code == 201
    assert run.user is None
    assert run.triggered_by == "api:will"
    assert run.started_by == "api:will"
    assert run.identity_namespace == Deployment.objects.get().namespace
    assert run.identity_namespace in tags
    assert not any(tag.startswith("user:") for tag in tags)
    assert user_tags == {"team:ml"}
    assert run.client_namespace == "user:anne"
    assert run.parameters == {"limit": 7}


def test_run_page_shows_trigger(deploy, api, users):
    token = deploy("anne").json()["token"]
    created = api("will").post("/api/v1/deployments/PredictionFlow/trigger", {},
                               format="json", **{HEADER: token}).json()

    page = login(None, "anne").get(
        f"/runs/PredictionFlow/{created['id']}", {"ns": created["namespace"]}
    ).content.decode()

    assert "api:will" in page


def test_delete_waits_for_active_runs(deploy, api):
    token = deploy("anne").json()["token"]
    api("will").post("/api/v1/deployments/PredictionFlow/trigger", {}, format="json",
                     **{HEADER: token})

    busy = api("anne").delete("/api/v1/deployments/PredictionFlow")
    Run.objects.update(status="cancelled")
    done = api("anne").delete("/api/v1/deployments/PredictionFlow")

    assert busy.status_code == 409
    assert "1 production run(s) pending or running" in busy.json()["error"]
    assert done.status_code == 204


def test_scheduled_trigger_uses_defaults(deploy):
    from runs.deployments import deployment_trigger_scheduled

    deploy("anne", schedule="@schedule(hourly=True)")
    run = deployment_trigger_scheduled(Deployment.objects.get().pk)

    assert run.triggered_by == "schedule"
    assert run.parameters == {"limit": 3}


def test_scheduled_trigger_skips_paused(deploy, api):
    from runs.deployments import deployment_trigger_scheduled

    deploy("anne", schedule="@schedule(hourly=True)")
    api("anne").post("/api/v1/deployments/PredictionFlow/pause")

    assert deployment_trigger_scheduled(Deployment.objects.get().pk) is None
    assert not Run.objects.exists()


def test_audit_log_api_per_flow(deploy, api):
    deploy("anne", "PredictionFlow")
    deploy("will", "PredictionFlow")
    deploy("anne", "OtherFlow")

    listed = api("will").get("/api/v1/deployments/PredictionFlow/events").json()["results"]
    everything = api("will").get("/api/v1/deployments/events").json()["results"]

    assert [event["action"] for event in listed] == ["refuse", "deploy"]
    assert listed[0]["actor"] == "will"
    assert len(everything) == 3


def test_trigger_unknown_flow_404(api):
    response = api("anne").post("/api/v1/deployments/NoSuchFlow/trigger", {}, format="json")

    assert response.status_code == 404
    assert "deploy create" in response.json()["error"]


# ---------------------------------------------------------------- dashboard


def login(client, user: str):
    from django.test import Client

    browser = Client()
    assert browser.login(username=user, password=PASSWORD)
    return browser


def test_page_lists_deployments_for_everyone(deploy, users):
    namespace = deploy("anne").json()["namespace"]

    page = login(None, "will").get("/deployments").content.decode()

    assert namespace in page
    assert "anne" in page
    assert "you need its production token" in page


def test_admin_page_issues_token_once(deploy, users):
    old = deploy("anne").json()["token"]
    admin = login(None, "admin")

    response = admin.post("/deployments/PredictionFlow/token", follow=True)
    shown = re.search(r'<code id="issued-token">([^<]+)</code>', response.content.decode())
    again = admin.get("/deployments/PredictionFlow").content.decode()

    assert response.status_code == 200
    assert shown
    assert shown.group(1) != old
    assert shown.group(1) not in again
    assert "new production token issued" in again
    assert deploy("will", token=old).status_code == 403
    assert deploy("will", token=shown.group(1)).status_code == 200


def test_non_staff_cannot_rotate_from_page(deploy, users):
    before = deploy("anne").json()
    will = login(None, "will")

    response = will.post("/deployments/PredictionFlow/token", follow=True)

    assert "Only staff can issue production tokens" in response.content.decode()
    assert deploy("will", token=before["token"]).status_code == 200


def test_admin_page_reset_and_trigger(deploy, users):
    old_namespace = deploy("anne").json()["namespace"]
    admin = login(None, "admin")

    admin.post("/deployments/PredictionFlow/reset")
    deployment = Deployment.objects.get()
    admin.post("/deployments/PredictionFlow/trigger", {"param_limit": "9"})
    run = Run.objects.get(flow__name="PredictionFlow")
    page = admin.get("/deployments/PredictionFlow").content.decode()

    assert deployment.namespace != old_namespace
    assert re.fullmatch(r"production:predictionflow-1-[a-z0-9]{4}", deployment.namespace)
    assert run.identity_namespace == deployment.namespace
    assert run.triggered_by == "user:admin"
    assert run.parameters == {"limit": 9}
    assert "user:admin" in page
    assert "namespace_reset" in set(DeploymentEvent.objects.values_list("action", flat=True))


def test_non_staff_page_trigger_with_token(deploy, users):
    token = deploy("anne").json()["token"]
    will = login(None, "will")

    refused = will.post("/deployments/PredictionFlow/trigger", {"production_token": "x"},
                        follow=True)
    will.post("/deployments/PredictionFlow/trigger", {"production_token": token})

    assert "not the current one" in refused.content.decode()
    assert Run.objects.get().triggered_by == "user:will"


def test_flow_page_shows_deployment(deploy, users):
    namespace = deploy("anne", schedule="@schedule(hourly=True)").json()["namespace"]

    page = login(None, "will").get("/flows/PredictionFlow").content.decode()

    assert namespace in page
    assert "0 * * * *" in page
    assert 'href="/deployments/PredictionFlow"' in page


def test_django_admin_lists_deployments(deploy, users):
    deploy("anne")
    admin = login(None, "admin")

    assert admin.get("/admin/runs/deployment/").status_code == 200
    assert admin.get("/admin/runs/deploymentevent/").status_code == 200
