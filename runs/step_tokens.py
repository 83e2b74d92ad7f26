"""Short-lived tokens that let a running step read the client API as its run's user."""

from __future__ import annotations

from django.core import signing
from rest_framework import exceptions

SALT = "flowsite.step-token"
MAX_AGE_SECONDS = 7 * 24 * 3600


def make_step_token(run) -> str:
    user_id = run.user_id
    if user_id is None and run.deployment_id is not None:
        user_id = run.deployment.deployed_by_id
    return "task." + signing.dumps({"run": run.id, "user": user_id}, salt=SALT)


def user_for_step_token(raw: str):
    from django.contrib.auth import get_user_model

    try:
        payload = signing.loads(raw[len("task."):], salt=SALT, max_age=MAX_AGE_SECONDS)
    except signing.BadSignature:
        raise exceptions.AuthenticationFailed("Step token rejected: invalid or expired.")
    user = get_user_model().objects.filter(pk=payload.get("user"), is_active=True).first()
    if user is None:
        raise exceptions.AuthenticationFailed("Step token rejected: its user is gone.")
    return user, {"step_run": payload.get("run")}
