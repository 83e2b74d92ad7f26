"""Services that write: create runs, schedule tasks, finish and cancel them, mutate tags.

Pages, API views, Celery tasks and management commands call these, so every rule
about runs and tags lives here once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from flowsite.sdk.graph import FlowGraphError, parse_source
from runs import tags as tag_rules
from runs.errors import NotFound, RuleViolation, ValidationFailed
from runs.models import (
    TERMINAL,
    Flow,
    Run,
    RunTag,
    Status,
    Step,
    TagEvent,
    Task,
)

logger = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,199}$")
MAX_PARAMETER_BYTES = 64 * 1024
# How long a tag mutation waits for the run's row lock on PostgreSQL before the API
# returns 409, which clients retry. SQLite waits for its busy timeout instead.
TAG_LOCK_TIMEOUT_MS = 5000


# ---------------------------------------------------------------- tag counts


def tag_counts_adjust(deltas: dict[str, int], system_names: Iterable[str] = ()) -> None:
    """Add each delta to the tag's run count; rows are locked in name order to avoid
    deadlocks between concurrent writers."""
    system = set(system_names)
    rows = [(name, name in system, delta) for name, delta in sorted(deltas.items()) if delta]
    if not rows:
        return
    sql = (
        "INSERT INTO runs_tagcount (name, system, count) VALUES (%s, %s, %s) "
        "ON CONFLICT (name) DO UPDATE SET count = runs_tagcount.count + EXCLUDED.count"
    )
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


# ---------------------------------------------------------------- run creation


def validate_name(value: str, label: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ValidationFailed(
            f"{label} {str(value)[:80]!r} is not a valid name: use a Python identifier "
            "of at most 200 characters (letters, digits, underscores).",
            code="invalid_name",
        )
    return value


def parameters_validate(values: dict, specs: list[dict]) -> dict:
    """Check that values match the declared parameters; return them unchanged."""
    import json

    if not isinstance(values, dict) or not isinstance(specs, list):
        raise ValidationFailed("parameters must be an object and parameter_specs a list.")
    declared = {}
    for spec in specs:
        if not isinstance(spec, dict) or "name" not in spec:
            raise ValidationFailed("Each parameter spec needs a name.")
        declared[validate_name(spec["name"], "Parameter name")] = spec
    for name in values:
        if name not in declared:
            valid = ", ".join(sorted(declared)) or "none"
            raise ValidationFailed(
                f"Unknown parameter {str(name)[:80]!r}. Valid parameters: {valid}.",
                code="unknown_parameter",
            )
    for name, spec in declared.items():
        if spec.get("required") and values.get(name) is None:
            raise ValidationFailed(
                f"Parameter {name!r} is required. Pass --{name} VALUE.",
                code="missing_parameter",
            )
    if len(json.dumps(values)) > MAX_PARAMETER_BYTES:
        raise ValidationFailed(
            f"Parameters are larger than {MAX_PARAMETER_BYTES} bytes as JSON; pass large "
            "inputs as files or artifacts instead.",
            code="parameters_too_large",
        )
    return values


def user_tags_validate(tags: Iterable) -> list[str]:
    cleaned: list[str] = []
    for tag in tags:
        try:
            tag_rules.validate_tag(tag)
        except tag_rules.TagRuleError as exc:
            raise ValidationFailed(str(exc), code=exc.code) from None
        if tag not in cleaned:
            cleaned.append(tag)
    return cleaned


def graph_from_source(source: str, flow_file: str, flow_name: str) -> dict:
    try:
        graph = parse_source(source, flow_file)
    except FlowGraphError as exc:
        raise ValidationFailed(str(exc), code="invalid_graph") from None
    if graph["flow"] != flow_name:
        raise ValidationFailed(
            f"The flow file defines {graph['flow']}, not {flow_name}.", code="invalid_graph"
        )
    for step_name in graph["steps"]:
        validate_name(step_name, "Step name")
    return graph


def system_tags_for(*, identity_namespace: str, runtime: str, python_version: str) -> list[str]:
    from flowsite import __version__

    tags = [identity_namespace]
    if runtime:
        tags.append(f"runtime:{runtime[:100]}")
    if python_version:
        tags.append(f"python_version:{python_version[:40]}")
    tags.append(f"flowsite_version:{__version__}")
    return tags


def run_create(
    *,
    user,
    flow_name: str,
    graph: dict,
    flow_file: str,
    package,
    parameters: dict,
    parameter_specs: list[dict],
    user_tags: list[str],
    identity_namespace: str,
    runtime: str = "",
    python_version: str = "",
    client_namespace: str | None = None,
    triggered_by: str = "",
    deployment=None,
    origin_run: Run | None = None,
    is_resume: bool = False,
    resume_step: str = "",
    start_tasks: bool = True,
) -> Run:
    """Create a run with its tags and first task, and queue the task after commit."""
    validate_name(flow_name, "Flow name")
    parameters_validate(parameters, parameter_specs)
    user_tags = user_tags_validate(user_tags)
    if client_namespace:
        client_namespace = user_tags_validate([client_namespace])[0]
    system_tags = system_tags_for(
        identity_namespace=identity_namespace, runtime=runtime, python_version=python_version
    )
    # A user tag equal to one of the run's own system tags adds nothing.
    user_tags = [tag for tag in user_tags if tag not in system_tags]
    for tag in user_tags:
        if tag_rules.is_system_tag(tag):
            raise ValidationFailed(
                f"The tag {tag!r} uses a system prefix; system tags are set by Flowsite.",
                code="system_tag",
            )
    if len(user_tags) > tag_rules.MAX_USER_TAGS:
        raise ValidationFailed(
            f"A run can have at most {tag_rules.MAX_USER_TAGS} user tags; "
            f"{len(user_tags)} were given.",
            code="too_many_tags",
        )

    with transaction.atomic():
        flow, _ = Flow.objects.get_or_create(name=flow_name)
        # The row lock serializes concurrent submissions of one flow, so numbers never repeat.
        Flow.objects.filter(pk=flow.pk).update(last_run_number=F("last_run_number") + 1)
        number = Flow.objects.select_for_update().values_list(
            "last_run_number", flat=True
        ).get(pk=flow.pk)
        run = Run.objects.create(
            flow=flow,
            number=number,
            user=user,
            identity_namespace=identity_namespace,
            # '' is kept: it means steps read the global namespace.
            client_namespace=client_namespace,
            triggered_by=triggered_by,
            parameters=parameters,
            parameter_specs=parameter_specs,
            graph=graph,
            flow_file=flow_file,
            code_package=package,
            deployment=deployment,
            origin_run=origin_run,
            is_resume=is_resume,
            resume_step=resume_step,
        )
        RunTag.objects.bulk_create(
            [RunTag(run=run, flow=flow, name=tag, system=True) for tag in system_tags]
            + [RunTag(run=run, flow=flow, name=tag, system=False) for tag in user_tags]
        )
        tag_counts_adjust(
            {tag: 1 for tag in system_tags + user_tags}, system_names=system_tags
        )
        Step.objects.bulk_create([Step(run=run, name=name) for name in graph["order"]])
        if start_tasks:
            start = task_create(run=run, step_name="start", split_stack=[], input_task_ids=[])
            enqueue_on_commit([start])
    logger.info("run %s created by %s", run.pathspec, getattr(user, "username", triggered_by))
    return run


# ---------------------------------------------------------------- task scheduling


def task_key(step_name: str, split_stack: list[dict]) -> str:
    return step_name + "".join(f"[{frame['i']}]" for frame in split_stack)


def step_options(run: Run, step_name: str) -> dict:
    return run.graph["steps"][step_name].get("decorators", {})


def task_create(
    *, run: Run, step_name: str, split_stack: list[dict], input_task_ids: list[int]
) -> Task | None:
    """Create the task once; a second call for the same key returns None."""
    decorators = step_options(run, step_name)
    retries = int(decorators.get("retry", {}).get("times", 0) or 0)
    queue = decorators.get("resources", {}).get("queue") or settings.FLOWSITE_DEFAULT_QUEUE
    step = Step.objects.get(run=run, name=step_name)
    key = task_key(step_name, split_stack)
    task, created = Task.objects.get_or_create(
        run=run,
        key=key,
        defaults={
            "step": step,
            "step_name": step_name,
            "split_stack": split_stack,
            "foreach_index": split_stack[-1]["i"]
            if split_stack and split_stack[-1]["kind"] == "foreach"
            else None,
            "input_task_ids": input_task_ids,
            "max_attempts": 1 + max(0, min(retries, 10)),
            "queue": str(queue)[:100],
        },
    )
    return task if created else None


def enqueue_on_commit(tasks: list[Task | None]) -> None:
    ids = [task.id for task in tasks if task is not None]
    if ids:
        transaction.on_commit(lambda: tasks_enqueue(ids))


def tasks_enqueue(task_ids: list[int]) -> None:
    """Send tasks to the broker. A task the broker did not take stays pending with
    no enqueued_at, and the periodic sweep sends it again once the broker is back."""
    from runs.tasks import execute_task

    for task in Task.objects.filter(id__in=task_ids, status=Status.PENDING):
        try:
            execute_task.apply_async((task.id,), queue=task.queue, retry=False)
        except Exception as exc:  # the broker is down or unreachable
            logger.warning("task %s of run %s not queued: %s", task.id, task.run_id, exc)
            continue
        Task.objects.filter(pk=task.pk).update(enqueued_at=timezone.now())


def _join_inputs(run: Run, join_step: str, frame: dict) -> list[Task]:
    """Return the completed tasks that feed one join, or [] while some are missing.

    Every task of a step sits at the same split depth, so the siblings of one split
    share a key prefix: the source step's name and the indexes of the outer splits.
    Counting them in SQL first keeps a wide foreach from loading all finished
    siblings each time one of them completes.
    """
    sources = [name for name, spec in run.graph["steps"].items() if join_step in spec["next"]]
    outer = task_key("", frame["depth_stack"][:-1])
    siblings = Q()
    for source in sources:
        siblings |= Q(key__startswith=f"{source}{outer}[")
    finished = Task.objects.filter(siblings, run=run, status=Status.COMPLETED)
    if finished.count() < frame["depth_stack"][-1]["n"]:
        return []
    candidates = finished.filter(step_name__in=sources).only("id", "split_stack", "step_name")
    depth = len(frame["depth_stack"])
    matched = [
        task
        for task in candidates
        if len(task.split_stack) == depth and task.split_stack[-1]["task"] == frame["task"]
    ]
    return sorted(matched, key=lambda task: task.split_stack[-1]["i"])


def successors_schedule(task: Task) -> list[Task | None]:
    """Create the tasks that follow a completed task. Caller holds the run's row lock."""
    run = task.run
    spec = run.graph["steps"][task.step_name]
    targets = spec["next"]
    stack = list(task.split_stack)
    created: list[Task | None] = []

    if spec.get("foreach"):
        count = task.foreach_count or 0
        for index in range(count):
            frame = {"step": task.step_name, "task": task.id, "n": count, "i": index,
                     "kind": "foreach"}
            created.append(
                task_create(run=run, step_name=targets[0], split_stack=stack + [frame],
                            input_task_ids=[task.id])
            )
        return created

    if len(targets) > 1:
        for index, target in enumerate(targets):
            frame = {"step": task.step_name, "task": task.id, "n": len(targets), "i": index,
                     "kind": "branch"}
            created.append(
                task_create(run=run, step_name=target, split_stack=stack + [frame],
                            input_task_ids=[task.id])
            )
        return created

    target = targets[0]
    if run.graph["steps"][target]["join"]:
        top = stack[-1]
        inputs = _join_inputs(run, target, {"task": top["task"], "depth_stack": stack})
        if len(inputs) == top["n"]:
            created.append(
                task_create(run=run, step_name=target, split_stack=stack[:-1],
                            input_task_ids=[t.id for t in inputs])
            )
        return created

    created.append(
        task_create(run=run, step_name=target, split_stack=stack, input_task_ids=[task.id])
    )
    return created


