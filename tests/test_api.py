"""The REST API: filters, pagination, errors, tag mutations, tokens and the schema."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from rest_framework.test import APIClient

from flowsite.wsgi import application
from tests.run_factory import make_run

pytestmark = pytest.mark.django_db


def api_as(token: str | None) -> APIClient:
    client = APIClient()
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.fixture
def anne(tokens) -> APIClient:
    return api_as(tokens["anne"])


@pytest.fixture
def will(tokens) -> APIClient:
    return api_as(tokens["will"])


@pytest.fixture
def story(users):
    """Runs of two users over two flows with a few tags, oldest first."""
    anne, will = users["anne"], users["will"]
    return [
        make_run(anne, "PredictionFlow", status="completed"),
        make_run(anne, "PredictionFlow", tags=["crazy_test"], status="failed"),
        make_run(will, "PredictionFlow", tags=["crazy_test", "date:20180301"],
                 status="completed"),
        make_run(anne, "FeatureFlow", tags=["xyz_features", "date:20180301"]),
        make_run(will, "FeatureFlow", tags=["xyz_features"], status="running"),
    ]


def pathspecs(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [item["pathspec"] for item in response.json()["results"]]


def expected(story, *indexes) -> list[str]:
    return [story[index].pathspec for index in indexes]


# ---------------------------------------------------------------- authentication


def test_no_token_401(story):
    response = api_as(None).get("/api/v1/runs")

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert "Bearer" in response.json()["error"]


def test_unknown_token_401(story):
    response = api_as("not-a-token").get("/api/v1/runs")

    assert response.status_code == 401
    assert "login" in response.json()["error"]


def test_session_post_without_csrf_403(users, story):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(users["anne"])

    response = client.post(f"/api/v1/runs/{story[0].pathspec}/tags", {"add": ["x"]},
                           format="json")
    assert response.status_code == 403
    assert response.json()["code"]
    assert "CSRF" in response.json()["error"]


def test_session_get_allowed(users, story):
    client = APIClient()
    client.force_login(users["anne"])

    assert client.get("/api/v1/runs").status_code == 200


# ---------------------------------------------------------------- run filters


def test_runs_default_namespace_is_global(anne, story):
    assert pathspecs(anne.get("/api/v1/runs")) == expected(story, 4, 3, 2, 1, 0)


def test_runs_namespace_filter(anne, story):
    assert pathspecs(anne.get("/api/v1/runs", {"namespace": "user:anne"})) == expected(
        story, 3, 1, 0
    )
    assert pathspecs(anne.get("/api/v1/runs", {"namespace": "xyz_features"})) == expected(
        story, 4, 3
    )
    assert len(pathspecs(anne.get("/api/v1/runs", {"namespace": ""}))) == 5


def test_runs_tags_all(anne, story):
    response = anne.get("/api/v1/runs", {"tag": ["crazy_test", "date:20180301"]})

    assert pathspecs(response) == expected(story, 2)


def test_runs_tags_any(anne, story):
    response = anne.get("/api/v1/runs", {"tag": ["crazy_test", "date:20180301"],
                                         "tag_mode": "any"})

    assert pathspecs(response) == expected(story, 3, 2, 1)


def test_runs_flow_status_user(anne, story):
    assert pathspecs(anne.get("/api/v1/runs", {"flow": "FeatureFlow"})) == expected(story, 4, 3)
    assert pathspecs(anne.get("/api/v1/runs", {"status": "completed"})) == expected(story, 2, 0)
    assert pathspecs(anne.get("/api/v1/runs", {"user": "will"})) == expected(story, 4, 2)
    assert pathspecs(anne.get("/api/v1/runs", {"flow": "NoSuchFlow"})) == []


def test_runs_created_window(anne, story):
    from runs.models import Run

    middle = Run.objects.get(pk=story[2].pk).created_at
    after = anne.get("/api/v1/runs", {"created_after": middle.isoformat()})
    before = anne.get("/api/v1/runs", {"created_before": middle.isoformat()})

    assert story[2].pathspec in pathspecs(after)
    assert story[2].pathspec not in pathspecs(before)
    assert set(pathspecs(after)) | set(pathspecs(before)) == set(expected(story, 0, 1, 2, 3, 4))
    later = (middle + timedelta(days=1)).isoformat()
    assert pathspecs(anne.get("/api/v1/runs", {"created_after": later})) == []


@pytest.mark.parametrize("params, field", [
    ({"status": "done"}, "status"),
    ({"tag_mode": "some"}, "tag_mode"),
    ({"created_after": "yesterday"}, "created_after"),
    ({"created_before": "2026-13-45"}, "created_before"),
    ({"cursor": "abc"}, "cursor"),
    ({"page_size": "many"}, "page_size"),
])
def test_runs_bad_filter_400(anne, story, params, field):
    response = anne.get("/api/v1/runs", params)

    assert response.status_code == 400
    body = response.json()
    assert body["code"] in ("invalid_filter", "invalid_cursor")
    assert field in body["error"]


# ---------------------------------------------------------------- pagination


def test_runs_keyset_pages(anne, users):
    created = [make_run(users["anne"], "PagedFlow") for _ in range(7)]

    seen = []
    cursor = None
    while True:
        params = {"flow": "PagedFlow", "page_size": 3}
        if cursor:
            params["cursor"] = cursor
        body = anne.get("/api/v1/runs", params).json()
        assert len(body["results"]) <= 3
        seen.extend(item["pathspec"] for item in body["results"])
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert seen == [run.pathspec for run in reversed(created)]


def test_runs_page_size_default_and_cap(anne, users):
    from runs.selectors import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

    user = users["anne"]
    for _ in range(MAX_PAGE_SIZE + 1):
        make_run(user, "BigFlow")

    default = anne.get("/api/v1/runs", {"flow": "BigFlow"}).json()
    capped = anne.get("/api/v1/runs", {"flow": "BigFlow", "page_size": 100000}).json()
    assert len(default["results"]) == DEFAULT_PAGE_SIZE
    assert default["next_cursor"]
    assert len(capped["results"]) == MAX_PAGE_SIZE
    assert capped["next_cursor"]


def test_runs_list_fixed_queries(anne, users, django_assert_max_num_queries):
    for _ in range(20):
        make_run(users["anne"], "QueryFlow", tags=["a", "b"])

    with django_assert_max_num_queries(8):
        response = anne.get("/api/v1/runs", {"namespace": "user:anne", "tag": ["a", "b"]})
    assert len(response.json()["results"]) == 20


# ---------------------------------------------------------------- objects


def test_run_detail_namespace_mismatch(anne, story):
    response = anne.get(f"/api/v1/runs/{story[2].pathspec}", {"namespace": "user:anne"})

    assert response.status_code == 404
    body = response.json()
    assert body["code"] == "namespace_mismatch"
    assert body["run_namespace"] == "user:will"
    assert "namespace('user:will')" in body["error"]
    assert "namespace(None)" in body["error"]


def test_run_detail_not_found(anne, story):
    response = anne.get("/api/v1/runs/PredictionFlow/999")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert "PredictionFlow/999" in response.json()["error"]


def test_run_detail_bad_id_400(anne, story):
    response = anne.get("/api/v1/runs/PredictionFlow/abc")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_pathspec"


def test_flows_in_namespace(anne, story):
    names = [item["name"] for item in anne.get("/api/v1/flows",
                                               {"namespace": "xyz_features"}).json()["results"]]
    assert names == ["FeatureFlow"]


def test_flow_detail_latest(anne, story):
    body = anne.get("/api/v1/flows/PredictionFlow", {"namespace": "user:anne"}).json()

    assert body["latest_run"] == story[1].number
    assert body["latest_successful_run"] == story[0].number


def test_namespaces_lists_users_and_tags(anne, story):
    body = anne.get("/api/v1/namespaces").json()

    assert body["current_user"] == "user:anne"
    assert {"user:anne", "user:will"} <= {item["name"] for item in body["users"]}
    tags = {item["name"]: item["runs"] for item in body["tags"]}
    assert tags["xyz_features"] == 2
    assert tags["crazy_test"] == 2


# ---------------------------------------------------------------- tag mutations


def test_tag_mutation_returns_run(anne, story):
    response = anne.post(f"/api/v1/runs/{story[0].pathspec}/tags",
                         {"add": ["new", "模型-é-🚀"], "remove": []}, format="json")

    assert response.status_code == 200
    assert set(response.json()["user_tags"]) == {"new", "模型-é-🚀"}


def test_tag_remove_system_422(anne, story):
    response = anne.post(f"/api/v1/runs/{story[0].pathspec}/tags",
                         {"add": ["kept_out"], "remove": ["user:anne"]}, format="json")

    assert response.status_code == 422
    assert response.json()["code"] == "system_tag"
    assert not story[0].tag_rows.filter(name="kept_out").exists()


@pytest.mark.parametrize("body, code", [
    ({"add": ["nul\x00"]}, "invalid_tag"),
    ({"add": ["a" * 501]}, "invalid_tag"),
    ({"add": [""]}, "invalid_tag"),
    ({"add": [5]}, "invalid_tag"),
    ({"add": [None]}, "invalid_tag"),
    ({"add": "not-a-list"}, "invalid"),
    ({"add": [["nested"]]}, "invalid_tag"),
])
def test_tag_bad_input_400(anne, story, body, code):
    response = anne.post(f"/api/v1/runs/{story[0].pathspec}/tags", body, format="json")

    assert response.status_code == 400, response.content
    assert response.json()["code"] == code
    assert response.json()["error"]


def test_tag_mutation_namespace_checked(anne, story):
    response = anne.post(f"/api/v1/runs/{story[2].pathspec}/tags?namespace=user:anne",
                         {"add": ["x"]}, format="json")

    assert response.status_code == 404
    assert response.json()["code"] == "namespace_mismatch"


def test_tag_events_served(anne, story):
    path = f"/api/v1/runs/{story[0].pathspec}"
    anne.post(f"{path}/tags", {"add": ["one"]}, format="json")
    anne.post(f"{path}/tags", {"add": ["two"], "remove": ["one"]}, format="json")

    events = anne.get(f"{path}/tag-events").json()["results"]
    assert [(e["added"], e["removed"]) for e in events] == [(["two"], ["one"]), (["one"], [])]
    assert events[0]["user"] == "anne"


# ---------------------------------------------------------------- tokens


def test_token_shown_once(anne):
    created = anne.post("/api/v1/tokens", {"name": "notebook"}, format="json")

    assert created.status_code == 201
    raw = created.json()["token"]
    listed = anne.get("/api/v1/tokens").json()["results"]
    assert any(item["name"] == "notebook" for item in listed)
    assert all("token" not in item for item in listed)
    assert raw not in str(listed)


def test_token_last_used_recorded(anne):
    created = anne.post("/api/v1/tokens", {"name": "script"}, format="json").json()
    assert created["last_used_at"] is None

    api_as(created["token"]).get("/api/v1/whoami")
    listed = {item["id"]: item for item in anne.get("/api/v1/tokens").json()["results"]}
    assert listed[created["id"]]["last_used_at"] is not None


def test_token_revoked_rejected(anne):
    created = anne.post("/api/v1/tokens", {"name": "temp"}, format="json").json()

    assert anne.delete(f"/api/v1/tokens/{created['id']}").status_code == 204
    assert api_as(created["token"]).get("/api/v1/whoami").status_code == 401
    again = anne.delete(f"/api/v1/tokens/{created['id']}")
    assert again.status_code == 404


def test_token_of_other_user_not_revoked(anne, will):
    created = anne.post("/api/v1/tokens", {"name": "mine"}, format="json").json()

    assert will.delete(f"/api/v1/tokens/{created['id']}").status_code == 404
    assert api_as(created["token"]).get("/api/v1/whoami").status_code == 200


def test_token_name_required(anne):
    response = anne.post("/api/v1/tokens", {}, format="json")

    assert response.status_code == 400
    assert "name" in response.json()["fields"]


# ---------------------------------------------------------------- schema and docs


def test_openapi_schema(anne):
    response = anne.get("/api/v1/schema", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    for path in ("/api/v1/runs", "/api/v1/runs/{flow}/{run_id}/tags",
                 "/api/v1/runs/{flow}/{run_id}/tag-events", "/api/v1/namespaces",
                 "/api/v1/tokens"):
        assert path in schema["paths"], path


def test_docs_page_offline(users):
    from django.contrib.staticfiles import finders

    client = APIClient()
    client.force_login(users["anne"])
    response = client.get("/api/v1/docs")

    assert response.status_code == 200
    html = response.content.decode()
    assert not re.search(r"""(src|href)=["']https?://""", html), html
    assets = re.findall(r"""(?:src|href)=["']/static/([^"']+)["']""", html)
    assert any(asset.endswith("swagger-ui-bundle.js") for asset in assets)
    for asset in assets:
        assert finders.find(asset), f"{asset} is not a local static file"


