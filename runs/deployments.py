"""Services that write deployments: deploy, authorize with production tokens, trigger
production runs, keep Celery beat schedules in step, and record the audit log.

The person who made the previous deployment may change it, and so may anyone presenting
the current production token. Staff may also trigger, pause, resume and delete (on the
dashboard or through the API), and only staff issue new tokens or reset the namespace.
The production namespace name is public, and the token is the secret.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import logging
import platform
import re
import secrets
import string

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone

from runs import services
from runs import tags as tag_rules
from runs.errors import Conflict, Forbidden, NotFound, ServiceError, ValidationFailed
from runs.models import Deployment, DeploymentEvent, Flow, Run, RunTag, Status

logger = logging.getLogger(__name__)

Action = DeploymentEvent.Action
PRODUCTION_PREFIX = "production:"
TOKEN_HEADER = "X-Production-Token"
SCHEDULE_TASK = "runs.deployment_trigger_scheduled"
NAMESPACE_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits
CRON_PRESETS = {"hourly": "0 * * * *", "daily": "0 0 * * *"}
ACTIVE = (Status.PENDING, Status.RUNNING)


class ProductionTokenRejected(Forbidden):
    """A change to a deployment requested by someone who is neither its last deployer
    nor presents its current production token."""

    code = "production_token_required"


class TooManyTokenFailures(ServiceError):
    status = 429
    code = "throttled"


# ---------------------------------------------------------------- tokens


def token_new() -> str:
    return secrets.token_urlsafe(24)


def token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def token_normalize(raw: str | None) -> str:
    """Strip whitespace and an optional `production:` prefix, which Metaflow users type."""
    value = (raw or "").strip()
    if value.startswith(PRODUCTION_PREFIX):
        value = value[len(PRODUCTION_PREFIX):]
    return value


def token_matches(deployment: Deployment, raw: str) -> bool:
    return bool(raw) and hmac.compare_digest(deployment.token_hash, token_hash(raw))


def _failure_limit() -> tuple[int, int]:
    """Return (failures allowed, window in seconds) from the production_token rate."""
    rate = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["production_token"]
    count, _, period = rate.partition("/")
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400}[period[:1]]
    return int(count), seconds


def _failure_key(user) -> str:
    return f"flowsite:production-token-failures:{user.pk}"


def token_throttle_check(user) -> None:
    """Reject any token from an account that sent too many wrong ones recently, so a
    token cannot be guessed by trying many values."""
    limit, window = _failure_limit()
    failures = cache.get(_failure_key(user), 0)
    if failures >= limit:
        logger.warning("production token attempts by %s throttled after %s failures",
                       user.username, failures)
        raise TooManyTokenFailures(
            f"Too many wrong production tokens from {user.username}: {failures} within "
            f"{window} seconds. Wait {window} seconds, then retry with the right token.",
        )


def token_failure_record(user) -> None:
    # NOTE: with the default local-memory cache each server process counts on its own;
    # set REDIS_CACHE_URL so all processes share one count.
    _, window = _failure_limit()
    key = _failure_key(user)
    cache.add(key, 0, timeout=window)
    try:
        cache.incr(key)
    except ValueError:  # the entry expired between add() and incr()
        cache.set(key, 1, timeout=window)


# ---------------------------------------------------------------- namespaces and schedules


def namespace_new(flow_name: str, generation: int) -> str:
    """Return an unused name such as production:predictionflow-0-k3x9."""
    base = re.sub(r"[^a-z0-9]+", "", flow_name.lower())[:60] or "flow"
    for _ in range(20):
        suffix = "".join(secrets.choice(NAMESPACE_SUFFIX_ALPHABET) for _ in range(4))
        name = f"{PRODUCTION_PREFIX}{base}-{generation}-{suffix}"
        taken = (
            Deployment.objects.filter(namespace=name).exists()
            or RunTag.objects.filter(name=name).exists()
        )
        if not taken:
            return name
    raise ServiceError(
        f"No unused production namespace found for {flow_name} after 20 tries; retry."
    )


def schedule_from_graph(graph: dict) -> str:
    """Return the cron expression of the flow's @schedule decorator, or "" without one."""
    options = graph.get("class_decorators", {}).get("schedule")
    if options is None:
        return ""
    chosen = [key for key in ("cron", "hourly", "daily") if options.get(key)]
    unknown = sorted(set(options) - {"cron", "hourly", "daily"})
    if unknown or len(chosen) != 1:
        raise ValidationFailed(
            f"@schedule got {options!r}. Give exactly one of cron='MIN HOUR DOM MON DOW', "
            "hourly=True or daily=True.",
            code="invalid_schedule",
        )
    if chosen[0] != "cron":
        return CRON_PRESETS[chosen[0]]
    cron = options["cron"]
    fields = cron.split() if isinstance(cron, str) else []
    if len(fields) != 5:
        raise ValidationFailed(
            f"@schedule(cron={cron!r}) is not a five-field cron expression "
            "(minute hour day-of-month month day-of-week), e.g. '*/15 * * * *'.",
            code="invalid_schedule",
        )
    from celery.schedules import crontab

    try:
        crontab(*fields)
    except (ValueError, KeyError) as exc:
        raise ValidationFailed(
            f"@schedule(cron={cron!r}) is invalid: {exc}. Times are in UTC.",
            code="invalid_schedule",
        ) from None
    return " ".join(fields)


