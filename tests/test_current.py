"""`current` outside a running flow: every field is None or False and reading never raises."""

import subprocess
import sys

from flowsite import current
from tests.conftest import ROOT

NONE_FIELDS = (
    "flow_name",
    "run_id",
    "origin_run_id",
    "step_name",
    "task_id",
    "pathspec",
    "namespace",
    "username",
    "parameter_names",
    "retry_count",
    "run",
    "task",
)


def test_current_fields_none_outside_flow():
    for name in NONE_FIELDS:
        assert getattr(current, name) is None, name


def test_current_flags_false_outside_flow():
    assert current.is_running_flow is False
    assert current.is_production is False


def test_current_repr_outside_flow():
    assert "not in a running flow" in repr(current)


def test_current_as_dict_outside_flow():
    assert set(current.as_dict().values()) <= {None}


def test_current_in_plain_script():
    # A script that imports flowsite and reads current, with no server and no Django.
    code = (
        "import sys\n"
        "from flowsite import current\n"
        "print(current.flow_name, current.pathspec, current.is_running_flow, current.task)\n"
        "print('django' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True,
                            text=True, timeout=30, env={"PATH": "/usr/bin:/bin",
                                                        "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["None None False None", "False"]
