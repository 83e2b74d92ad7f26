"""Resume on the server: cloning, the frontier, origins, the API and the page button.

Origin runs here are driven through the real scheduling services (task_complete,
task_fail) without a worker, so each test sets up exactly the failure it needs.
"""

from __future__ import annotations

import hashlib

import pytest
from rest_framework.test import APIClient

from runs import services
from runs.models import Artifact, ArtifactBlob, CodePackage, LogChunk, Run, RunTag, Status, Task
from runs.resume import origin_run_latest, run_resume

FAN_SOURCE = '''
from flowsite import FlowSpec, Parameter, step


class FanFlow(FlowSpec):
    alpha = Parameter("alpha", default=1)

    @step
    def start(self):
        self.items = [0, 1, 2]
        self.next(self.fan, foreach="items")

    @step
    def fan(self):
        self.value = self.input * 10
        self.next(self.join)

    @step
    def join(self, inputs):
        self.total = sum(branch.value for branch in inputs)
        self.next(self.end)

    @step
    def end(self):
        pass
'''
FAN_SPECS = [{"name": "alpha", "type": "int", "default": 1, "required": False}]


NESTED_SOURCE = '''
from flowsite import FlowSpec, step


class NestedFlow(FlowSpec):
    @step
    def start(self):
        self.outer = [0, 1, 2]
        self.next(self.row, foreach="outer")

    @step
    def row(self):
        self.inner = [0, 1, 2]
        self.next(self.cell, foreach="inner")

    @step
    def cell(self):
        self.next(self.row_join)

    @step
    def row_join(self, inputs):
        self.next(self.grid_join)

    @step
    def grid_join(self, inputs):
        self.next(self.end)

    @step
    def end(self):
        pass
'''

BRANCH_SOURCE = '''
from flowsite import FlowSpec, step


class SplitFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.left, self.right)

    @step
    def left(self):
        self.next(self.join)

    @step
    def right(self):
        self.next(self.join)

    @step
    def join(self, inputs):
        self.next(self.end)

    @step
    def end(self):
        pass
'''


def fan_graph() -> dict:
    return services.graph_from_source(FAN_SOURCE, "fan_flow.py", "FanFlow")


def fake_package() -> CodePackage:
    package, _ = CodePackage.objects.get_or_create(
        sha256="0" * 64, defaults={"size": 1, "storage_key": "packages/test.tar.gz"}
    )
    return package


def blob_for(text: str) -> ArtifactBlob:
    digest = hashlib.sha256(text.encode()).hexdigest()
    blob, _ = ArtifactBlob.objects.get_or_create(
        sha256=digest, defaults={"size": len(text), "storage_key": f"artifacts/{digest}"}
    )
    return blob


def origin_create(user, *, namespace: str | None = None, tags=(), parameters=None,
                  graph: dict | None = None) -> Run:
    graph = graph or fan_graph()
    return services.run_create(
        user=user,
        flow_name=graph["flow"],
        graph=graph,
        flow_file="fan_flow.py",
        package=fake_package(),
        parameters=parameters or {"alpha": 1},
        parameter_specs=FAN_SPECS,
        user_tags=list(tags),
        identity_namespace=namespace or f"user:{user.username}",
        runtime="celery",
        python_version="3.11.9",
        triggered_by=f"user:{user.username}" if user else "schedule",
    )


def drive(run: Run, *, fail: tuple[str, ...] = ()) -> Run:
    """Play the run's tasks as a worker would: complete each pending task, and fail
    the tasks whose keys are in `fail` once nothing else is pending."""
    while True:
        pending = list(Task.objects.filter(run=run, status=Status.PENDING).order_by("id"))
        if not pending:
            break
        ready = [task for task in pending if task.key not in fail] or pending[:1]
        for task in ready:
            Task.objects.filter(pk=task.pk).update(status=Status.RUNNING)
            if task.key in fail:
                services.task_fail(task_id=task.id, error="failed on purpose", retry=False)
                continue
            Artifact.objects.create(task=task, attempt=task.attempt, name="marker",
                                    blob=blob_for(f"{run.pk}:{task.key}"))
            services.task_complete(
                task_id=task.id,
                foreach_count=3 if run.graph["steps"][task.step_name]["foreach"] else None,
                next_steps=run.graph["steps"][task.step_name]["next"],
            )
    return Run.objects.get(pk=run.pk)