def schedule_sync(deployment: Deployment) -> None:
    """Create, update, enable, disable or delete the beat entry of a deployment.

    Saving through the model (not a queryset update) bumps django-celery-beat's change
    marker, so a running beat process reloads its schedule.
    """
    from django_celery_beat.models import (
        CrontabSchedule,
        IntervalSchedule,
        PeriodicTask,
    )

    name = f"flowsite-deployment:{deployment.flow.name}"
    if not deployment.schedule:
        PeriodicTask.objects.filter(name=name).delete()
        return

    every = settings.FLOWSITE_SCHEDULE_EVERY_SECONDS
    schedules = {"crontab": None, "interval": None, "solar": None, "clocked": None}
    if every:
        schedules["interval"], _ = IntervalSchedule.objects.get_or_create(
            every=every, period=IntervalSchedule.SECONDS
        )
    else:
        minute, hour, day_of_month, month_of_year, day_of_week = deployment.schedule.split()
        schedules["crontab"], _ = CrontabSchedule.objects.get_or_create(
            minute=minute, hour=hour, day_of_month=day_of_month,
            month_of_year=month_of_year, day_of_week=day_of_week, timezone="UTC",
        )
    task = PeriodicTask.objects.filter(name=name).first() or PeriodicTask(name=name)
    for field, value in schedules.items():
        setattr(task, field, value)
    task.task = SCHEDULE_TASK
    task.args = json.dumps([deployment.pk])
    task.enabled = not deployment.paused
    task.description = f"Production runs of {deployment.flow.name} ({deployment.schedule} UTC)"
    task.save()
    if deployment.periodic_task_id != task.pk:
        deployment.periodic_task = task
        deployment.save(update_fields=["periodic_task"])


# ---------------------------------------------------------------- audit log and access


def event_record(*, deployment: Deployment | None, flow_name: str, action: str, user,
                 message: str, namespace: str = "") -> DeploymentEvent:
    return DeploymentEvent.objects.create(
        deployment=deployment,
        flow_name=flow_name,
        namespace=namespace or (deployment.namespace if deployment else ""),
        action=action,
        user=user,
        actor=getattr(user, "username", "") or "system",
        message=message[:2000],
    )


def refusal_message(deployment: Deployment, *, verb: str, token_given: bool) -> str:
    who = deployment.deployed_by.username if deployment.deployed_by else "a deleted user"
    when = deployment.deployed_at.astimezone(datetime.UTC).strftime(
        "%Y-%m-%d %H:%M UTC"
    )
    reason = (
        "The production token given is not the current one (an admin may have issued "
        "a new one). "
        if token_given
        else "No production token was given. "
    )
    return (
        f"{reason}{deployment.flow.name} is deployed to {deployment.namespace}, last by "
        f"{who} at {when}. Only {who} or someone holding the current production token "
        f"can {verb} it. Ask {who} (or an admin) for the token and rerun with "
        "--authorize TOKEN (API clients send it in the X-Production-Token header)."
    )