def run_lock(run_id: int) -> Run:
    return Run.objects.select_for_update().select_related("flow").get(pk=run_id)


def step_status_refresh(run: Run, step_name: str) -> None:
    statuses = set(
        Task.objects.filter(run=run, step_name=step_name).values_list("status", flat=True)
    )
    now = timezone.now()
    if Status.FAILED in statuses:
        status = Status.FAILED
    elif Status.RUNNING in statuses or Status.PENDING in statuses:
        status = Status.RUNNING
    elif statuses == {Status.COMPLETED}:
        status = Status.COMPLETED
    elif Status.CANCELLED in statuses:
        status = Status.CANCELLED
    else:
        status = Status.PENDING
    updates = {"status": status}
    if status in TERMINAL:
        updates["finished_at"] = now
    Step.objects.filter(run=run, name=step_name).update(**updates)


def task_mark_started(task: Task) -> None:
    now = timezone.now()
    Run.objects.filter(pk=task.run_id, status=Status.PENDING).update(
        status=Status.RUNNING, started_at=now, heartbeat_at=now
    )
    Step.objects.filter(pk=task.step_id, started_at__isnull=True).update(
        started_at=now, status=Status.RUNNING
    )
    Step.objects.filter(pk=task.step_id).update(status=Status.RUNNING)


