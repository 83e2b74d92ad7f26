"""Login for dashboard views, HTMX requests included."""

from __future__ import annotations

from functools import wraps

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.shortcuts import resolve_url
from django_htmx.http import HttpResponseClientRedirect


def login_required(view):
    """Require a logged-in user, like Django's decorator.

    A plain request is redirected to the login page. An HTMX request (a poll or a
    partial) would swap that page into a table cell, so it gets HX-Redirect instead,
    which makes htmx load the login page as a whole page.
    """

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.user.is_authenticated:
            return view(request, *args, **kwargs)
        if request.htmx:
            # Come back to the page the partial belongs to, not to the partial's URL.
            back = request.htmx.current_url_abs_path or "/"
            login = resolve_url(settings.LOGIN_URL)
            return HttpResponseClientRedirect(redirect_to_login(back, login)["Location"])
        return redirect_to_login(request.get_full_path())

    return wrapper