def access_check(deployment: Deployment, *, user, token: str | None, verb: str,
                 allow_staff: bool) -> None:
    """Raise ProductionTokenRejected unless `user` may change the deployment."""
    raw = token_normalize(token)
    if raw:
        token_throttle_check(user)
    if token_matches(deployment, raw):
        return
    if user is not None and deployment.deployed_by_id == user.pk:
        return
    if allow_staff and getattr(user, "is_staff", False):
        return
    raise ProductionTokenRejected(
        refusal_message(deployment, verb=verb, token_given=bool(raw)),
        details={
            "deployed_by": deployment.deployed_by.username if deployment.deployed_by else None,
            "deployed_at": deployment.deployed_at.isoformat(),
            "namespace": deployment.namespace,
        },
    )


def _refusal_record(deployment: Deployment, user, token: str | None, exc: Exception) -> None:
    """Write the refusal to the audit log after the refused transaction rolled back."""
    event_record(deployment=deployment, flow_name=deployment.flow.name, action=Action.REFUSE,
                 user=user, message=str(exc))
    if token_normalize(token):
        token_failure_record(user)
    logger.warning("deployment change of %s by %s refused", deployment.flow.name,
                   getattr(user, "username", "?"))


# ---------------------------------------------------------------- deploy


def deployment_deploy(
    *,
    user,
    flow_name: str,
    graph: dict,
    flow_file: str,
    package,
    parameter_specs: list[dict],
    tags: list[str],
    client_namespace: str | None,
    token: str | None,
    generate_new_token: bool = False,
) -> tuple[Deployment, str | None]:
    """Create or update a flow's deployment. Return it and the new production token,
    which is None unless one was issued by this call.

    Everything happens in one transaction, so a deploy that fails leaves no namespace,
    token or schedule behind.
    """
    # Validate everything before anything is written.
    services.validate_name(flow_name, "Flow name")
    tags = services.user_tags_validate(tags)
    for tag in tags:
        if tag_rules.is_system_tag(tag):
            raise ValidationFailed(
                f"The tag {tag!r} uses a system prefix; production runs get their "
                "system tags from Flowsite. Choose a tag without that prefix.",
                code="system_tag",
            )
    if len(tags) > tag_rules.MAX_USER_TAGS:
        raise ValidationFailed(
            f"A deployment can have at most {tag_rules.MAX_USER_TAGS} tags; "
            f"{len(tags)} were given.",
            code="too_many_tags",
        )
    for spec in parameter_specs:
        if not isinstance(spec, dict) or "name" not in spec:
            raise ValidationFailed("Each parameter spec needs a name.")
        services.validate_name(spec["name"], "Parameter name")
    schedule = schedule_from_graph(graph)
    unset = [spec["name"] for spec in parameter_specs
             if spec.get("required") and spec.get("default") is None]
    if schedule and unset:
        raise ValidationFailed(
            f"{flow_name} has a schedule, but scheduled runs cannot pass the required "
            f"parameters {', '.join(unset)}. Give them defaults or remove @schedule.",
            code="invalid_schedule",
        )

    existing = None
    try:
        with transaction.atomic():
            flow, _ = Flow.objects.get_or_create(name=flow_name)
            deployment = (
                Deployment.objects.select_for_update(of=("self",))
                .select_related("flow", "deployed_by")
                .filter(flow=flow)
                .first()
            )
            existing = deployment
            raw = None
            now = timezone.now()
            if deployment is None:
                raw = token_new()
                deployment = Deployment(
                    flow=flow, generation=0, namespace=namespace_new(flow_name, 0),
                    token_hash=token_hash(raw), token_issued_at=now,
                )
                message = f"first deployment, namespace {deployment.namespace}"
            else:
                access_check(deployment, user=user, token=token,
                             verb="deploy a new version of", allow_staff=False)
                message = "new version deployed"
                if generate_new_token:
                    old = deployment.namespace
                    raw = token_new()
                    deployment.generation += 1
                    deployment.namespace = namespace_new(flow_name, deployment.generation)
                    deployment.token_hash = token_hash(raw)
                    deployment.token_issued_at = now
                    message = (f"new version deployed to the fresh namespace "
                               f"{deployment.namespace} (was {old}) with a new token")

            deployment.deployed_by = user
            deployment.deployed_at = now
            deployment.code_package = package
            deployment.graph = graph
            deployment.flow_file = flow_file
            deployment.parameter_specs = parameter_specs
            deployment.tags = tags
            deployment.client_namespace = client_namespace or None
            deployment.schedule = schedule
            deployment.save()
            schedule_sync(deployment)
            event_record(deployment=deployment, flow_name=flow_name, action=Action.DEPLOY,
                         user=user, message=message)
    except ProductionTokenRejected as exc:
        _refusal_record(existing, user, token, exc)
        raise
    except IntegrityError:
        # Two first deploys of one flow raced, and the other one created the deployment.
        logger.warning("first deploy of %s by %s lost a race", flow_name, user.username)
        raise Conflict(
            f"{flow_name} was deployed by someone else at the same moment. Rerun the "
            "command; it then follows the rules for an existing deployment.",
            code="deploy_conflict",
        ) from None

    logger.info("%s deployed by %s to %s", flow_name, user.username, deployment.namespace)
    return deployment, raw


