"""How Flowsite scales with worker processes: a wide foreach on 1, 2 and 4 workers.

Usage, from the repository root (PostgreSQL and Redis on 127.0.0.1):

    .venv/bin/python bench/scale.py [--width 500] [--workers 1,2,4] [--sleeps 0,1]

The script resets database flowsite_scale and Redis db 7 (set SCALE_PG_URL and
SCALE_REDIS_URL to change them), starts gunicorn on a free loopback port, and for
each worker count starts that many `celery worker -c 1` processes, each with its own
name, var/ and work folder, as if on separate hosts; artifacts and code packages go
to one shared storage folder in place of object storage. For each step duration in --sleeps it
runs one flow: start, a foreach of --width tasks that sleep that long, a join, end.
It reports, per run:

- run time: from the run's creation to its end, from the database;
- tasks per second: all tasks of the run divided by the run time;
- overhead per task: worker-seconds the run used beyond the steps' own sleep,
  divided by the tasks, that is (run time x workers - width x sleep) / tasks.

Every subprocess has a timeout, so the script always ends.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PG_URL = os.environ.get("SCALE_PG_URL", "postgres://postgres@127.0.0.1:5432/flowsite_scale")
REDIS_URL = os.environ.get("SCALE_REDIS_URL", "redis://127.0.0.1:6379/7")

WIDE = '''
import time

from flowsite import FlowSpec, step


class WideFlow(FlowSpec):
    """A foreach of {width} tasks that each sleep {sleep} s."""

    @step
    def start(self):
        self.items = list(range({width}))
        self.next(self.work, foreach="items")

    @step
    def work(self):
        if {sleep}:
            time.sleep({sleep})
        self.value = self.input
        self.next(self.join)

    @step
    def join(self, inputs):
        self.total = sum(item.value for item in inputs)
        self.next(self.end)

    @step
    def end(self):
        print("total", self.total)


if __name__ == "__main__":
    WideFlow()
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def machine() -> dict:
    """Describe the CPU, memory and Python that the numbers were measured on."""
    model = "unknown"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as handle:
        memory_kb = int(handle.readline().split()[1])
    return {"nproc": os.cpu_count(), "cpu": model, "ram_gb": round(memory_kb / 1024**2, 1),
            "python": platform.python_version()}


class Stack:
    """gunicorn and N single-process Celery workers on a private database and port."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "FLOWSITE_VAR_DIR": str(folder / "web-var"),
            # One storage folder for all processes, in place of object storage.
            "FLOWSITE_STORAGE_DIR": str(folder / "storage"),
            "FLOWSITE_API_URL": self.url,
            "DATABASE_URL": PG_URL,
            "CELERY_BROKER_URL": REDIS_URL,
            "DJANGO_SETTINGS_MODULE": "flowsite.settings",
            "PYTHONPATH": str(ROOT),
            "LOG_LEVEL": "WARNING",
        }
        self.web: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []

    def prepare(self) -> str:
        """Reset the database and broker, migrate, and return a token for user 'bench'."""
        name = PG_URL.rsplit("/", 1)[1]
        admin = PG_URL.rsplit("/", 1)[0] + "/postgres"
        for sql in (f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"):
            subprocess.run(["psql", admin, "-q", "-c", sql], check=True, timeout=60,
                           capture_output=True)
        subprocess.run(["redis-cli", "-u", REDIS_URL, "FLUSHDB"], check=True, timeout=30,
                       capture_output=True)
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                       cwd=ROOT, env=self.env, check=True, timeout=300)
        script = (
            "from django.contrib.auth import get_user_model; "
            "from tokens.models import ApiToken; "
            "user, _ = get_user_model().objects.get_or_create(username='bench'); "
            "print(ApiToken.issue(user=user, name='bench')[1])"
        )
        result = subprocess.run([sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT,
                                env=self.env, check=True, timeout=120, capture_output=True,
                                text=True)
        return result.stdout.strip().splitlines()[-1]

    def start_web(self) -> None:
        self.web = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "flowsite.wsgi", "-b", f"127.0.0.1:{self.port}",
             "-w", "2", "--threads", "4"],
            cwd=ROOT, env=self.env, start_new_session=True,
            stdout=open(self.folder / "web.log", "w"), stderr=subprocess.STDOUT,
        )

    def start_workers(self, count: int) -> None:
        logs = []
        for index in range(count):
            name = f"scale{index}"
            env = {**self.env, "FLOWSITE_VAR_DIR": str(self.folder / name / "var"),
                   "FLOWSITE_WORK_DIR": str(self.folder / name / "work")}
            # The web process generated no key file for the workers, so all share this one.
            env["SECRET_KEY"] = self.env["SECRET_KEY"]
            log = self.folder / f"{name}-{count}.log"
            logs.append(log)
            self.workers.append(subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "flowsite.celery_app", "worker",
                 "-l", "info", "-c", "1", "-n", f"{name}@%h", "-Q", "default",
                 "--without-gossip", "--without-mingle", "--without-heartbeat"],
                cwd=ROOT, env=env, start_new_session=True,
                stdout=open(log, "w"), stderr=subprocess.STDOUT,
            ))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if all(" ready." in log.read_text() for log in logs):
                return
            if any(process.poll() is not None for process in self.workers):
                break
            time.sleep(0.2)
        raise RuntimeError(f"workers did not start; see {self.folder}")

    def stop_workers(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.workers:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.workers = []

    def stop(self) -> None:
        self.stop_workers()
        if self.web and self.web.poll() is None:
            os.killpg(self.web.pid, signal.SIGTERM)
            self.web.wait(timeout=30)


def run_flow(stack: Stack, token: str, width: int, sleep: float, timeout: float) -> dict:
    """Run the wide flow once through the CLI and return its numbers from the database."""
    from django.db.models import Avg, Count, F, Max, Min

    from runs.models import Run, Task

    flow_dir = stack.folder / "flows" / f"w{width}-s{sleep:g}"
    flow_dir.mkdir(parents=True, exist_ok=True)
    (flow_dir / "wide_flow.py").write_text(WIDE.format(width=width, sleep=sleep))
    env = {key: value for key, value in stack.env.items()
           if key not in ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE")}
    env.update({"FLOWSITE_URL": stack.url, "FLOWSITE_TOKEN": token,
                "FLOWSITE_HOME": str(stack.folder / "home")})
    began = time.perf_counter()
    result = subprocess.run([sys.executable, "wide_flow.py", "run"], cwd=flow_dir, env=env,
                            capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - began
    if result.returncode != 0:
        raise RuntimeError(f"the run failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")

    run = Run.objects.filter(flow__name="WideFlow").order_by("-id").first()
    tasks = Task.objects.filter(run=run).aggregate(
        count=Count("id"), first_start=Min("started_at"), last_end=Max("finished_at"),
        mean=Avg(F("finished_at") - F("started_at")),
    )
    run_seconds = (run.finished_at - run.created_at).total_seconds()
    return {
        "status": run.status,
        "wall_seconds": wall,
        "run_seconds": run_seconds,
        "tasks": tasks["count"],
        "mean_task_seconds": tasks["mean"].total_seconds(),
        "hosts": Task.objects.filter(run=run).values("worker_host").distinct().count(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=500, help="Foreach tasks (default 500).")
    parser.add_argument("--workers", default="1,2,4",
                        help="Comma-separated worker process counts (default 1,2,4).")
    parser.add_argument("--sleeps", default="0,1",
                        help="Comma-separated seconds each foreach task sleeps (default 0,1).")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="Seconds one run may take before the script gives up.")
    args = parser.parse_args()
    worker_counts = [int(value) for value in args.workers.split(",")]
    sleeps = [float(value) for value in args.sleeps.split(",")]

    RESULTS.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="scale-", dir=RESULTS))
    stack = Stack(folder)
    stack.env["SECRET_KEY"] = os.urandom(32).hex()
    token = stack.prepare()
    os.environ.update({"DATABASE_URL": PG_URL, "CELERY_BROKER_URL": REDIS_URL,
                       "FLOWSITE_VAR_DIR": str(folder / "bench-var"),
                       "SECRET_KEY": stack.env["SECRET_KEY"],
                       "DJANGO_SETTINGS_MODULE": "flowsite.settings"})
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()

    report = {"machine": machine(), "width": args.width, "rows": []}
    stack.start_web()
    try:
        for count in worker_counts:
            stack.start_workers(count)
            try:
                for sleep in sleeps:
                    load = load_average()
                    row = run_flow(stack, token, args.width, sleep, args.timeout)
                    row.update({"workers": count, "sleep": sleep, "load_before": load})
                    row["tasks_per_second"] = row["tasks"] / row["run_seconds"]
                    row["overhead_per_task"] = (
                        row["run_seconds"] * count - args.width * sleep) / row["tasks"]
                    report["rows"].append(row)
                    print(json.dumps(row), flush=True)
            finally:
                stack.stop_workers()
    finally:
        stack.stop()
        (folder / "report.json").write_text(json.dumps(report, indent=2))

    info = report["machine"]
    print(f"\nMachine: {info['nproc']} CPUs ({info['cpu']}), {info['ram_gb']} GB RAM, "
          f"Python {info['python']}. Foreach width {args.width}.")
    print("| Step sleep | Workers | Tasks | Run time | Tasks/s | Overhead/task | "
          "Mean task | Speed-up | Load before |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    base = {}
    for row in report["rows"]:
        base.setdefault(row["sleep"], row["run_seconds"])
        print(f"| {row['sleep']:g} s | {row['workers']} | {row['tasks']} | "
              f"{row['run_seconds']:.1f} s | {row['tasks_per_second']:.2f} | "
              f"{row['overhead_per_task']:.3f} s | {row['mean_task_seconds']:.3f} s | "
              f"{base[row['sleep']] / row['run_seconds']:.2f}x | {row['load_before']} |")
    print(f"Raw numbers: {folder / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
