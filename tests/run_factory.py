"""Create runs straight through the services, without running them on a worker.

Namespace, tag and API tests need many runs with chosen owners, tags and statuses.
Creating them with run_create is fast, and it still applies every tag rule.
"""

from __future__ import annotations

import textwrap

from flowsite.sdk.graph import parse_source

_SOURCE = textwrap.dedent(
    """
    from flowsite import FlowSpec, step

    class {name}(FlowSpec):
        @step
        def start(self):
            self.next(self.end)

        @step
        def end(self):
            pass
    """
)


def make_run(user, flow: str, *, tags=(), status: str | None = None,
             identity_namespace: str | None = None):
    """Create a run of `flow` owned by `user` with user tags, optionally with a final status."""
    from runs import services
    from runs.models import Run

    graph = parse_source(_SOURCE.format(name=flow), "flow.py")
    run = services.run_create(
        user=user,
        flow_name=flow,
        graph=graph,
        flow_file="flow.py",
        package=None,
        parameters={},
        parameter_specs=[],
        user_tags=list(tags),
        identity_namespace=identity_namespace or f"user:{user.username}",
        runtime="test",
        python_version="3",
        triggered_by=f"user:{user.username}",
        start_tasks=False,
    )
    if status:
        Run.objects.filter(pk=run.pk).update(status=status)
        run.status = status
    return run