def keys(run: Run, **filters) -> set[str]:
    return set(Task.objects.filter(run=run, **filters).values_list("key", flat=True))


@pytest.fixture
def failed_origin(users):
    """Will's FanFlow run whose second foreach branch failed after the others finished."""
    run = drive(origin_create(users["will"], tags=["experiment"]), fail=("fan[1]",))
    assert run.status == Status.FAILED
    return run


@pytest.fixture
def api(tokens):
    def client_for(user: str) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens[user]}")
        return client

    return client_for


# ---------------------------------------------------------------- cloning


def test_resume_clones_successful_tasks(users, failed_origin):
    run = run_resume(user=users["anne"], origin=failed_origin, step=None, tags=[])

    assert keys(run, origin_task__isnull=False) == {"start", "fan[0]", "fan[2]"}
    assert keys(run, status=Status.PENDING) == {"fan[1]"}
    assert keys(run) == {"start", "fan[0]", "fan[1]", "fan[2]"}


def test_cloned_tasks_not_executed(users, failed_origin):
    run = run_resume(user=users["anne"], origin=failed_origin, step=None, tags=[])

    for clone in Task.objects.filter(run=run, origin_task__isnull=False):
        origin_task = clone.origin_task
        assert clone.status == Status.COMPLETED
        assert clone.id != origin_task.id
        assert origin_task.run_id == failed_origin.id
        assert clone.key == origin_task.key
        assert clone.worker_pid is None
        assert clone.worker_host == ""
        assert clone.started_at is None
        assert clone.finished_at is not None
        assert not LogChunk.objects.filter(task=clone).exists()
        assert not clone.attempts.exists()


def test_cloned_artifacts_share_blobs(users, failed_origin):
    blob_count = ArtifactBlob.objects.count()
    run = run_resume(user=users["anne"], origin=failed_origin, step=None, tags=[])

    for clone in Task.objects.filter(run=run, origin_task__isnull=False):
        shared = Artifact.objects.get(task=clone, name="marker")
        original = Artifact.objects.get(task=clone.origin_task, name="marker")
        assert shared.blob_id == original.blob_id
        assert shared.attempt == 0
    assert ArtifactBlob.objects.count() == blob_count


def test_cloned_ids_point_into_new_run(users, failed_origin):
    run = run_resume(user=users["anne"], origin=failed_origin, step=None, tags=[])
    new_ids = set(Task.objects.filter(run=run).values_list("id", flat=True))
    start = Task.objects.get(run=run, key="start")

    for task in Task.objects.filter(run=run).exclude(key="start"):
        assert set(task.input_task_ids) <= new_ids
        assert task.split_stack[-1]["task"] == start.id
        assert task.split_stack[-1]["n"] == 3


def test_cloned_current_rewritten(users, failed_origin):
    run = run_resume(user=users["anne"], origin=failed_origin, step=None, tags=[])
    clone = Task.objects.get(run=run, key="fan[0]")

    assert clone.current["run_id"] == str(run.number)
    assert clone.current["task_id"] == str(clone.id)
    assert clone.current["pathspec"] == f"FanFlow/{run.number}/fan/{clone.id}"
    assert clone.current["origin_run_id"] == str(failed_origin.number)
    assert clone.current["namespace"] == "user:anne"
    assert clone.current["username"] == "anne"


def test_rerun_branch_then_join_uses_clones(users, failed_origin):
    run = run_resume(user=users["anne"], origin=failed_origin, step=None, tags=[])
    run = drive(run)

    join = Task.objects.get(run=run, key="join")
    fans = Task.objects.filter(run=run, step_name="fan").order_by("foreach_index")
    assert run.status == Status.COMPLETED
    assert join.input_task_ids == [task.id for task in fans]
    assert join.origin_task_id is None
    assert keys(run, origin_task__isnull=True) == {"fan[1]", "join", "end"}


