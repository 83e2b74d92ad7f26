"""Celery tasks. Each takes ids and calls one service."""

from __future__ import annotations

import logging

from celery import shared_task

logger = logging.getLogger(__name__)


@shared_task(name="runs.execute_task", acks_late=True, reject_on_worker_lost=True)
def execute_task(task_id: int) -> None:
    from runs.execution import execute

    execute(task_id)


@shared_task(name="runs.sweep")
def sweep() -> dict:
    from runs.execution import sweep as run_sweep

    return run_sweep()


@shared_task(name="runs.deployment_trigger_scheduled")
def deployment_trigger_scheduled(deployment_id: int) -> None:
    """Start the production run that a deployment's beat schedule asked for."""
    from runs.deployments import deployment_trigger_scheduled as trigger

    trigger(deployment_id)
