"""The client API: Flow, Run, Step, Task and namespaces, over the REST API.

Names follow Metaflow's client so its users feel at home. Every object is checked
against the current namespace when it is made; later namespace() calls do not
change objects that already exist.
"""

from __future__ import annotations

import io
import pickle
import time
from collections.abc import Iterator
from urllib.parse import quote

from flowsite.sdk import http
from flowsite.sdk.exceptions import (
    ConflictError,
    InvalidPathspec,
    NamespaceMismatch,
    NotFound,
    TaggingError,
)

__all__ = [
    "Flow", "Run", "Step", "Task", "DataArtifact", "Metaflow", "Flowsite", "namespace",
    "get_namespace", "default_namespace", "NamespaceMismatch", "NotFound",
    "InvalidPathspec", "TaggingError",
]

_UNSET = object()
_namespace = _UNSET
_login_namespace: str | None = None
TAG_RETRIES = 5


def _user_namespace() -> str:
    global _login_namespace
    if _login_namespace is None:
        _login_namespace = http.get("whoami")["namespace"]
    return _login_namespace


def namespace(ns: str | None) -> str | None:
    """Set the namespace of this process and return it. None or '' is the global namespace."""
    global _namespace
    if ns is not None and not isinstance(ns, str):
        raise TypeError("namespace() takes a string such as 'user:anne', or None")
    _namespace = ns or None
    return _namespace


def get_namespace() -> str | None:
    """Return the current namespace; the first call resolves the default user:<login>."""
    global _namespace
    if _namespace is _UNSET:
        _namespace = _user_namespace()
    return _namespace


def default_namespace() -> str:
    """Reset the namespace to user:<login> of the logged-in user and return it."""
    global _namespace
    _namespace = _user_namespace()
    return _namespace


def _ns_param(check: bool) -> dict:
    if not check:
        return {}
    return {"namespace": get_namespace() or ""}


def _q(value: str) -> str:
    return quote(str(value), safe="")


def _split(pathspec: str, parts: int, form: str) -> list[str]:
    if not isinstance(pathspec, str):
        raise InvalidPathspec(f"A pathspec must be a string of the form {form}.")
    text = pathspec[:-1] if pathspec.endswith("/") else pathspec
    pieces = text.split("/")
    if len(pieces) != parts or any(piece == "" for piece in pieces):
        raise InvalidPathspec(
            f"Invalid pathspec {pathspec!r}: expected {form}, with no empty parts."
        )
    return pieces


def _mismatch(kind: str, pathspec: str, run_pathspec: str,
              error: NamespaceMismatch) -> NamespaceMismatch:
    """Name the object the caller asked for, not only its run, in a namespace error."""
    message = str(error).replace(f"Run {run_pathspec}", f"{kind} {pathspec} (of run "
                                 f"{run_pathspec})", 1)
    return NamespaceMismatch(message)


class _Object:
    _NAME = "object"

    def __init__(self, pathspec: str, data: dict | None, namespace_check: bool):
        self.pathspec = pathspec
        self._data = data or {}
        self._namespace_check = namespace_check
        self._namespace = get_namespace() if namespace_check else None

    @property
    def id(self) -> str:
        return self.pathspec.rsplit("/", 1)[-1]

    def __repr__(self) -> str:
        return f"{type(self).__name__}('{self.pathspec}')"

    def __str__(self) -> str:
        return self.__repr__()

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.pathspec == other.pathspec

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.pathspec))

    def _params(self) -> dict:
        if not self._namespace_check:
            return {}
        return {"namespace": self._namespace or ""}


class _Tagged:
    """Tags of the run an object belongs to."""

    def _run_data(self) -> dict:
        raise NotImplementedError

    @property
    def tags(self) -> frozenset[str]:
        return frozenset(self._run_data().get("tags", []))

    @property
    def system_tags(self) -> frozenset[str]:
        return frozenset(self._run_data().get("system_tags", []))

    @property
    def user_tags(self) -> frozenset[str]:
        return frozenset(self._run_data().get("user_tags", []))


class Metaflow:
    """The root of the client API: the flows that have a run in the current namespace."""

    @property
    def flows(self) -> list[Flow]:
        found = []
        cursor = None
        while True:
            params = {"namespace": get_namespace() or "", "page_size": 200}
            if cursor:
                params["cursor"] = cursor
            page = http.get("flows", params=params)
            found.extend(Flow(item["name"], _namespace_check=False) for item in page["results"])
            cursor = page.get("next_cursor")
            if not cursor:
                return sorted(found, key=lambda flow: flow.id)

    def __iter__(self):
        return iter(self.flows)


Flowsite = Metaflow


