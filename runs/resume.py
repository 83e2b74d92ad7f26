"""Resume: a new run that reuses the successful tasks of an origin run.

Cloned tasks get new ids in the new run, link back to the origin task and share its
artifact blobs, so no step runs twice and no bytes are copied. The first tasks that
are not cloned (the frontier) are scheduled like any other task.
"""

from __future__ import annotations

import logging

from django.db import connection, transaction
from django.utils import timezone

from runs import services
from runs.errors import Conflict, NotFound, ValidationFailed
from runs.models import TERMINAL, Artifact, Run, RunTag, Status, Step, Task

logger = logging.getLogger(__name__)

# The graph fields that must match for a step's tasks to be cloned into new code.
STEP_SHAPE = ("next", "foreach", "join")


def origin_run_latest(*, flow_name: str, user) -> Run:
    """Return the newest run of the flow that the user started with `run`.

    Resumes never count, so repeated plain resumes keep the same origin. Runs in a
    production namespace never count either, because the user did not start them.
    """
    origin = (
        Run.objects.select_related("flow", "user", "code_package")
        .filter(
            flow__name=flow_name,
            user=user,
            is_resume=False,
            identity_namespace=f"user:{user.username}",
        )
        .order_by("-id")
        .first()
    )
    if origin is None:
        raise NotFound(
            f"You have no run of {flow_name} to resume: no run started with `run` by "
            f"{user.username}. Pass --origin-run-id ID to resume a run of someone else, "
            "or a production run.",
            code="no_origin_run",
        )
    return origin


def steps_downstream(graph: dict, step: str) -> set[str]:
    """Return the step and every step reachable from it."""
    found = {step}
    pending = [step]
    while pending:
        for target in graph["steps"][pending.pop()]["next"]:
            if target not in found:
                found.add(target)
                pending.append(target)
    return found


def steps_cloneable(origin_graph: dict, graph: dict) -> set[str]:
    """Return the steps whose shape is the same in the origin's graph and the new one.

    A task of a step that moved or changed its transitions cannot stand in for a
    task of the new code, so it runs again.
    """
    same = set()
    for name, spec in graph["steps"].items():
        old = origin_graph.get("steps", {}).get(name)
        if old is not None and all(old.get(field) == spec.get(field) for field in STEP_SHAPE):
            same.add(name)
    return same


def run_resume(
    *,
    user,
    origin: Run,
    step: str | None,
    tags,
    package=None,
    graph: dict | None = None,
    flow_file: str | None = None,
    python_version: str = "",
) -> Run:
    """Create a run that resumes `origin` in the user's namespace and queue its frontier.

    1. Validate the step and the code: the origin's code package unless `package`,
       `graph` and `flow_file` of new code are given.
    2. Create the run with the origin's parameters and user tags plus `tags`.
    3. Clone the origin's successful tasks, except the step and what follows it.
    4. Create the first tasks that are not cloned; they are queued after commit.
    """
    if origin.status not in TERMINAL:
        raise Conflict(
            f"Run {origin.pathspec} is still {origin.status}. Wait for it to finish, or "
            "cancel it, then resume it.",
            code="origin_running",
        )
    if package is None:
        if origin.code_package_id is None:
            raise ValidationFailed(
                f"Run {origin.pathspec} has no stored code package to resume with. Resume "
                "it from the flow's folder with `python FLOW.py resume --origin-run-id "
                f"{origin.number}`, which uploads the current code.",
                code="no_code_package",
            )
        package, graph, flow_file = origin.code_package, origin.graph, origin.flow_file
    elif graph is None or not flow_file:
        raise ValueError("run_resume needs the graph and flow_file of a new package")
    if graph.get("flow") != origin.flow.name:
        raise ValidationFailed(
            f"The code defines the flow {graph.get('flow')!r}, but run {origin.pathspec} "
            f"is a run of {origin.flow.name}. Resume it with the code of {origin.flow.name}.",
            code="invalid_graph",
        )
    if step is not None and step not in graph["steps"]:
        raise ValidationFailed(
            f"The flow {origin.flow.name} has no step {step!r}. Steps: "
            f"{', '.join(graph['order'])}.",
            code="unknown_step",
        )

    origin_tags = list(
        RunTag.objects.filter(run=origin).values_list("name", "system").order_by("id")
    )
    user_tags = [name for name, system in origin_tags if not system]
    user_tags += [tag for tag in tags if tag not in user_tags]
    if not python_version:
        python_version = next(
            (name.partition(":")[2] for name, system in origin_tags
             if system and name.startswith("python_version:")),
            "",
        )

    with transaction.atomic():
        run = services.run_create(
            user=user,
            flow_name=origin.flow.name,
            graph=graph,
            flow_file=flow_file,
            package=package,
            # NOTE: a parameter that only the new code declares gets no value, because
            # the origin's parameters are reused as they are.
            parameters=origin.parameters,
            parameter_specs=origin.parameter_specs,
            user_tags=user_tags,
            identity_namespace=f"user:{user.username}",
            runtime="celery",
            python_version=python_version,
            triggered_by=f"user:{user.username}",
            origin_run=origin,
            is_resume=True,
            resume_step=step or "",
            start_tasks=False,
        )
        rerun = steps_downstream(graph, step) if step else set()
        cloneable = steps_cloneable(origin.graph, graph) - rerun
        clones = tasks_clone(run=run, origin=origin, steps=cloneable)
        created = frontier_schedule(run=run, clones=clones)
        services.enqueue_on_commit(created)
        finish_if_all_cloned(run=run, clones=clones, created=created)

    logger.info(
        "run %s resumes %s from %s: %s tasks cloned, %s scheduled",
        run.pathspec, origin.pathspec, step or "the first failure", len(clones),
        len([task for task in created if task is not None]),
    )
    return run


