"""`python flow.py resume [STEP] [--origin-run-id ID] [--tag T]...`."""

from __future__ import annotations

import sys

import click

from flowsite.sdk.cli import FlowContext, cli, fail, follow, submit


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("step", required=False)
@click.option("--origin-run-id", default=None,
              help="Run to resume (the number in Flow/NUMBER), in any namespace. "
              "Default: your newest run of this flow started with `run`.")
@click.option("--tag", "tags", multiple=True,
              help="Add a user tag to the new run, besides the origin's user tags; repeatable.")
@click.option("--detach", is_flag=True, help="Print the new run's id and return without "
              "waiting.")
@click.pass_context
def resume(ctx, step, origin_run_id, tags, detach):
    """Run the flow again from STEP, reusing the origin run's successful tasks.

    Without STEP, the run resumes at the first task that did not succeed. The new run
    is in your namespace, with the origin's parameters and the current code.
    """
    flow: FlowContext = ctx.obj
    extra = list(ctx.args)
    if step is not None and step.startswith("--"):
        extra.insert(0, step)
        step = None
    if extra:
        fail(
            f"resume takes no parameters (got {' '.join(extra)}): a resumed run keeps the "
            "parameters of its origin run. Use `run` to start a run with new parameters.",
            2,
        )
    graph = flow.graph
    if step is not None and step not in graph["steps"]:
        fail(f"The flow {flow.name} has no step {step!r}. Steps: {', '.join(graph['order'])}.",
             2)
    if origin_run_id is not None and not origin_run_id.isdigit():
        fail(f"--origin-run-id {origin_run_id!r} is not a run number; pass the number in "
             f"{flow.name}/NUMBER.", 2)

    endpoint = (f"runs/{flow.name}/{origin_run_id}/resume" if origin_run_id
                else f"flows/{flow.name}/resume")
    created = submit(flow, parameters={}, tags=list(tags), namespace=None,
                     extra={"step": step}, endpoint=endpoint)
    where = f"from step {step}" if step else "at the first task that did not succeed"
    click.echo(f"Run {created['pathspec']} resumes {created['origin_pathspec']} {where}, "
               f"in namespace {created['namespace']}.", err=True)
    if created["status"] == "completed":
        click.echo(f"Every task of {created['origin_pathspec']} was cloned, so nothing ran "
                   "again. Pass a STEP to run it and the steps after it again.", err=True)
    if detach:
        click.echo(created["pathspec"])
        return
    sys.exit(follow(created))