# ---------------------------------------------------------------- production runs


def parameters_with_defaults(specs: list[dict], values: dict) -> dict:
    """Fill in declared defaults for parameters that were not given."""
    merged = dict(values)
    for spec in specs:
        if spec["name"] not in merged:
            merged[spec["name"]] = spec.get("default")
    return merged


def parameters_from_text(specs: list[dict], raw: dict[str, str]) -> dict:
    """Convert form text to typed parameter values; empty fields keep their default."""
    values = {}
    for spec in specs:
        name = spec["name"]
        text = (raw.get(name) or "").strip()
        if not text:
            continue
        kind = spec.get("type", "str")
        try:
            if kind == "int":
                values[name] = int(text)
            elif kind == "float":
                values[name] = float(text)
            elif kind == "bool":
                if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError("expected true or false")
                values[name] = text.lower() in ("true", "1", "yes")
            elif kind == "json":
                values[name] = json.loads(text)
            else:
                values[name] = text
        except ValueError as exc:
            raise ValidationFailed(
                f"Parameter {name}: {text[:80]!r} is not a valid {kind} ({exc}).",
                code="invalid_parameter",
            ) from None
    return values


def deployment_run_start(*, deployment: Deployment, parameters: dict, triggered_by: str) -> Run:
    """Start a production run from the deployed code package, with no user: tag."""
    return services.run_create(
        user=None,
        flow_name=deployment.flow.name,
        graph=deployment.graph,
        flow_file=deployment.flow_file,
        package=deployment.code_package,
        parameters=parameters_with_defaults(deployment.parameter_specs, parameters),
        parameter_specs=deployment.parameter_specs,
        user_tags=list(deployment.tags),
        identity_namespace=deployment.namespace,
        runtime="celery",
        python_version=platform.python_version(),
        client_namespace=deployment.client_namespace,
        triggered_by=triggered_by,
        deployment=deployment,
    )


def deployment_trigger(*, deployment: Deployment, user, token: str | None, parameters: dict,
                       via: str = "api") -> Run:
    """Start a production run for a person; `via` is "api" or "user" (the dashboard)."""
    try:
        access_check(deployment, user=user, token=token, verb="trigger", allow_staff=True)
    except ProductionTokenRejected as exc:
        _refusal_record(deployment, user, token, exc)
        raise
    run = deployment_run_start(deployment=deployment, parameters=parameters,
                               triggered_by=f"{via}:{user.username}")
    event_record(deployment=deployment, flow_name=deployment.flow.name, action=Action.TRIGGER,
                 user=user, message=f"run {run.pathspec} started")
    return run


def deployment_trigger_scheduled(deployment_id: int) -> Run | None:
    """Start the run a schedule asked for; skip deployments deleted or paused since."""
    deployment = Deployment.objects.select_related("flow", "code_package").filter(
        pk=deployment_id).first()
    if deployment is None:
        logger.warning("scheduled trigger for deployment %s skipped: it no longer exists",
                       deployment_id)
        return None
    if deployment.paused:
        logger.info("scheduled trigger of %s skipped: schedule paused", deployment.flow.name)
        return None
    try:
        run = deployment_run_start(deployment=deployment, parameters={},
                                   triggered_by="schedule")
    except ServiceError as exc:
        logger.error("scheduled run of %s (deployment %s) not started: %s",
                     deployment.flow.name, deployment_id, exc)
        return None
    logger.info("schedule started run %s in %s", run.pathspec, deployment.namespace)
    return run


# ---------------------------------------------------------------- admin actions