# ---------------------------------------------------------------- cloning


def tasks_clone(*, run: Run, origin: Run, steps: set[str]) -> dict[str, Task]:
    """Clone every successful origin task of `steps` whose inputs are all cloned.

    Tasks are created in generations (a task after its inputs) so a clone's split
    stack and input ids can name the clones of its ancestors: a few queries per graph
    level, not per task. Returns the clones by task key.
    """
    # Task ids grow in the order tasks were scheduled, and a task is scheduled only
    # after its inputs completed, so id order visits inputs before the tasks they feed.
    origin_tasks = Task.objects.filter(run=origin, status=Status.COMPLETED).order_by("id")
    generation_of: dict[int, int] = {}
    chosen: list[Task] = []
    for task in origin_tasks:
        if task.step_name not in steps:
            continue
        if any(parent not in generation_of for parent in task.input_task_ids):
            continue
        generation_of[task.id] = 1 + max(
            (generation_of[parent] for parent in task.input_task_ids), default=-1
        )
        chosen.append(task)
    if not chosen:
        return {}

    step_rows = {step.name: step for step in Step.objects.filter(run=run)}
    cloned_at = timezone.now()
    new_id: dict[int, int] = {}
    clones: dict[str, Task] = {}
    generations: dict[int, list[Task]] = {}
    for task in chosen:
        generations.setdefault(generation_of[task.id], []).append(task)
    for level in sorted(generations):
        batch = [
            Task(
                run=run,
                step=step_rows[task.step_name],
                step_name=task.step_name,
                key=task.key,
                status=Status.COMPLETED,
                split_stack=[
                    {**frame, "task": new_id[frame["task"]]} for frame in task.split_stack
                ],
                foreach_index=task.foreach_index,
                input_task_ids=[new_id[parent] for parent in task.input_task_ids],
                max_attempts=task.max_attempts,
                queue=task.queue,
                # A clone never started in this run, so it stays off the run's timeline.
                # It finished when it was cloned; the origin task keeps the real times.
                finished_at=cloned_at,
                foreach_count=task.foreach_count,
                next_steps=task.next_steps,
                origin_task=task,
            )
            for task in generations[level]
        ]
        Task.objects.bulk_create(batch)
        for task, clone in zip(generations[level], batch, strict=True):
            new_id[task.id] = clone.id
            clone.current = clone_current(run, clone, task.current)
            clone.run = run
            clones[clone.key] = clone
    currents_store(clones.values())
    artifacts_share(run)
    for name in {clone.step_name for clone in clones.values()}:
        services.step_status_refresh(run, name)
    return clones


def clone_current(run: Run, clone: Task, origin_current: dict) -> dict:
    """Rewrite the ids a task reported in `current` for its place in the new run."""
    origin = run.origin_run
    current = dict(origin_current or {})
    current.update({
        "flow_name": run.flow.name,
        "run_id": str(run.number),
        "origin_run_id": str(origin.number) if origin is not None else None,
        "step_name": clone.step_name,
        "task_id": str(clone.id),
        "pathspec": f"{run.flow.name}/{run.number}/{clone.step_name}/{clone.id}",
        "namespace": run.identity_namespace,
        "username": run.user.username if run.user_id else "",
        "parameter_names": [spec["name"] for spec in run.parameter_specs],
        "is_production": run.identity_namespace.startswith("production:"),
    })
    return current