def task_complete(*, task_id: int, foreach_count: int | None, next_steps: list[str]) -> None:
    """Mark a task completed and schedule what follows, exactly once."""
    with transaction.atomic():
        task = Task.objects.select_for_update().get(pk=task_id)
        run = run_lock(task.run_id)
        if task.status != Status.RUNNING:
            logger.warning("task %s of run %s finished while %s; result ignored",
                           task.id, run.pathspec, task.status)
            return
        now = timezone.now()
        task.status = Status.COMPLETED
        task.finished_at = now
        task.foreach_count = foreach_count
        task.next_steps = next_steps
        task.save(update_fields=["status", "finished_at", "foreach_count", "next_steps"])
        task.run = run
        step_status_refresh(run, task.step_name)
        if run.status in TERMINAL:
            return
        if task.step_name == "end":
            Run.objects.filter(pk=run.pk).update(status=Status.COMPLETED, finished_at=now)
            logger.info("run %s completed", run.pathspec)
            return
        created = successors_schedule(task)
        enqueue_on_commit(created)


def task_fail(*, task_id: int, error: str, retry: bool = True) -> bool:
    """Fail one attempt of a task. Return True when the task will run again."""
    with transaction.atomic():
        task = Task.objects.select_for_update().get(pk=task_id)
        run = run_lock(task.run_id)
        now = timezone.now()
        if task.status in TERMINAL:
            return False
        if retry and task.attempt + 1 < task.max_attempts and run.status not in TERMINAL:
            Task.objects.filter(pk=task.pk).update(
                status=Status.PENDING, attempt=F("attempt") + 1, error=error[:10000],
                heartbeat_at=None, enqueued_at=None,
            )
            enqueue_on_commit([task])
            logger.info("task %s of run %s failed attempt %s, retrying: %s",
                        task.id, run.pathspec, task.attempt, error[:200])
            return True
        Task.objects.filter(pk=task.pk).update(
            status=Status.FAILED, finished_at=now, error=error[:10000]
        )
        step_status_refresh(run, task.step_name)
        if run.status not in TERMINAL:
            run_finish(run, Status.FAILED, error=f"{task.step_name}/{task.id}: {error}"[:10000])
        logger.info("task %s of run %s failed: %s", task.id, run.pathspec, error[:200])
        return False