# ---------------------------------------------------------------- never a 500


ODD_VALUES = ["\x00", "a\x00b", "%00", "'; drop table runs_run; --", "x" * 5000,
              "模型-é-🚀", "-1", "0", "9" * 40, " ", "user:", "../../etc/passwd"]


@pytest.mark.parametrize("value", ODD_VALUES)
def test_odd_values_never_500(anne, story, value):
    for params in ({"tag": value}, {"namespace": value}, {"flow": value}, {"user": value},
                   {"status": value}, {"cursor": value}, {"page_size": value},
                   {"created_after": value}, {"tag_mode": value}):
        response = anne.get("/api/v1/runs", params)
        assert response.status_code < 500, (params, response.content)
    for path in (f"/api/v1/runs/PredictionFlow/{value}", f"/api/v1/flows/{value}",
                 f"/api/v1/runs/{value}/1/steps", f"/api/v1/runs/{value}/1/tag-events"):
        response = anne.get(path.replace("\x00", "%00"))
        assert response.status_code < 500, (path, response.content)
    response = anne.post(f"/api/v1/runs/{story[0].pathspec}/tags",
                         {"add": [value], "remove": [value]}, format="json")
    assert response.status_code < 500, response.content


def test_invalid_utf8_query_never_500(anne, story):
    for query in ("tag=%ED%A0%80", "namespace=%FF%FE", "flow=%C0%AF", "cursor=%ED%A0%80"):
        response = anne.get(f"/api/v1/runs?{query}")
        assert response.status_code < 500, (query, response.content)


