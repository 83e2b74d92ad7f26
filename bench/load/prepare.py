"""Create the load-test user, an API token and a signed-in session; print them as
shell assignments for run.sh. Runs against the database in DATABASE_URL."""

import os
import sys

import django

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flowsite.settings")
django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.sessions.backends.db import SessionStore  # noqa: E402

from tokens.models import ApiToken  # noqa: E402

User = get_user_model()
user = User.objects.filter(username="anne").first() or User.objects.create_user(
    username="anne", password="load-test-password-1"
)
_, token = ApiToken.issue(user=user, name="load test")

# A database session signed in as anne, as the sign-in form would create it.
session = SessionStore()
session["_auth_user_id"] = str(user.pk)
session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
session["_auth_user_hash"] = user.get_session_auth_hash()
session.create()

print(f"LOAD_TOKEN={token}")
print(f"LOAD_SESSION={session.session_key}")
