"""Loaded with `-p tests.bootstrap` before pytest-django reads the settings, so the
test process and the worker it starts share one fresh folder and one server address."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Everything the test session writes (SQLite file, broker folder, artifacts, secret key)
# goes to a fresh folder, shared by the test process and the worker it starts.
VAR = Path(tempfile.mkdtemp(prefix="flowsite-test-"))
os.environ["FLOWSITE_VAR_DIR"] = str(VAR)
os.environ.setdefault("FLOWSITE_WORK_DIR", str(VAR / "work"))
_PORT = _free_port()
os.environ["DJANGO_LIVE_TEST_SERVER_ADDRESS"] = f"127.0.0.1:{_PORT}"
os.environ["FLOWSITE_API_URL"] = f"http://127.0.0.1:{_PORT}"
os.environ.setdefault("FLOWSITE_HEARTBEAT_INTERVAL", "1")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flowsite.settings")