def test_surrogate_tag_400(anne, story):
    response = anne.post(f"/api/v1/runs/{story[0].pathspec}/tags",
                         data='{"add": ["lone\\ud800"]}', content_type="application/json")

    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_tag"


def test_token_list_paginated(anne):
    for index in range(3):
        anne.post("/api/v1/tokens", {"name": f"t{index}"}, format="json")

    first = anne.get("/api/v1/tokens", {"page_size": 2}).json()
    second = anne.get("/api/v1/tokens", {"page_size": 2, "cursor": first["next_cursor"]}).json()
    assert len(first["results"]) == 2
    assert first["next_cursor"]
    ids = [item["id"] for item in first["results"] + second["results"]]
    assert len(ids) == len(set(ids)) == 4


# ---------------------------------------------------------------- a real run, end to end

ARTIFACT_FLOW = """
    from flowsite import FlowSpec, step


    class ArtifactFlow(FlowSpec):
        @step
        def start(self):
            self.answer = 42
            print("computed the answer")
            self.next(self.end)

        @step
        def end(self):
            pass


    if __name__ == "__main__":
        ArtifactFlow()
"""


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_run_objects_endpoints(cli, flows_dir, live_server, tokens):
    import hashlib
    import pickle

    import requests

    from tests.conftest import write_flow

    flow = write_flow(flows_dir, "artifact_flow.py", ARTIFACT_FLOW)
    cli.run(flow, "run", user="anne", check=True)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {tokens['anne']}"

    def get(path, namespace="user:anne", **params):
        params["namespace"] = namespace
        return session.get(f"{live_server.url}/api/v1/{path}", params=params, timeout=30)

    steps = get("runs/ArtifactFlow/1/steps").json()["results"]
    assert [step["name"] for step in steps] == ["start", "end"]
    assert get("runs/ArtifactFlow/1/steps/start").json()["task_count"] == 1
    task = get("runs/ArtifactFlow/1/steps/start/tasks").json()["results"][0]
    task_path = f"tasks/ArtifactFlow/1/start/{task['id']}"
    assert get(task_path).json()["status"] == "completed"
    logs = get(f"{task_path}/logs", stream="stdout").json()
    assert "computed the answer" in "".join(chunk["text"] for chunk in logs["chunks"])
    names = [item["name"] for item in get(f"{task_path}/artifacts").json()["results"]]
    assert "answer" in names
    meta = get(f"{task_path}/artifacts/answer").json()
    raw = get(f"{task_path}/artifacts/answer/bytes")
    assert raw.headers["X-Content-SHA256"] == meta["sha256"]
    assert hashlib.sha256(raw.content).hexdigest() == meta["sha256"]
    assert pickle.loads(raw.content) == 42
    run_logs = get("runs/ArtifactFlow/1/logs").json()
    assert any("computed the answer" in chunk["text"] for chunk in run_logs["chunks"])

    for path in ("runs/ArtifactFlow/1", "runs/ArtifactFlow/1/steps",
                 "runs/ArtifactFlow/1/steps/start/tasks", task_path, f"{task_path}/logs",
                 f"{task_path}/artifacts", f"{task_path}/artifacts/answer/bytes"):
        response = get(path, namespace="user:will")
        assert response.status_code == 404, path
        assert response.json()["code"] == "namespace_mismatch", path


# ---------------------------------------------------------------- generated requests

# Only reads, because generated writes would submit runs and revoke the test's tokens.
schema = schemathesis.openapi.from_wsgi("/api/v1/schema", application).include(method="GET")


@pytest.fixture
def auth_header(tokens, users):
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    from tests.run_factory import make_run

    # As Django's test client does: the WSGI handler would otherwise close the
    # connection that holds the test's transaction around each request.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)

    make_run(users["anne"], "HelloFlow", tags=["crazy_test"], status="completed")
    yield {"Authorization": f"Bearer {tokens['anne']}"}
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@schema.parametrize()
@hypothesis_settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.filter_too_much],
)
def test_generated_reads_never_500(case, auth_header, settings):
    # An unhandled exception then fails the test with its traceback.
    settings.DEBUG_PROPAGATE_EXCEPTIONS = True
    response = case.call(headers=auth_header)

    assert response.status_code < 500, (case.path, case.query, response.text[:500])
