"""Dashboard pages through the Django test client: full pages, HTMX partials, CSRF."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tests.conftest import PASSWORD
from tests.run_factory import make_run

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}
XSS = '"><img src=x onerror=alert(1)><script>alert(2)</script>'


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    """Hash the personas' passwords with MD5: the default hasher costs seconds per test."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def anne(users):
    client = Client()
    client.force_login(users["anne"])
    return client


@pytest.fixture
def runs(users):
    """Anne has three runs, Will one; tags make the filter cases distinct."""
    return {
        "a1": make_run(users["anne"], "PredictionFlow", tags=["exp", "gpu"]),
        "a2": make_run(users["anne"], "PredictionFlow", tags=["exp"], status="completed"),
        "a3": make_run(users["anne"], "FeatureFlow", tags=["gpu"], status="failed"),
        "w1": make_run(users["will"], "PredictionFlow", tags=["exp", "gpu"]),
    }


def run_numbers(response) -> set[str]:
    return set(re.findall(r'class="run-link" href="/runs/\w+/(\d+)', response.content.decode()))


def pathspecs(response) -> set[str]:
    html = response.content.decode()
    return {f"{flow}/{number}" for flow, number in
            re.findall(r'class="run-link" href="/runs/(\w+)/(\d+)', html)}


# ---------------------------------------------------------------- login and layout


