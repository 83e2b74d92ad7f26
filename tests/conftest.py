"""Shared fixtures: personas, API clients, a live server and a real Celery worker.

The backends come from the environment, as in production: DATABASE_URL and
CELERY_BROKER_URL unset means SQLite and the embedded filesystem broker.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


from tests.bootstrap import VAR as _VAR  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "correct-horse-battery"
PERSONAS = ("anne", "will", "admin")


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_VAR, ignore_errors=True)


def database_url_for_worker() -> str:
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


class Worker:
    """A real `celery worker` process on the configured broker and the test database."""

    def __init__(self, *, concurrency: int = 2, name: str = "worker1", queues: str = "default",
                 extra_env: dict | None = None, beat: bool = False):
        self.name = name
        self.log_path = _VAR / f"{name}.log"
        env = dict(os.environ)
        env["DATABASE_URL"] = database_url_for_worker()
        env.update(extra_env or {})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "flowsite.celery_app", "worker",
             "-l", "info", "-c", str(concurrency), "-n", f"{name}@%h", "-Q", queues,
             "--without-gossip", "--without-mingle", *self.beat_args(beat)],
            cwd=str(ROOT), env=env, stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_ready()

    def beat_args(self, beat: bool) -> list[str]:
        """Embed a beat scheduler (the periodic sweep) that keeps its state in a file."""
        if not beat:
            return []
        schedule = _VAR / f"{self.name}-beat-schedule"
        return ["-B", "-S", "celery.beat:PersistentScheduler", "-s", str(schedule)]

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log_path.read_text()}")
            if " ready." in self.log_path.read_text():
                return
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready after {timeout} s:\n{self.log_path.read_text()}")

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture(scope="session")
def worker(django_db_setup, django_db_blocker):
    """One worker for the whole session; tests that kill workers start their own."""
    started = Worker()
    yield started
    started.stop()


@pytest.fixture
def users(db):
    from django.contrib.auth import get_user_model

    User = get_user_model()
    found = {}
    for name in PERSONAS:
        user = User.objects.filter(username=name).first()
        if user is None:
            user = User.objects.create_user(
                username=name, password=PASSWORD, is_staff=name == "admin",
                is_superuser=name == "admin",
            )
        found[name] = user
    return found


@pytest.fixture
def tokens(users):
    from tokens.models import ApiToken

    return {name: ApiToken.issue(user=user, name="tests")[1] for name, user in users.items()}


class Cli:
    """Run flow files and `python -m flowsite` as a user would, in a subprocess."""

    def __init__(self, server_url: str, tokens: dict, home: Path, worker: Worker | None = None):
        self.worker = worker
        self.server_url = server_url
        self.tokens = tokens
        self.home = home

    def env(self, user: str) -> dict:
        env = dict(os.environ)
        for key in ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"):
            env.pop(key, None)
        env["FLOWSITE_URL"] = self.server_url
        env["FLOWSITE_TOKEN"] = self.tokens[user]
        env["FLOWSITE_HOME"] = str(self.home / user)
        env["PYTHONPATH"] = str(ROOT)
        return env

    def run(self, path, *args, user: str = "anne", timeout: float = 60, check=False,
            input: str | None = None):
        result = subprocess.run(
            [sys.executable, str(path), *args], cwd=str(Path(path).parent),
            env=self.env(user), capture_output=True, text=True, timeout=timeout, input=input,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{path} {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}\n"
                f"worker log (last 3000 characters):\n{self.worker.log()[-3000:] if self.worker else ''}"
            )
        return result


@pytest.fixture
def cli(live_server, tokens, worker, tmp_path):
    return Cli(live_server.url, tokens, tmp_path / "homes", worker)


@pytest.fixture
def sdk(live_server, tokens, worker, monkeypatch, tmp_path):
    """Use the client API in this process as a persona: sdk.login('anne')."""
    from flowsite.sdk import client

    class Sdk:
        def login(self, user: str):
            monkeypatch.setenv("FLOWSITE_URL", live_server.url)
            monkeypatch.setenv("FLOWSITE_TOKEN", tokens[user])
            monkeypatch.setenv("FLOWSITE_HOME", str(tmp_path / "sdk-home" / user))
            client._namespace = client._UNSET
            client._login_namespace = None
            return client

    yield Sdk()
    client._namespace = client._UNSET
    client._login_namespace = None


@pytest.fixture
def flows_dir(tmp_path):
    """A folder for flow files written by a test."""
    path = tmp_path / "flows"
    path.mkdir()
    return path


def write_flow(folder: Path, name: str, source: str) -> Path:
    import textwrap

    path = folder / name
    path.write_text(textwrap.dedent(source).lstrip())
    return path


def wait_for(predicate, timeout: float = 60, interval: float = 0.2, message: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message or predicate}")


@pytest.fixture(scope="session")
def browser():
    """One Chromium for the whole session: Playwright allows one sync driver per thread."""
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread, so Django would reject the
    # ORM calls the tests make between browser steps. They are plain blocking calls.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def login(browser, live_server, users):
    """Return a function that opens a logged-in page for a persona."""
    contexts = []

    def open_as(name: str):
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("dialog", lambda dialog: errors.append(f"dialog: {dialog.message}"))
        page.js_errors = errors
        page.goto(f"{live_server.url}/login/")
        page.fill("input[name=username]", name)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r".*/(\?.*)?$"))
        return page

    yield open_as
    for context in contexts:
        context.close()
