"""`manage.py flowsite_workers` lists the workers that respond over the broker."""

from io import StringIO

import pytest
from django.core.management import call_command

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_workers_lists_session_worker(worker):
    out = StringIO()
    call_command("flowsite_workers", "--timeout", "3", stdout=out)
    lines = {line.split()[0]: line for line in out.getvalue().splitlines() if "@" in line}
    mine = [line for name, line in lines.items() if name.startswith("worker1@")]

    assert len(mine) == 1, out.getvalue()
    assert "queues=default" in mine[0]
    assert "pool=2" in mine[0]
    assert "worker(s) responded." in out.getvalue()
