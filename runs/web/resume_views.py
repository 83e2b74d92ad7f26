"""The dashboard's resume button: resume a run on the server and open the new run."""

from __future__ import annotations

import logging

from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from runs import selectors
from runs.errors import ServiceError
from runs.resume import run_resume

logger = logging.getLogger(__name__)


@login_required
@require_POST
def run_resume_page(request, flow, run_id):
    """Resume with the origin's code package in the clicking user's namespace.

    The origin may be in any namespace: resuming someone else's run or a production
    run needs no namespace switch, and the new run's page opens in the user's own.
    """
    step = request.POST.get("step") or None
    try:
        origin = selectors.run_get(flow, run_id, check=False)
        run = run_resume(user=request.user, origin=origin, step=step, tags=[])
    except ServiceError as exc:
        logger.info("resume of %s/%s by %s rejected: %s", flow, run_id,
                    request.user.username, exc)
        # The origin is read without a namespace check, so no NamespaceMismatch gets
        # here and the plain error page has all it needs.
        return render(request, "runs/error.html", {"message": str(exc), "error": exc},
                      status=exc.status)
    return redirect("runs:run", flow=run.flow.name, run_id=run.number)
