"""`python flow.py tag add|remove|replace|list`."""

from __future__ import annotations

import click

from flowsite.sdk import http
from flowsite.sdk.cli import cli, fail
from flowsite.sdk.exceptions import ConflictError, TaggingError

LIST_LIMIT = 100


def _user_namespace() -> str:
    return http.get("whoami")["namespace"]


def _latest_run_hint(flow: str) -> str:
    page = http.get("runs", params={"flow": flow, "namespace": _user_namespace(),
                                    "page_size": 1})
    if page["results"]:
        return f"Your latest run is {flow}/{page['results'][0]['id']}: pass --run-id " \
               f"{page['results'][0]['id']}."
    return f"You have no runs of {flow} yet."


def _mutate(flow: str, run_id: str, namespace: str | None, add, remove) -> dict:
    ns = _user_namespace() if namespace is None else namespace
    for attempt in range(5):
        try:
            return http.post(f"runs/{flow}/{run_id}/tags", params={"namespace": ns},
                             json={"add": list(add), "remove": list(remove)})
        except ConflictError:
            if attempt == 4:
                raise TaggingError("The run's tags kept changing concurrently; try again.")
    raise AssertionError("unreachable")


def _print_tags(run: dict, hide_system: bool) -> None:
    click.echo(f"{run['pathspec']}:")
    for tag in sorted(run["user_tags"]):
        click.echo(f"    {tag}")
    if not hide_system:
        for tag in sorted(run["system_tags"]):
            click.echo(f"    {tag}  (system tag: cannot be modified)")


@cli.group()
def tag():
    """Add, remove, replace and list the tags of this flow's runs."""


NAMESPACE_HELP = ("Namespace the run must be in (default: your user:<login> namespace); "
                  "'' for global, to tag anyone's run.")


@tag.command("add")
@click.option("--run-id", default=None, help="Run to tag (the number in Flow/NUMBER).")
@click.option("--namespace", default=None, help=NAMESPACE_HELP)
@click.argument("tags", nargs=-1, required=True)
@click.pass_obj
def tag_add(flow, run_id, namespace, tags):
    """Add user tags to a run."""
    if run_id is None:
        fail(f"--run-id is required. {_latest_run_hint(flow.name)}", 2)
    run = _mutate(flow.name, run_id, namespace, tags, [])
    click.echo(f"Tags of {run['pathspec']}: {', '.join(sorted(run['user_tags'])) or '(none)'}")


@tag.command("remove")
@click.option("--run-id", default=None, help="Run to untag (the number in Flow/NUMBER).")
@click.option("--namespace", default=None, help=NAMESPACE_HELP)
@click.argument("tags", nargs=-1, required=True)
@click.pass_obj
def tag_remove(flow, run_id, namespace, tags):
    """Remove user tags from a run."""
    if run_id is None:
        fail(f"--run-id is required. {_latest_run_hint(flow.name)}", 2)
    run = _mutate(flow.name, run_id, namespace, [], tags)
    click.echo(f"Tags of {run['pathspec']}: {', '.join(sorted(run['user_tags'])) or '(none)'}")


@tag.command("replace")
@click.option("--run-id", required=True, help="Run to change (the number in Flow/NUMBER).")
@click.option("--namespace", default=None, help=NAMESPACE_HELP)
@click.option("--add", "add", multiple=True, help="Tag to add; repeatable.")
@click.option("--remove", "remove", multiple=True, help="Tag to remove; repeatable.")
@click.pass_obj
def tag_replace(flow, run_id, namespace, add, remove):
    """Remove and add tags in one atomic change."""
    if not add or not remove:
        raise click.UsageError(
            "tag replace needs at least one --add and one --remove. To only add, use "
            "`tag add`; to only remove, use `tag remove`."
        )
    run = _mutate(flow.name, run_id, namespace, add, remove)
    click.echo(f"Tags of {run['pathspec']}: {', '.join(sorted(run['user_tags'])) or '(none)'}")


@tag.command("list")
@click.option("--run-id", default=None, help="List the tags of this run only.")
@click.option("--all", "all_runs", is_flag=True, help="Runs of every user (global namespace).")
@click.option("--my-runs", is_flag=True, help="Only your runs (the default).")
@click.option("--hide-system-tags", is_flag=True, help="Leave out system tags.")
@click.option("--group-by-tag", is_flag=True, help="For each tag, list the runs that have it.")
@click.option("--group-by-run", is_flag=True, help="For each run, list its tags (the default).")
@click.pass_obj
def tag_list(flow, run_id, all_runs, my_runs, hide_system_tags, group_by_tag, group_by_run):
    """List tags of this flow's runs, newest runs first; system tags are marked."""
    if all_runs and my_runs:
        raise click.UsageError("Use --all or --my-runs, not both.")
    if group_by_tag and group_by_run:
        raise click.UsageError("Use --group-by-tag or --group-by-run, not both.")
    if run_id is not None:
        runs = [http.get(f"runs/{flow.name}/{run_id}")]
    else:
        ns = "" if all_runs else _user_namespace()
        runs = http.get("runs", params={"flow": flow.name, "namespace": ns,
                                        "page_size": LIST_LIMIT})["results"]
        if not runs:
            click.echo(f"No runs of {flow.name} in {'any namespace' if all_runs else ns}.")
            return
    if group_by_tag:
        by_tag: dict[str, list[str]] = {}
        system = set()
        for run in runs:
            for name in run["user_tags"] + ([] if hide_system_tags else run["system_tags"]):
                by_tag.setdefault(name, []).append(run["id"])
            system.update(run["system_tags"])
        for name in sorted(by_tag):
            mark = "  (system tag: cannot be modified)" if name in system else ""
            click.echo(f"{name}{mark}: runs {', '.join(by_tag[name])}")
        return
    for run in runs:
        _print_tags(run, hide_system_tags)