def run_finish(run: Run, status: str, error: str = "") -> None:
    """End a run so no new task starts: cancel pending tasks and set cancel_requested,
    which makes workers kill the running ones within about a second."""
    now = timezone.now()
    Run.objects.filter(pk=run.pk).update(
        status=status, finished_at=now, error=error, cancel_requested=True
    )
    Task.objects.filter(run=run, status=Status.PENDING).update(
        status=Status.CANCELLED, finished_at=now
    )
    for name in Task.objects.filter(run=run).values_list("step_name", flat=True).distinct():
        step_status_refresh(run, name)


def run_cancel(*, run: Run, user=None) -> Run:
    with transaction.atomic():
        locked = run_lock(run.pk)
        if locked.status in TERMINAL:
            return locked
        run_finish(locked, Status.CANCELLED, error=f"cancelled by {getattr(user, 'username', 'system')}")
    logger.info("run %s cancelled by %s", run.pathspec, getattr(user, "username", "system"))
    return Run.objects.get(pk=run.pk)


# ---------------------------------------------------------------- tags


def tags_mutate(
    *, run: Run, user, add: Iterable = (), remove: Iterable = (), actor: str = ""
) -> Run:
    """Remove then add user tags in one transaction, and record who did it."""
    add = list(add)
    remove = list(remove)
    for tag in add + remove:
        try:
            tag_rules.validate_tag(tag)
        except tag_rules.TagRuleError as exc:
            raise ValidationFailed(str(exc), code=exc.code) from None

    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config('lock_timeout', %s, true)",
                               [f"{TAG_LOCK_TIMEOUT_MS}ms"])
        locked = Run.objects.select_for_update().get(pk=run.pk)
        rows = {row.name: row for row in RunTag.objects.filter(run=locked)}
        system = {name for name, row in rows.items() if row.system}
        for tag in remove:
            if tag in system or tag_rules.is_system_tag(tag):
                raise RuleViolation(
                    f"{tag!r} is a system tag and cannot be removed. System tags record "
                    "facts about the run; remove only user tags.",
                    code="system_tag",
                )
        to_add = []
        for tag in add:
            if tag in system or tag in to_add:
                continue  # already a system tag: nothing to do
            if tag_rules.is_system_tag(tag):
                raise RuleViolation(
                    f"{tag!r} starts with a system prefix and cannot be added by hand.",
                    code="system_tag",
                )
            to_add.append(tag)
        user_tags = {name for name, row in rows.items() if not row.system}
        removed = [tag for tag in dict.fromkeys(remove) if tag in user_tags and tag not in to_add]
        added = [tag for tag in to_add if tag not in user_tags]
        final_count = len(user_tags) - len(removed) + len(added)
        if added and final_count > tag_rules.MAX_USER_TAGS:
            raise RuleViolation(
                f"A run can have at most {tag_rules.MAX_USER_TAGS} user tags; this change "
                f"would leave {final_count}. Remove some tags first.",
                code="too_many_tags",
            )
        if removed:
            RunTag.objects.filter(run=locked, name__in=removed, system=False).delete()
        if added:
            RunTag.objects.bulk_create(
                [RunTag(run=locked, flow_id=locked.flow_id, name=tag) for tag in added]
            )
        deltas = {tag: -1 for tag in removed}
        deltas.update({tag: 1 for tag in added})
        tag_counts_adjust(deltas)
        if added or removed:
            TagEvent.objects.create(
                run=locked, user=user, actor=actor or getattr(user, "username", ""),
                added=added, removed=removed,
            )
    if added or removed:
        logger.info("tags of run %s changed by %s: +%s -%s", run.pk,
                    getattr(user, "username", actor), added, removed)
    return locked


def run_get_by_pathspec(flow_name: str, number) -> Run:
    try:
        number = int(number)
    except (TypeError, ValueError):
        raise ValidationFailed(f"Run id {str(number)[:40]!r} is not an integer.") from None
    run = Run.objects.select_related("flow", "user").filter(
        flow__name=flow_name, number=number
    ).first()
    if run is None:
        raise NotFound(f"Run {flow_name}/{number} does not exist.")
    return run
