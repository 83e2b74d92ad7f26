"""`python flow.py tag add|remove|replace|list`."""

from __future__ import annotations

import time
from urllib.parse import quote

import click

from flowsite.sdk import http
from flowsite.sdk.cli import cli, fail
from flowsite.sdk.exceptions import ConflictError, NamespaceMismatch, TaggingError

# `tag list` shows at most this many runs, newest first.
LIST_LIMIT = 100
MUTATION_RETRIES = 5
SYSTEM_MARK = "(system tag, cannot be modified)"


def _user_namespace() -> str:
    return http.get("whoami")["namespace"]


def _run_path(flow: str, run_id: str) -> str:
    return f"runs/{quote(flow, safe='')}/{quote(str(run_id), safe='')}"


def _latest_run_hint(flow: str) -> str:
    page = http.get("runs", params={"flow": flow, "namespace": _user_namespace(),
                                    "page_size": 1})
    if not page["results"]:
        return f"You have no runs of {flow} yet."
    number = page["results"][0]["id"]
    return f"Your latest run is {flow}/{number}: pass --run-id {number}."


def _mutate(flow: str, run_id: str, namespace: str | None, add, remove) -> dict:
    """Send one atomic mutation, retrying a lost race with a growing pause."""
    ns = _user_namespace() if namespace is None else namespace
    for attempt in range(MUTATION_RETRIES):
        try:
            return http.post(f"{_run_path(flow, run_id)}/tags", params={"namespace": ns},
                             json={"add": list(add), "remove": list(remove)})
        except NamespaceMismatch as error:
            owner = error.run_namespace or "its owner's namespace"
            fail(
                f"Run {flow}/{run_id} is not in the namespace '{ns or 'global'}'; it is in "
                f"'{owner}'. Pass --namespace {owner} to tag it there, or --namespace '' "
                "to tag a run in any namespace."
            )
        except ConflictError:
            if attempt == MUTATION_RETRIES - 1:
                raise TaggingError(
                    f"The tags of {flow}/{run_id} changed concurrently {MUTATION_RETRIES} "
                    "times in a row; run the command again."
                ) from None
            time.sleep(0.05 * (2 ** attempt))
    raise AssertionError("unreachable")


def _echo_result(run: dict) -> None:
    tags = ", ".join(sorted(run["user_tags"])) or "(none)"
    click.echo(f"User tags of {run['pathspec']}: {tags}")


def _print_tags(run: dict, hide_system: bool) -> None:
    click.echo(f"{run['pathspec']}:")
    for tag in sorted(run["user_tags"]):
        click.echo(f"    {tag}")
    if not hide_system:
        for tag in sorted(run["system_tags"]):
            click.echo(f"    {tag}  {SYSTEM_MARK}")


@cli.group()
def tag():
    """Add, remove, replace and list the tags of this flow's runs."""


NAMESPACE_HELP = ("Namespace the run must be in (default: your user:<login> namespace). "
                  "Pass another user's namespace, or '' for any namespace, to tag runs "
                  "of other users.")
RUN_ID_HELP = "Run to change: the number in FlowName/NUMBER."


@tag.command("add")
@click.option("--run-id", default=None, help=RUN_ID_HELP)
@click.option("--namespace", default=None, help=NAMESPACE_HELP)
@click.argument("tags", nargs=-1, required=True)
@click.pass_obj
def tag_add(flow, run_id, namespace, tags):
    """Add user tags to a run."""
    if run_id is None:
        fail(f"--run-id is required. {_latest_run_hint(flow.name)}", 2)
    _echo_result(_mutate(flow.name, run_id, namespace, tags, []))


@tag.command("remove")
@click.option("--run-id", default=None, help=RUN_ID_HELP)
@click.option("--namespace", default=None, help=NAMESPACE_HELP)
@click.argument("tags", nargs=-1, required=True)
@click.pass_obj
def tag_remove(flow, run_id, namespace, tags):
    """Remove user tags from a run. System tags cannot be removed."""
    if run_id is None:
        fail(f"--run-id is required. {_latest_run_hint(flow.name)}", 2)
    _echo_result(_mutate(flow.name, run_id, namespace, [], tags))


@tag.command("replace")
@click.option("--run-id", required=True, help=RUN_ID_HELP)
@click.option("--namespace", default=None, help=NAMESPACE_HELP)
@click.option("--add", "add", multiple=True, help="Tag to add; repeatable.")
@click.option("--remove", "remove", multiple=True, help="Tag to remove; repeatable.")
@click.pass_obj
def tag_replace(flow, run_id, namespace, add, remove):
    """Remove and add tags in one atomic change."""
    if not add or not remove:
        raise click.UsageError(
            "tag replace needs at least one --add and one --remove. To only add tags, use "
            "`tag add`; to only remove tags, use `tag remove`."
        )
    _echo_result(_mutate(flow.name, run_id, namespace, add, remove))


@tag.command("list")
@click.option("--run-id", default=None, help="List the tags of this run only.")
@click.option("--all", "all_runs", is_flag=True, help="Runs of every user (global namespace).")
@click.option("--my-runs", is_flag=True, help="Only your runs (the default).")
@click.option("--hide-system-tags", is_flag=True, help="Leave out system tags.")
@click.option("--group-by-tag", is_flag=True, help="For each tag, list the runs that have it.")
@click.option("--group-by-run", is_flag=True, help="For each run, list its tags (the default).")
@click.pass_obj
def tag_list(flow, run_id, all_runs, my_runs, hide_system_tags, group_by_tag, group_by_run):
    """List tags of this flow's newest runs; system tags are marked."""
    if all_runs and my_runs:
        raise click.UsageError("Use --all or --my-runs, not both.")
    if group_by_tag and group_by_run:
        raise click.UsageError("Use --group-by-tag or --group-by-run, not both.")

    if run_id is not None:
        runs = [http.get(_run_path(flow.name, run_id))]
    else:
        ns = "" if all_runs else _user_namespace()
        page = http.get("runs", params={"flow": flow.name, "namespace": ns,
                                        "page_size": LIST_LIMIT})
        runs = page["results"]
        if not runs:
            click.echo(f"No runs of {flow.name} in {'any namespace' if all_runs else ns}.")
            return
        if page.get("next_cursor"):
            click.echo(f"Showing the newest {LIST_LIMIT} runs; pass --run-id for an older one.")

    if group_by_tag:
        by_tag: dict[str, list[str]] = {}
        system: set[str] = set()
        for run in runs:
            shown = run["user_tags"] + ([] if hide_system_tags else run["system_tags"])
            for name in shown:
                by_tag.setdefault(name, []).append(run["id"])
            system.update(run["system_tags"])
        for name in sorted(by_tag):
            mark = f"  {SYSTEM_MARK}" if name in system else ""
            click.echo(f"{name}{mark}: runs {', '.join(by_tag[name])}")
        return
    for run in runs:
        _print_tags(run, hide_system_tags)
