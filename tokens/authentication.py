"""DRF authentication with `Authorization: Bearer <token>` API tokens."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.utils import timezone
from rest_framework import authentication, exceptions

from tokens.models import ApiToken, hash_token

logger = logging.getLogger(__name__)

# last_used_at is written at most this often per token, so reads stay cheap.
LAST_USED_RESOLUTION = timedelta(seconds=60)


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        parts = header.split()
        if parts[0] not in (self.keyword, "Token"):
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "Invalid Authorization header. Send 'Authorization: Bearer <token>'."
            )
        return self.authenticate_token(parts[1])

    def authenticate_token(self, raw: str):
        if raw.startswith("task."):
            from runs.step_tokens import user_for_step_token

            return user_for_step_token(raw)
        token = (
            ApiToken.objects.select_related("user")
            .filter(token_hash=hash_token(raw), revoked_at__isnull=True)
            .first()
        )
        if token is None or not token.user.is_active:
            raise exceptions.AuthenticationFailed(
                "Token rejected: it is unknown or revoked. Run `python -m flowsite login`."
            )
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token

    def authenticate_header(self, request):
        return self.keyword
