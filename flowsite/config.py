"""Read settings from environment variables and fail loudly on bad values."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


class ConfigError(RuntimeError):
    """A setting from the environment is invalid."""


def var_dir() -> Path:
    path = Path(os.environ.get("FLOWSITE_VAR_DIR", BASE_DIR / "var")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(
        f"{name}={raw!r} is not a boolean. Set it to one of 1, 0, true, false, yes, no."
    )


def env_int(name: str, default: int, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer.") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}.")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def secret_key() -> str:
    """Return SECRET_KEY, generating one into var/ on first start when it is unset."""
    key = os.environ.get("SECRET_KEY", "")
    if key:
        if len(key) < 32:
            raise ConfigError("SECRET_KEY must be at least 32 characters long.")
        return key
    path = var_dir() / "secret_key"
    if not path.exists():
        # O_EXCL makes concurrent first starts (web and worker) agree on one key.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(50))
    for _ in range(50):
        key = path.read_text().strip()
        if key:
            return key
        import time

        time.sleep(0.05)
    raise ConfigError(f"{path} is empty. Delete it or set SECRET_KEY.")


def database_config() -> dict:
    import dj_database_url

    url = os.environ.get("DATABASE_URL", "")
    if not url:
        config = {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(var_dir() / "flowsite.sqlite3"),
        }
    else:
        try:
            config = dj_database_url.parse(url, conn_max_age=60)
        except Exception as exc:  # dj_database_url raises several types
            raise ConfigError(
                f"DATABASE_URL is invalid ({exc}). Use postgres://USER@HOST:PORT/NAME "
                "or sqlite:///PATH."
            ) from None
        if not config.get("ENGINE"):
            raise ConfigError(f"DATABASE_URL scheme is not supported: {url.split(':')[0]}")
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # WAL lets readers proceed while one writer commits, and the busy timeout
        # makes the web server and workers wait for the write lock instead of failing.
        config["OPTIONS"] = {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
        config.setdefault("TEST", {})["NAME"] = str(var_dir() / "test.sqlite3")
    return config


def broker_url() -> str:
    url = os.environ.get("CELERY_BROKER_URL", "")
    if not url:
        return "filesystem://"
    scheme = url.split("://", 1)[0]
    if scheme not in ("redis", "rediss", "filesystem", "amqp", "memory"):
        raise ConfigError(
            f"CELERY_BROKER_URL has an unsupported scheme {scheme!r}. "
            "Use redis://HOST:PORT/DB, or leave it unset for the embedded broker."
        )
    return url


def artifact_storage(env, var: Path) -> dict:
    """Build the "artifacts" entry of STORAGES from FLOWSITE_STORAGE and its variables.

    Tests call this with their own mapping to point the web process at a test bucket.
    """
    kind = env.get("FLOWSITE_STORAGE", "local")
    if kind == "local":
        return {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": env.get("FLOWSITE_STORAGE_DIR") or str(var / "storage")},
        }
    if kind != "s3":
        raise ConfigError(f"FLOWSITE_STORAGE={kind!r} is not supported. Use 'local' or 's3'.")
    bucket = env.get("FLOWSITE_S3_BUCKET", "")
    if not bucket:
        raise ConfigError(
            "FLOWSITE_STORAGE=s3 needs FLOWSITE_S3_BUCKET, the name of an existing bucket."
        )
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": bucket,
            "location": env.get("FLOWSITE_S3_PREFIX", "flowsite"),
            # Unset means AWS itself; set it for MinIO, Ceph, R2 or a test server.
            "endpoint_url": env.get("FLOWSITE_S3_ENDPOINT_URL") or None,
            "region_name": env.get("FLOWSITE_S3_REGION") or None,
            # Unset keys let boto3 find credentials itself (instance role, ~/.aws).
            "access_key": env.get("AWS_ACCESS_KEY_ID") or None,
            "secret_key": env.get("AWS_SECRET_ACCESS_KEY") or None,
            # Keys are content hashes, so writing the same key again writes the same bytes.
            "file_overwrite": True,
            "default_acl": None,
            "querystring_auth": False,
        },
    }
