"""CLI configuration: the server URL and tokens, from the environment first, then ~/.flowsite."""

from __future__ import annotations

import json
import os
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"


def config_dir() -> Path:
    return Path(os.environ.get("FLOWSITE_HOME", Path.home() / ".flowsite"))


def config_path() -> Path:
    return config_dir() / "config.json"


def _write_private(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def load() -> dict:
    path = config_path()
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError:
        return {}


def save(data: dict) -> None:
    _write_private(config_path(), data)


def server_url() -> str:
    return (os.environ.get("FLOWSITE_URL") or load().get("url") or DEFAULT_URL).rstrip("/")


def api_token() -> str | None:
    return os.environ.get("FLOWSITE_TOKEN") or load().get("token")


def production_tokens_path() -> Path:
    return config_dir() / "production_tokens.json"


def production_token_load(flow_name: str) -> str | None:
    path = production_tokens_path()
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text()).get(flow_name)
    except ValueError:
        return None


def production_token_save(flow_name: str, token: str) -> None:
    path = production_tokens_path()
    data = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except ValueError:
            data = {}
    data[flow_name] = token
    _write_private(path, data)
