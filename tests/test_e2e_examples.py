"""The example flows in examples/ run as their docstrings describe."""

import re
import shutil

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def copy_example(name: str, folder):
    path = folder / name
    shutil.copy(ROOT / "examples" / name, path)
    return path


def test_branch_example(cli, sdk, flows_dir):
    path = copy_example("branch_flow.py", flows_dir)
    result = cli.run(path, "run", "--greeting", "Hi", user="will", check=True)

    assert re.search(r"^\[\d+/end/\d+\] Hi, dear world\.$", result.stdout, re.M)
    assert re.search(r"^\[\d+/end/\d+\] hi world!$", result.stdout, re.M)
    data = sdk.login("will").Flow("BranchFlow").latest_run.data
    assert data.formal_sentence == "Hi, dear world."
    assert data.formal_length == len("Hi, dear world.")
    assert "sentence" not in data


def test_foreach_example(cli, sdk, flows_dir):
    path = copy_example("foreach_flow.py", flows_dir)
    result = cli.run(path, "run", "--count", "5", user="will", check=True)

    assert re.search(r"^\[\d+/square/\d+\] item 4: 4 squared is 16$", result.stdout, re.M)
    assert re.search(r"^\[\d+/end/\d+\] sum of squares: 30$", result.stdout, re.M)
    run = sdk.login("will").Flow("ForeachFlow").latest_run
    assert run.data.squares == [0, 1, 4, 9, 16]
