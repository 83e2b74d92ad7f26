"""The API tokens page: create (shown once), list and revoke."""

import logging

from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from runs import selectors
from runs.errors import ValidationFailed
from tokens.models import ApiToken

logger = logging.getLogger(__name__)

# The session key that carries a new token to the page after the redirect, once.
NEW_TOKEN_KEY = "tokens.new_token"
PAGE_SIZE = 50


@login_required
def token_list(request):
    error = ""
    if request.method == "POST":
        name = request.POST.get("name", "").strip()
        if not name:
            error = "Give the token a name, such as 'laptop' or 'ci'."
        elif len(name) > 100:
            error = f"The name is {len(name)} characters long; the limit is 100."
        else:
            token, raw = ApiToken.issue(user=request.user, name=name)
            logger.info("API token %s (%s) created by %s", token.pk, token.prefix,
                        request.user.username)
            # Redirect so a reload cannot post the form again and issue a second token.
            request.session[NEW_TOKEN_KEY] = raw
            return redirect("tokens:list")

    created = request.session.pop(NEW_TOKEN_KEY, None)
    tokens = ApiToken.objects.filter(user=request.user).order_by("-id")
    try:
        items, next_cursor = selectors.page(tokens, cursor=request.GET.get("cursor"),
                                            page_size=PAGE_SIZE)
    except ValidationFailed as exc:
        error, items, next_cursor = str(exc), [], None
    return render(request, "tokens/token_list.html",
                  {"tokens": items, "next_cursor": next_cursor, "created": created,
                   "error": error}, status=400 if error else 200)


@login_required
@require_POST
def token_revoke(request, token_id):
    revoked = ApiToken.objects.filter(
        pk=token_id, user=request.user, revoked_at__isnull=True
    ).update(revoked_at=timezone.now())
    if revoked:
        logger.info("API token %s revoked by %s", token_id, request.user.username)
    return redirect("tokens:list")
