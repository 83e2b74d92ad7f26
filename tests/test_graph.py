"""Graph parsing and validation: bad flows are rejected with file:line and a fix, and the
server rejects a bad graph before it creates a run."""

import io
import json
import tarfile
import textwrap

import pytest

from flowsite.sdk.graph import FlowGraphError, parse_source

HEADER = "from flowsite import FlowSpec, step\n\n"


def parse(body: str) -> dict:
    return parse_source(HEADER + textwrap.dedent(body).lstrip(), "bad_flow.py")


def rejected(body: str) -> FlowGraphError:
    with pytest.raises(FlowGraphError) as info:
        parse(body)
    return info.value


def line_of(body: str, text: str) -> int:
    """The line number of `text` in the file that parse() builds from `body`."""
    lines = (HEADER + textwrap.dedent(body).lstrip()).splitlines()
    return next(number for number, line in enumerate(lines, 1) if text in line)


LINEAR = """
class LinearFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.middle)

    @step
    def middle(self):
        self.next(self.end)

    @step
    def end(self):
        pass
"""

BRANCH = """
class BranchFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.a, self.b)

    @step
    def a(self):
        self.next(self.join)

    @step
    def b(self):
        self.next(self.join)

    @step
    def join(self, inputs):
        self.next(self.end)

    @step
    def end(self):
        pass
"""

NESTED_FOREACH = """
class NestedFlow(FlowSpec):
    @step
    def start(self):
        self.rows = [1, 2]
        self.next(self.row, foreach="rows")

    @step
    def row(self):
        self.cols = [1, 2, 3]
        self.next(self.cell, foreach="cols")

    @step
    def cell(self):
        self.next(self.join_cols)

    @step
    def join_cols(self, inputs):
        self.next(self.join_rows)

    @step
    def join_rows(self, inputs):
        self.next(self.end)

    @step
    def end(self):
        pass
"""


def test_linear_graph_types():
    graph = parse(LINEAR)
    assert graph["flow"] == "LinearFlow"
    assert graph["order"] == ["start", "middle", "end"]
    assert graph["steps"]["middle"]["next"] == ["end"]
    assert graph["steps"]["start"]["type"] == "start"
    assert graph["steps"]["middle"]["type"] == "linear"
    assert graph["steps"]["end"]["type"] == "end"


def test_branch_graph_types():
    graph = parse(BRANCH)
    assert graph["steps"]["start"]["type"] == "split"
    assert graph["steps"]["start"]["next"] == ["a", "b"]
    assert graph["steps"]["join"]["type"] == "join"


def test_nested_foreach_graph():
    graph = parse(NESTED_FOREACH)
    assert graph["steps"]["start"]["foreach"] == "rows"
    assert graph["steps"]["row"]["foreach"] == "cols"
    assert graph["steps"]["join_rows"]["type"] == "join"


def test_no_start_rejected():
    body = """
    class NoStart(FlowSpec):
        @step
        def begin(self):
            self.next(self.end)

        @step
        def end(self):
            pass
    """
    error = rejected(body)
    assert "no 'start' step" in error.message
    assert error.file == "bad_flow.py"
    assert error.line == line_of(body, "class NoStart")
    assert "Add a method named start" in error.fix
    assert str(error).startswith(f"bad_flow.py:{error.line}: ")


def test_no_end_rejected():
    body = """
    class NoEnd(FlowSpec):
        @step
        def start(self):
            self.next(self.finish)

        @step
        def finish(self):
            pass
    """
    error = rejected(body)
    # finish also lacks self.next(), but the missing end step is reported first.
    assert "no 'end' step" in error.message
    assert error.line == line_of(body, "class NoEnd")
    assert "named end" in error.fix


def test_unknown_step_in_next():
    body = """
    class Unknown(FlowSpec):
        @step
        def start(self):
            self.next(self.middle)

        @step
        def end(self):
            pass
    """
    error = rejected(body)
    assert "unknown step 'middle'" in error.message
    assert error.line == line_of(body, "self.next(self.middle)")
    assert "end, start" in error.fix


