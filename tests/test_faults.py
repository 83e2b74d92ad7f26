"""Faults injected for real: killed workers, lost heartbeats, retries, timeouts, cancels,
a stopped broker, a restarted broker and a restarted database. Every run must reach a terminal state, and no
task may complete twice.

Tests that kill workers start their own workers on a private queue, so the shared
session worker never takes (or loses) their tasks.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT, Worker, database_url_for_worker, wait_for, write_flow

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

HEARTBEAT_TIMEOUT = 5  # the smallest value settings accept


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie counts as dead here; its /proc status shows the difference.
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())


def fault_env(queue: str, **extra) -> dict:
    """Environment for a fault worker: short heartbeat timeout, sweep every second."""
    env = {
        "FLOWSITE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
        "FLOWSITE_SWEEP_INTERVAL": "1",
        "FLOWSITE_SWEEP_QUEUE": f"{queue}-sweep",
    }
    env.update(extra)
    return env


@pytest.fixture
def queue():
    return f"faults-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def workers():
    """Start fault workers with workers.start(...); all of them are stopped at the end."""

    class Pool(list):
        def start(self, name: str, queue: str, *, beat: bool = False, **env) -> Worker:
            queues = f"{queue},{queue}-sweep" if beat else queue
            worker = Worker(concurrency=1, name=f"{name}-{queue}", queues=queues,
                            extra_env=fault_env(queue, **env), beat=beat)
            self.append(worker)
            return worker

    pool = Pool()
    yield pool
    for worker in pool:
        worker.stop(signal.SIGKILL)


SLEEPY_FLOW = '''
import os, time
from flowsite import FlowSpec, step, retry, resources, current

MARKS = {marks!r}


def mark(name):
    with open(os.path.join(MARKS, name), "w") as handle:
        handle.write(str(os.getpid()))


class {name}(FlowSpec):
    @resources(queue={queue!r})
    {retry}
    @step
    def start(self):
        mark(f"start-{{current.retry_count}}")
        if current.retry_count == 0:
            time.sleep(120)
        self.attempt_seen = current.retry_count
        self.next(self.end)

    @resources(queue={queue!r})
    @step
    def end(self):
        mark("end")


if __name__ == "__main__":
    {name}()
'''


def sleepy_flow(flows_dir: Path, marks: Path, queue: str, *, name: str, retries: int) -> Path:
    source = SLEEPY_FLOW.format(
        marks=str(marks), name=name, queue=queue,
        retry=f"@retry(times={retries})" if retries else "",
    )
    return write_flow(flows_dir, f"{name.lower()}.py", source)


def submit(cli, path: Path, *args, user: str = "anne"):
    """Submit without waiting and return the Run row."""
    from runs.models import Run

    result = cli.run(path, "run", "--detach", *args, user=user, check=True)
    flow, number = result.stdout.strip().splitlines()[-1].split("/")
    return Run.objects.get(flow__name=flow, number=int(number))


def run_status(run) -> str:
    run.refresh_from_db()
    return run.status


@pytest.fixture
def marks(tmp_path):
    path = tmp_path / "marks"
    path.mkdir()
    return path


# ---------------------------------------------------------------- killed workers


def test_killed_worker_task_runs_again(cli, flows_dir, marks, queue, workers):
    from runs.models import Task, TaskAttempt

    path = sleepy_flow(flows_dir, marks, queue, name="KilledRetryFlow", retries=1)
    victim = workers.start("victim", queue)
    run = submit(cli, path)
    wait_for(lambda: (marks / "start-0").exists(), timeout=60, message="attempt 0 to start")
    child_pid = int((marks / "start-0").read_text())

    # SIGKILL the worker's whole process group: the main process and its pool process.
    os.killpg(victim.process.pid, signal.SIGKILL)
    victim.process.wait()
    killed_at = time.monotonic()
    wait_for(lambda: not pid_alive(child_pid), timeout=10,
             message="the step process to die with its worker")

    workers.start("rescuer", queue, beat=True)
    wait_for(lambda: run_status(run) in ("completed", "failed"), timeout=60,
             message="the run to end")
    recovered = time.monotonic() - killed_at

    start = Task.objects.get(run=run, step_name="start")
    attempts = {a.number: a for a in TaskAttempt.objects.filter(task=start)}
    assert run.status == "completed", run.error
    assert start.attempt == 1
    assert attempts[0].status == "failed"
    assert "no heartbeat" in attempts[0].error
    assert attempts[1].status == "completed"
    assert attempts[1].worker_host.startswith("rescuer-")
    assert not (marks / "start-2").exists()
    assert Task.objects.filter(run=run, step_name="end", status="completed").count() == 1
    print(f"killed worker: run {run.pathspec} completed {recovered:.1f} s after the kill")


def test_vanished_worker_fails_run(cli, flows_dir, marks, queue, workers):
    from runs.models import Task

    path = sleepy_flow(flows_dir, marks, queue, name="VanishedFlow", retries=0)
    victim = workers.start("victim", queue)
    run = submit(cli, path)
    wait_for(lambda: (marks / "start-0").exists(), timeout=60, message="start to begin")
    os.killpg(victim.process.pid, signal.SIGKILL)
    victim.process.wait()

    # The sweeper consumes only the sweep queue, so it cannot pick the run up again.
    workers.start("sweeper", f"{queue}-idle", beat=True, FLOWSITE_SWEEP_QUEUE=f"{queue}-idle")
    wait_for(lambda: run_status(run) == "failed", timeout=30, message="the run to fail")
    first = run.duration_seconds
    time.sleep(1.5)
    run.refresh_from_db()

    assert "no heartbeat" in run.error
    assert run.finished_at is not None
    assert run.duration_seconds == first
    assert Task.objects.get(run=run, step_name="start").status == "failed"
    assert not Task.objects.filter(run=run, step_name="end").exists()


def test_queued_run_stays_pending(cli, flows_dir, marks, queue, workers):
    from runs.execution import sweep

    # No worker consumes this queue, so the run waits in the broker.
    path = sleepy_flow(flows_dir, marks, f"{queue}-nobody", name="PatientFlow", retries=0)
    run = submit(cli, path)
    workers.start("sweeper", f"{queue}-idle", beat=True, FLOWSITE_SWEEP_QUEUE=f"{queue}-idle")
    time.sleep(HEARTBEAT_TIMEOUT + 2)
    sweep()

    assert run_status(run) == "pending"
    assert run.finished_at is None
    assert run.tasks.get().status == "pending"


# ---------------------------------------------------------------- retry and timeout


RETRY_FLOW = '''
from flowsite import FlowSpec, step, retry, current


class RetryFlow(FlowSpec):
    @retry(times=2)
    @step
    def start(self):
        print(f"attempt {current.retry_count} begins")
        self.seen = current.retry_count
        if current.retry_count < 2:
            raise RuntimeError(f"attempt {current.retry_count} fails on purpose")
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    RetryFlow()
'''


def test_retry_keeps_every_attempt(cli, sdk, flows_dir):
    path = write_flow(flows_dir, "retry_flow.py", RETRY_FLOW)
    result = cli.run(path, "run", user="anne", check=True)
    assert "completed successfully" in result.stdout, result.stderr

    client = sdk.login("anne")
    task = client.Flow("RetryFlow").latest_run["start"].task
    attempts = task.attempts
    assert task.retry_count == 2
    assert [a.retry_count for a in attempts] == [0, 1, 2]
    for number in (0, 1):
        assert f"attempt {number} begins" in attempts[number].stdout
        assert f"attempt {number} fails on purpose" in attempts[number].stderr
    assert "attempt 2 begins" in attempts[2].stdout
    assert attempts[2].data.seen == 2
    assert task.data.seen == 2


TIMEOUT_FLOW = '''
import time
from flowsite import FlowSpec, step, timeout


class TimeoutFlow(FlowSpec):
    @timeout(seconds=2)
    @step
    def start(self):
        print("sleeping past the limit", flush=True)
        time.sleep(60)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    TimeoutFlow()
'''


def test_timeout_kills_step(cli, flows_dir):
    from runs.models import Run, Task

    path = write_flow(flows_dir, "timeout_flow.py", TIMEOUT_FLOW)
    began = time.monotonic()
    result = cli.run(path, "run", user="anne", timeout=90)
    elapsed = time.monotonic() - began

    run = Run.objects.filter(flow__name="TimeoutFlow").latest("id")
    start = Task.objects.get(run=run, step_name="start")
    assert result.returncode == 1
    assert run.status == "failed"
    assert "@timeout limit of 2 s" in start.error
    assert "@timeout limit of 2 s" in result.stderr
    assert elapsed < 45
    assert not Task.objects.filter(run=run, step_name="end").exists()


# ---------------------------------------------------------------- cancel


CANCEL_FLOW = '''
import os, time
from flowsite import FlowSpec, step

MARKS = {marks!r}


class CancelFlow(FlowSpec):
    @step
    def start(self):
        with open(os.path.join(MARKS, "begun"), "w") as handle:
            handle.write(str(os.getpid()))
        time.sleep(60)
        open(os.path.join(MARKS, "done"), "w").close()
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    CancelFlow()
'''


def assert_cancelled(run, marks: Path) -> None:
    from runs.models import Task

    child_pid = int((marks / "begun").read_text())
    wait_for(lambda: run_status(run) == "cancelled", timeout=15, message="the run to cancel")
    wait_for(lambda: not pid_alive(child_pid), timeout=15, message="the step process to stop")
    wait_for(lambda: Task.objects.get(run=run, step_name="start").status != "running",
             timeout=15, message="the task to stop")
    time.sleep(1)
    assert not (marks / "done").exists()
    assert not Task.objects.filter(run=run, step_name="end").exists()


def test_cancel_from_api_stops_task(cli, sdk, flows_dir, marks):
    path = write_flow(flows_dir, "cancel_flow.py", CANCEL_FLOW.format(marks=str(marks)))
    run = submit(cli, path)
    wait_for(lambda: (marks / "begun").exists(), timeout=60, message="start to begin")

    client = sdk.login("anne")
    client.Run(run.pathspec).cancel()
    assert_cancelled(run, marks)


def test_cancel_from_cli_stops_task(cli, flows_dir, marks):
    from runs.models import Run

    path = write_flow(flows_dir, "cancel_flow.py", CANCEL_FLOW.format(marks=str(marks)))
    process = subprocess.Popen(
        [sys.executable, str(path), "run"], cwd=str(flows_dir), env=cli.env("anne"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(lambda: (marks / "begun").exists(), timeout=60, message="start to begin")
        process.send_signal(signal.SIGINT)  # Ctrl-C: the CLI cancels the run it follows
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()

    run = Run.objects.filter(flow__name="CancelFlow").latest("id")
    assert process.returncode == 130, stderr
    assert "Cancelling" in stderr
    assert_cancelled(run, marks)


# ---------------------------------------------------------------- artifacts


def test_artifact_hash_mismatch_records_nothing(db, tmp_path):
    from runs.execution import blob_store
    from runs.models import ArtifactBlob

    path = tmp_path / "artifact"
    path.write_bytes(b"partial bytes")
    wrong = "0" * 64
    with pytest.raises(RuntimeError, match="does not match its hash"):
        blob_store(str(path), wrong, len(b"partial bytes"))
    assert not ArtifactBlob.objects.filter(sha256=wrong).exists()


def test_artifact_storage_failure_records_nothing(db, tmp_path, settings):
    import hashlib

    from django.core.files.storage import storages

    from runs.execution import blob_store
    from runs.models import ArtifactBlob

    data = b"bytes that storage drops " + uuid.uuid4().bytes
    digest = hashlib.sha256(data).hexdigest()
    path = tmp_path / "artifact"
    path.write_bytes(data)
    store = storages["artifacts"]

    # A storage that truncates what it writes, like a crash halfway through an upload.
    original_save = store.save

    def truncating_save(name, content, **kwargs):
        from django.core.files.base import ContentFile

        return original_save(name, ContentFile(content.read()[:5]), **kwargs)

    store.save = truncating_save
    try:
        with pytest.raises(RuntimeError, match="not stored intact"):
            blob_store(str(path), digest, len(data))
    finally:
        del store.save
        key = f"artifacts/{digest[:2]}/{digest}"
        if store.exists(key):
            store.delete(key)
    assert not ArtifactBlob.objects.filter(sha256=digest).exists()


# ---------------------------------------------------------------- a private broker


class PrivateStack:
    """A redis-server on a private loopback port, a web server and a worker using it.

    The shared Redis on 6379 is never touched: this one can be stopped and restarted.
    """

    def __init__(self, folder: Path, tokens: dict, queue: str, database_url: str = ""):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.database_url = database_url or database_url_for_worker()
        self.redis_port = free_port()
        self.web_port = free_port()
        self.url = f"http://127.0.0.1:{self.web_port}"
        self.broker = f"redis://127.0.0.1:{self.redis_port}/0"
        self.tokens = tokens
        self.queue = queue
        self.redis = None
        self.redis_start()
        env = self.env()
        self.web = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{self.web_port}",
             "--noreload"],
            cwd=str(ROOT), env=env, stdout=open(folder / "web.log", "w"),
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_for(self.web_ready, timeout=60, message="the private web server")
        self.worker = Worker(concurrency=1, name=f"redis-{queue}",
                             queues=f"{queue},{queue}-sweep", beat=True,
                             extra_env={**fault_env(queue), **self.broker_env()})

    def broker_env(self) -> dict:
        return {"CELERY_BROKER_URL": self.broker, "FLOWSITE_API_URL": self.url,
                "DATABASE_URL": self.database_url}

    def env(self) -> dict:
        env = dict(os.environ)
        env.update(self.broker_env())
        return env

    def web_ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.web_port), timeout=1):
                return True
        except OSError:
            return False

    def redis_start(self) -> None:
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.folder)],
            stdout=open(self.folder / "redis.log", "a"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def accepting():
            try:
                with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1):
                    return True
            except OSError:
                return False

        wait_for(accepting, timeout=20, message="the private redis-server")

    def redis_stop(self) -> None:
        self.redis.kill()
        self.redis.wait()

    def cli_env(self, user: str) -> dict:
        env = dict(os.environ)
        for key in ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"):
            env.pop(key, None)
        env["FLOWSITE_URL"] = self.url
        env["FLOWSITE_TOKEN"] = self.tokens[user]
        env["FLOWSITE_HOME"] = str(self.folder / "home" / user)
        env["PYTHONPATH"] = str(ROOT)
        return env

    def submit_path(self, path: Path, user: str = "anne") -> str:
        """Submit without waiting; return the run's pathspec."""
        result = subprocess.run(
            [sys.executable, str(path), "run", "--detach"], cwd=str(path.parent),
            env=self.cli_env(user), capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().splitlines()[-1]

    def submit(self, path: Path, user: str = "anne"):
        from runs.models import Run

        flow, number = self.submit_path(path, user).split("/")
        return Run.objects.get(flow__name=flow, number=int(number))

    def close(self) -> None:
        self.worker.stop(signal.SIGKILL)
        for process in (self.web, self.redis):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def stack(tmp_path, tokens, queue):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed; the broker fault tests need one")
    started = PrivateStack(tmp_path, tokens, queue)
    yield started
    started.close()


STEADY_FLOW = '''
import os, time
from flowsite import FlowSpec, step, resources

MARKS = {marks!r}


def mark(name):
    with open(os.path.join(MARKS, name), "a") as handle:
        handle.write("done\\n")


class {name}(FlowSpec):
    @resources(queue={queue!r})
    @step
    def start(self):
        mark("start")
        self.next(self.middle)

    @resources(queue={queue!r})
    @step
    def middle(self):
        open(os.path.join(MARKS, "middle-begun"), "w").close()
        time.sleep({pause})
        mark("middle")
        self.next(self.end)

    @resources(queue={queue!r})
    @step
    def end(self):
        mark("end")


if __name__ == "__main__":
    {name}()
'''


def assert_each_step_once(run, marks: Path) -> None:
    from runs.models import Task

    for name in ("start", "middle", "end"):
        assert Task.objects.filter(run=run, step_name=name, status="completed").count() == 1
        assert (marks / name).read_text() == "done\n", f"{name} completed more than once"


def test_broker_down_run_queued_later(stack, flows_dir, marks, queue):
    from runs.models import Task

    path = write_flow(flows_dir, "broker_down_flow.py", STEADY_FLOW.format(
        marks=str(marks), name="BrokerDownFlow", queue=queue, pause=0))
    stack.redis_stop()
    run = stack.submit(path)

    start = Task.objects.get(run=run, step_name="start")
    assert run.status == "pending"
    assert start.status == "pending"
    assert start.enqueued_at is None

    stack.redis_start()
    back_at = time.monotonic()
    wait_for(lambda: run_status(run) in ("completed", "failed"), timeout=90,
             message="the run to end after the broker is back")
    assert run.status == "completed", run.error
    assert_each_step_once(run, marks)
    print(f"broker down at submission: {run.pathspec} completed "
          f"{time.monotonic() - back_at:.1f} s after the broker came back")


def test_broker_restart_mid_run(stack, flows_dir, marks, queue):
    path = write_flow(flows_dir, "broker_restart_flow.py", STEADY_FLOW.format(
        marks=str(marks), name="BrokerRestartFlow", queue=queue, pause=4))
    run = stack.submit(path)
    wait_for(lambda: (marks / "middle-begun").exists(), timeout=60, message="middle to begin")

    # The restarted server starts empty: any message it held is gone.
    stack.redis_stop()
    time.sleep(6)
    stack.redis_start()
    back_at = time.monotonic()
    wait_for(lambda: run_status(run) in ("completed", "failed"), timeout=90,
             message="the run to end after the broker restart")
    assert run.status == "completed", run.error
    assert_each_step_once(run, marks)
    print(f"broker restart: {run.pathspec} completed "
          f"{time.monotonic() - back_at:.1f} s after the broker came back")


class PrivatePostgres:
    """A PostgreSQL cluster of its own in a temporary folder, on a free loopback port,
    so the test can restart it without touching the shared server."""

    BIN = Path("/usr/lib/postgresql/15/bin")

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.data = folder / "data"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.chown(folder, "postgres")
        self.as_postgres([str(self.BIN / "initdb"), "-D", str(self.data), "-A", "trust",
                          "-U", "postgres"])
        self.start()
        self.as_postgres([str(self.BIN / "createdb"), "-h", "127.0.0.1", "-p",
                          str(self.port), "-U", "postgres", "flowsite"])
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/flowsite"

    def as_postgres(self, command: list[str]) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True,
                       capture_output=True, timeout=120, cwd=str(self.folder))

    def start(self) -> None:
        self.as_postgres([
            str(self.BIN / "pg_ctl"), "-D", str(self.data), "-w", "-l",
            str(self.folder / "postgres.log"), "-o",
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1", "start",
        ])

    def stop(self) -> None:
        self.as_postgres([str(self.BIN / "pg_ctl"), "-D", str(self.data), "-w",
                          "-m", "fast", "stop"])


