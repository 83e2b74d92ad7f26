"""Create the local admin on first start and give the CLI a token for it."""

import json
import os
import secrets
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from tokens.models import ApiToken


class Command(BaseCommand):
    help = ("Create a local admin with a random password (printed once) and write a CLI "
            "token for it into ~/.flowsite/config.json when none is stored.")

    def add_arguments(self, parser):
        parser.add_argument("--username", default=os.environ.get("FLOWSITE_ADMIN", "admin"))
        # flowsite_run listens on FLOWSITE_ADDR, so the stored URL must point there too.
        address = os.environ.get("FLOWSITE_ADDR", "127.0.0.1:8000")
        parser.add_argument("--url", default=os.environ.get("FLOWSITE_URL", f"http://{address}"),
                            help="Server URL stored with the CLI token (default: FLOWSITE_URL, "
                            "else http://FLOWSITE_ADDR).")

    def handle(self, *args, username, url, **options):
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if user is None:
            password = secrets.token_urlsafe(12)
            user = User.objects.create_superuser(username=username, password=password, email="")
            self.stdout.write(self.style.SUCCESS(
                f"Created admin '{username}' with password: {password}\n"
                "This password is shown only once; change it in the admin if you like."
            ))
        home = Path(os.environ.get("FLOWSITE_HOME", Path.home() / ".flowsite"))
        path = home / "config.json"
        data = {}
        if path.exists():
            try:
                data = json.loads(path.read_text())
            except ValueError:
                data = {}
        token_ok = False
        if data.get("token") and data.get("url", "").rstrip("/") == url.rstrip("/"):
            from tokens.models import hash_token

            token_ok = ApiToken.objects.filter(
                token_hash=hash_token(data["token"]), revoked_at__isnull=True
            ).exists()
        if not token_ok:
            _token, raw = ApiToken.issue(user=user, name="local cli")
            data.update({"url": url, "token": raw, "username": user.username})
            home.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(data, handle, indent=2)
            os.chmod(path, 0o600)
            self.stdout.write(f"Wrote a CLI token for '{user.username}' to {path}.")