def test_nested_foreach_resumes_one_cell(users):
    graph = services.graph_from_source(NESTED_SOURCE, "fan_flow.py", "NestedFlow")
    origin = drive(origin_create(users["anne"], graph=graph, parameters={"alpha": 1}),
                   fail=("cell[1][2]",))
    run = run_resume(user=users["anne"], origin=origin, step=None, tags=[])
    pending = keys(run, status=Status.PENDING)
    run = drive(run)
    rerun = keys(run, origin_task__isnull=True)

    assert origin.status == Status.FAILED
    assert pending == {"cell[1][2]"}
    assert run.status == Status.COMPLETED
    assert rerun == {"cell[1][2]", "row_join[1]", "grid_join", "end"}
    assert len(keys(run, step_name="cell")) == 9
    assert keys(run, step_name="row_join") == {"row_join[0]", "row_join[1]", "row_join[2]"}


def test_static_branch_resumes_one_side(users):
    graph = services.graph_from_source(BRANCH_SOURCE, "fan_flow.py", "SplitFlow")
    origin = drive(origin_create(users["anne"], graph=graph), fail=("right[1]",))
    run = run_resume(user=users["anne"], origin=origin, step=None, tags=[])
    pending = keys(run, status=Status.PENDING)
    run = drive(run)

    assert pending == {"right[1]"}
    assert run.status == Status.COMPLETED
    assert keys(run, origin_task__isnull=True) == {"right[1]", "join", "end"}


def test_resume_of_a_resume(users, failed_origin):
    first = run_resume(user=users["anne"], origin=failed_origin, step=None, tags=[])
    services.run_cancel(run=first, user=users["anne"])
    first.refresh_from_db()
    second = run_resume(user=users["anne"], origin=first, step=None, tags=[])
    clone = Task.objects.get(run=second, key="fan[0]")

    assert keys(second, origin_task__isnull=False) == {"start", "fan[0]", "fan[2]"}
    assert clone.origin_task.run_id == first.id
    assert clone.current["origin_run_id"] == str(first.number)


def test_step_reruns_downstream(users):
    origin = drive(origin_create(users["anne"]))
    run = run_resume(user=users["anne"], origin=origin, step="join", tags=[])

    assert origin.status == Status.COMPLETED
    assert keys(run, origin_task__isnull=False) == {"start", "fan[0]", "fan[1]", "fan[2]"}
    assert keys(run, status=Status.PENDING) == {"join"}
    assert len(Task.objects.get(run=run, key="join").input_task_ids) == 3
    assert run.resume_step == "join"


def test_step_after_failure_resumes_at_failure(users, failed_origin):
    run = run_resume(user=users["anne"], origin=failed_origin, step="end", tags=[])

    assert keys(run, status=Status.PENDING) == {"fan[1]"}
    assert keys(run, origin_task__isnull=False) == {"start", "fan[0]", "fan[2]"}


def test_step_start_clones_nothing(users, failed_origin):
    run = run_resume(user=users["anne"], origin=failed_origin, step="start", tags=[])

    assert keys(run) == {"start"}
    assert keys(run, status=Status.PENDING) == {"start"}


def test_completed_origin_without_step(users):
    origin = drive(origin_create(users["anne"]))
    run = run_resume(user=users["anne"], origin=origin, step=None, tags=[])

    assert Run.objects.get(pk=run.pk).status == Status.COMPLETED
    assert keys(run, status=Status.PENDING) == set()
    assert keys(run, origin_task__isnull=False) == keys(origin)


def test_changed_step_shape_not_cloned(users, failed_origin):
    graph = fan_graph()
    graph["steps"]["start"]["foreach"] = "other_items"
    run = run_resume(user=users["anne"], origin=failed_origin, step=None, tags=[],
                     package=fake_package(), graph=graph, flow_file="fan_flow.py")

    assert keys(run) == {"start"}
    assert keys(run, origin_task__isnull=False) == set()


def test_running_origin_rejected(users):
    from runs.errors import Conflict

    origin = origin_create(users["anne"])
    with pytest.raises(Conflict):
        run_resume(user=users["anne"], origin=origin, step=None, tags=[])


# ---------------------------------------------------------------- identity and tags


def test_resumed_run_in_resumer_namespace(users, failed_origin):
    run = run_resume(user=users["anne"], origin=failed_origin, step=None, tags=["fix"])
    tags = dict(RunTag.objects.filter(run=run).values_list("name", "system"))

    assert run.identity_namespace == "user:anne"
    assert tags["user:anne"] is True
    assert "user:will" not in tags
    assert tags["experiment"] is False
    assert tags["fix"] is False
    assert tags["python_version:3.11.9"] is True
    assert run.origin_run_id == failed_origin.id
    assert run.is_resume


