"""Tags through the client API: rules, atomic mutations, concurrency and the audit trail."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.run_factory import make_run

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ODD_TAGS = ["模型-é-🚀", "team:data science", "a,b", "o'neil", "100%", "x/y", " padded ",
            "tab\there", "back\\slash", 'quote"d', "a" * 500]


@pytest.fixture
def anne_run(users):
    return make_run(users["anne"], "HelloFlow", tags=["crazy_test"])


@pytest.fixture
def run(sdk, anne_run):
    return sdk.login("anne").Run(anne_run.pathspec)


# ---------------------------------------------------------------- reading


def test_tags_split_system_and_user(run):
    assert run.user_tags == frozenset({"crazy_test"})
    assert "user:anne" in run.system_tags
    assert any(tag.startswith("flowsite_version:") for tag in run.system_tags)
    assert any(tag.startswith("runtime:") for tag in run.system_tags)
    assert any(tag.startswith("python_version:") for tag in run.system_tags)
    assert run.tags == run.system_tags | run.user_tags


# ---------------------------------------------------------------- rules


@pytest.mark.parametrize("tag", ODD_TAGS)
def test_unicode_tag_round_trips(sdk, run, tag):
    run.add_tag(tag)

    again = sdk.login("anne").Run(run.pathspec)
    assert tag in again.user_tags
    assert [found.pathspec for found in again.parent.runs(tag)] == [run.pathspec]


def test_tag_over_500_characters_rejected(run):
    from flowsite.sdk.exceptions import TaggingError

    with pytest.raises(TaggingError, match="501 characters"):
        run.add_tag("a" * 501)
    assert run.user_tags == frozenset({"crazy_test"})


def test_empty_tag_rejected(run):
    from flowsite.sdk.exceptions import TaggingError

    with pytest.raises(TaggingError, match="non-empty"):
        run.add_tag("")


@pytest.mark.parametrize("tag", ["nul\x00byte", "lone\ud800surrogate"])
def test_unstorable_tag_rejected(run, anne_run, tag):
    from flowsite.sdk.exceptions import TaggingError

    with pytest.raises(TaggingError):
        run.add_tag(tag)
    assert set(anne_run.tag_rows.filter(system=False).values_list("name", flat=True)) == {
        "crazy_test"
    }


def test_fifty_user_tags_limit(run):
    from flowsite.sdk.exceptions import TaggingError

    run.add_tags([f"t{index}" for index in range(49)])
    assert len(run.user_tags) == 50

    with pytest.raises(TaggingError, match="at most 50 user tags"):
        run.add_tag("one_too_many")
    assert len(run.user_tags) == 50
    run.replace_tag("t0", "swapped")
    assert "swapped" in run.user_tags
    assert len(run.user_tags) == 50


def test_run_over_limit_may_shrink(run, anne_run):
    from flowsite.sdk.exceptions import TaggingError
    from runs.models import RunTag

    # A run can end up over the limit only from older data; write such rows directly.
    RunTag.objects.bulk_create(
        RunTag(run=anne_run, flow_id=anne_run.flow_id, name=f"old{index}")
        for index in range(55)
    )
    run.remove_tag("old0")
    assert len(run.user_tags) == 55
    with pytest.raises(TaggingError, match="at most 50"):
        run.replace_tag("old1", "new")


def test_adding_system_tag_is_noop(run, anne_run):
    run.add_tag("user:anne")

    assert "user:anne" not in run.user_tags
    assert anne_run.tag_events.count() == 0


def test_adding_foreign_system_prefix_rejected(run):
    from flowsite.sdk.exceptions import TaggingError

    with pytest.raises(TaggingError, match="system prefix"):
        run.add_tag("user:will")


def test_removing_system_tag_changes_nothing(run, anne_run):
    from flowsite.sdk.exceptions import TaggingError

    before = set(anne_run.tag_rows.values_list("name", flat=True))
    with pytest.raises(TaggingError, match="system tag"):
        run.replace_tags(["user:anne"], ["added_with_bad_remove"])
    assert set(anne_run.tag_rows.values_list("name", flat=True)) == before
    assert anne_run.tag_events.count() == 0


def test_run_tag_option_rules(users):
    from runs.errors import ValidationFailed

    with pytest.raises(ValidationFailed, match="at most 50"):
        make_run(users["anne"], "HelloFlow", tags=[f"t{index}" for index in range(51)])
    with pytest.raises(ValidationFailed, match="system prefix"):
        make_run(users["anne"], "HelloFlow", tags=["production:mine"])


# ---------------------------------------------------------------- mutations


def test_replace_is_atomic(run, anne_run):
    run.add_tags(["a", "b"])

    run.replace_tags(["a", "b"], ["c"])
    assert run.user_tags == frozenset({"crazy_test", "c"})
    events = list(anne_run.tag_events.order_by("id").values("added", "removed"))
    assert events[-1] == {"added": ["c"], "removed": ["a", "b"]}


def test_remove_missing_tag_is_noop(run, anne_run):
    run.remove_tag("never_there")

    assert run.user_tags == frozenset({"crazy_test"})
    assert anne_run.tag_events.count() == 0


def test_mutation_keeps_created_at_and_order(sdk, users, anne_run):
    newer = make_run(users["anne"], "HelloFlow")
    client = sdk.login("anne")
    before = client.Run(anne_run.pathspec).created_at

    client.Run(anne_run.pathspec).add_tag("touched")
    assert client.Run(anne_run.pathspec).created_at == before
    assert client.Flow("HelloFlow").latest_run.pathspec == newer.pathspec
    assert [r.pathspec for r in client.Flow("HelloFlow")] == [newer.pathspec,
                                                              anne_run.pathspec]


def test_mutation_recorded(sdk, run, anne_run):
    run.add_tags(["x", "y"])
    run.remove_tag("x")

    history = run.tag_history()
    assert [(event["added"], event["removed"]) for event in history] == [
        ([], ["x"]), (["x", "y"], []),
    ]
    assert {event["user"] for event in history} == {"anne"}
    assert all(event["created_at"] for event in history)


def test_other_user_tags_after_switch(sdk, anne_run):
    client = sdk.login("will")
    with pytest.raises(client.NamespaceMismatch):
        client.Run(anne_run.pathspec)

    client.namespace("user:anne")
    client.Run(anne_run.pathspec).add_tag("reviewed_by_will")
    assert anne_run.tag_events.get().user.username == "will"


def test_concurrent_adds_keep_all(sdk, anne_run, live_server, tokens):
    import requests

    url = f"{live_server.url}/api/v1/runs/HelloFlow/{anne_run.number}/tags"
    barrier = threading.Barrier(10)
    statuses = []

    def add(index):
        with requests.Session() as session:
            barrier.wait()
            for _ in range(5):
                response = session.post(
                    url, json={"add": [f"client{index}"]},
                    headers={"Authorization": f"Bearer {tokens['anne']}"}, timeout=60,
                )
                statuses.append(response.status_code)
                if response.status_code != 409:
                    return

    threads = [threading.Thread(target=add, args=(index,)) for index in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)

    assert 500 not in statuses
    names = set(anne_run.tag_rows.values_list("name", flat=True))
    assert {f"client{index}" for index in range(10)} <= names
    assert anne_run.tag_events.count() == 10


def test_concurrent_sdk_adds_keep_all(sdk, anne_run):
    client = sdk.login("anne")
    runs = [client.Run(anne_run.pathspec) for _ in range(10)]
    errors = []

    def add(index):
        try:
            runs[index].add_tag(f"sdk{index}")
        except Exception as exc:  # collected for the assert below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(index,)) for index in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)

    assert errors == []
    assert {f"sdk{index}" for index in range(10)} <= client.Run(anne_run.pathspec).user_tags


def test_tag_counts_follow_mutations(run):
    from runs.models import TagCount

    run.add_tag("counted")
    assert TagCount.objects.get(name="counted").count == 1
    run.remove_tag("counted")
    assert TagCount.objects.get(name="counted").count == 0


# ---------------------------------------------------------------- lost races


class ConflictServer:
    """A loopback stand-in for the API that answers tag mutations with 409 a set number
    of times, so the SDK's retry loop can be observed exactly."""

    def __init__(self, conflicts: int):
        self.conflicts = conflicts
        self.posts = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, {"pathspec": "HelloFlow/1", "id": "1", "tags": [],
                                 "system_tags": [], "user_tags": []})

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.posts += 1
                if outer.posts <= outer.conflicts:
                    self._send(409, {"error": "lost a race", "code": "conflict"})
                else:
                    self._send(200, {"pathspec": "HelloFlow/1", "id": "1", "tags": ["t"],
                                     "system_tags": [], "user_tags": ["t"]})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def conflict_client(monkeypatch):
    from flowsite.sdk import client

    servers = []

    def connect(conflicts: int):
        server = ConflictServer(conflicts)
        servers.append(server)
        monkeypatch.setenv("FLOWSITE_URL", server.url)
        monkeypatch.setenv("FLOWSITE_TOKEN", "stub")
        monkeypatch.setattr(client.time, "sleep", lambda seconds: None)
        client.namespace(None)
        return server, client.Run("HelloFlow/1")

    yield connect
    for server in servers:
        server.close()