@pytest.mark.parametrize("name", ["runs:list", "runs:go", "runs:tag-suggest"])
def test_pages_need_login(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_run_page_needs_login(client, runs):
    run = runs["a1"]
    response = client.get(reverse("runs:run", args=[run.flow.name, run.number]))
    assert response.status_code == 302


def test_login_form_logs_in(client, users):
    response = client.post(reverse("login"), {"username": "anne", "password": PASSWORD})
    assert response.status_code == 302
    assert client.get(reverse("runs:list")).status_code == 200


def test_page_loads_htmx_without_inline_script(anne, runs):
    response = anne.get(reverse("runs:list"))
    html = response.content.decode()
    assert "htmx-2.0.11.min.js" in html
    assert '"includeIndicatorStyles": false' in html
    assert "X-CSRFToken" in html
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert " onclick=" not in html
    assert "script-src 'self'" in response["Content-Security-Policy"]


def test_admin_link_only_for_staff(anne, users):
    admin = Client()
    admin.force_login(users["admin"])
    assert 'href="/admin/"' in admin.get(reverse("runs:list")).content.decode()
    assert 'href="/admin/"' not in anne.get(reverse("runs:list")).content.decode()


# ---------------------------------------------------------------- runs page


def test_runs_default_own_namespace(anne, runs):
    response = anne.get(reverse("runs:list"))
    assert response.status_code == 200
    assert pathspecs(response) == {runs[k].pathspec for k in ("a1", "a2", "a3")}


def test_runs_other_user_namespace(anne, runs):
    response = anne.get(reverse("runs:list"), {"ns": "user:will"})
    assert pathspecs(response) == {runs["w1"].pathspec}


def test_runs_global_namespace(anne, runs):
    response = anne.get(reverse("runs:list"), {"ns": "global"})
    assert pathspecs(response) == {run.pathspec for run in runs.values()}


def test_runs_two_tags_all(anne, runs):
    response = anne.get(reverse("runs:list"), {"ns": "global", "tag": ["exp", "gpu"]})
    assert pathspecs(response) == {runs["a1"].pathspec, runs["w1"].pathspec}


def test_runs_two_tags_any(anne, runs):
    response = anne.get(reverse("runs:list"), {"tag": ["exp", "gpu"], "tag_mode": "any"})
    assert pathspecs(response) == {runs[k].pathspec for k in ("a1", "a2", "a3")}


def test_runs_filter_by_system_tag(anne, runs):
    response = anne.get(reverse("runs:list"), {"ns": "global", "tag": "user:will"})
    assert pathspecs(response) == {runs["w1"].pathspec}


def test_runs_filter_flow_status_user(anne, runs):
    by_flow = anne.get(reverse("runs:list"), {"ns": "global", "flow": "FeatureFlow"})
    by_status = anne.get(reverse("runs:list"), {"ns": "global", "status": "completed"})
    by_user = anne.get(reverse("runs:list"), {"ns": "global", "user": "will"})
    assert pathspecs(by_flow) == {runs["a3"].pathspec}
    assert pathspecs(by_status) == {runs["a2"].pathspec}
    assert pathspecs(by_user) == {runs["w1"].pathspec}


def test_runs_filter_time_range(anne, runs):
    future = (timezone.now() + timezone.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    past = (timezone.now() - timezone.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    assert pathspecs(anne.get(reverse("runs:list"), {"after": future})) == set()
    assert len(pathspecs(anne.get(reverse("runs:list"), {"after": past, "before": future}))) == 3


@pytest.mark.parametrize("params", [
    {"status": "exploded"}, {"tag_mode": "some"}, {"after": "yesterday"},
    {"cursor": "abc"}, {"top": "x", "part": "live"},
])
def test_runs_bad_filter_is_400(anne, runs, params):
    response = anne.get(reverse("runs:list"), params)
    assert response.status_code == 400
    assert b"Cannot show this page" in response.content


def test_runs_htmx_partial_has_no_layout(anne, runs):
    full = anne.get(reverse("runs:list"))
    partial = anne.get(reverse("runs:list"), {"tag": "exp"}, **HX)
    assert b"<html" in full.content
    assert b"<html" not in partial.content
    assert partial.content.decode().lstrip().startswith('<div id="runs-page">')
    assert pathspecs(partial) == {runs["a1"].pathspec, runs["a2"].pathspec}
    assert "HX-Request" in partial["Vary"]
    assert partial["HX-Push-Url"] == "/?ns=user%3Aanne&tag=exp"


def test_runs_history_restore_gets_full_page(anne, runs):
    response = anne.get(reverse("runs:list"), HTTP_HX_HISTORY_RESTORE_REQUEST="true", **HX)
    assert b"<html" in response.content


def test_runs_keyset_load_more(anne, users):
    created = [make_run(users["anne"], "ManyFlow") for _ in range(55)]
    first = anne.get(reverse("runs:list"))
    cursor = re.search(r'cursor=(\d+)"', first.content.decode()).group(1)
    more = anne.get(reverse("runs:list"), {"part": "more", "cursor": cursor,
                                            "top": created[-1].id}, **HX)
    first_numbers = run_numbers(first)
    more_numbers = run_numbers(more)
    assert len(first_numbers) == 50
    assert len(more_numbers) == 5
    assert first_numbers.isdisjoint(more_numbers)
    assert 'id="live-poller" hx-get=' in more.content.decode()
    assert "hx-swap-oob" in more.content.decode()


def test_runs_live_refresh_and_new_banner(anne, runs, users):
    top = runs["a3"].id
    bottom = runs["a1"].id
    newer = make_run(users["anne"], "PredictionFlow", tags=["exp"])
    from runs import services

    services.tags_mutate(run=runs["a3"], user=users["anne"], add=["exp"])
    response = anne.get(reverse("runs:list"), {"tag": "exp", "part": "live", "top": top,
                                               "bottom": bottom}, **HX)
    html = response.content.decode()
    assert html.lstrip().startswith('<tbody id="run-rows">')
    assert pathspecs(response) == {runs[k].pathspec for k in ("a1", "a2", "a3")}
    assert newer.pathspec not in pathspecs(response)
    assert "1 new run started since this page loaded" in html


def test_runs_empty_state_commands(users):
    client = Client()
    client.force_login(users["will"])
    html = client.get(reverse("runs:list")).content.decode()
    assert ".venv/bin/python -m flowsite login --url http://testserver --username will" in html
    assert ".venv/bin/python examples/current_flow.py run" in html


def test_runs_no_match_is_not_empty_state(anne, runs):
    html = anne.get(reverse("runs:list"), {"tag": "nothing-has-this"}).content.decode()
    assert "No runs match these filters" in html
    assert "flowsite login" not in html


def test_tag_suggest_from_counts(anne, runs):
    response = anne.get(reverse("runs:tag-suggest"), {"tag": "g"}, **HX)
    html = response.content.decode()
    assert '<option value="gpu">3 runs</option>' in html
    assert "exp" not in html


def test_tag_suggest_query_count(anne, runs, django_assert_max_num_queries):
    with django_assert_max_num_queries(4):
        anne.get(reverse("runs:tag-suggest"), {"tag": "e"}, **HX)


def test_runs_page_query_count_fixed(anne, users):
    for index in range(3):
        make_run(users["anne"], "CountFlow", tags=[f"t{index}"])
    anne.get(reverse("runs:list"))  # the first request loads the session
    few = count_queries(anne, reverse("runs:list"))
    for index in range(20):
        make_run(users["anne"], "CountFlow", tags=[f"u{index}", "more"])
    assert count_queries(anne, reverse("runs:list")) == few


# ---------------------------------------------------------------- bulk tagging


def test_bulk_add_tag_three_runs(anne, runs):
    from runs.models import RunTag

    ids = [runs[k].id for k in ("a1", "a2", "a3")]
    response = anne.post(reverse("runs:bulk-tag"), {"run": ids, "tag": "reviewed",
                                                    "action": "add"}, **HX)
    assert response.status_code == 200
    assert "Added tag “reviewed” to 3 runs." in response.content.decode()
    assert response["HX-Trigger"] == "runs-changed"
    assert set(RunTag.objects.filter(name="reviewed").values_list("run_id", flat=True)) == set(ids)


def test_bulk_remove_tag_without_htmx(anne, runs):
    from runs.models import RunTag

    ids = [runs["a1"].id, runs["w1"].id]
    response = anne.post(reverse("runs:bulk-tag"), {"run": ids, "tag": "gpu",
                                                    "action": "remove", "next": "/?tag=gpu"})
    assert response.status_code == 302
    assert response["Location"] == "/?tag=gpu"
    assert not RunTag.objects.filter(name="gpu", run_id__in=ids).exists()


def test_bulk_system_tag_changes_nothing(anne, runs):
    from runs.models import RunTag

    ids = [runs["a1"].id, runs["a2"].id]
    response = anne.post(reverse("runs:bulk-tag"), {"run": ids, "tag": "user:anne",
                                                    "action": "remove"}, **HX)
    assert "system tag" in response.content.decode()
    assert RunTag.objects.filter(name="user:anne", run_id__in=ids).count() == 2


def test_bulk_without_selection_explains(anne, runs):
    response = anne.post(reverse("runs:bulk-tag"), {"tag": "x", "action": "add"}, **HX)
    assert "Select at least one run" in response.content.decode()


def test_bulk_rejects_offsite_next(anne, runs):
    response = anne.post(reverse("runs:bulk-tag"), {"run": [runs["a1"].id], "tag": "x",
                                                    "action": "add",
                                                    "next": "https://example.com/"})
    assert response["Location"] == reverse("runs:list")


# ---------------------------------------------------------------- CSRF


@pytest.mark.parametrize("name,args,data", [
    ("runs:bulk-tag", [], {"tag": "x", "action": "add"}),
    ("runs:run-tags", None, {"add": "x"}),
    ("tokens:list", [], {"name": "laptop"}),
])
def test_post_without_csrf_fails(users, runs, name, args, data):
    client = Client(enforce_csrf_checks=True)
    client.force_login(users["anne"])
    if args is None:
        args = [runs["a1"].flow.name, runs["a1"].number]
    data = {**data, "run": [runs["a1"].id]}
    response = client.post(reverse(name, args=args), data, **HX)
    assert response.status_code == 403


def test_post_with_csrf_header_passes(users, runs):
    client = Client(enforce_csrf_checks=True)
    client.force_login(users["anne"])
    page = client.get(reverse("runs:list")).content.decode()
    token = re.search(r'"X-CSRFToken": "([^"]+)"', page).group(1)
    run = runs["a1"]
    response = client.post(reverse("runs:run-tags", args=[run.flow.name, run.number]),
                           {"add": "via-htmx"}, HTTP_X_CSRFTOKEN=token, **HX)
    assert response.status_code == 200
    assert "via-htmx" in response.content.decode()


# ---------------------------------------------------------------- run page


def test_run_page_full_and_partials(anne, runs):
    run = runs["a1"]
    url = reverse("runs:run", args=[run.flow.name, run.number])
    full = anne.get(url).content.decode()
    live = anne.get(url, {"part": "live"}, **HX).content.decode()
    tags = anne.get(url, {"part": "tags"}, **HX).content.decode()
    assert "<html" in full
    assert 'class="dag"' in full
    assert 'id="tags"' in full
    assert live.lstrip().startswith('<div id="run-live"')
    assert 'hx-trigger="every 2s"' in live
    assert tags.lstrip().startswith('<section id="tags"')


def test_run_page_finished_stops_polling(anne, runs):
    run = runs["a2"]
    html = anne.get(reverse("runs:run", args=[run.flow.name, run.number])).content.decode()
    assert 'hx-trigger="every 2s"' not in html


def test_run_page_namespace_mismatch_offers_switch(anne, runs):
    run = runs["w1"]
    response = anne.get(reverse("runs:run", args=[run.flow.name, run.number]))
    html = response.content.decode()
    assert response.status_code == 404
    assert "not in the current namespace" in html
    assert "?ns=user%3Awill" in html


def test_run_page_dag_nodes_and_step_tasks(anne, users):
    from runs.models import Task

    run = make_run(users["anne"], "DagFlow")
    step = run.steps.get(name="start")
    Task.objects.create(run=run, step=step, step_name="start", key="start",
                        status="completed", started_at=timezone.now(),
                        finished_at=timezone.now())
    url = reverse("runs:run", args=[run.flow.name, run.number])
    html = anne.get(url).content.decode()
    tasks = anne.get(url, {"part": "step-tasks", "step": "start"}, **HX).content.decode()
    assert html.count('class="node node-') == 2
    assert 'data-step="start"' in html
    assert 'data-step="end"' in html
    assert tasks.lstrip().startswith('<section id="step-tasks">')
    assert f"/runs/DagFlow/{run.number}/start/" in tasks


def test_run_page_unknown_step(anne, runs):
    run = runs["a1"]
    html = anne.get(reverse("runs:run", args=[run.flow.name, run.number]),
                    {"step": "nope"}).content.decode()
    assert "The flow has no step named &#x27;nope&#x27;." in html


def test_run_page_missing_run_404(anne, runs):
    response = anne.get(reverse("runs:run", args=["PredictionFlow", 999]))
    assert response.status_code == 404
    assert b"does not exist" in response.content


def test_inline_tag_add_and_remove(anne, runs):
    from runs.models import RunTag, TagEvent

    run = runs["a1"]
    url = reverse("runs:run-tags", args=[run.flow.name, run.number])
    added = anne.post(url, {"add": "keep"}, **HX).content.decode()
    removed = anne.post(url, {"remove": "keep"}, **HX).content.decode()
    assert 'class="tag-name">keep<' in added
    assert 'class="tag-name">keep<' not in removed
    assert not RunTag.objects.filter(run=run, name="keep").exists()
    assert TagEvent.objects.filter(run=run, user__username="anne").count() == 2
    assert "Tag history" in removed


def test_inline_tag_system_rejected(anne, runs):
    run = runs["a1"]
    url = reverse("runs:run-tags", args=[run.flow.name, run.number])
    html = anne.post(url, {"remove": "user:anne"}, **HX).content.decode()
    assert "is a system tag and cannot be removed" in html


def test_inline_tag_without_htmx_redirects(anne, runs):
    run = runs["a1"]
    url = reverse("runs:run-tags", args=[run.flow.name, run.number])
    response = anne.post(url, {"add": "plain"})
    assert response.status_code == 302
    assert response["Location"].endswith("#tags")


# ---------------------------------------------------------------- go to and flow page


def test_go_to_run_and_flow(anne, runs):
    run = runs["a1"]
    to_run = anne.get(reverse("runs:go"), {"path": run.pathspec})
    to_flow = anne.get(reverse("runs:go"), {"path": "PredictionFlow"})
    assert to_run["Location"].startswith(f"/runs/{run.flow.name}/{run.number}?")
    assert to_flow["Location"].startswith("/flows/PredictionFlow?")


def test_go_to_other_namespace_offers_switch(anne, runs):
    run = runs["w1"]
    response = anne.get(reverse("runs:go"), {"path": run.pathspec})
    html = response.content.decode()
    assert response.status_code == 404
    assert "It is in &#x27;user:will&#x27;" in html
    assert f"/go?ns=user%3Awill&amp;path={run.flow.name}/{run.number}" in html


def test_go_to_bad_pathspec(anne, runs):
    response = anne.get(reverse("runs:go"), {"path": "A/1/b/c/d"})
    assert response.status_code == 400


def test_flow_page_latest_runs(anne, runs):
    html = anne.get(reverse("runs:flow", args=["PredictionFlow"])).content.decode()
    assert f"PredictionFlow/{runs['a2'].number}" in html
    assert 'id="deployments"' in html
    assert runs["w1"].pathspec not in html


def test_flow_page_unknown_flow(anne, runs):
    assert anne.get(reverse("runs:flow", args=["NoSuchFlow"])).status_code == 404


# ---------------------------------------------------------------- escaping


def test_user_strings_are_escaped(anne, users):
    from runs.models import Run

    run = make_run(users["anne"], "EscapeFlow", tags=[XSS])
    Run.objects.filter(pk=run.pk).update(parameters={"p": XSS})
    list_html = anne.get(reverse("runs:list")).content.decode()
    run_html = anne.get(reverse("runs:run", args=["EscapeFlow", run.number])).content.decode()
    for html in (list_html, run_html):
        assert "<img src=x" not in html
        assert "<script>alert" not in html
        assert "&lt;img src=x onerror=alert(1)&gt;" in html


# ---------------------------------------------------------------- tokens page


def test_token_created_once_and_revoked(anne, users):
    from tokens.models import ApiToken

    posted = anne.post(reverse("tokens:list"), {"name": "laptop"})
    created = anne.get(posted["Location"]).content.decode()
    reloaded = anne.get(reverse("tokens:list")).content.decode()
    token = ApiToken.objects.get(user=users["anne"], name="laptop")
    assert posted.status_code == 302
    assert re.search(r'id="new-token">fst_', created)
    assert "fst_" in reloaded
    assert 'id="new-token"' not in reloaded
    anne.post(reverse("tokens:revoke", args=[token.id]))
    token.refresh_from_db()
    assert token.revoked_at is not None


# ---------------------------------------------------------------- task page


@pytest.fixture
def task_with_output(users):
    """A finished start task with 130 log chunks on stdout, one on stderr, one artifact."""
    from django.core.files.base import ContentFile

    from runs.models import Artifact, ArtifactBlob, LogChunk, Task
    from runs.packages import storage

    run = make_run(users["anne"], "LogFlow")
    step = run.steps.get(name="start")
    task = Task.objects.create(
        run=run, step=step, step_name="start", key="start", status="completed",
        worker_host="host-1", started_at=timezone.now(), finished_at=timezone.now(),
        current={"flow_name": "LogFlow", "run_id": str(run.number), "step_name": "start",
                 "pathspec": f"LogFlow/{run.number}/start/0", "username": "anne"},
    )
    LogChunk.objects.bulk_create(
        [LogChunk(task=task, run=run, stream="stdout", seq=seq,
                  text=f"line {seq}\n{XSS if seq == 7 else 'plain'}\n", line_count=2)
         for seq in range(130)]
        + [LogChunk(task=task, run=run, stream="stderr", seq=0, text="warn\n", line_count=1)]
    )
    data = b"\x80\x04K*."  # pickle of 42; the server must send it untouched
    key = storage().save("artifacts/test/answer", ContentFile(data))
    blob = ArtifactBlob.objects.create(sha256="a" * 64, size=len(data), storage_key=key)
    Artifact.objects.create(task=task, name="answer", blob=blob, type_name="int",
                            preview=XSS)
    return task


def task_url(task, log_stream=None):
    """The task page, or the text download of one log stream."""
    args = [task.run.flow.name, task.run.number, task.step_name, task.id]
    if log_stream:
        return reverse("runs:task-log", args=[*args, log_stream])
    return reverse("runs:task", args=args)


def test_task_page_shows_newest_log_page(anne, task_with_output):
    html = anne.get(task_url(task_with_output)).content.decode()
    assert "line 129" in html
    assert "line 29\n" not in html
    assert "line 30\n" in html
    assert "Earlier lines" in html
    assert "host-1" in html
    assert "&#x27;LogFlow&#x27;" in html


def test_task_page_earlier_log_page(anne, task_with_output):
    html = anne.get(task_url(task_with_output), {"stream": "stdout", "before": 30}
                    ).content.decode()
    assert "line 0\n" in html
    assert "line 29\n" in html
    assert "line 30\n" not in html
    assert "Later lines" in html


def test_task_log_tail_partial(anne, task_with_output):
    response = anne.get(task_url(task_with_output),
                        {"part": "log", "stream": "stdout", "after": 127}, **HX)
    html = response.content.decode()
    assert "<html" not in html
    assert "line 128" in html
    assert "line 129" in html
    assert "line 127" not in html
    assert "hx-trigger" not in html


def test_task_log_search(anne, task_with_output):
    full = anne.get(task_url(task_with_output), {"q": "line 12"}).content.decode()
    partial = anne.get(task_url(task_with_output), {"q": "LINE 12", "part": "search"},
                       **HX).content.decode()
    assert "Lines of stdout containing “line 12”: 11." in full
    assert partial.lstrip().startswith('<div id="log-search-result">')
    assert partial.count("line 12") == 11


def test_task_log_download(anne, task_with_output):
    response = anne.get(task_url(task_with_output, "stdout"))
    body = b"".join(response.streaming_content).decode()
    assert response["Content-Type"].startswith("text/plain")
    assert "attachment" in response["Content-Disposition"]
    assert body.count("\n") == 260
    assert body.startswith("line 0\nplain\n")


def test_artifact_download_sends_bytes(anne, task_with_output):
    task = task_with_output
    url = reverse("runs:artifact", args=[task.run.flow.name, task.run.number, "start",
                                         task.id, "answer"])
    response = anne.get(url)
    assert response["Content-Type"] == "application/octet-stream"
    assert b"".join(response.streaming_content) == b"\x80\x04K*."


def test_artifact_missing_404(anne, task_with_output):
    task = task_with_output
    url = reverse("runs:artifact", args=[task.run.flow.name, task.run.number, "start",
                                         task.id, "nope"])
    assert anne.get(url).status_code == 404


def test_task_page_escapes_log_and_preview(anne, task_with_output):
    html = anne.get(task_url(task_with_output), {"before": 10, "stream": "stdout"}
                    ).content.decode()
    assert "<img src=x" not in html
    assert "<script>alert" not in html
    assert html.count("&lt;img src=x onerror=alert(1)&gt;") == 2


def test_task_page_bad_attempt_400(anne, task_with_output):
    assert anne.get(task_url(task_with_output), {"attempt": 5}).status_code == 400


def test_token_without_name_400(anne):
    response = anne.post(reverse("tokens:list"), {"name": "  "})
    assert response.status_code == 400
    assert "Give the token a name" in response.content.decode()


def count_queries(client, url, params=None) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        assert client.get(url, params or {}).status_code == 200
    return len(captured.captured_queries)


def add_tasks(run, step_name: str, count: int) -> None:
    from runs.models import Task

    step = run.steps.get(name=step_name)
    now = timezone.now()
    Task.objects.bulk_create([
        Task(run=run, step=step, step_name=step_name, key=f"{step_name}/{index}",
             status="completed", foreach_index=index, started_at=now, finished_at=now)
        for index in range(count)
    ])


def test_run_page_query_count_fixed(anne, users):
    from runs import services

    small = make_run(users["anne"], "WideFlow")
    large = make_run(users["anne"], "WideFlow")
    add_tasks(small, "start", 2)
    add_tasks(large, "start", 40)
    for tag in ("a", "b", "c"):
        services.tags_mutate(run=large, user=users["anne"], add=[tag])
    params = {"step": "start"}
    anne.get(reverse("runs:run", args=["WideFlow", small.number]))
    few = count_queries(anne, reverse("runs:run", args=["WideFlow", small.number]), params)
    many = count_queries(anne, reverse("runs:run", args=["WideFlow", large.number]), params)
    assert many == few


def test_flow_page_query_count_fixed(anne, users):
    make_run(users["anne"], "CountedFlow", tags=["x"])
    url = reverse("runs:flow", args=["CountedFlow"])
    anne.get(url)
    few = count_queries(anne, url)
    for index in range(10):
        make_run(users["anne"], "CountedFlow", tags=[f"t{index}"])
    assert count_queries(anne, url) == few


def test_run_page_failed_run_renders(anne, runs):
    run = runs["a3"]
    response = anne.get(reverse("runs:run", args=[run.flow.name, run.number]))
    assert response.status_code == 200
    assert "status-failed" in response.content.decode()


def test_flow_page_load_more_partial(anne, users):
    created = [make_run(users["anne"], "LongFlow") for _ in range(52)]
    url = reverse("runs:flow", args=["LongFlow"])
    first = anne.get(url).content.decode()
    cursor = re.search(r'cursor=(\d+)"', first).group(1)
    more = anne.get(url, {"cursor": cursor}, **HX).content.decode()
    assert more.lstrip().startswith('<tbody id="flow-runs">')
    assert f"LongFlow/{created[0].number}<" in more
    assert f"LongFlow/{created[-1].number}<" not in more


def test_namespace_switcher_lists_users_and_production(anne, runs, users):
    make_run(users["admin"], "ProdFlow", identity_namespace="production:prodflow-1")
    html = anne.get(reverse("runs:list")).content.decode()
    panel = html[html.index('class="ns-panel"'):html.index('class="ns-form"')]
    assert "?ns=user%3Awill" in panel
    assert "?ns=production%3Aprodflow-1" in panel
    assert "?ns=global" in panel
    assert "?ns=user%3Aanne" in panel


def test_go_to_step_opens_its_tasks(anne, runs):
    run = runs["a1"]
    response = anne.get(reverse("runs:go"), {"path": f"{run.pathspec}/start"})
    assert response["Location"].endswith("&step=start#step-tasks")


def test_htmx_poll_after_logout_redirects_page(client, runs):
    response = client.get(reverse("runs:list"), {"part": "live", "top": 1, "bottom": 0},
                          HTTP_HX_CURRENT_URL="http://testserver/?tag=exp", **HX)
    assert response.status_code == 200
    assert response["HX-Redirect"] == "/login/?next=/%3Ftag%3Dexp"
