"""`python flow.py deploy create|trigger|list|delete`: production deployments.

Imported by cli.main when present; importing it registers the `deploy` group.
"""

from __future__ import annotations

import click

from flowsite.sdk import config, http
from flowsite.sdk.cli import FlowContext, cli, parse_parameters, submit

TOKEN_HEADER = "X-Production-Token"
AUTHORIZE_HELP = (
    "Production token of the deployment, as shared by its last deployer or an admin. "
    "Stored in ~/.flowsite after a successful use, so it is needed only once. "
    "Defaults to FLOWSITE_PRODUCTION_TOKEN, then the stored token."
)


def token_headers(flow_name: str, authorize: str | None) -> dict:
    token = authorize or config.production_token_load(flow_name)
    return {TOKEN_HEADER: token} if token else {}


def token_store(flow_name: str, token: str) -> None:
    if token.startswith("production:"):
        token = token[len("production:"):]
    config.production_token_save(flow_name, token.strip())


@cli.group()
def deploy():
    """Deploy this flow to production and manage the deployment."""


@deploy.command()
@click.option("--authorize", envvar="FLOWSITE_PRODUCTION_TOKEN", default=None,
              help=AUTHORIZE_HELP)
@click.option("--generate-new-token", is_flag=True,
              help="Move production to a fresh, empty namespace with a new token. Runs "
              "made so far stay in the old namespace.")
@click.option("--tag", "tags", multiple=True,
              help="User tag for every production run; repeatable.")
@click.option("--namespace", default=None,
              help="Namespace the client API sees inside production steps, instead of "
              "the production namespace, e.g. another flow's production namespace.")
@click.pass_context
def create(ctx, authorize, generate_new_token, tags, namespace):
    """Upload the code and create or update the flow's production deployment."""
    flow: FlowContext = ctx.obj
    flow.graph  # noqa: B018 - validates the graph before anything is sent
    result = submit(
        flow, parameters={}, tags=list(tags), namespace=namespace,
        extra={"generate_new_token": generate_new_token}, endpoint="deployments",
        headers=token_headers(flow.name, authorize),
    )
    namespace_name = result["namespace"]
    token = result.get("token")
    if token:
        token_store(flow.name, token)
    elif authorize and result.get("token_accepted"):
        token_store(flow.name, authorize)
    elif authorize:
        click.echo("Warning: the --authorize token is not the current production token, so "
                   "it was not stored; you deployed as the previous deployer.", err=True)

    click.echo(f"{flow.name} deployed to production namespace {namespace_name}.")
    if result.get("schedule"):
        state = "paused" if result.get("paused") else "active"
        click.echo(f"Schedule: {result['schedule']} (UTC cron, {state}).")
    click.echo("Read its results with:\n"
               f"    from flowsite import namespace\n    namespace({namespace_name!r})")
    if token:
        click.echo(
            f"\nProduction token (shown once; stored in {config.production_tokens_path()}):\n"
            f"    {token}\n"
            "Share it only with people who may deploy new versions; they run:\n"
            f"    python {flow.flow_file} deploy create --authorize {token}"
        )
    click.echo(f"Trigger a run now with: python {flow.flow_file} deploy trigger")


@deploy.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--authorize", envvar="FLOWSITE_PRODUCTION_TOKEN", default=None,
              help=AUTHORIZE_HELP)
@click.pass_context
def trigger(ctx, authorize):
    """Start a production run of the deployed code. Pass parameters as --NAME VALUE."""
    flow: FlowContext = ctx.obj
    parameters = parse_parameters(flow, list(ctx.args))
    # Send only the values given, so the defaults of the deployed code apply to the rest.
    given_names = {arg[2:].partition("=")[0].replace("-", "_")
                   for arg in ctx.args if arg.startswith("--")}
    given = {name: value for name, value in parameters.items() if name in given_names}
    result = http.post(f"deployments/{flow.name}/trigger", json={"parameters": given},
                       headers=token_headers(flow.name, authorize))
    if authorize and result.get("token_accepted"):
        token_store(flow.name, authorize)
    click.echo(f"Run {result['pathspec']} started in {result['namespace']}.", err=True)
    click.echo(result["pathspec"])


@deploy.command(name="list")
def list_deployments():
    """List every production deployment on the server."""
    cursor = None
    rows = []
    while True:
        params = {"page_size": 200}
        if cursor:
            params["cursor"] = cursor
        page = http.get("deployments", params=params)
        rows.extend(page["results"])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    if not rows:
        click.echo("No deployments.")
        return
    for row in rows:
        schedule = row["schedule"] or "no schedule"
        if row["schedule"] and row["paused"]:
            schedule += " (paused)"
        click.echo(f"{row['flow']}\t{row['namespace']}\tdeployed by "
                   f"{row['deployed_by'] or '?'} at {row['deployed_at']}\t{schedule}")


@deploy.command()
@click.option("--authorize", envvar="FLOWSITE_PRODUCTION_TOKEN", default=None,
              help=AUTHORIZE_HELP)
@click.pass_context
def delete(ctx, authorize):
    """Delete the flow's deployment and its schedule. Its runs stay readable."""
    flow: FlowContext = ctx.obj
    http.request("DELETE", f"deployments/{flow.name}", retries=0,
                 headers=token_headers(flow.name, authorize))
    click.echo(f"Deployment of {flow.name} deleted; its runs stay in their "
               "production namespace.")
