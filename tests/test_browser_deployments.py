"""The Deployments pages in Chromium: an admin issues a token and triggers a run, and
will, who is not staff, sees that he needs the token."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runs.models import Deployment, Run
from tests.conftest import CHROMIUM, write_flow

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"Chromium not found at {CHROMIUM}; apt-get install chromium"),
]

HELLO = """
from flowsite import FlowSpec, Parameter, schedule, step


@schedule(hourly=True)
class HelloFlow(FlowSpec):
    greeting = Parameter("greeting", default="hi")

    @step
    def start(self):
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    HelloFlow()
"""


@pytest.fixture
def deployed(cli, flows_dir):
    path = write_flow(flows_dir, "hello.py", HELLO)
    out = cli.run(path, "deploy", "create", user="anne", check=True).stdout
    return re.search(r"Production token \(shown once[^\n]*\n\s+(\S+)", out).group(1)


def test_admin_issues_token_and_triggers(login, deployed, live_server):  # noqa: F811
    page = login("admin")
    page.click("text=Deployments")
    namespace = Deployment.objects.get().namespace
    assert page.locator(f"text={namespace}").count() >= 1

    page.click("a:has-text('HelloFlow')")
    page.click("button:has-text('Issue new token')")
    token = page.locator("#issued-token").inner_text().strip()
    assert token and token != deployed

    page.reload()
    assert page.locator("#issued-token").count() == 0
    assert token not in page.content()

    page.fill("input[name=param_greeting]", "hello")
    page.click("button:has-text('Trigger')")
    page.wait_for_selector("text=started in production:")
    run = Run.objects.get(flow__name="HelloFlow")
    assert run.triggered_by == "user:admin"
    assert run.parameters == {"greeting": "hello"}

    page.click("button:has-text('Pause schedule')")
    page.wait_for_selector("button:has-text('Resume schedule')")
    assert Deployment.objects.get().paused


def test_non_staff_needs_token(login, deployed):  # noqa: F811
    page = login("will")
    page.goto(page.url.split("?")[0].rstrip("/") + "/deployments/HelloFlow")
    assert page.locator("text=Only holders of the production token").count() == 1
    assert page.locator("button:has-text('Issue new token')").count() == 0

    page.fill("form:has(button:has-text('Trigger')) input[name=production_token]", "wrong")
    page.click("button:has-text('Trigger')")
    page.wait_for_selector("text=not the current one")
    assert not Run.objects.exists()

    page.fill("form:has(button:has-text('Trigger')) input[name=production_token]", deployed)
    page.click("button:has-text('Trigger')")
    page.wait_for_selector("text=started in production:")
    assert Run.objects.get().triggered_by == "user:will"
