"""The flow command line: `python flow.py run|show|tag|resume|deploy`."""

from __future__ import annotations

import json
import os
import platform
import signal
import sys
import time

import click

from flowsite.sdk import config, http
from flowsite.sdk.exceptions import FlowsiteException, ParameterError
from flowsite.sdk.graph import FlowGraphError, parse_file

# Seconds between log polls while following a run. Each poll is one indexed query
# on the server; 0.3 s made a short run end up to 0.3 s after its last task.
POLL_SECONDS = 0.1


class FlowContext:
    """Shared state of the subcommands: the flow class, its file and its parsed graph."""

    def __init__(self, flow_cls):
        import inspect

        self.flow_cls = flow_cls
        self.name = flow_cls.__name__
        self.path = os.path.abspath(inspect.getsourcefile(flow_cls))
        self.root = os.path.dirname(self.path)
        self.flow_file = os.path.relpath(self.path, self.root)
        self._graph = None

    @property
    def graph(self) -> dict:
        if self._graph is None:
            self._graph = parse_file(self.path, self.name)
        return self._graph

    def parameters(self):
        return self.flow_cls._parameters()


def fail(message: str, code: int = 1):
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def parse_parameters(flow: FlowContext, args: list[str]) -> dict:
    """Turn --name value pairs into typed values; unknown or bad values raise ParameterError."""
    params = {p.name: p for p in flow.parameters()}
    valid = ", ".join(f"--{name} ({p.type_name})" for name, p in sorted(params.items())) or "none"
    values = {}
    index = 0
    while index < len(args):
        arg = args[index]
        if not arg.startswith("--"):
            raise ParameterError(f"Unexpected argument {arg!r}. Valid parameters: {valid}.")
        name, _, inline = arg[2:].partition("=")
        key = name.replace("-", "_")
        if key not in params:
            raise ParameterError(f"Unknown parameter --{name}. Valid parameters: {valid}.")
        if inline == "" and "=" not in arg:
            if index + 1 >= len(args):
                raise ParameterError(
                    f"Parameter --{name} needs a value. Valid parameters: {valid}."
                )
            raw = args[index + 1]
            index += 2
        else:
            raw = inline
            index += 1
        try:
            values[key] = params[key].convert(raw)
        except (ValueError, TypeError) as exc:
            raise ParameterError(
                f"Invalid value for --{name}: {raw!r} is not a valid {params[key].type_name} "
                f"({exc}). Valid parameters: {valid}."
            ) from None
    for name, param in params.items():
        if name not in values:
            if param.required and param.default is None:
                raise ParameterError(f"Parameter --{name} is required. Valid parameters: {valid}.")
            values[name] = param.default
    try:
        json.dumps(values)
    except TypeError as exc:
        raise ParameterError(f"Parameter values must be JSON-serializable: {exc}") from None
    return values


def submit(flow: FlowContext, *, parameters: dict, tags: list[str], namespace: str | None,
           extra: dict | None = None, endpoint: str = "runs",
           headers: dict | None = None) -> dict:
    from flowsite.sdk import package

    try:
        data = package.build(flow.root)
    except package.PackageTooLarge as exc:
        fail(str(exc))
    meta = {
        "flow": flow.name,
        "flow_file": flow.flow_file,
        "parameters": parameters,
        "parameter_specs": [p.spec() for p in flow.parameters()],
        "tags": tags,
        "runtime": "celery",
        "python_version": platform.python_version(),
        "namespace": namespace,
    }
    meta.update(extra or {})
    return http.post(endpoint, data={"metadata": json.dumps(meta)},
                     files={"package": ("package.tar.gz", data, "application/gzip")},
                     headers=dict(headers or {}))


def follow(run: dict, *, quiet: bool = False) -> int:
    """Print the run's log lines as they arrive; return the exit code for its final status."""
    flow, number = run["flow"], run["id"]
    path = f"runs/{flow}/{number}"
    seen: set[int] = set()
    after = 0
    cancelled = False

    def show(chunks):
        for chunk in chunks:
            if chunk["id"] in seen:
                continue
            seen.add(chunk["id"])
            prefix = f"[{number}/{chunk['step']}/{chunk['task_id']}]"
            stream = sys.stderr if chunk["stream"] == "stderr" else sys.stdout
            for line in chunk["text"].splitlines():
                print(f"{prefix} {line}", file=stream)
            stream.flush()

    status = run["status"]
    while True:
        try:
            page = http.get(f"{path}/logs", params={"after": after, "limit": 2000})
            show(page["chunks"])
            after = page["last_id"]
            status = page["status"]
            if status in ("completed", "failed", "cancelled") and len(page["chunks"]) < 2000:
                break
            time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            if cancelled:
                break
            cancelled = True
            click.echo(f"\nCancelling {flow}/{number}...", err=True)
            try:
                http.post(f"{path}/cancel")
            except FlowsiteException as exc:
                click.echo(f"Error: could not cancel: {exc}", err=True)
    # Chunks written by different workers can commit out of id order; one last pass
    # from the start prints any that a poll skipped.
    after = 0
    while not quiet:
        page = http.get(f"{path}/logs", params={"after": after, "limit": 2000})
        show(page["chunks"])
        if len(page["chunks"]) < 2000:
            break
        after = page["last_id"]
    final = http.get(path)
    status = final["status"]
    if status == "completed":
        click.echo(f"Run {flow}/{number} completed successfully.")
        return 0
    message = final.get("error") or status
    click.echo(f"Run {flow}/{number} {status}: {message}", err=True)
    return 130 if cancelled else 1