class Flow(_Object):
    """A flow by name: its runs in the current namespace."""

    def __init__(self, name: str, _namespace_check: bool = True):
        name = _split(name, 1, "FlowName")[0]
        data = http.get(f"flows/{_q(name)}")
        super().__init__(name, data, _namespace_check)

    @property
    def id(self) -> str:
        return self.pathspec

    def runs(self, *tags: str) -> Iterator[Run]:
        """Runs in the namespace that carry all the tags, newest first."""
        params = {"flow": self.pathspec, "tag": list(tags), "page_size": 50}
        params.update(self._params() or {"namespace": get_namespace() or ""})
        return _iterate_runs(params, self._namespace_check)

    def __iter__(self) -> Iterator[Run]:
        return self.runs()

    def __getitem__(self, run_id) -> Run:
        return Run(f"{self.pathspec}/{run_id}", _namespace_check=self._namespace_check)

    def _latest(self, status: str | None) -> Run | None:
        params = {"flow": self.pathspec, "page_size": 1}
        params["namespace"] = (self._namespace if self._namespace_check else get_namespace()) or ""
        if status:
            params["status"] = status
        page = http.get("runs", params=params)
        if not page["results"]:
            return None
        return Run._from_data(page["results"][0], self._namespace_check)

    @property
    def latest_run(self) -> Run | None:
        """The newest run in the namespace, which may still be running or have failed."""
        return self._latest(None)

    @property
    def latest_successful_run(self) -> Run | None:
        return self._latest("completed")


def _iterate_runs(params: dict, namespace_check: bool) -> Iterator[Run]:
    cursor = None
    while True:
        query = dict(params)
        if cursor:
            query["cursor"] = cursor
        page = http.get("runs", params=query)
        for item in page["results"]:
            yield Run._from_data(item, namespace_check)
        cursor = page.get("next_cursor")
        if not cursor:
            return


class Run(_Tagged, _Object):
    """One run of a flow, such as Run('HelloFlow/546')."""

    def __init__(self, pathspec: str, _namespace_check: bool = True, _data: dict | None = None):
        flow, number = _split(pathspec, 2, "FlowName/RunId")
        self._flow = flow
        if _data is None:
            ns = {"namespace": get_namespace() or ""} if _namespace_check else {}
            _data = http.get(f"runs/{_q(flow)}/{_q(number)}", params=ns)
        super().__init__(f"{flow}/{_data.get('id', number)}", _data, _namespace_check)

    @classmethod
    def _from_data(cls, data: dict, namespace_check: bool) -> Run:
        return cls(data["pathspec"], _namespace_check=namespace_check, _data=data)

    def _run_data(self) -> dict:
        return self._data

    def _path(self) -> str:
        return f"runs/{_q(self._flow)}/{_q(self.id)}"

    def _refresh(self) -> None:
        self._data = http.get(self._path(), params=self._params())

    @property
    def status(self) -> str:
        return self._data["status"]

    @property
    def successful(self) -> bool:
        return self._data["status"] == "completed"

    @property
    def finished(self) -> bool:
        return self._data["status"] in ("completed", "failed", "cancelled")

    @property
    def created_at(self):
        return self._data.get("created_at")

    @property
    def finished_at(self):
        return self._data.get("finished_at")

    @property
    def parameters(self) -> dict:
        return dict(self._data.get("parameters") or {})

    @property
    def origin_pathspec(self) -> str | None:
        return self._data.get("origin_pathspec")

    @property
    def user(self) -> str | None:
        return self._data.get("user")

    @property
    def parent(self) -> Flow:
        return Flow(self._flow, _namespace_check=False)

    def steps(self, *tags: str) -> Iterator[Step]:
        """Return the run's steps, or none unless the run carries all the tags."""
        if tags and not set(tags) <= self.tags:
            return iter(())
        page = http.get(f"{self._path()}/steps", params=self._params())
        return iter([
            Step(item["pathspec"], _namespace_check=self._namespace_check, _run=self,
                 _data=item)
            for item in page["results"]
        ])

    def __iter__(self) -> Iterator[Step]:
        return self.steps()

    def __getitem__(self, step_name: str) -> Step:
        return Step(f"{self.pathspec}/{step_name}", _namespace_check=self._namespace_check,
                    _run=self)

    def __contains__(self, step_name: str) -> bool:
        try:
            self[step_name]
        except NotFound:
            return False
        return True

    @property
    def end_task(self) -> Task | None:
        try:
            return self["end"].task
        except NotFound:
            return None

    @property
    def data(self):
        """The artifacts of the end step, as attributes."""
        task = self.end_task
        return task.data if task else None

    def cancel(self) -> None:
        self._data = http.post(f"{self._path()}/cancel")

    def resume(self, step: str | None = None, tags=()) -> Run:
        """Start a run that resumes this one with its stored code, in your namespace.

        Successful tasks before `step` (default: the first task that did not succeed)
        are cloned, not run again. The new run is returned without waiting for it.
        """
        data = http.post(f"{self._path()}/resume", json={"step": step, "tags": list(tags)})
        # The new run is in the caller's user namespace, which may not be the current one.
        return Run._from_data(data, namespace_check=False)

    # Tags ---------------------------------------------------------------

    def _mutate(self, add: list[str], remove: list[str]) -> None:
        for tag in add + remove:
            if not isinstance(tag, str) or tag == "":
                raise TaggingError(f"Invalid tag {tag!r}: a tag is a non-empty string.")
        for attempt in range(TAG_RETRIES):
            try:
                self._data = http.post(f"{self._path()}/tags", params=self._params(),
                                       json={"add": add, "remove": remove})
                return
            except ConflictError:
                if attempt == TAG_RETRIES - 1:
                    raise TaggingError(
                        f"The tags of {self.pathspec} changed concurrently {TAG_RETRIES} "
                        "times in a row; try again."
                    ) from None
                time.sleep(0.05 * (2 ** attempt))

    def add_tag(self, tag: str) -> None:
        self._mutate([tag], [])

    def add_tags(self, tags) -> None:
        self._mutate(list(tags), [])

    def remove_tag(self, tag: str) -> None:
        self._mutate([], [tag])

    def remove_tags(self, tags) -> None:
        self._mutate([], list(tags))

    def replace_tag(self, tag_to_remove: str, tag_to_add: str) -> None:
        self._mutate([tag_to_add], [tag_to_remove])

    def replace_tags(self, tags_to_remove, tags_to_add) -> None:
        self._mutate(list(tags_to_add), list(tags_to_remove))

    def tag_history(self) -> list[dict]:
        return http.get(f"{self._path()}/tag-events", params=self._params())["results"]


