"""Replay the namespaces-and-tags story of Metaflow's "Organizing Results" page on a running server and print each answer.

Anne and will run their own PredictionFlows, share FeatureFlow results through the
xyz_features tag, and filter HelloFlow runs by two tags. The runs are real: they go
through the CLI to the server started by `make run` and execute on its worker, so they
stay on the dashboard afterwards.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from tokens.models import ApiToken

EXAMPLES = Path(settings.BASE_DIR) / "examples" / "organizing_results"
RUN_TIMEOUT_SECONDS = 300


class Command(BaseCommand):
    help = ("Replay the namespaces-and-tags story as users anne and will against the "
            "server of `make run` (FLOWSITE_API_URL), printing each answer.")

    def handle(self, *args, **options):
        self.url = settings.FLOWSITE_API_URL.rstrip("/")
        self.work = Path(tempfile.mkdtemp(prefix="flowsite-demo-"))
        tokens = self.personas_ready(["anne", "will"])
        try:
            self.server_check(tokens["anne"][1])
            self.tokens = {name: raw for name, (_, raw) in tokens.items()}
            self.story()
        finally:
            # The tokens serve only this replay, so they are revoked when it ends.
            ApiToken.objects.filter(pk__in=[token.pk for token, _ in tokens.values()]).update(
                revoked_at=timezone.now()
            )
            shutil.rmtree(self.work, ignore_errors=True)

    # ------------------------------------------------------------ setup

    def personas_ready(self, names: list[str]) -> dict:
        """Create the story's users when missing and give each a fresh API token."""
        User = get_user_model()
        tokens = {}
        for name in names:
            user = User.objects.filter(username=name).first()
            if user is None:
                # Nobody logs in as anne or will. The admin browses their runs on the dashboard.
                user = User.objects.create_user(username=name)
                user.set_unusable_password()
                user.save(update_fields=["password"])
                self.stdout.write(f"Created user {name}.")
            tokens[name] = ApiToken.issue(user=user, name="flowsite_demo")
        return tokens

    def server_check(self, token: str) -> None:
        try:
            requests.get(f"{self.url}/api/v1/whoami", timeout=5,
                         headers={"Authorization": f"Bearer {token}"})
        except requests.RequestException as exc:
            raise CommandError(
                f"Cannot reach the Flowsite server at {self.url} ({exc.__class__.__name__}). "
                "Start it with `make run` in another shell, or set FLOWSITE_API_URL to its "
                "address, then run `make demo` again."
            ) from None

    def env(self, user: str) -> dict:
        env = dict(os.environ)
        env.update({
            "FLOWSITE_URL": self.url,
            "FLOWSITE_TOKEN": self.tokens[user],
            "FLOWSITE_HOME": str(self.work / "home" / user),
            "PYTHONPATH": str(settings.BASE_DIR),
        })
        return env

    def flow_run(self, user: str, flow_file: str, *tags: str) -> str:
        """Run an example flow as the user through the CLI and return its pathspec."""
        folder = self.work / Path(flow_file).stem
        if not folder.exists():
            folder.mkdir(parents=True)
            shutil.copy(EXAMPLES / flow_file, folder / flow_file)
        args = [sys.executable, flow_file, "run"]
        for tag in tags:
            args += ["--tag", tag]
        result = subprocess.run(args, cwd=folder, env=self.env(user), capture_output=True,
                                text=True, timeout=RUN_TIMEOUT_SECONDS)
        match = re.search(r"Run (\S+) started", result.stderr)
        if result.returncode != 0 or match is None:
            raise CommandError(
                f"{user}'s run of {flow_file} failed (exit {result.returncode}). Is a worker "
                f"running (make run)?\n{result.stderr[-2000:]}"
            )
        shown = f" --tag {' --tag '.join(tags)}" if tags else ""
        self.stdout.write(f"{user}: python {flow_file} run{shown} -> {match.group(1)}")
        return match.group(1)

    def client_as(self, user: str):
        """Point the client API of this process at the server as the user, in their namespace."""
        from flowsite.sdk import client

        os.environ.update({
            "FLOWSITE_URL": self.url,
            "FLOWSITE_TOKEN": self.tokens[user],
            "FLOWSITE_HOME": str(self.work / "home" / user),
        })
        client._login_namespace = None
        client.default_namespace()
        return client

    def answer(self, question: str, compute) -> None:
        from flowsite.sdk.exceptions import FlowsiteException

        try:
            value = compute()
        except FlowsiteException as exc:
            value = f"{type(exc).__name__}: {exc}"
        self.stdout.write(f"  {question} -> {value}")

    # ------------------------------------------------------------ the story

    def story(self) -> None:
        self.stdout.write(self.style.MIGRATE_HEADING("Runs"))
        self.flow_run("anne", "prediction_flow.py")
        will_prediction = self.flow_run("will", "prediction_flow.py")
        self.flow_run("anne", "prediction_flow.py")
        self.flow_run("anne", "feature_flow.py", "xyz_features")
        self.flow_run("will", "feature_flow.py", "xyz_features")
        self.flow_run("anne", "helloworld.py", "crazy_test", "date:20180301")
        self.flow_run("anne", "helloworld.py", "crazy_test")

        self.stdout.write(self.style.MIGRATE_HEADING("Namespaces"))
        for user in ("anne", "will"):
            client = self.client_as(user)
            self.answer(f"{user}: Flow('PredictionFlow').latest_run",
                        lambda client=client: client.Flow("PredictionFlow").latest_run)
        client = self.client_as("anne")
        self.answer(f"anne: Run('{will_prediction}')", lambda: client.Run(will_prediction))
        client.namespace("user:will")
        self.answer(f"anne, namespace('user:will'): Run('{will_prediction}')",
                    lambda: client.Run(will_prediction))
        client.namespace(None)
        self.answer(f"anne, namespace(None): Run('{will_prediction}')",
                    lambda: client.Run(will_prediction))

        self.stdout.write(self.style.MIGRATE_HEADING("Tags as namespaces"))
        client = self.client_as("will")
        client.namespace("xyz_features")
        self.answer("will, namespace('xyz_features'): Flow('FeatureFlow').latest_run",
                    lambda: client.Flow("FeatureFlow").latest_run)

        self.stdout.write(self.style.MIGRATE_HEADING("Filtering by tags"))
        client = self.client_as("anne")
        self.answer("anne: Flow('HelloFlow').runs('crazy_test')",
                    lambda: list(client.Flow("HelloFlow").runs("crazy_test")))
        self.answer("anne: Flow('HelloFlow').runs('crazy_test', 'date:20180301')",
                    lambda: list(client.Flow("HelloFlow").runs("crazy_test", "date:20180301")))

        self.stdout.write(self.style.SUCCESS(
            "Done. Log in as the admin on the dashboard and switch to the namespaces "
            "user:anne, user:will or xyz_features to browse these runs."
        ))
