"""The `current` singleton: who and where the running step is."""

from __future__ import annotations

_FIELDS = (
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
    "is_production",
)


class Current:
    """Identity of the running task. Outside a flow every field is None or False."""

    def __init__(self) -> None:
        self._values: dict = {}

    def _set(self, values: dict) -> None:
        self._values = {key: values.get(key) for key in _FIELDS}
        self._values["is_running_flow"] = True

    def _clear(self) -> None:
        self._values = {}

    def as_dict(self) -> dict:
        return {key: self._values.get(key) for key in _FIELDS}

    @property
    def is_running_flow(self) -> bool:
        return bool(self._values.get("is_running_flow"))

    @property
    def flow_name(self) -> str | None:
        return self._values.get("flow_name")

    @property
    def run_id(self) -> str | None:
        return self._values.get("run_id")

    @property
    def origin_run_id(self) -> str | None:
        return self._values.get("origin_run_id")

    @property
    def step_name(self) -> str | None:
        return self._values.get("step_name")

    @property
    def task_id(self) -> str | None:
        return self._values.get("task_id")

    @property
    def pathspec(self) -> str | None:
        return self._values.get("pathspec")

    @property
    def namespace(self) -> str | None:
        return self._values.get("namespace")

    @property
    def username(self) -> str | None:
        return self._values.get("username")

    @property
    def parameter_names(self) -> list[str] | None:
        return self._values.get("parameter_names")

    @property
    def retry_count(self) -> int | None:
        return self._values.get("retry_count")

    @property
    def is_production(self) -> bool:
        return bool(self._values.get("is_production"))

    @property
    def run(self):
        """The running Run, read without the namespace check."""
        if not self.is_running_flow:
            return None
        from flowsite.sdk.client import Run

        return Run(f"{self.flow_name}/{self.run_id}", _namespace_check=False)

    @property
    def task(self):
        """The running Task, read without the namespace check."""
        if not self.is_running_flow:
            return None
        from flowsite.sdk.client import Task

        return Task(self.pathspec, _namespace_check=False)

    def __repr__(self) -> str:
        if not self.is_running_flow:
            return "<current: not in a running flow>"
        return f"<current {self.pathspec}>"


current = Current()