def test_resumed_run_keeps_parameters(users):
    origin = drive(origin_create(users["will"], parameters={"alpha": 7}), fail=("fan[2]",))
    run = run_resume(user=users["anne"], origin=origin, step=None, tags=[])

    assert run.parameters == {"alpha": 7}
    assert run.parameter_specs == FAN_SPECS


def test_production_resume_leaves_namespace(users):
    from runs import selectors

    production = "production:x-1-abcd"
    origin = drive(origin_create(None, namespace=production), fail=("fan[0]",))
    run = run_resume(user=users["anne"], origin=origin, step=None, tags=[])
    tags = set(RunTag.objects.filter(run=run).values_list("name", flat=True))

    assert run.identity_namespace == "user:anne"
    assert production not in tags
    assert list(selectors.runs_in_namespace(namespace=production)) == [origin]
    assert keys(run, status=Status.PENDING) == {"fan[0]"}


# ---------------------------------------------------------------- origin selection


def test_default_origin_is_latest_run(users):
    older = drive(origin_create(users["will"]), fail=("fan[0]",))
    newer = drive(origin_create(users["will"]), fail=("fan[1]",))
    drive(origin_create(users["anne"]), fail=("fan[2]",))

    first = run_resume(user=users["will"], origin=origin_run_latest(
        flow_name="FanFlow", user=users["will"]), step=None, tags=[])
    services.run_cancel(run=first, user=users["will"])
    origin = origin_run_latest(flow_name="FanFlow", user=users["will"])

    assert older.number < newer.number
    assert first.origin_run_id == newer.id
    assert origin == newer


def test_default_origin_skips_resumes(users, failed_origin):
    resumed = drive(run_resume(user=users["will"], origin=failed_origin, step=None, tags=[]))

    assert resumed.status == Status.COMPLETED
    assert origin_run_latest(flow_name="FanFlow", user=users["will"]) == failed_origin


def test_interrupted_resume_still_clones(users, failed_origin):
    first = run_resume(user=users["will"], origin=failed_origin, step=None, tags=[])
    services.run_cancel(run=first, user=users["will"])
    origin = origin_run_latest(flow_name="FanFlow", user=users["will"])
    second = run_resume(user=users["will"], origin=origin, step=None, tags=[])

    assert Run.objects.get(pk=first.pk).status == Status.CANCELLED
    assert origin == failed_origin
    assert keys(second, origin_task__isnull=False) == {"start", "fan[0]", "fan[2]"}


def test_default_origin_missing(users, failed_origin):
    from runs.errors import NotFound

    with pytest.raises(NotFound, match="--origin-run-id"):
        origin_run_latest(flow_name="FanFlow", user=users["anne"])


# ---------------------------------------------------------------- API


def test_api_resume_other_users_run(api, failed_origin):
    response = api("anne").post(
        f"/api/v1/runs/FanFlow/{failed_origin.number}/resume",
        {"step": None, "tags": ["fix"]}, format="json",
    )
    body = response.json()

    assert response.status_code == 201
    assert body["namespace"] == "user:anne"
    assert body["origin_pathspec"] == failed_origin.pathspec
    assert body["is_resume"] is True
    assert sorted(body["user_tags"]) == ["experiment", "fix"]


def test_api_task_origin_pathspec(api, failed_origin):
    body = api("anne").post(f"/api/v1/runs/FanFlow/{failed_origin.number}/resume", {},
                            format="json").json()
    clone = Task.objects.get(run__number=int(body["id"]), run__flow__name="FanFlow",
                             key="start")
    task = api("anne").get(f"/api/v1/tasks/FanFlow/{body['id']}/start/{clone.id}").json()

    assert task["origin_pathspec"] == (
        f"FanFlow/{failed_origin.number}/start/{clone.origin_task_id}"
    )


def test_api_flow_resume_default_origin(api, failed_origin):
    response = api("will").post("/api/v1/flows/FanFlow/resume", {"step": "fan"},
                                format="json")

    assert response.status_code == 201
    assert response.json()["origin_pathspec"] == failed_origin.pathspec
    assert response.json()["resume_step"] == "fan"