def test_lost_race_retried(conflict_client):
    server, run = conflict_client(conflicts=3)

    run.add_tag("t")
    assert server.posts == 4
    assert run.user_tags == frozenset({"t"})


def test_lost_races_exhausted_raise(conflict_client):
    from flowsite.sdk.client import TAG_RETRIES
    from flowsite.sdk.exceptions import TaggingError

    server, run = conflict_client(conflicts=100)

    with pytest.raises(TaggingError, match="changed concurrently"):
        run.add_tag("t")
    assert server.posts == TAG_RETRIES


# ---------------------------------------------------------------- a held lock


@pytest.fixture
def held_run_lock(anne_run):
    """Hold the run's row lock from another connection until the test releases it."""
    from django.db import connection, transaction

    from runs.models import Run

    if connection.vendor != "postgresql":
        pytest.skip("row locks with a timeout exist on PostgreSQL only")
    locked, release = threading.Event(), threading.Event()

    def hold(seconds):
        with transaction.atomic():
            Run.objects.select_for_update().get(pk=anne_run.pk)
            locked.set()
            release.wait(timeout=seconds)
        connection.close()

    def start(seconds: float):
        thread = threading.Thread(target=hold, args=(seconds,))
        thread.start()
        assert locked.wait(timeout=10)
        return thread

    yield start
    release.set()


def test_locked_run_answers_409(held_run_lock, anne_run, tokens, live_server, monkeypatch):
    import requests

    from runs import services

    monkeypatch.setattr(services, "TAG_LOCK_TIMEOUT_MS", 200)
    held_run_lock(30)
    response = requests.post(
        f"{live_server.url}/api/v1/runs/{anne_run.pathspec}/tags", json={"add": ["late"]},
        headers={"Authorization": f"Bearer {tokens['anne']}"}, timeout=30,
    )

    assert response.status_code == 409
    assert response.json()["code"] == "conflict"
    assert "retry" in response.json()["error"]
    assert not anne_run.tag_rows.filter(name="late").exists()


def test_sdk_retries_until_lock_released(held_run_lock, run, anne_run, monkeypatch):
    from runs import services

    monkeypatch.setattr(services, "TAG_LOCK_TIMEOUT_MS", 200)
    held_run_lock(0.5)

    run.add_tag("after_the_lock")
    assert anne_run.tag_rows.filter(name="after_the_lock").exists()