def test_branch_without_join():
    body = """
    class NoJoin(FlowSpec):
        @step
        def start(self):
            self.next(self.a, self.b)

        @step
        def a(self):
            self.next(self.end)

        @step
        def b(self):
            self.next(self.end)

        @step
        def end(self):
            pass
    """
    error = rejected(body)
    assert "split in step 'start' has no join" in error.message
    assert error.line == line_of(body, "self.next(self.a, self.b)")
    assert "join" in error.fix


def test_foreach_without_join():
    body = """
    class NoJoin(FlowSpec):
        @step
        def start(self):
            self.items = [1, 2]
            self.next(self.work, foreach="items")

        @step
        def work(self):
            self.next(self.end)

        @step
        def end(self):
            pass
    """
    error = rejected(body)
    assert "has no join" in error.message
    assert error.line == line_of(body, 'foreach="items"')


def test_step_without_next():
    body = """
    class NoNext(FlowSpec):
        @step
        def start(self):
            self.value = 1

        @step
        def end(self):
            pass
    """
    error = rejected(body)
    assert "'start' does not call self.next()" in error.message
    assert error.line == line_of(body, "def start")
    assert "self.next(self." in error.fix


def test_join_without_split():
    body = """
    class LonelyJoin(FlowSpec):
        @step
        def start(self):
            self.next(self.join)

        @step
        def join(self, inputs):
            self.next(self.end)

        @step
        def end(self):
            pass
    """
    error = rejected(body)
    assert "'join' is a join but no split comes before it" in error.message
    assert error.line == line_of(body, "def join")
    assert "Remove the inputs argument" in error.fix


def test_syntax_error_rejected():
    body = """
    class Broken(FlowSpec):
        @step
        def start(self)
            self.next(self.end)
    """
    error = rejected(body)
    assert error.message.startswith("syntax error")
    assert error.line == line_of(body, "def start(self)")
    assert str(error).startswith(f"bad_flow.py:{error.line}: syntax error")


def test_unreachable_step_rejected():
    body = """
    class Orphan(FlowSpec):
        @step
        def start(self):
            self.next(self.end)

        @step
        def orphan(self):
            self.next(self.end)

        @step
        def end(self):
            pass
    """
    error = rejected(body)
    assert "'orphan' cannot be reached" in error.message
    assert error.line == line_of(body, "def orphan")


def test_end_calling_next_rejected():
    body = """
    class Loop(FlowSpec):
        @step
        def start(self):
            self.next(self.end)

        @step
        def end(self):
            self.next(self.start)
    """
    error = rejected(body)
    assert "end step calls self.next()" in error.message


def test_error_text_separates_fix():
    error = rejected("""
    class NoStart(FlowSpec):
        @step
        def end(self):
            pass
    """)
    assert "step. Add a method" in str(error)


# ---------------------------------------------------------------- server side


def package_with(source: str, name: str = "bad_flow.py") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        data = source.encode()
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.django_db
def test_server_rejects_bad_graph(tokens):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from rest_framework.test import APIClient

    from runs.models import Flow, Run

    source = HEADER + textwrap.dedent("""
    class NoJoin(FlowSpec):
        @step
        def start(self):
            self.next(self.a, self.b)

        @step
        def a(self):
            self.next(self.end)

        @step
        def b(self):
            self.next(self.end)

        @step
        def end(self):
            pass
    """)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['anne']}")
    meta = {"flow": "NoJoin", "flow_file": "bad_flow.py", "parameters": {},
            "parameter_specs": [], "tags": []}
    response = client.post("/api/v1/runs", {
        "metadata": json.dumps(meta),
        "package": SimpleUploadedFile("package.tar.gz", package_with(source),
                                      content_type="application/gzip"),
    }, format="multipart")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_graph"
    assert "bad_flow.py:" in response.json()["error"]
    assert "has no join" in response.json()["error"]
    assert not Run.objects.filter(flow__name="NoJoin").exists()
    assert not Flow.objects.filter(name="NoJoin").exists()
