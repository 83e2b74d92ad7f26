"""The command line as a user meets it: one-line errors, login, show, and Ctrl-C."""

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys

import pytest

from tests.conftest import PASSWORD, ROOT, wait_for, write_flow

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def current_flow(flows_dir):
    path = flows_dir / "current_flow.py"
    shutil.copy(ROOT / "examples" / "current_flow.py", path)
    return path


def closed_port() -> int:
    """A loopback port that nothing listens on once this returns."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def plain_env(home, **extra) -> dict:
    """An environment with no server settings at all, as on a fresh machine."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("FLOWSITE_", "DATABASE_URL", "CELERY_", "DJANGO_"))}
    env["FLOWSITE_HOME"] = str(home)
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def run_plain(path, *args, env, input=None, timeout=60):
    return subprocess.run([sys.executable, str(path), *args], cwd=str(path.parent), env=env,
                          capture_output=True, text=True, timeout=timeout, input=input)


def login(*args, env, input=None):
    return subprocess.run([sys.executable, "-m", "flowsite", "login", *args], cwd=str(ROOT),
                          env=env, capture_output=True, text=True, timeout=60, input=input)


# ---------------------------------------------------------------- errors without a server


def test_server_unreachable_names_url(current_flow, tmp_path):
    url = f"http://127.0.0.1:{closed_port()}"
    result = run_plain(current_flow, "run",
                       env=plain_env(tmp_path / "home", FLOWSITE_URL=url, FLOWSITE_TOKEN="x"))

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: Cannot reach the Flowsite server at {url}. Start it (make run) or set "
        "FLOWSITE_URL to its address."
    ]


def test_not_logged_in_says_login(current_flow, tmp_path):
    result = run_plain(current_flow, "run", env=plain_env(tmp_path / "home"))

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "python -m flowsite login" in lines[0]


def test_syntax_error_names_line(flows_dir, tmp_path):
    path = write_flow(flows_dir, "broken_flow.py", """
        from flowsite import FlowSpec, step

        class BrokenFlow(FlowSpec):
            @step
            def start(self)
                self.next(self.end)
    """)
    result = run_plain(path, "run", env=plain_env(tmp_path / "home"))

    # NOTE: Python compiles the flow file before any Flowsite code runs, so this error
    # comes from the interpreter itself: it names file and line, but on several lines.
    assert result.returncode == 1
    assert 'broken_flow.py", line 5' in result.stderr
    assert "SyntaxError: expected ':'" in result.stderr


def test_invalid_graph_one_line(flows_dir, tmp_path):
    path = write_flow(flows_dir, "nojoin_flow.py", """
        from flowsite import FlowSpec, step

        class NoJoinFlow(FlowSpec):
            @step
            def start(self):
                self.next(self.a, self.b)

            @step
            def a(self):
                self.next(self.end)

            @step
            def b(self):
                self.next(self.end)

            @step
            def end(self):
                pass

        if __name__ == "__main__":
            NoJoinFlow()
    """)
    result = run_plain(path, "run", env=plain_env(tmp_path / "home"))

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: invalid flow: nojoin_flow.py:6: the split in step 'start' has no join "
        "before end. Add a join step, def join(self, inputs), where the branches meet."
    ]


def test_show_prints_transitions(current_flow, tmp_path):
    result = run_plain(current_flow, "show", env=plain_env(tmp_path / "home"))

    assert result.returncode == 0
    assert "Step start\n    => end\n" in result.stdout
    assert "Step end\n    => (end of flow)\n" in result.stdout


# ---------------------------------------------------------------- with a server


def test_token_rejected_says_login(current_flow, cli, tmp_path):
    env = plain_env(tmp_path / "home", FLOWSITE_URL=cli.server_url,
                    FLOWSITE_TOKEN="not-a-real-token")
    result = run_plain(current_flow, "run", env=env)

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "python -m flowsite login" in lines[0]


def test_login_with_password_env(cli, tmp_path):
    home = tmp_path / "home"
    env = plain_env(home, FLOWSITE_PASSWORD=PASSWORD)
    result = login("--url", cli.server_url, "--username", "anne", env=env)

    assert result.returncode == 0, result.stderr
    config_file = home / "config.json"
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    stored = json.loads(config_file.read_text())
    assert stored["url"] == cli.server_url
    assert stored["username"] == "anne"
    assert stored["token"]


def test_login_from_stdin_then_run(cli, current_flow, tmp_path):
    home = tmp_path / "home"
    result = login("--url", cli.server_url, env=plain_env(home), input=f"will\n{PASSWORD}\n")
    assert result.returncode == 0, result.stderr
    assert f"Logged in to {cli.server_url} as will" in result.stdout

    # The stored token alone is enough to run, and the run belongs to will.
    run = run_plain(current_flow, "run", env=plain_env(home))
    assert run.returncode == 0, run.stderr
    assert re.search(r"^\[\d+/start/\d+\] namespace: user:will$", run.stdout, re.M)


def test_login_wrong_password(cli, tmp_path):
    home = tmp_path / "home"
    env = plain_env(home, FLOWSITE_PASSWORD="wrong-password")
    result = login("--url", cli.server_url, "--username", "anne", env=env)

    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("Error: ")
    assert not (home / "config.json").exists()


SLOW_FOREACH = """
import time

from flowsite import FlowSpec, step


class SlowFlow(FlowSpec):
    @step
    def start(self):
        self.items = list(range(6))
        self.next(self.nap, foreach="items")

    @step
    def nap(self):
        print("napping", self.index, flush=True)
        time.sleep(30)
        self.next(self.join)

    @step
    def join(self, inputs):
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    SlowFlow()
"""


def test_ctrl_c_cancels_run(cli, flows_dir):
    from runs.models import Run, Task

    path = write_flow(flows_dir, "slow_flow.py", SLOW_FOREACH)
    process = subprocess.Popen([sys.executable, str(path), "run"], cwd=str(flows_dir),
                               env=cli.env("anne"), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        # Wait until a nap task runs, so some nap tasks are still pending behind it.
        wait_for(lambda: Task.objects.filter(step_name="nap", status="running").exists(),
                 timeout=60, message="a running nap task")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    run = Run.objects.get(flow__name="SlowFlow")
    assert process.returncode == 130, err
    assert f"Cancelling SlowFlow/{run.number}" in err
    assert run.status == "cancelled"

    naps = Task.objects.filter(run=run, step_name="nap")
    assert naps.count() == 6
    never_started = naps.filter(started_at__isnull=True)
    assert never_started.exists()
    assert set(never_started.values_list("status", flat=True)) == {"cancelled"}
    assert not Task.objects.filter(run=run, step_name__in=["join", "end"]).exists()

    # The worker stops the running naps too, well before their 30 s sleep ends.
    wait_for(lambda: not Task.objects.filter(run=run, status="running").exists(),
             timeout=25, message="running naps to stop")
    assert not Task.objects.filter(run=run, started_at__isnull=True).exclude(
        status="cancelled").exists()
