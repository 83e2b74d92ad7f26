"""The API tokens page: create (shown once), list and revoke."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from tokens.models import ApiToken


@login_required
def token_list(request):
    created = None
    error = ""
    if request.method == "POST":
        name = request.POST.get("name", "").strip()
        if not name:
            error = "Give the token a name, such as 'laptop' or 'ci'."
        elif len(name) > 100:
            error = "The name is longer than 100 characters."
        else:
            _token, created = ApiToken.issue(user=request.user, name=name)
    tokens = ApiToken.objects.filter(user=request.user).order_by("-id")[:200]
    return render(request, "tokens/token_list.html",
                  {"tokens": tokens, "created": created, "error": error})


@login_required
@require_POST
def token_revoke(request, token_id):
    ApiToken.objects.filter(pk=token_id, user=request.user, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    return redirect("tokens:list")