@pytest.fixture
def private_postgres(tmp_path_factory):
    if os.geteuid() != 0 or shutil.which("runuser") is None \
            or not (PrivatePostgres.BIN / "initdb").exists():
        pytest.skip("needs root, runuser and PostgreSQL 15 binaries to start a private "
                    "cluster; the shared PostgreSQL server must not be restarted")
    folder = Path(tempfile.mkdtemp(prefix="flowsite-pg-"))
    cluster = PrivatePostgres(folder)
    yield cluster
    try:
        cluster.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_database_restart_mid_run(private_postgres, tmp_path, flows_dir, marks, queue):
    import requests

    env = dict(os.environ, DATABASE_URL=private_postgres.url)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
                   cwd=str(ROOT), env=env, check=True, timeout=300)
    created = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c",
         "from django.contrib.auth import get_user_model; from tokens.models import ApiToken;"
         "u = get_user_model().objects.create_user(username='anne', password='x' * 20);"
         "print('TOKEN', ApiToken.issue(user=u, name='tests')[1])"],
        cwd=str(ROOT), env=env, check=True, capture_output=True, text=True, timeout=120,
    )
    token = created.stdout.split("TOKEN ")[1].split()[0]
    stack = PrivateStack(tmp_path / "stack", {"anne": token}, queue,
                         database_url=private_postgres.url)
    try:
        path = write_flow(flows_dir, "database_restart_flow.py", STEADY_FLOW.format(
            marks=str(marks), name="DatabaseRestartFlow", queue=queue, pause=8))
        run_path = stack.submit_path(path)
        wait_for(lambda: (marks / "middle-begun").exists(), timeout=60,
                 message="middle to begin")

        private_postgres.stop()
        time.sleep(3)
        private_postgres.start()
        back_at = time.monotonic()

        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"

        def ended():
            try:
                data = session.get(f"{stack.url}/api/v1/runs/{run_path}", timeout=10).json()
            except (requests.RequestException, ValueError):
                return None
            return data if data.get("status") in ("completed", "failed") else None

        final = wait_for(ended, timeout=90, interval=0.5, message="the run to end")
        recovered = time.monotonic() - back_at
        worker_log = stack.worker.log()
    finally:
        stack.close()

    assert "heartbeat failed, retrying at the next beat" in worker_log

    assert final["status"] == "completed", final.get("error")
    assert_each_step_once_by_marks(marks)
    print(f"database restart: {run_path} completed {recovered:.1f} s after PostgreSQL "
          "came back")


def assert_each_step_once_by_marks(marks: Path) -> None:
    for name in ("start", "middle", "end"):
        assert (marks / name).read_text() == "done\n", f"{name} completed more than once"
