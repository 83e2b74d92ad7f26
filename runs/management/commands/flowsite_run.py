"""Start the web server and one Celery worker (with its beat scheduler) together."""

import os
import signal
import socket
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def _wait_for_port(addr: str, processes, timeout: float) -> None:
    host, _, port = addr.rpartition(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and all(p.poll() is None for p in processes):
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)


class Command(BaseCommand):
    help = "Run the web server and a worker on this machine; Ctrl-C stops both."

    def add_arguments(self, parser):
        parser.add_argument("--addr", default=os.environ.get("FLOWSITE_ADDR", "127.0.0.1:8000"))
        parser.add_argument("--concurrency", type=int, default=2,
                            help="Worker processes, each running one step at a time.")

    def handle(self, *args, addr, concurrency, **options):
        env = dict(os.environ)
        env.setdefault("FLOWSITE_API_URL", f"http://{addr}")
        beat_schedule = str(settings.VAR_DIR / "celerybeat-schedule")
        commands = [
            [sys.executable, "manage.py", "runserver", addr, "--noreload"],
            [sys.executable, "-m", "celery", "-A", "flowsite.celery_app", "worker", "-B",
             "-s", beat_schedule, "-l", "info", "-c", str(concurrency), "-n", "local@%h",
             "--without-gossip", "--without-mingle"],
        ]
        # The children run in their own sessions, so a terminal's Ctrl-C reaches only this
        # process; SIGTERM takes the same path, so neither leaves the children running.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        processes = [subprocess.Popen(cmd, env=env, start_new_session=True) for cmd in commands]
        # Print the URL once the web server accepts connections, so the suggested command
        # works straight away.
        _wait_for_port(addr, processes, timeout=30)
        self.stdout.write(self.style.SUCCESS(
            f"Flowsite is running at http://{addr}/ (database: "
            f"{settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}, broker: "
            f"{settings.CELERY_BROKER_URL.split('://')[0]}). Press Ctrl-C to stop.\n"
            "Try: python examples/current_flow.py run"
        ))
        try:
            while all(process.poll() is None for process in processes):
                time.sleep(0.5)
            self.stderr.write("A process exited; stopping the others.")
        except KeyboardInterrupt:
            self.stdout.write("\nStopping...")
        finally:
            for process in processes:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
