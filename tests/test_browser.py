"""The dashboard in Chromium, driven by Playwright, against a live server and a real worker.

Each test logs in as a persona and uses the pages as a person would: no reloads where
the page should update by itself, and the back button where filters should come back.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import CHROMIUM, PASSWORD, ROOT, write_flow
from tests.run_factory import make_run

ARTIFACTS = ROOT / "test-artifacts"
XSS_TAG = '<script>window.__xss=1</script>'
XSS_ATTR = '"><img src=x onerror="window.__xss=2">'

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"Chromium not found at {CHROMIUM}; apt-get install chromium"),
]


SLOW_FLOW = '''
import time
from flowsite import FlowSpec, Parameter, step


class SlowFlow(FlowSpec):
    note = Parameter("note", default="plain")

    @step
    def start(self):
        self.preview_me = {note!r}
        print({note!r})
        for index in range(6):
            print("tick %d" % index, flush=True)
            time.sleep(0.7)
        self.next(self.end)

    @step
    def end(self):
        print("done")


if __name__ == "__main__":
    SlowFlow()
'''


FANOUT_FLOW = '''
import time
from flowsite import FlowSpec, Parameter, step


class FanoutFlow(FlowSpec):
    size = Parameter("size", default=3)

    @step
    def start(self):
        self.items = list(range(int(self.size)))
        self.next(self.train, foreach="items")

    @step
    def train(self):
        time.sleep(1.5)
        self.score = self.input * 10
        self.next(self.join)

    @step
    def join(self, inputs):
        self.best = max(task.score for task in inputs)
        self.next(self.end)

    @step
    def end(self):
        print("best", self.best)


if __name__ == "__main__":
    FanoutFlow()
'''


def shown_runs(page) -> set[str]:
    links = page.locator("#run-rows a.run-link")
    return {
        f"{href.split('/')[2]}/{href.split('/')[3].split('?')[0]}"
        for href in links.evaluate_all("links => links.map(a => a.getAttribute('href'))")
    }


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def mark_page(page) -> None:
    """Set a flag that a reload would clear, to prove an update came without one."""
    page.evaluate("window.__noReload = true")


def not_reloaded(page) -> bool:
    return page.evaluate("window.__noReload === true")


@pytest.fixture
def team_runs(users):
    return {
        "a1": make_run(users["anne"], "PredictionFlow", tags=["exp", "gpu"], status="completed"),
        "a2": make_run(users["anne"], "PredictionFlow", tags=["exp"], status="completed"),
        "a3": make_run(users["anne"], "FeatureFlow", tags=["gpu"], status="failed"),
        "w1": make_run(users["will"], "PredictionFlow", tags=["exp", "gpu"], status="completed"),
    }


def test_anne_sees_only_her_runs(login, team_runs):
    page = login("anne")
    assert shown_runs(page) == {team_runs[k].pathspec for k in ("a1", "a2", "a3")}
    assert page.locator(".ns-current").inner_text() == "user:anne"
    screenshot(page, "runs-page-own-namespace")


def test_switch_to_will(login, team_runs):
    page = login("anne")
    page.click(".ns-menu summary")
    page.click(".ns-panel a:text-is('user:will')")
    page.wait_for_url(re.compile(r"ns=user%3Awill"))
    assert shown_runs(page) == {team_runs["w1"].pathspec}
    assert page.locator(".ns-current").inner_text() == "user:will"


def add_tag_filter(page, tag: str) -> None:
    page.fill("#tag-input", tag)
    page.press("#tag-input", "Enter")
    page.wait_for_selector(f".chip:has-text('{tag}')")


def test_filter_two_tags_and_back(login, team_runs):
    page = login("anne")
    mark_page(page)
    add_tag_filter(page, "exp")
    assert shown_runs(page) == {team_runs["a1"].pathspec, team_runs["a2"].pathspec}
    add_tag_filter(page, "gpu")
    assert shown_runs(page) == {team_runs["a1"].pathspec}
    assert "tag=exp&tag=gpu" in page.url
    assert not_reloaded(page)
    screenshot(page, "runs-page-filtered")

    page.go_back()
    page.wait_for_function("() => !location.search.includes('tag=gpu')")
    page.wait_for_function("() => document.querySelectorAll('.chip').length === 1")
    assert shown_runs(page) == {team_runs["a1"].pathspec, team_runs["a2"].pathspec}
    page.go_forward()
    page.wait_for_function("() => document.querySelectorAll('.chip').length === 2")
    assert shown_runs(page) == {team_runs["a1"].pathspec}


def test_tag_autocomplete_offers_counts(login, team_runs):
    page = login("anne")
    page.fill("#tag-input", "gp")
    page.wait_for_selector("#tag-options option[value='gpu']", state="attached")
    assert page.locator("#tag-options option").first.get_attribute("value") == "gpu"
    # Suggestions are not a page: the address bar keeps the runs URL.
    assert "/tags/suggest" not in page.url


def test_add_and_remove_tag_inline(login, team_runs, live_server):
    from runs.models import RunTag

    run = team_runs["a2"]
    page = login("anne")
    page.goto(f"{live_server.url}/runs/{run.flow.name}/{run.number}")
    mark_page(page)
    page.fill("input[name=add]", "promising")
    page.click(".add-tag button")
    page.wait_for_selector(".user-tag .tag-name:text-is('promising')")
    assert RunTag.objects.filter(run=run, name="promising").exists()
    page.click("button[aria-label='Remove tag promising']")
    page.wait_for_selector(".user-tag .tag-name:text-is('promising')", state="detached")
    assert not RunTag.objects.filter(run=run, name="promising").exists()
    assert page.locator(".tag-history tbody tr").count() == 2
    assert not_reloaded(page)


def test_bulk_tag_three_runs(login, team_runs):
    from runs.models import RunTag

    page = login("anne")
    for key in ("a1", "a2", "a3"):
        page.check(f"#select-{team_runs[key].id}")
    page.fill("#bulk input[name=tag]", "batch-7")
    page.click("#bulk button[value=add]")
    page.wait_for_selector("#bulk-result .notice")
    assert "to 3 runs" in page.inner_text("#bulk-result")
    tagged = set(RunTag.objects.filter(name="batch-7").values_list("run_id", flat=True))
    assert tagged == {team_runs[k].id for k in ("a1", "a2", "a3")}
    # The table refreshes after the action, so the new chips show without a reload.
    page.wait_for_function(
        "() => document.querySelectorAll('#run-rows a.tag').length && "
        "[...document.querySelectorAll('#run-rows a.tag')]"
        ".filter(a => a.textContent === 'batch-7').length === 3")


def test_cli_tag_shows_in_filtered_list(login, team_runs):
    from runs import services

    page = login("anne")
    add_tag_filter(page, "late")
    assert shown_runs(page) == set()
    mark_page(page)
    services.tags_mutate(run=team_runs["a2"], user=team_runs["a2"].user, add=["late"])
    page.wait_for_selector(f"#run-{team_runs['a2'].id}", timeout=30_000)
    assert not_reloaded(page)


@pytest.fixture
def slow_flow(flows_dir):
    return write_flow(flows_dir, "slow_flow.py", SLOW_FLOW.format(note="plain"))


def start_detached(cli, path, *args, user="anne") -> str:
    result = cli.run(path, "run", "--detach", *args, user=user, check=True)
    return result.stdout.strip().splitlines()[-1]


def test_follow_running_run(login, cli, flows_dir, live_server):
    from runs.models import Run

    path = write_flow(flows_dir, "fanout_flow.py", FANOUT_FLOW)
    pathspec = start_detached(cli, path, "--tag", "demo")
    flow, number = pathspec.split("/")
    page = login("anne")
    page.goto(f"{live_server.url}/runs/{flow}/{number}")
    mark_page(page)
    assert page.locator("#run-live[data-live]").count() == 1
    page.wait_for_selector("svg.dag .node-running", timeout=30_000)
    screenshot(page, "run-page-running")
    page.wait_for_selector("#run-live .run-head .status-completed", timeout=60_000)
    assert Run.objects.get(flow__name=flow, number=int(number)).status == "completed"
    assert page.locator("svg.dag .node-completed").count() == 4
    assert "foreach ×3" in page.text_content("svg.dag a[data-step='start']")
    assert page.locator("svg.gantt rect.bar").count() == 6
    assert not_reloaded(page)
    page.click("svg.dag a[data-step='train']")
    page.wait_for_selector("#step-tasks table.tasks")
    assert page.locator("#step-tasks tbody tr").count() == 3
    assert "step=train" in page.url
    screenshot(page, "run-page")
    page.goto(f"{live_server.url}/")
    screenshot(page, "runs-page")


def test_task_live_log(login, cli, slow_flow, live_server):
    from runs.models import Task
    from tests.conftest import wait_for

    pathspec = start_detached(cli, slow_flow)
    flow, number = pathspec.split("/")
    task = wait_for(lambda: Task.objects.filter(run__flow__name=flow, run__number=int(number),
                                                step_name="start").first(),
                    message="start task")
    page = login("anne")
    page.goto(f"{live_server.url}/runs/{flow}/{number}/start/{task.id}")
    mark_page(page)
    page.wait_for_function(
        "() => document.querySelector('#log-body-stdout').textContent.includes('tick 5')",
        timeout=60_000)
    assert not_reloaded(page)
    assert page.inner_text("#pathspec") == f"{flow}/{number}/start/{task.id}"
    page.wait_for_selector("#task-status .status-completed", timeout=30_000)
    page.fill("input[name=q]", "tick 3")
    page.click(".log-search button")
    page.wait_for_selector("#log-search-result .search-hits a")
    assert page.inner_text("#log-search-result .search-hits").strip() == "tick 3"
    screenshot(page, "task-page")


def test_user_strings_never_run(login, cli, flows_dir, live_server, users):
    """Tags, log lines, parameters and artifact previews carry markup; none of it runs."""
    payload = XSS_TAG + XSS_ATTR
    path = write_flow(flows_dir, "slow_flow.py", SLOW_FLOW.format(note=payload))
    result = cli.run(path, "run", "--tag", XSS_TAG, "--tag", XSS_ATTR, "--note", payload,
                     user="anne", check=True)
    pathspec = re.search(r"Run (SlowFlow/\d+)", result.stderr + result.stdout).group(1)
    flow, number = pathspec.split("/")
    from runs.models import Task

    task = Task.objects.get(run__flow__name=flow, run__number=int(number), step_name="start")
    page = login("anne")
    pages = [
        f"{live_server.url}/?tag={XSS_TAG}",
        f"{live_server.url}/runs/{flow}/{number}",
        f"{live_server.url}/runs/{flow}/{number}/start/{task.id}",
        f"{live_server.url}/runs/{flow}/{number}/start/{task.id}?q=script",
    ]
    for url in pages:
        page.goto(url)
        assert page.evaluate("window.__xss === undefined"), url
        assert page.locator("img[src=x]").count() == 0, url
        assert page.locator("script:not([src])").count() == 0, url
    page.goto(f"{live_server.url}/runs/{flow}/{number}/start/{task.id}")
    assert payload in page.inner_text("#log-body-stdout")
    assert payload in page.inner_text("table.artifacts")
    page.goto(f"{live_server.url}/runs/{flow}/{number}")
    assert XSS_ATTR in page.inner_text("#tags")
    assert payload in page.inner_text(".facts")
    assert page.js_errors == []


def test_pages_work_without_javascript(browser, live_server, team_runs):
    from runs.models import RunTag

    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(f"{live_server.url}/login/")
        page.fill("input[name=username]", "anne")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.fill("#tag-input", "gpu")
        page.press("#tag-input", "Enter")
        page.wait_for_url(re.compile(r"tag=gpu"))
        assert shown_runs(page) == {team_runs["a1"].pathspec, team_runs["a3"].pathspec}

        run = team_runs["a1"]
        page.click(f"#run-{run.id} a.run-link")
        page.fill("input[name=add]", "no-js")
        page.click(".add-tag button")
        page.wait_for_selector(".user-tag .tag-name:text-is('no-js')")
        assert RunTag.objects.filter(run=run, name="no-js").exists()
    finally:
        context.close()
