"""`python flow.py tag add|remove|replace|list`, run as a user would in a subprocess."""

from __future__ import annotations

import pytest

from tests.conftest import write_flow
from tests.run_factory import make_run

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

HELLO = """
    from flowsite import FlowSpec, step


    class HelloFlow(FlowSpec):
        @step
        def start(self):
            self.next(self.end)

        @step
        def end(self):
            pass


    if __name__ == "__main__":
        HelloFlow()
"""


@pytest.fixture
def hello(flows_dir):
    return write_flow(flows_dir, "helloworld.py", HELLO)


@pytest.fixture
def runs(users):
    return {
        "anne_old": make_run(users["anne"], "HelloFlow", tags=["crazy_test"]),
        "anne": make_run(users["anne"], "HelloFlow"),
        "will": make_run(users["will"], "HelloFlow", tags=["wills_tag"]),
    }


def user_tags(run) -> set[str]:
    return set(run.tag_rows.filter(system=False).values_list("name", flat=True))


# ---------------------------------------------------------------- add, remove, replace


def test_add_with_run_id(cli, hello, runs):
    run = runs["anne"]

    result = cli.run(hello, "tag", "add", "--run-id", str(run.number), "crazy_test", "模型-é-🚀")
    assert result.returncode == 0, result.stderr
    assert user_tags(run) == {"crazy_test", "模型-é-🚀"}
    assert "crazy_test" in result.stdout


def test_add_without_run_id_names_latest(cli, hello, runs):
    result = cli.run(hello, "tag", "add", "crazy_test")

    assert result.returncode == 2
    assert f"Your latest run is HelloFlow/{runs['anne'].number}" in result.stderr
    assert f"--run-id {runs['anne'].number}" in result.stderr
    assert user_tags(runs["anne"]) == set()


def test_remove_without_run_id_fails(cli, hello, runs):
    result = cli.run(hello, "tag", "remove", "crazy_test")

    assert result.returncode == 2
    assert "--run-id" in result.stderr
    assert user_tags(runs["anne_old"]) == {"crazy_test"}


def test_remove_symmetric(cli, hello, runs):
    run = runs["anne_old"]

    result = cli.run(hello, "tag", "remove", "--run-id", str(run.number), "crazy_test")
    assert result.returncode == 0, result.stderr
    assert user_tags(run) == set()


def test_remove_system_tag_fails(cli, hello, runs):
    run = runs["anne"]

    result = cli.run(hello, "tag", "remove", "--run-id", str(run.number), "user:anne")
    assert result.returncode == 1
    assert "system tag" in result.stderr
    assert run.tag_rows.filter(name="user:anne", system=True).exists()


def test_replace_atomic(cli, hello, runs):
    run = runs["anne_old"]

    result = cli.run(hello, "tag", "replace", "--run-id", str(run.number),
                     "--remove", "crazy_test", "--add", "sane_test", "--add", "date:20180301")
    assert result.returncode == 0, result.stderr
    assert user_tags(run) == {"sane_test", "date:20180301"}
    event = run.tag_events.get()
    assert event.removed == ["crazy_test"]
    assert sorted(event.added) == ["date:20180301", "sane_test"]


@pytest.mark.parametrize("args", [["--add", "x"], ["--remove", "crazy_test"], []])
def test_replace_needs_both(cli, hello, runs, args):
    run = runs["anne_old"]

    result = cli.run(hello, "tag", "replace", "--run-id", str(run.number), *args)
    assert result.returncode == 2
    assert "tag add" in result.stderr
    assert "tag remove" in result.stderr
    assert user_tags(run) == {"crazy_test"}


def test_other_users_run_needs_namespace(cli, hello, runs):
    run = runs["will"]

    refused = cli.run(hello, "tag", "add", "--run-id", str(run.number), "seen_by_anne")
    assert refused.returncode == 1
    assert "--namespace user:will" in refused.stderr
    assert user_tags(run) == {"wills_tag"}

    allowed = cli.run(hello, "tag", "add", "--run-id", str(run.number),
                      "--namespace", "user:will", "seen_by_anne")
    assert allowed.returncode == 0, allowed.stderr
    assert cli.run(hello, "tag", "add", "--run-id", str(run.number), "--namespace", "",
                   "global_too").returncode == 0
    assert user_tags(run) == {"wills_tag", "seen_by_anne", "global_too"}


def test_add_unknown_run_fails(cli, hello, runs):
    result = cli.run(hello, "tag", "add", "--run-id", "9999", "x")

    assert result.returncode == 1
    assert "HelloFlow/9999" in result.stderr


def test_add_too_long_tag_fails(cli, hello, runs):
    result = cli.run(hello, "tag", "add", "--run-id", str(runs["anne"].number), "a" * 501)

    assert result.returncode == 1
    assert "500" in result.stderr


# ---------------------------------------------------------------- list


def test_list_marks_system_tags(cli, hello, runs):
    out = cli.run(hello, "tag", "list", check=True).stdout

    assert f"HelloFlow/{runs['anne_old'].number}:" in out
    assert "    crazy_test\n" in out
    assert "user:anne  (system tag, cannot be modified)" in out
    assert "wills_tag" not in out


def test_list_hide_system_tags(cli, hello, runs):
    out = cli.run(hello, "tag", "list", "--hide-system-tags", check=True).stdout

    assert "crazy_test" in out
    assert "user:anne" not in out
    assert "system tag" not in out


def test_list_all_users(cli, hello, runs):
    out = cli.run(hello, "tag", "list", "--all", check=True).stdout

    assert "wills_tag" in out
    assert "user:will" in out
    mine = cli.run(hello, "tag", "list", "--my-runs", check=True).stdout
    assert "wills_tag" not in mine


def test_list_group_by_tag(cli, hello, runs):
    out = cli.run(hello, "tag", "list", "--group-by-tag", check=True).stdout

    assert f"crazy_test: runs {runs['anne_old'].number}" in out
    anne_runs = f"{runs['anne'].number}, {runs['anne_old'].number}"
    assert f"user:anne  (system tag, cannot be modified): runs {anne_runs}" in out


def test_list_one_run(cli, hello, runs):
    out = cli.run(hello, "tag", "list", "--run-id", str(runs["will"].number),
                  check=True).stdout

    assert out.splitlines()[0] == f"{runs['will'].pathspec}:"
    assert "wills_tag" in out


@pytest.mark.parametrize("flags", [["--all", "--my-runs"],
                                   ["--group-by-tag", "--group-by-run"]])
def test_list_conflicting_flags(cli, hello, runs, flags):
    result = cli.run(hello, "tag", "list", *flags)

    assert result.returncode == 2
    assert "not both" in result.stderr


def test_list_no_runs(cli, hello, users):
    out = cli.run(hello, "tag", "list", check=True).stdout

    assert "No runs of HelloFlow in user:anne." in out


def test_tag_help_lists_commands(cli, hello):
    out = cli.run(hello, "tag", "--help", check=True).stdout

    for command in ("add", "remove", "replace", "list"):
        assert command in out
