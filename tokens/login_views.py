"""The sign-in page, throttled per client address so passwords cannot be guessed fast."""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.core.cache import cache
from django.http import HttpResponse
from rest_framework.throttling import SimpleRateThrottle

logger = logging.getLogger(__name__)


def client_address(request) -> str:
    return request.META.get("REMOTE_ADDR", "") or "unknown"


class ThrottledLoginView(auth_views.LoginView):
    """Django's LoginView, with the API's "login" rate applied to failed sign-ins."""

    def rate(self) -> tuple[int, int]:
        raw = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["login"]
        return SimpleRateThrottle.parse_rate(None, raw)

    def failures_key(self) -> str:
        return f"login-failures:{client_address(self.request)}"

    def post(self, request, *args, **kwargs):
        allowed, period = self.rate()
        if cache.get(self.failures_key(), 0) >= allowed:
            logger.warning("page login throttled for address %s", client_address(request))
            response = HttpResponse(
                "Too many failed sign-ins from this address. Wait a minute and try again.",
                status=429, content_type="text/plain",
            )
            response["Retry-After"] = str(period)
            return response
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        # Note: the password is never logged; only the username and the address are.
        allowed, period = self.rate()
        key = self.failures_key()
        cache.add(key, 0, timeout=period)
        try:
            cache.incr(key)
        except ValueError:  # the entry expired between add() and incr()
            cache.set(key, 1, timeout=period)
        logger.warning("failed page login for username %r from %s",
                       form.data.get("username", "")[:150], client_address(self.request))
        return super().form_invalid(form)
