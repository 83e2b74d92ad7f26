"""The Celery application: `celery -A flowsite.celery_app worker`."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flowsite.settings")

app = Celery("flowsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["runs"])


# Note: the sweep runs wherever a beat scheduler runs (`celery worker -B`, as `make run`
# does, or `celery beat`). Without one, lost tasks stay "running" forever.
from django.conf import settings  # noqa: E402

app.conf.beat_schedule = {
    "flowsite-sweep": {
        "task": "runs.sweep",
        "schedule": float(settings.FLOWSITE_SWEEP_INTERVAL),
        # A sweep that waited longer than one interval is replaced by the next one.
        "options": {
            "queue": settings.FLOWSITE_SWEEP_QUEUE or settings.CELERY_TASK_DEFAULT_QUEUE,
            "expires": float(settings.FLOWSITE_SWEEP_INTERVAL),
        },
    },
}