@click.group()
@click.pass_context
def cli(ctx):
    """Run and manage this flow on a Flowsite server."""


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--tag", "tags", multiple=True, help="Add a user tag to the run; repeatable.")
@click.option("--namespace", default=None,
              help="Namespace the client API sees inside the steps; '' for global. "
              "Does not change the run's tags.")
@click.option("--detach", is_flag=True, help="Print the run id and return without waiting.")
@click.pass_context
def run(ctx, tags, namespace, detach):
    """Run the flow on the server's workers and follow its logs. Pass parameters as --NAME VALUE."""
    flow: FlowContext = ctx.obj
    flow.graph  # noqa: B018 - validates the graph before anything is sent
    parameters = parse_parameters(flow, list(ctx.args))
    created = submit(flow, parameters=parameters, tags=list(tags), namespace=namespace)
    click.echo(f"Run {created['pathspec']} started in namespace {created['namespace']}.",
               err=True)
    if detach:
        click.echo(created["pathspec"])
        return
    sys.exit(follow(created))


@cli.command()
@click.pass_context
def show(ctx):
    """Print the flow's steps and their transitions."""
    flow: FlowContext = ctx.obj
    graph = flow.graph
    if graph.get("doc"):
        click.echo(graph["doc"] + "\n")
    for name in graph["order"]:
        spec = graph["steps"][name]
        doc = f"  {spec['doc'].splitlines()[0]}" if spec.get("doc") else ""
        click.echo(f"Step {name}{doc}")
        if spec["type"] == "end":
            click.echo("    => (end of flow)")
        elif spec["foreach"]:
            click.echo(f"    => {spec['next'][0]} (foreach over {spec['foreach']})")
        else:
            click.echo(f"    => {', '.join(spec['next'])}")
        click.echo()
    params = flow.parameters()
    if params:
        click.echo("Parameters:")
        for p in params:
            click.echo(f"    --{p.name} ({p.type_name}, default {p.default!r}) {p.help}")


def main(flow_cls) -> None:
    """Entry point used by FlowSpec.__init__ in the flow's __main__."""
    from flowsite.sdk import cli_tags  # noqa: F401 - registers the tag commands

    for name in ("cli_resume", "cli_deploy"):
        try:
            __import__(f"flowsite.sdk.{name}")
        except ImportError:
            pass
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        flow = FlowContext(flow_cls)
        cli.main(args=sys.argv[1:], prog_name=os.path.basename(sys.argv[0]), obj=flow,
                 standalone_mode=False)
    except FlowGraphError as exc:
        fail(f"invalid flow: {exc}")
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        fail("aborted", 130)
    except ParameterError as exc:
        fail(str(exc), 2)
    except FlowsiteException as exc:
        fail(str(exc), exc.exit_code)
    sys.exit(0)


def login_main(argv: list[str]) -> int:
    """`python -m flowsite login [--url URL]`: store an API token in ~/.flowsite."""
    import argparse
    import getpass

    parser = argparse.ArgumentParser(prog="python -m flowsite")
    sub = parser.add_subparsers(dest="command", required=True)
    login = sub.add_parser("login", help="Log in and store an API token.")
    login.add_argument("--url", default=None, help="Server URL (default: FLOWSITE_URL or "
                       f"the stored one, else {config.DEFAULT_URL}).")
    login.add_argument("--username", default=None, help="Username (asked when missing).")
    sub.add_parser("whoami", help="Print the logged-in user and namespace.")
    args = parser.parse_args(argv)

    try:
        if args.command == "whoami":
            me = http.get("whoami")
            print(f"{me['username']} ({me['namespace']}) at {config.server_url()}")
            return 0
        url = (args.url or config.server_url()).rstrip("/")
        os.environ["FLOWSITE_URL"] = url
        username = args.username or input("Username: ")
        password = os.environ.get("FLOWSITE_PASSWORD") or getpass.getpass("Password: ")
        import socket

        answer = http.post("login", auth=False, json={
            "username": username, "password": password,
            "name": f"cli@{socket.gethostname()}"[:100],
        })
        data = config.load()
        data.update({"url": url, "token": answer["token"], "username": answer["username"]})
        config.save(data)
        print(f"Logged in to {url} as {answer['username']}; token stored in "
              f"{config.config_path()}.")
        return 0
    except FlowsiteException as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, EOFError):
        print("\nAborted.", file=sys.stderr)
        return 130