def test_api_flow_resume_without_origin(api, failed_origin):
    runs = Run.objects.count()
    response = api("anne").post("/api/v1/flows/FanFlow/resume", {}, format="json")

    assert response.status_code == 404
    assert response.json()["code"] == "no_origin_run"
    assert "--origin-run-id" in response.json()["error"]
    assert Run.objects.count() == runs


def test_api_unknown_origin_creates_nothing(api, failed_origin):
    runs = Run.objects.count()
    response = api("anne").post("/api/v1/runs/FanFlow/999/resume", {}, format="json")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert Run.objects.count() == runs


def test_api_parameters_rejected(api, failed_origin):
    runs = Run.objects.count()
    response = api("anne").post(
        f"/api/v1/runs/FanFlow/{failed_origin.number}/resume",
        {"parameters": {"alpha": 3}}, format="json",
    )

    assert response.status_code == 400
    assert response.json()["code"] == "parameters_not_allowed"
    assert Run.objects.count() == runs


def test_api_unknown_step_rejected(api, failed_origin):
    runs = Run.objects.count()
    response = api("anne").post(
        f"/api/v1/runs/FanFlow/{failed_origin.number}/resume", {"step": "nope"},
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["code"] == "unknown_step"
    assert "start, fan, join, end" in response.json()["error"]
    assert Run.objects.count() == runs


def test_api_system_tag_rejected(api, failed_origin):
    runs = Run.objects.count()
    response = api("anne").post(
        f"/api/v1/runs/FanFlow/{failed_origin.number}/resume", {"tags": ["user:will"]},
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["code"] == "system_tag"
    assert Run.objects.count() == runs


# ---------------------------------------------------------------- the page


def test_page_offers_resume_per_step(client, users, failed_origin):
    client.force_login(users["anne"])
    page = client.get(f"/runs/FanFlow/{failed_origin.number}?ns=global").content.decode()

    assert f'action="/runs/FanFlow/{failed_origin.number}/resume"' in page
    assert "csrfmiddlewaretoken" in page
    for step in ("start", "fan", "join", "end"):
        assert f'name="step" value="{step}">Resume from {step}</button>' in page


def test_page_no_resume_for_successful_run(client, users):
    origin = drive(origin_create(users["anne"]))
    client.force_login(users["anne"])
    page = client.get(f"/runs/FanFlow/{origin.number}").content.decode()

    assert "Resume from" not in page


def test_page_button_resumes(users, failed_origin):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(users["anne"])
    page = browser.get(f"/runs/FanFlow/{failed_origin.number}?ns=global")
    token = page.context["csrf_token"]
    response = browser.post(f"/runs/FanFlow/{failed_origin.number}/resume",
                            {"step": "fan", "csrfmiddlewaretoken": str(token)})
    run = Run.objects.filter(origin_run=failed_origin).get()

    assert response.status_code == 302
    assert response["Location"] == f"/runs/FanFlow/{run.number}"
    assert run.identity_namespace == "user:anne"
    assert run.resume_step == "fan"
    assert run.code_package_id == failed_origin.code_package_id
    assert keys(run, origin_task__isnull=False) == {"start"}


def test_page_shows_origin_and_clones(client, users, failed_origin):
    run = run_resume(user=users["anne"], origin=failed_origin, step=None, tags=[])
    clone = Task.objects.get(run=run, key="fan[0]")
    client.force_login(users["anne"])
    page = client.get(f"/runs/FanFlow/{run.number}?step=fan").content.decode()
    task_page = client.get(f"/runs/FanFlow/{run.number}/fan/{clone.id}").content.decode()
    origin_link = f'href="/runs/FanFlow/{failed_origin.number}/fan/{clone.origin_task_id}'

    assert f'href="/runs/FanFlow/{failed_origin.number}?ns=global"' in page
    assert page.count('class="badge cloned"') == 2
    assert origin_link in page
    assert origin_link in task_page


def test_page_resume_without_csrf_rejected(users, failed_origin):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(users["anne"])
    response = browser.post(f"/runs/FanFlow/{failed_origin.number}/resume", {"step": "fan"})

    assert response.status_code == 403
    assert not Run.objects.filter(origin_run=failed_origin).exists()


def test_page_resume_unknown_run(client, users):
    client.force_login(users["anne"])
    response = client.post("/runs/FanFlow/4242/resume", {"step": ""})

    assert response.status_code == 404
    assert b"does not exist" in response.content