class Step(_Tagged, _Object):
    """One step of a run, such as Step('HelloFlow/546/start')."""

    def __init__(self, pathspec: str, _namespace_check: bool = True, _run: Run | None = None,
                 _data: dict | None = None):
        flow, number, name = _split(pathspec, 3, "FlowName/RunId/StepName")
        try:
            self._run = _run or Run(f"{flow}/{number}", _namespace_check=_namespace_check)
        except NamespaceMismatch as error:
            raise _mismatch("Step", f"{flow}/{number}/{name}", f"{flow}/{number}",
                            error) from None
        if _data is None:
            _data = http.get(f"runs/{_q(flow)}/{_q(number)}/steps/{_q(name)}",
                             params=self._run._params())
        super().__init__(f"{flow}/{number}/{name}", _data, _namespace_check)
        self._namespace = self._run._namespace

    def _run_data(self) -> dict:
        return self._run._data

    @property
    def run(self) -> Run:
        return self._run

    parent = run

    def tasks(self, *tags: str) -> Iterator[Task]:
        if tags and not set(tags) <= self.tags:
            return
        flow, number, name = self.pathspec.split("/")
        cursor = None
        while True:
            params = dict(self._run._params())
            params["page_size"] = 200
            if cursor:
                params["cursor"] = cursor
            page = http.get(f"runs/{_q(flow)}/{_q(number)}/steps/{_q(name)}/tasks",
                            params=params)
            for item in page["results"]:
                yield Task(item["pathspec"], _namespace_check=self._namespace_check,
                           _run=self._run, _data=item)
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def __iter__(self) -> Iterator[Task]:
        return self.tasks()

    @property
    def task(self) -> Task | None:
        """A task of the step; for a foreach, the one created last."""
        for task in self.tasks():
            return task
        return None

    def __getitem__(self, task_id) -> Task:
        return Task(f"{self.pathspec}/{task_id}", _namespace_check=self._namespace_check,
                    _run=self._run)

    @property
    def finished_at(self):
        return self._data.get("finished_at")


class _Data:
    """Artifacts of a task as attributes; each is downloaded on first access."""

    def __init__(self, task: Task):
        self._task = task
        self._cache: dict = {}

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._cache:
            try:
                self._cache[name] = self._task[name].data
            except NotFound:
                raise AttributeError(
                    f"{self._task.pathspec} has no artifact '{name}'"
                ) from None
        return self._cache[name]

    def __contains__(self, name: str) -> bool:
        return name in self._task._artifact_names()

    def __dir__(self):
        return self._task._artifact_names()

    def __repr__(self) -> str:
        return f"<data of {self._task.pathspec}: {', '.join(self._task._artifact_names())}>"


