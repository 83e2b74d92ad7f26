"""Django settings for Flowsite, read from environment variables with embedded defaults."""

from __future__ import annotations

import os

from flowsite import config

BASE_DIR = config.BASE_DIR
VAR_DIR = config.var_dir()

SECRET_KEY = config.secret_key()
DEBUG = config.env_bool("DEBUG", False)
ALLOWED_HOSTS = config.env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = config.env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "template_partials",
    "django_celery_beat",
    "tokens",
    "runs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "flowsite.middleware.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "flowsite.urls"
WSGI_APPLICATION = "flowsite.wsgi.application"
ASGI_APPLICATION = "flowsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "runs.context_processors.namespace",
            ],
        },
    },
]

DATABASES = {"default": config.database_config()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "runs:list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"

# Artifacts, logs and code packages go through the "artifacts" storage alias only,
# so workers and the web server never need a shared disk.
ARTIFACT_STORAGE = os.environ.get("FLOWSITE_STORAGE", "local")
_artifact_backend = config.artifact_storage(os.environ, VAR_DIR)

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "artifacts": _artifact_backend,
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = True
WHITENOISE_MANIFEST_STRICT = False

# Largest code package a client may upload, in bytes.
FLOWSITE_MAX_PACKAGE_BYTES = config.env_int(
    "FLOWSITE_MAX_PACKAGE_BYTES", 20 * 1024 * 1024, minimum=1024
)
# URL that step processes use to reach this server's API.
FLOWSITE_API_URL = os.environ.get("FLOWSITE_API_URL", "http://127.0.0.1:8000")
# Seconds without a heartbeat after which a running task is marked failed.
FLOWSITE_HEARTBEAT_TIMEOUT = config.env_int("FLOWSITE_HEARTBEAT_TIMEOUT", 120, minimum=5)
FLOWSITE_HEARTBEAT_INTERVAL = config.env_int("FLOWSITE_HEARTBEAT_INTERVAL", 5, minimum=1)
# Seconds between two runs of the sweep (runs.sweep on Celery beat), which fails
# tasks whose heartbeat stopped and queues again tasks the broker never took.
FLOWSITE_SWEEP_INTERVAL = config.env_int("FLOWSITE_SWEEP_INTERVAL", 30, minimum=1)
# Queue that receives the sweep; empty means the default queue. A worker that
# consumes it must be running, or lost tasks are never failed.
FLOWSITE_SWEEP_QUEUE = os.environ.get("FLOWSITE_SWEEP_QUEUE", "")
FLOWSITE_WORK_DIR = os.environ.get("FLOWSITE_WORK_DIR", str(VAR_DIR / "work"))
# When set, deployed schedules fire every this many seconds instead of on their cron
# expression; for tests and demos, never for production.
FLOWSITE_SCHEDULE_EVERY_SECONDS = config.env_int("FLOWSITE_SCHEDULE_EVERY_SECONDS", 0)

# Celery. The embedded default is kombu's filesystem transport under var/broker.
CELERY_BROKER_URL = config.broker_url()
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's filesystem transport with a short drain timeout; see flowsite/broker.py.
    CELERY_BROKER_TRANSPORT = "flowsite.broker:FilesystemTransport"
    _broker_dir = VAR_DIR / "broker"
    (_broker_dir / "processed").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "processed_folder": str(_broker_dir / "processed"),
        # kombu's default is ./control, which would litter the folder the process starts in.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        # The default of one second would add up to a second to every task hand-off.
        "polling_interval": 0.05,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Unacknowledged tasks return to the queue after this many seconds when
        # their worker vanished. Steps longer than this could run twice, which
        # the claim in runs.execution prevents.
        "visibility_timeout": config.env_int("FLOWSITE_VISIBILITY_TIMEOUT", 3600, 10),
    }
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
# Steps without @resources(queue=...) go to this queue. Two installations that share
# one Redis database keep apart by giving each its own default queue.
FLOWSITE_DEFAULT_QUEUE = os.environ.get("FLOWSITE_DEFAULT_QUEUE", "default")
CELERY_TASK_DEFAULT_QUEUE = FLOWSITE_DEFAULT_QUEUE
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_TIMEOUT = 5
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.2}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tokens.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "runs.api.errors.exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "login": os.environ.get("FLOWSITE_LOGIN_RATE", "20/min"),
        "token_create": os.environ.get("FLOWSITE_TOKEN_CREATE_RATE", "20/min"),
        "production_token": os.environ.get("FLOWSITE_TOKEN_RATE", "10/min"),
    },
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Flowsite API",
    "DESCRIPTION": "Runs, steps, tasks, artifacts, logs, tags and namespaces.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI's files come from drf-spectacular-sidecar, so /api/v1/docs works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "runs.api.schema_hooks.document_pages_and_errors",
    ],
}

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
if os.environ.get("REDIS_CACHE_URL"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["REDIS_CACHE_URL"],
        }
    }

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if config.env_bool("FLOWSITE_HTTPS", False):
    SECURE_SSL_REDIRECT = True
    SECURE_HSTS_SECONDS = 31536000
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