def currents_store(clones) -> None:
    """Save the rewritten `current` of each clone in one batched statement.

    Django's bulk_update builds a CASE expression per row, which costs more than the
    inserts themselves for thousands of clones, so this sends plain parameterized
    updates with executemany.
    """
    field = Task._meta.get_field("current")
    table = connection.ops.quote_name(Task._meta.db_table)
    rows = [(field.get_db_prep_save(clone.current, connection), clone.id) for clone in clones]
    with connection.cursor() as cursor:
        cursor.executemany(f"UPDATE {table} SET current = %s WHERE id = %s", rows)


def artifacts_share(run: Run) -> None:
    """Give each clone the artifact rows of its origin task's final attempt.

    The rows point at the same blobs, so no bytes are copied. One INSERT ... SELECT
    joins each clone to its origin task, so nothing is loaded into Python. A clone
    has made no attempt of its own, so its artifacts are attempt 0.
    """
    artifact = connection.ops.quote_name(Artifact._meta.db_table)
    task = connection.ops.quote_name(Task._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {artifact} (task_id, attempt, name, blob_id, type_name, preview) "
            f"SELECT clone.id, 0, source.name, source.blob_id, source.type_name, "
            f"source.preview FROM {artifact} source "
            f"JOIN {task} origin ON origin.id = source.task_id "
            f"AND source.attempt = origin.attempt "
            f"JOIN {task} clone ON clone.origin_task_id = origin.id "
            f"WHERE clone.run_id = %s",
            [run.pk],
        )


# ---------------------------------------------------------------- the frontier


def frontier_schedule(*, run: Run, clones: dict[str, Task]) -> list[Task | None]:
    """Create the tasks that follow cloned tasks but are not cloned themselves.

    This mirrors services.successors_schedule, but creates only the missing tasks, so
    a foreach of many cloned branches with one failure costs one insert, not one per
    branch.
    """
    if "start" not in clones:
        return [services.task_create(run=run, step_name="start", split_stack=[],
                                     input_task_ids=[])]

    steps = run.graph["steps"]
    created: list[Task | None] = []
    join_inputs: dict[str, list[Task]] = {}
    for clone in clones.values():
        spec = steps[clone.step_name]
        stack = clone.split_stack
        targets = spec["next"]
        if not targets:
            continue

        if spec.get("foreach") or len(targets) > 1:
            if spec.get("foreach"):
                branches = [(targets[0], index, clone.foreach_count or 0, "foreach")
                            for index in range(clone.foreach_count or 0)]
            else:
                branches = [(target, index, len(targets), "branch")
                            for index, target in enumerate(targets)]
            for target, index, count, kind in branches:
                frame = {"step": clone.step_name, "task": clone.id, "n": count, "i": index,
                         "kind": kind}
                if services.task_key(target, stack + [frame]) not in clones:
                    created.append(services.task_create(
                        run=run, step_name=target, split_stack=stack + [frame],
                        input_task_ids=[clone.id],
                    ))
            continue

        target = targets[0]
        if steps[target]["join"]:
            key = services.task_key(target, stack[:-1])
            if key not in clones:
                join_inputs.setdefault(key, []).append(clone)
            continue
        if services.task_key(target, stack) not in clones:
            created.append(services.task_create(
                run=run, step_name=target, split_stack=stack, input_task_ids=[clone.id]
            ))

    # A join starts here only when every branch it closes was cloned. Otherwise the
    # branch that runs again creates the join when it completes.
    for inputs in join_inputs.values():
        top = inputs[0].split_stack[-1]
        if len(inputs) != top["n"]:
            continue
        inputs.sort(key=lambda task: task.split_stack[-1]["i"])
        target = steps[inputs[0].step_name]["next"][0]
        created.append(services.task_create(
            run=run, step_name=target, split_stack=inputs[0].split_stack[:-1],
            input_task_ids=[task.id for task in inputs],
        ))
    return created


def finish_if_all_cloned(*, run: Run, clones: dict[str, Task], created: list) -> None:
    """Complete a run whose every task was cloned: nothing is left to execute."""
    if any(task is not None for task in created) or "end" not in clones:
        return
    now = timezone.now()
    Run.objects.filter(pk=run.pk).update(
        status=Status.COMPLETED, started_at=now, finished_at=now
    )
    run.status = Status.COMPLETED
    run.started_at = run.finished_at = now