def _staff_only(user, what: str) -> None:
    if not getattr(user, "is_staff", False):
        raise Forbidden(
            f"Only staff can {what}. Ask an admin to do it from the Deployments page.",
            code="staff_only",
        )


def deployment_token_issue(*, deployment: Deployment, user) -> str:
    """Replace the production token and return the new one; the namespace stays."""
    _staff_only(user, "issue production tokens")
    raw = token_new()
    with transaction.atomic():
        locked = Deployment.objects.select_for_update(of=("self",)).get(pk=deployment.pk)
        locked.token_hash = token_hash(raw)
        locked.token_issued_at = timezone.now()
        locked.save(update_fields=["token_hash", "token_issued_at"])
        event_record(deployment=locked, flow_name=deployment.flow.name,
                     action=Action.TOKEN_ISSUE, user=user,
                     message="new production token issued; the previous one no longer works")
    logger.info("production token of %s replaced by %s", deployment.flow.name, user.username)
    return raw


def deployment_namespace_reset(*, deployment: Deployment, user) -> Deployment:
    """Move production to a fresh, empty namespace; earlier runs stay in the old one."""
    _staff_only(user, "reset production namespaces")
    with transaction.atomic():
        locked = Deployment.objects.select_for_update(of=("self",)).select_related("flow").get(
            pk=deployment.pk)
        old = locked.namespace
        locked.generation += 1
        locked.namespace = namespace_new(locked.flow.name, locked.generation)
        locked.save(update_fields=["generation", "namespace"])
        event_record(deployment=locked, flow_name=locked.flow.name,
                     action=Action.NAMESPACE_RESET, user=user,
                     message=f"namespace {old} replaced by {locked.namespace}; "
                     f"earlier runs stay in {old}")
    logger.info("namespace of %s reset to %s by %s", locked.flow.name, locked.namespace,
                user.username)
    return locked


def deployment_pause(*, deployment: Deployment, user, token: str | None,
                     paused: bool) -> Deployment:
    verb = "pause" if paused else "resume"
    try:
        access_check(deployment, user=user, token=token, verb=f"{verb} the schedule of",
                     allow_staff=True)
    except ProductionTokenRejected as exc:
        _refusal_record(deployment, user, token, exc)
        raise
    with transaction.atomic():
        locked = Deployment.objects.select_for_update(of=("self",)).select_related("flow").get(
            pk=deployment.pk)
        locked.paused = paused
        locked.save(update_fields=["paused"])
        schedule_sync(locked)
        event_record(deployment=locked, flow_name=locked.flow.name,
                     action=Action.PAUSE if paused else Action.RESUME, user=user,
                     message=f"schedule {'paused' if paused else 'resumed'}")
    return locked


def deployment_delete(*, deployment: Deployment, user, token: str | None) -> None:
    """Delete the deployment and its schedule. Its runs keep their production tags."""
    try:
        access_check(deployment, user=user, token=token, verb="delete", allow_staff=True)
    except ProductionTokenRejected as exc:
        _refusal_record(deployment, user, token, exc)
        raise
    flow_name = deployment.flow.name
    namespace = deployment.namespace
    # Steps of a production run authenticate as the deployment's last deployer, so the
    # deployment must outlive every run that is still going.
    active = Run.objects.filter(deployment=deployment, status__in=ACTIVE).count()
    if active:
        raise Conflict(
            f"{flow_name} has {active} production run(s) pending or running. Wait for "
            "them to finish or cancel them, then delete the deployment.",
            code="runs_active",
        )
    with transaction.atomic():
        from django_celery_beat.models import PeriodicTask

        PeriodicTask.objects.filter(name=f"flowsite-deployment:{flow_name}").delete()
        Deployment.objects.filter(pk=deployment.pk).delete()
        event_record(deployment=None, flow_name=flow_name, namespace=namespace,
                     action=Action.DELETE, user=user,
                     message=f"deployment deleted; its runs stay in {namespace}")
    logger.info("deployment of %s deleted by %s", flow_name, user.username)


def deployment_get(flow_name: str) -> Deployment:
    deployment = Deployment.objects.select_related(
        "flow", "deployed_by", "code_package").filter(flow__name=flow_name).first()
    if deployment is None:
        raise NotFound(
            f"{flow_name} is not deployed. Deploy it with `python FLOW_FILE.py deploy create`."
        )
    return deployment
