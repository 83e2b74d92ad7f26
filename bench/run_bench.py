"""Whole-run wall time of two flows on Flowsite (both backends) and on Metaflow's local runtime.

Usage, from the repository root:

    python3 -m venv bench/.metaflow-venv && bench/.metaflow-venv/bin/pip install metaflow
    .venv/bin/python bench/run_bench.py [--repeat 3] [--concurrency 2]

For each Flowsite backend the script starts its own gunicorn server and one Celery
worker on a free loopback port, with a fresh folder under bench/results/. SQLite uses
the filesystem broker; PostgreSQL uses database flowsite_bench and Redis db 8 (set
BENCH_PG_URL and BENCH_REDIS_URL to change them). Each flow runs once to warm up and
then --repeat times; the table shows the median wall time of `python flow.py run`, as
a user sees it. Every subprocess has a timeout, so the script always ends.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
METAFLOW_PYTHON = ROOT / "bench" / ".metaflow-venv" / "bin" / "python"
PG_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/flowsite_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8")
RUN_TIMEOUT = 300

LINEAR = '''
from {package} import FlowSpec, step


class LinearFlow(FlowSpec):
    """Ten steps in a line, each storing one small artifact."""

    @step
    def start(self):
        self.count = 0
        self.next(self.s1)
{middle}
    @step
    def end(self):
        print("count", self.count)


if __name__ == "__main__":
    LinearFlow()
'''

MIDDLE_STEP = '''
    @step
    def s{index}(self):
        self.count += 1
        self.next(self.{target})
'''

FOREACH = '''
from {package} import FlowSpec, step


class ForeachFlow(FlowSpec):
    """One split into 50 tasks, a join, and the end: 53 tasks."""

    @step
    def start(self):
        self.items = list(range(50))
        self.next(self.square, foreach="items")

    @step
    def square(self):
        self.value = self.input * self.input
        self.next(self.join)

    @step
    def join(self, inputs):
        self.total = sum(item.value for item in inputs)
        self.next(self.end)

    @step
    def end(self):
        print("total", self.total)


if __name__ == "__main__":
    ForeachFlow()
'''

FLOWS = {"LinearFlow": 10, "ForeachFlow": 53}  # flow name -> number of tasks


def flow_source(name: str, package: str) -> str:
    if name == "ForeachFlow":
        return FOREACH.format(package=package)
    steps = []
    for index in range(1, 9):
        target = f"s{index + 1}" if index < 8 else "end"
        steps.append(MIDDLE_STEP.format(index=index, target=target))
    return LINEAR.format(package=package, middle="".join(steps))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def machine() -> dict:
    model = "unknown"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as handle:
        mem_kb = int(handle.readline().split()[1])
    return {"nproc": os.cpu_count(), "cpu": model, "ram_gb": round(mem_kb / 1024 / 1024, 1),
            "python": platform.python_version()}


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def timed(command: list[str], *, cwd: Path, env: dict) -> float:
    """Run the command and return its wall time in seconds; raise on failure."""
    began = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=RUN_TIMEOUT)
    elapsed = time.perf_counter() - began
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
        )
    return elapsed


class FlowsiteStack:
    """A gunicorn server and one Celery worker on a private folder, port and database."""

    def __init__(self, backend: str, folder: Path, concurrency: int):
        self.backend = backend
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ)
        self.env.update({
            "FLOWSITE_VAR_DIR": str(folder / "var"),
            "FLOWSITE_API_URL": self.url,
            "DJANGO_SETTINGS_MODULE": "flowsite.settings",
            "PYTHONPATH": str(ROOT),
        })
        for key in ("DATABASE_URL", "CELERY_BROKER_URL"):
            self.env.pop(key, None)
        if backend == "postgres":
            self.env["DATABASE_URL"] = PG_URL
            self.env["CELERY_BROKER_URL"] = REDIS_URL
        self.concurrency = concurrency
        self.processes: list[subprocess.Popen] = []

    def manage(self, *args: str) -> str:
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env,
                                capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    def prepare(self) -> str:
        """Reset the database, migrate, and return an API token for user 'bench'."""
        if self.backend == "postgres":
            name = PG_URL.rsplit("/", 1)[1]
            admin = PG_URL.rsplit("/", 1)[0] + "/postgres"
            for sql in (f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"):
                subprocess.run(["psql", admin, "-q", "-c", sql], check=True, timeout=60,
                               capture_output=True)
            subprocess.run(["redis-cli", "-u", REDIS_URL, "FLUSHDB"], check=True, timeout=30,
                           capture_output=True)
        self.manage("migrate", "--noinput", "-v", "0")
        script = (
            "from django.contrib.auth import get_user_model; "
            "from tokens.models import ApiToken; "
            "user, _ = get_user_model().objects.get_or_create(username='bench'); "
            "print(ApiToken.issue(user=user, name='bench')[1])"
        )
        return self.manage("shell", "-c", script).strip().splitlines()[-1]

    def start(self) -> None:
        logs = self.folder / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        commands = {
            "web": [sys.executable, "-m", "gunicorn", "flowsite.wsgi", "-b",
                    f"127.0.0.1:{self.port}", "-w", "2", "--threads", "4",
                    "--access-logfile", "-"],
            "worker": [sys.executable, "-m", "celery", "-A", "flowsite.celery_app", "worker",
                       "-l", "info", "-c", str(self.concurrency), "-n", "bench@%h",
                       "--without-gossip", "--without-mingle"],
        }
        for name, command in commands.items():
            self.processes.append(subprocess.Popen(
                command, cwd=ROOT, env=self.env, start_new_session=True,
                stdout=open(logs / f"{name}.log", "w"), stderr=subprocess.STDOUT,
            ))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            worker_log = (logs / "worker.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    web_up = True
            except OSError:
                web_up = False
            if web_up and " ready." in worker_log:
                return
            if any(process.poll() is not None for process in self.processes):
                break
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the {self.backend} stack did not start; see {logs}")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes = []


class System:
    """One column of the table: how to run a flow file, and where."""

    def __init__(self, label: str, folder: Path, python: str, package: str, env: dict,
                 run_args: list[str], stack: FlowsiteStack | None = None):
        self.label = label
        self.folder = folder
        self.python = python
        self.package = package
        self.env = env
        self.run_args = run_args
        self.stack = stack

    def flow_dir(self, name: str) -> Path:
        path = self.folder / "flows" / name
        if not path.exists():
            path.mkdir(parents=True)
            (path / "flow.py").write_text(flow_source(name, self.package))
        return path

    def run(self, name: str) -> float:
        return timed([self.python, "flow.py", *self.run_args], cwd=self.flow_dir(name),
                      env=self.env)


def flowsite_system(label: str, backend: str, folder: Path, concurrency: int) -> System:
    stack = FlowsiteStack(backend, folder, concurrency)
    token = stack.prepare()
    stack.start()
    env = dict(stack.env)
    env.update({"FLOWSITE_URL": stack.url, "FLOWSITE_TOKEN": token,
                "FLOWSITE_HOME": str(folder / "home")})
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return System(label, folder, sys.executable, "flowsite", env, ["run"], stack)


def metaflow_system(folder: Path) -> System:
    version = subprocess.run(
        [str(METAFLOW_PYTHON), "-c", "import metaflow; print(metaflow.__version__)"],
        capture_output=True, text=True, timeout=60,
    ).stdout.strip()
    env = dict(os.environ)
    for key in ("DATABASE_URL", "CELERY_BROKER_URL", "PYTHONPATH"):
        env.pop(key, None)
    env.update({
        "METAFLOW_HOME": str(folder / "home"),
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(folder / "datastore"),
        "METAFLOW_USER": "bench",
        "USERNAME": "bench",
    })
    return System(f"Metaflow {version} local runtime", folder, str(METAFLOW_PYTHON),
                  "metaflow", env, ["--no-pylint", "run"])


def bench(systems: list[System], repeat: int) -> dict:
    """Time every flow on every system, interleaved, so that load from other
    processes on the machine falls on all columns alike."""
    times = {system.label: {name: [] for name in FLOWS} for system in systems}
    for name in FLOWS:
        for system in systems:
            system.run(name)  # warm-up: imports, code package cache, datastore folders
    for _ in range(repeat):
        for name in FLOWS:
            for system in systems:
                times[system.label][name].append(system.run(name))
    return times


def table(rows: dict, repeat: int) -> str:
    lines = [
        "| Flow (tasks) | " + " | ".join(rows) + " |",
        "|---|" + "---:|" * len(rows),
    ]
    for name, tasks in FLOWS.items():
        cells = [f"{statistics.median(times[name]):.2f} s" for times in rows.values()]
        lines.append(f"| {name} ({tasks}) | " + " | ".join(cells) + " |")
    for name, tasks in FLOWS.items():
        cells = [f"{statistics.median(times[name]) / tasks:.3f} s"
                 for times in rows.values()]
        lines.append(f"| {name}: wall time / task | " + " | ".join(cells) + " |")
    lines.append(f"\nMedian of {repeat} runs after one warm-up run each.")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="Timed runs per flow (default 3).")
    parser.add_argument("--concurrency", type=int, default=2,
                        help="Celery worker processes of the one Flowsite worker (default 2).")
    parser.add_argument("--skip", action="append", default=[],
                        choices=["sqlite", "postgres", "metaflow"],
                        help="Leave out one column; repeatable.")
    args = parser.parse_args()
    if "metaflow" not in args.skip and not METAFLOW_PYTHON.exists():
        print(f"Error: {METAFLOW_PYTHON} is missing. Create it with: python3 -m venv "
              "bench/.metaflow-venv && bench/.metaflow-venv/bin/pip install metaflow",
              file=sys.stderr)
        return 1

    RESULTS.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="flows-", dir=RESULTS))
    report = {"machine": machine(), "load_before": load_average(), "columns": {}}
    systems: list[System] = []
    columns = {}
    try:
        if "sqlite" not in args.skip:
            systems.append(flowsite_system("Flowsite, SQLite + filesystem broker", "sqlite",
                                           folder / "sqlite", args.concurrency))
        if "postgres" not in args.skip:
            systems.append(flowsite_system("Flowsite, PostgreSQL + Redis", "postgres",
                                           folder / "postgres", args.concurrency))
        if "metaflow" not in args.skip:
            systems.append(metaflow_system(folder / "metaflow"))
        columns = bench(systems, args.repeat)
    finally:
        for system in systems:
            if system.stack is not None:
                system.stack.stop()
        report["load_after"] = load_average()
        report["columns"] = columns
        (folder / "report.json").write_text(json.dumps(report, indent=2))

    info = report["machine"]
    print(f"Machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram_gb']} GB RAM, "
          f"Python {info['python']}. Load average before: {report['load_before']}, "
          f"after: {report['load_after']}.")
    print(table(columns, args.repeat))
    print(f"Raw times: {folder / 'report.json'}")
    shutil.rmtree(folder / "sqlite" / "var", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