class Task(_Tagged, _Object):
    """One task, such as Task('CurrentFlow/1/start/550539')."""

    def __init__(self, pathspec: str, _namespace_check: bool = True, _run: Run | None = None,
                 _data: dict | None = None, attempt: int | None = None):
        flow, number, step, task_id = _split(pathspec, 4, "FlowName/RunId/StepName/TaskId")
        try:
            self._run = _run or Run(f"{flow}/{number}", _namespace_check=_namespace_check)
        except NamespaceMismatch as error:
            raise _mismatch("Task", f"{flow}/{number}/{step}/{task_id}", f"{flow}/{number}",
                            error) from None
        self._base = f"tasks/{_q(flow)}/{_q(number)}/{_q(step)}/{_q(task_id)}"
        if _data is None:
            _data = http.get(self._base, params=self._run._params())
        super().__init__(f"{flow}/{number}/{step}/{task_id}", _data, _namespace_check)
        self._namespace = self._run._namespace
        self._attempt = attempt
        self._artifacts: list[dict] | None = None

    def _run_data(self) -> dict:
        return self._run._data

    def _params(self) -> dict:
        params = dict(self._run._params())
        if self._attempt is not None:
            params["attempt"] = self._attempt
        return params

    @property
    def parent(self) -> Step:
        return Step(self.pathspec.rsplit("/", 1)[0], _namespace_check=False, _run=self._run)

    @property
    def status(self) -> str:
        return self._data["status"]

    @property
    def successful(self) -> bool:
        return self._data["status"] == "completed"

    @property
    def finished(self) -> bool:
        return self._data["status"] in ("completed", "failed", "cancelled")

    @property
    def current(self) -> dict:
        """The `current` values the worker reported for this task."""
        return dict(self._data.get("current") or {})

    @property
    def index(self) -> int | None:
        return self._data.get("foreach_index")

    @property
    def origin_pathspec(self) -> str | None:
        return self._data.get("origin_pathspec")

    @property
    def retry_count(self) -> int:
        return self._data.get("attempt", 0) if self._attempt is None else self._attempt

    @property
    def attempts(self) -> list[Task]:
        """One Task object per attempt, oldest first; each reads that attempt's logs and data."""
        count = self._data.get("attempt", 0) + 1
        return [
            Task(self.pathspec, _namespace_check=False, _run=self._run, _data=self._data,
                 attempt=number)
            for number in range(count)
        ]

    def _log(self, stream: str) -> str:
        parts = []
        after = -1
        while True:
            params = self._params()
            params.update({"stream": stream, "after": after, "limit": 2000})
            page = http.get(f"{self._base}/logs", params=params)
            parts.extend(chunk["text"] for chunk in page["chunks"])
            after = page["last_seq"]
            if not page["more"]:
                return "".join(parts)

    @property
    def stdout(self) -> str:
        return self._log("stdout")

    @property
    def stderr(self) -> str:
        return self._log("stderr")

    def _artifact_list(self) -> list[dict]:
        if self._artifacts is None:
            self._artifacts = http.get(f"{self._base}/artifacts", params=self._params())[
                "results"
            ]
        return self._artifacts

    def _artifact_names(self) -> list[str]:
        return [item["name"] for item in self._artifact_list()]

    @property
    def artifacts(self) -> list[DataArtifact]:
        return [DataArtifact(self, item) for item in self._artifact_list()]

    def __getitem__(self, name: str) -> DataArtifact:
        for item in self._artifact_list():
            if item["name"] == name:
                return DataArtifact(self, item)
        raise NotFound(f"{self.pathspec} has no artifact '{name}'")

    def __contains__(self, name: str) -> bool:
        return name in self._artifact_names()

    def __iter__(self):
        return iter(self.artifacts)

    @property
    def data(self) -> _Data:
        return _Data(self)


class DataArtifact:
    """One artifact of a task: metadata now, the value on first access of .data."""

    def __init__(self, task: Task, info: dict):
        self._task = task
        self._info = info
        self.pathspec = f"{task.pathspec}/{info['name']}"

    def __repr__(self) -> str:
        return f"DataArtifact('{self.pathspec}')"

    @property
    def id(self) -> str:
        return self._info["name"]

    @property
    def sha(self) -> str:
        return self._info["sha256"]

    @property
    def size(self) -> int:
        return self._info["size"]

    @property
    def type(self) -> str:
        return self._info["type"]

    @property
    def preview(self) -> str:
        return self._info["preview"]

    @property
    def data(self):
        """Download the pickled value and unpickle it here, in the client's process."""
        import hashlib

        response = http.get(f"{self._task._base}/artifacts/{_q(self.id)}/bytes",
                            params=self._task._params())
        raw = response.content
        if hashlib.sha256(raw).hexdigest() != self.sha:
            raise RuntimeError(f"artifact {self.pathspec} arrived corrupted; try again")
        return pickle.load(io.BytesIO(raw))
